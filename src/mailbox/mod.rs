//! Messages between connections: Go's channels, for handlers that talk.
//!
//! A protocol that wants to message owns a [`Mailbox`] and returns it from
//! [`Protocol::mailbox`](crate::proto::Protocol::mailbox). The loop attaches
//! it when the connection opens (the connection's [`ConnId`] and the
//! process's [`Hub`]); from then on the protocol can, during any call:
//!
//! * [`send`](Mailbox::send) bytes to one connection by id, or
//!   [`send_many`](Mailbox::send_many) to several;
//! * [`join`](Mailbox::join) / [`leave`](Mailbox::leave) a named group
//!   (a topic), or a glob [pattern](Mailbox::join_pattern) of groups, and
//!   [`publish`](Mailbox::publish) to a group: every member, on every loop,
//!   gets the message; `publish` returns how many receivers there were.
//!
//! # The path of a message
//! Sending only **records** the message in the mailbox's outbox (a byte
//! arena and a list of routes; both keep their capacity, so a warm mailbox
//! sends without allocating). The protocol stays sans-IO: a unit test
//! reads what it sent with [`Mailbox::sent`]. After the connection's turn,
//! the loop takes the outbox and routes each message:
//!
//! * **same loop**: straight into the receiver, in the same turn: its
//!   protocol's [`on_message`](crate::proto::Protocol::on_message) frames
//!   it into the receiver's output, which is written at once when the
//!   socket is writable. No lock, no syscall but that write.
//! * **another loop** (`--threads N`): the messages for each loop travel
//!   as one batch through that loop's bounded queue, and its `mio::Waker`
//!   wakes it; it delivers them as above.
//!
//! ```text
//!  loop 0                                         loop 1
//!  conn 3 (publisher)                             conn 7 (subscriber)
//!   on_input: mailbox.publish("news", b"hi")
//!     └─► outbox [to 1/7/g2, "news", "hi"]
//!  after the turn: route ─── batch ──► queue[1] (bounded) ─► waker(1).wake()
//!                                                  │
//!                                     poll → WAKER: take batches
//!                                     generation of 7 still 2? ─ no ─► dropped
//!                                                  │ yes
//!                                     conn 7: on_message → out → write(2)
//! ```
//!
//! # Guarantees
//! * **FIFO per sender → receiver pair.** Messages from one connection to
//!   another arrive in the order they were sent: an outbox is routed in
//!   order, and each loop's queue is FIFO. Nothing is promised between
//!   different senders.
//! * **Generation-safe addressing.** A [`ConnId`] names a loop, a slab key
//!   *and* the generation the connection was given at accept. A message
//!   for a connection that has closed is dropped, even when its slab slot
//!   now holds a new connection: it is never delivered to the new tenant.
//! * **Delivered while open.** A receiver that is already flushing or
//!   lingering toward its close drops new messages. What was delivered
//!   before is part of its output and goes out before its FIN, like any
//!   reply (so a drain loses nothing already delivered). Across loops the
//!   drain waits until every loop has stopped accepting and routed what it
//!   sent, so what a publisher was answered for arrives before the FIN; a
//!   message sent by a request still in flight during the drain can come
//!   too late and is dropped (see docs/ARCHITECTURE.md, "Drain").
//! * **Bounded per receiver: slow consumers are disconnected.** A message
//!   is framed into the receiver's output even when its socket is full; if
//!   that leaves more than [`Limits::slow_consumer_limit`] owed, the
//!   receiver is closed with reason `slow consumer` (NATS does the same;
//!   Redis' `client-output-buffer-limit pubsub` too). A publisher is never
//!   slowed down by its slowest subscriber, and memory stays bounded.
//! * **Bounded per loop.** Each loop's queue holds [`LOOP_QUEUE`] batches;
//!   a batch for a loop whose queue is full is dropped and counted in
//!   [`Stats::messages_dropped`](crate::base::counters::Stats) (a loop that far
//!   behind would disconnect those receivers as slow anyway).
//!
//! # Costs
//! A protocol that does not message returns `None` from `mailbox()` (the
//! default): the connection checks nothing else, and the echo fast path is
//! unchanged. With one loop, the group directory lives on the loop's own
//! thread and `join`/`leave`/`publish` take no lock at all (a `RefCell` in
//! a thread-local, found by the hub's id). With several loops it is one
//! directory they share behind an `RwLock`: `join`/`leave` take it for
//! writing, `publish` for reading. Sending by id never takes a lock.
//!
//! [`Limits::slow_consumer_limit`]: crate::reactor::conn::Limits::slow_consumer_limit

pub mod glob;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use mio::Waker;

/// How many batches each loop's queue holds. A batch is everything one
/// loop routed to another in one turn.
pub const LOOP_QUEUE: usize = 4096;

/// A connection's address, unique for the life of the process: its loop,
/// its slab key, and the generation it was accepted with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// Which loop (thread) owns it: 0 with one loop.
    pub loop_id: usize,
    /// Its slab key (the `mio::Token`): reused after it closes.
    pub key: usize,
    /// Unique per accepted connection within its loop: tells tenants of
    /// one slab key apart.
    pub generation: u64,
}

impl ConnId {
    /// No connection: the sender of what a detached mailbox records.
    pub const NOBODY: ConnId = ConnId {
        loop_id: usize::MAX,
        key: usize::MAX,
        generation: 0,
    };
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.loop_id, self.key, self.generation)
    }
}

/// One message, as its receiver's protocol sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The sending connection.
    pub from: ConnId,
    /// The group it was published to (`None`: sent by id).
    pub topic: Option<&'a [u8]>,
    /// The pattern through which the receiver got it (`None`: it is a
    /// member of `topic` itself, or it was sent by id).
    pub pattern: Option<&'a [u8]>,
    /// The bytes sent.
    pub payload: &'a [u8],
}

/// Where one recorded message goes; its bytes are ranges of the arena.
#[derive(Clone, Debug)]
struct Route {
    from: ConnId,
    to: ConnId,
    topic: Option<Range<usize>>,
    pattern: Option<Range<usize>>,
    payload: Range<usize>,
}

/// Messages recorded and not yet routed: what one connection sent during
/// its turn, or a batch travelling to another loop.
#[derive(Debug, Default)]
pub struct Outbox {
    routes: Vec<Route>,
    bytes: Vec<u8>,
}

impl Outbox {
    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// How many messages (receiver, bytes) are recorded.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Forget everything recorded, keeping the memory for reuse.
    pub fn clear(&mut self) {
        self.routes.clear();
        self.bytes.clear();
    }

    /// The recorded messages in order: each receiver and what it gets.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, Message<'_>)> + '_ {
        self.routes.iter().map(move |r| (r.to, self.message(r)))
    }

    fn message(&self, r: &Route) -> Message<'_> {
        Message {
            from: r.from,
            topic: r.topic.clone().map(|t| &self.bytes[t]),
            pattern: r.pattern.clone().map(|p| &self.bytes[p]),
            payload: &self.bytes[r.payload.clone()],
        }
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    /// Copy message `i` of `other` (for a batch bound for another loop).
    fn copy_from(&mut self, other: &Outbox, i: usize) {
        let r = &other.routes[i];
        let m = other.message(r);
        let topic = m.topic.map(|t| self.push_bytes(t));
        let pattern = m.pattern.map(|p| self.push_bytes(p));
        let payload = self.push_bytes(m.payload);
        self.routes.push(Route {
            from: r.from,
            to: r.to,
            topic,
            pattern,
            payload,
        });
    }

    /// Split off the messages for other loops into `remote[loop]`; what
    /// stays is for `here`.
    pub(crate) fn split_remote(&self, here: usize, remote: &mut [Outbox]) -> bool {
        let mut any_local = false;
        for (i, r) in self.routes.iter().enumerate() {
            if r.to.loop_id == here {
                any_local = true;
            } else if let Some(batch) = remote.get_mut(r.to.loop_id) {
                batch.copy_from(self, i);
            }
        }
        any_local
    }

    /// The messages for loop `here`.
    pub(crate) fn local<'a>(
        &'a self,
        here: usize,
    ) -> impl Iterator<Item = (ConnId, Message<'a>)> + 'a {
        self.iter().filter(move |(to, _)| to.loop_id == here)
    }
}

/// The group directory: who is a member of which topic, who listens on
/// which pattern. In join order, so receivers are served in that order.
#[derive(Debug, Default)]
struct Groups {
    exact: HashMap<Vec<u8>, Vec<ConnId>>,
    patterns: Vec<(Vec<u8>, Vec<ConnId>)>,
}

impl Groups {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.patterns.is_empty()
    }

    fn leave(&mut self, topic: &[u8], me: ConnId) {
        if let Some(members) = self.exact.get_mut(topic) {
            members.retain(|&m| m != me);
            if members.is_empty() {
                self.exact.remove(topic);
            }
        }
    }

    fn leave_pattern(&mut self, pattern: &[u8], me: ConnId) {
        if let Some(at) = self.patterns.iter().position(|(p, _)| p == pattern) {
            self.patterns[at].1.retain(|&m| m != me);
            if self.patterns[at].1.is_empty() {
                self.patterns.remove(at);
            }
        }
    }
}

/// One loop's door: its queue and its waker.
#[derive(Debug)]
struct Door {
    tx: SyncSender<Outbox>,
    rx: Mutex<Option<Receiver<Outbox>>>,
    waker: OnceLock<Arc<Waker>>,
}

/// What every loop of a process shares for messaging: the loops' queues
/// and wakers, and the group directory. Made once per process (one per
/// [`Server`](crate::Server) when it runs alone, one per
/// [`Supervisor`](crate::process::supervisor::Supervisor)).
#[derive(Debug)]
pub struct Hub {
    doors: Vec<Door>,
    /// The group directory shared by several loops; `None` with one loop,
    /// whose directory lives on the loop's own thread (no lock at all).
    shared: Option<RwLock<Groups>>,
    /// Names this hub's directory among those of the loop's thread.
    id: u64,
}

thread_local! {
    /// The group directories of the one-loop hubs whose loop runs on this
    /// thread, by hub id (in practice one). Only that loop's protocols
    /// touch them, from that thread: a `RefCell` is all they need.
    static LOCAL_GROUPS: RefCell<Vec<(u64, Groups)>> = const { RefCell::new(Vec::new()) };
}

/// Hub ids, unique in the process (a directory left behind by a hub that
/// is gone can never be taken for a new hub's).
static NEXT_HUB: AtomicU64 = AtomicU64::new(0);

impl Hub {
    /// A hub for `loops` event loops.
    pub fn new(loops: usize) -> Arc<Self> {
        let doors = (0..loops.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::sync_channel(LOOP_QUEUE);
                Door {
                    tx,
                    rx: Mutex::new(Some(rx)),
                    waker: OnceLock::new(),
                }
            })
            .collect();
        Arc::new(Self {
            shared: (loops > 1).then(RwLock::default),
            doors,
            id: NEXT_HUB.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// How many loops it connects.
    pub fn loops(&self) -> usize {
        self.doors.len()
    }

    /// Loop `id` takes its queue's receiving end (once) and leaves its
    /// waker for the others.
    pub(crate) fn open_door(&self, id: usize, waker: Arc<Waker>) -> Option<Receiver<Outbox>> {
        let door = self.doors.get(id)?;
        let _ = door.waker.set(waker);
        door.rx.lock().ok()?.take()
    }

    /// Hand `batch` to loop `id` and wake it. `Err(batch)` when its queue
    /// is full or it is gone: the batch is dropped by the caller.
    pub(crate) fn post(&self, id: usize, batch: Outbox) -> Result<(), Outbox> {
        let Some(door) = self.doors.get(id) else {
            return Err(batch);
        };
        match door.tx.try_send(batch) {
            Ok(()) => {
                if let Some(waker) = door.waker.get() {
                    let _ = waker.wake();
                }
                Ok(())
            }
            Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => Err(batch),
        }
    }

    /// Look at the group directory: one loop's own, with no lock, or the
    /// one several loops share, under its read lock.
    fn with_groups<R>(&self, f: impl FnOnce(&Groups) -> R) -> R {
        match &self.shared {
            Some(shared) => f(&shared.read().unwrap_or_else(|e| e.into_inner())),
            None => LOCAL_GROUPS.with(|local| {
                let local = local.borrow();
                match local.iter().find(|(id, _)| *id == self.id) {
                    Some((_, groups)) => f(groups),
                    None => f(&Groups::default()),
                }
            }),
        }
    }

    /// Change the group directory (see [`Hub::with_groups`]).
    fn with_groups_mut<R>(&self, f: impl FnOnce(&mut Groups) -> R) -> R {
        match &self.shared {
            Some(shared) => f(&mut shared.write().unwrap_or_else(|e| e.into_inner())),
            None => LOCAL_GROUPS.with(|local| {
                let mut local = local.borrow_mut();
                let at = match local.iter().position(|(id, _)| *id == self.id) {
                    Some(at) => at,
                    None => {
                        local.push((self.id, Groups::default()));
                        local.len() - 1
                    }
                };
                let result = f(&mut local[at].1);
                if local[at].1.is_empty() {
                    local.swap_remove(at); // nobody left: nothing kept
                }
                result
            }),
        }
    }

    /// How many connections are members of `topic` itself (patterns not
    /// counted).
    pub fn members(&self, topic: &[u8]) -> usize {
        self.with_groups(|g| g.exact.get(topic).map_or(0, Vec::len))
    }
}

/// A protocol's messaging handle: its identity, its sends, its groups.
///
/// Made detached with [`Mailbox::new`] in the protocol's constructor;
/// the loop attaches it when the connection opens. Detached, sends and
/// groups are only recorded (useful in unit tests); see the module docs
/// for the guarantees once attached.
///
/// Small while unused (40 B, no heap): what it sends and the groups it is
/// in are allocated on first use.
#[derive(Debug)]
pub struct Mailbox {
    me: ConnId,
    hub: Option<Arc<Hub>>,
    used: Option<Box<Used>>,
}

/// A mailbox's sends and groups, once it has had any.
#[derive(Debug, Default)]
struct Used {
    sent: Outbox,
    topics: Vec<Vec<u8>>,
    patterns: Vec<Vec<u8>>,
}

/// What an unused mailbox reads as.
static UNUSED: Outbox = Outbox {
    routes: Vec::new(),
    bytes: Vec::new(),
};

impl Default for Mailbox {
    fn default() -> Self {
        Self {
            me: ConnId::NOBODY,
            hub: None,
            used: None,
        }
    }
}

impl Mailbox {
    /// A detached mailbox: no identity yet, nothing sent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Give it its connection's identity and the process's hub. Called by
    /// the loop when the connection opens (and by tests).
    pub fn attach(&mut self, me: ConnId, hub: Arc<Hub>) {
        self.me = me;
        self.hub = Some(hub);
    }

    /// The sender named in what it records: itself, or [`ConnId::NOBODY`]
    /// while detached.
    fn from(&self) -> ConnId {
        self.me
    }

    fn used(&mut self) -> &mut Used {
        self.used.get_or_insert_with(Box::default)
    }

    fn topics_mut(&mut self) -> &mut Vec<Vec<u8>> {
        &mut self.used().topics
    }

    fn patterns_mut(&mut self) -> &mut Vec<Vec<u8>> {
        &mut self.used().patterns
    }

    /// This connection's identity (`None` until attached).
    pub fn me(&self) -> Option<ConnId> {
        (self.me != ConnId::NOBODY).then_some(self.me)
    }

    /// Send `payload` to one connection.
    pub fn send(&mut self, to: ConnId, payload: &[u8]) {
        let from = self.from();
        let payload = self.used().sent.push_bytes(payload);
        self.used().sent.routes.push(Route {
            from,
            to,
            topic: None,
            pattern: None,
            payload,
        });
    }

    /// Send the same `payload` to each of `to` (the bytes are kept once).
    pub fn send_many(&mut self, to: &[ConnId], payload: &[u8]) {
        let from = self.from();
        let payload = self.used().sent.push_bytes(payload);
        for &to in to {
            self.used().sent.routes.push(Route {
                from,
                to,
                topic: None,
                pattern: None,
                payload: payload.clone(),
            });
        }
    }

    /// Publish `payload` to group `topic`: every member gets it (this
    /// connection too, if it is one), then every listener of a matching
    /// pattern, once per matching pattern (as Redis counts). Returns the
    /// number of receivers, on all loops.
    pub fn publish(&mut self, topic: &[u8], payload: &[u8]) -> usize {
        let from = self.from();
        let Some(hub) = self.hub.as_ref() else {
            return 0;
        };
        let sent = &mut self.used.get_or_insert_with(Box::default).sent;
        hub.with_groups(|groups| {
            let before = sent.routes.len();
            let topic_at = sent.push_bytes(topic);
            let payload_at = sent.push_bytes(payload);
            let route = |to, pattern| Route {
                from,
                to,
                topic: Some(topic_at.clone()),
                pattern,
                payload: payload_at.clone(),
            };
            if let Some(members) = groups.exact.get(topic) {
                sent.routes
                    .extend(members.iter().map(|&to| route(to, None)));
            }
            for (pattern, members) in &groups.patterns {
                if members.is_empty() || !glob::matches(pattern, topic) {
                    continue;
                }
                let pattern_at = sent.push_bytes(pattern);
                sent.routes.extend(
                    members
                        .iter()
                        .map(|&to| route(to, Some(pattern_at.clone()))),
                );
            }
            let receivers = sent.routes.len() - before;
            if receivers == 0 {
                sent.bytes.truncate(topic_at.start);
            }
            receivers
        })
    }

    /// The hub and identity, once attached.
    fn attached(&self) -> Option<(&Hub, ConnId)> {
        self.hub.as_deref().map(|hub| (hub, self.me))
    }

    /// Join group `topic`. `false` if already a member.
    pub fn join(&mut self, topic: &[u8]) -> bool {
        if self.topics().iter().any(|t| t == topic) {
            return false;
        }
        self.topics_mut().push(topic.to_vec());
        if let Some((hub, me)) = self.attached() {
            hub.with_groups_mut(|g| g.exact.entry(topic.to_vec()).or_default().push(me));
        }
        true
    }

    /// Leave group `topic`. `false` if not a member.
    pub fn leave(&mut self, topic: &[u8]) -> bool {
        let Some(i) = self.topics().iter().position(|t| t == topic) else {
            return false;
        };
        self.topics_mut().remove(i);
        if let Some((hub, me)) = self.attached() {
            hub.with_groups_mut(|g| g.leave(topic, me));
        }
        true
    }

    /// Listen on every group whose name matches the glob `pattern` (see
    /// [`glob`]). `false` if already listening on it.
    pub fn join_pattern(&mut self, pattern: &[u8]) -> bool {
        if self.patterns().iter().any(|p| p == pattern) {
            return false;
        }
        self.patterns_mut().push(pattern.to_vec());
        if let Some((hub, me)) = self.attached() {
            hub.with_groups_mut(|groups| {
                match groups.patterns.iter_mut().find(|(p, _)| p == pattern) {
                    Some((_, members)) => members.push(me),
                    None => groups.patterns.push((pattern.to_vec(), vec![me])),
                }
            });
        }
        true
    }

    /// Stop listening on `pattern`. `false` if not listening on it.
    pub fn leave_pattern(&mut self, pattern: &[u8]) -> bool {
        let Some(i) = self.patterns().iter().position(|p| p == pattern) else {
            return false;
        };
        self.patterns_mut().remove(i);
        if let Some((hub, me)) = self.attached() {
            hub.with_groups_mut(|g| g.leave_pattern(pattern, me));
        }
        true
    }

    /// The groups joined, in join order.
    pub fn topics(&self) -> &[Vec<u8>] {
        self.used.as_ref().map_or(&[], |u| &u.topics)
    }

    /// The patterns listened on, in join order.
    pub fn patterns(&self) -> &[Vec<u8>] {
        self.used.as_ref().map_or(&[], |u| &u.patterns)
    }

    /// What was sent since the loop last took the outbox: for tests.
    pub fn sent(&self) -> &Outbox {
        self.used.as_ref().map_or(&UNUSED, |u| &u.sent)
    }

    /// Swap the recorded sends with `empty` (the loop's spare outbox), so
    /// both keep their memory. Called by the loop after the connection's turn.
    pub(crate) fn take_sent(&mut self, spare: &mut Outbox) {
        if let Some(used) = self.used.as_mut() {
            std::mem::swap(&mut used.sent, spare);
        }
    }
}

impl Drop for Mailbox {
    /// A closed connection leaves all its groups.
    fn drop(&mut self) {
        let (Some((hub, me)), Some(used)) = (self.attached(), self.used.as_ref()) else {
            return;
        };
        if used.topics.is_empty() && used.patterns.is_empty() {
            return;
        }
        hub.with_groups_mut(|groups| {
            for topic in &used.topics {
                groups.leave(topic, me);
            }
            for pattern in &used.patterns {
                groups.leave_pattern(pattern, me);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_loop_keeps_its_groups_on_its_own_thread_with_no_lock() {
        let (hub, other_hub) = (Hub::new(1), Hub::new(1));
        assert!(hub.shared.is_none(), "one loop: no shared directory");
        assert!(Hub::new(2).shared.is_some(), "several loops share one");
        let mut mailbox = Mailbox::new();
        mailbox.attach(id(0, 1, 1), Arc::clone(&hub));
        mailbox.join(b"news");
        assert_eq!(hub.members(b"news"), 1);
        assert_eq!(other_hub.members(b"news"), 0, "another hub's directory");
        let elsewhere = {
            let hub = Arc::clone(&hub);
            std::thread::spawn(move || hub.members(b"news"))
                .join()
                .expect("thread")
        };
        assert_eq!(elsewhere, 0, "the directory is the loop thread's own");
        drop(mailbox);
        assert_eq!(hub.members(b"news"), 0, "a closed connection leaves");
    }

    fn id(loop_id: usize, key: usize, generation: u64) -> ConnId {
        ConnId {
            loop_id,
            key,
            generation,
        }
    }

    fn attached(hub: &Arc<Hub>, me: ConnId) -> Mailbox {
        let mut mailbox = Mailbox::new();
        mailbox.attach(me, Arc::clone(hub));
        mailbox
    }

    #[test]
    fn an_unused_mailbox_is_small_and_owns_no_heap() {
        let size = std::mem::size_of::<Mailbox>();
        assert!(size <= 40, "Mailbox grew to {size} B");
        let mailbox = Mailbox::new();
        assert!(mailbox.used.is_none() && mailbox.sent().is_empty());
    }

    #[test]
    fn sends_are_recorded_in_order_for_the_loop_to_route() {
        let hub = Hub::new(1);
        let mut a = attached(&hub, id(0, 1, 1));
        a.send(id(0, 2, 2), b"one");
        a.send_many(&[id(0, 3, 3), id(0, 2, 2)], b"two");
        let sent: Vec<_> = a.sent().iter().map(|(to, m)| (to.key, m.payload)).collect();
        assert_eq!(
            sent,
            vec![(2, &b"one"[..]), (3, &b"two"[..]), (2, &b"two"[..])]
        );
        assert!(a.sent().iter().all(|(_, m)| m.from == id(0, 1, 1)));
    }

    #[test]
    fn publish_reaches_members_then_pattern_listeners_on_every_loop() {
        let hub = Hub::new(2);
        let mut sub = attached(&hub, id(0, 1, 1));
        let mut remote = attached(&hub, id(1, 1, 1));
        let mut psub = attached(&hub, id(1, 2, 2));
        assert!(sub.join(b"news"));
        assert!(!sub.join(b"news"));
        assert!(remote.join(b"news"));
        assert!(psub.join_pattern(b"n*"));
        assert!(psub.join_pattern(b"*s"));
        assert!(psub.join_pattern(b"x*"));
        let mut publisher = attached(&hub, id(0, 9, 9));
        assert_eq!(publisher.publish(b"news", b"hi"), 4);
        let got: Vec<_> = publisher
            .sent()
            .iter()
            .map(|(to, m)| (to, m.pattern.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            got,
            vec![
                (id(0, 1, 1), None),
                (id(1, 1, 1), None),
                (id(1, 2, 2), Some(b"n*".to_vec())),
                (id(1, 2, 2), Some(b"*s".to_vec())),
            ]
        );
        assert_eq!(publisher.publish(b"weather", b"sun"), 0);
    }

    #[test]
    fn a_dropped_mailbox_leaves_its_groups() {
        let hub = Hub::new(1);
        let mut sub = attached(&hub, id(0, 1, 1));
        sub.join(b"news");
        sub.join_pattern(b"n*");
        let mut publisher = attached(&hub, id(0, 2, 2));
        assert_eq!(publisher.publish(b"news", b"x"), 2);
        drop(sub);
        assert_eq!(publisher.publish(b"news", b"x"), 0);
        assert_eq!(hub.members(b"news"), 0);
    }

    #[test]
    fn leave_and_leave_pattern_say_whether_they_were_members() {
        let hub = Hub::new(1);
        let mut sub = attached(&hub, id(0, 1, 1));
        assert!(!sub.leave(b"news"));
        sub.join(b"news");
        assert!(sub.leave(b"news"));
        assert!(!sub.leave_pattern(b"*"));
        sub.join_pattern(b"*");
        assert!(sub.leave_pattern(b"*"));
        assert!(sub.topics().is_empty() && sub.patterns().is_empty());
    }

    #[test]
    fn a_batch_for_another_loop_carries_its_own_copy_of_the_bytes() {
        let hub = Hub::new(2);
        let mut a = attached(&hub, id(0, 1, 1));
        a.send(id(1, 5, 5), b"far");
        a.send(id(0, 6, 6), b"near");
        let mut remote = vec![Outbox::default(), Outbox::default()];
        assert!(a.sent().split_remote(0, &mut remote));
        assert!(remote[0].is_empty());
        let far: Vec<_> = remote[1].iter().map(|(to, m)| (to, m.payload)).collect();
        assert_eq!(far, vec![(id(1, 5, 5), &b"far"[..])]);
        let near: Vec<_> = a.sent().local(0).map(|(to, _)| to).collect();
        assert_eq!(near, vec![id(0, 6, 6)]);
    }
}
