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
//!   (a topic), or a glob pattern of groups, and
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
//! * **Members at delivery.** A publication is recorded as one entry per
//!   loop that has receivers ([`To::Members`]) with the directory's join
//!   clock; the loop delivering it looks its receivers up then: members
//!   that joined before it was published and are still members. So a
//!   message crosses to another loop once however many subscribers are
//!   there, a connection that left the group before delivery does not get
//!   it, and one that joined after the publication does not either (the
//!   connection checks [`Mailbox::accepts`] too).
//! * **Bounded per loop, with backpressure.** Each loop's queue holds at
//!   most `LOOP_QUEUE_BYTES` (16 MiB) and `LOOP_QUEUE` batches. A loop
//!   whose batch does not fit keeps it, stops reading the connections that
//!   send more, and posts it when the receiving loop has taken half of
//!   what waited (it wakes the sender): publishers slow to the pace of the
//!   slowest loop, and nothing is dropped for lack of bytes. A full count
//!   of batches (a loop that stopped taking them) still drops the batch
//!   and counts it in [`Stats::messages_dropped`](crate::base::counters::Stats).
//!
//! # Costs
//! A protocol that does not message returns `None` from `mailbox()` (the
//! default): the connection checks nothing else, and the echo fast path is
//! unchanged. The group directory is the hub's, behind an `RwLock`:
//! `join`/`leave` take it for writing, `publish` and delivery for reading
//! (with one loop it is never contended: one atomic operation). Joining or
//! leaving costs a hash lookup, whatever the number of groups a connection
//! is in. Sending by id never takes a lock.
//!
//! [`Limits::slow_consumer_limit`]: crate::base::limits::Limits::slow_consumer_limit

pub mod glob;
mod names;

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use mio::Waker;

use names::Names;

/// How many batches each loop's queue holds. A batch is everything one
/// loop routed to another in one turn.
pub(crate) const LOOP_QUEUE: usize = 4096;

/// Most bytes queued for one loop by the others (payloads, names and
/// routes). Past it a sending loop keeps its batch and stops reading the
/// connections that sent into it until the receiving loop has taken half
/// of what waits (backpressure: publishers slow to the pace of the
/// slowest loop, and nothing is dropped); without this bound the batches
/// waiting for a loop that falls behind would be the process's memory.
pub(crate) const LOOP_QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// Why `Hub::post` refused a batch (which it hands back).
#[derive(Debug)]
#[non_exhaustive]
pub enum Refused {
    /// The queue holds `LOOP_QUEUE_BYTES`: keep the batch, post it again
    /// once the loop has caught up (it wakes the sender).
    Heavy(Box<Outbox>),
    /// The queue holds `LOOP_QUEUE` batches, or the loop is gone: the
    /// batch is dropped.
    Full(Box<Outbox>),
}

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
    pub(crate) const NOBODY: ConnId = ConnId {
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

/// Who a recorded message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum To {
    /// One connection, by id.
    Conn(ConnId),
    /// A publication: the members of its topic (and the listeners of the
    /// patterns it matches) on loop `loop_id`, found in the directory when
    /// that loop delivers it. One entry per loop, however many receivers:
    /// a message crosses to another loop once, and reaches exactly those
    /// that are members when it is delivered.
    Members {
        /// The loop whose members get it.
        loop_id: usize,
    },
}

impl To {
    /// The loop that delivers it.
    pub fn loop_id(self) -> usize {
        match self {
            To::Conn(id) => id.loop_id,
            To::Members { loop_id } => loop_id,
        }
    }
}

/// Where one recorded message goes; its bytes are ranges of the arena.
#[derive(Clone, Debug)]
struct Route {
    from: ConnId,
    to: To,
    /// For a publication: the directory's clock when it was published
    /// (members that joined later do not get it). 0 for a send by id.
    as_of: u64,
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
    /// While a batch is gathered from another outbox: the last payload,
    /// topic and pattern copied in (their ranges there and here), so a
    /// message published to many receivers on one loop travels once.
    copied: Option<Copied>,
}

/// Ranges in the outbox copied from and ranges in the batch copied to.
#[derive(Clone, Debug, Default)]
struct Copied {
    payload: (Range<usize>, Range<usize>),
    topic: Option<(Range<usize>, Range<usize>)>,
    pattern: Option<(Range<usize>, Range<usize>)>,
}

impl Outbox {
    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// How many messages (receiver or loop's members, bytes) are recorded.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Forget everything recorded, keeping the memory for reuse.
    pub fn clear(&mut self) {
        self.routes.clear();
        self.bytes.clear();
        self.copied = None;
    }

    /// What it weighs in a queue between loops: its bytes and its routes.
    pub(crate) fn weight(&self) -> usize {
        self.bytes.len() + self.routes.len() * std::mem::size_of::<Route>()
    }

    /// The recorded messages in order: who each is for, and what it says.
    pub fn iter(&self) -> impl Iterator<Item = (To, Message<'_>)> + '_ {
        self.routes.iter().map(move |r| (r.to, self.message(r)))
    }

    /// Like [`Outbox::iter`], with each publication's directory clock (see
    /// [`Hub::receivers`]).
    pub(crate) fn iter_with_clock(&self) -> impl Iterator<Item = (To, u64, Message<'_>)> + '_ {
        self.routes
            .iter()
            .map(move |r| (r.to, r.as_of, self.message(r)))
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
    /// Bytes shared with the message copied just before (one publish's
    /// payload, topic and pattern, to several receivers) are copied once.
    fn copy_from(&mut self, other: &Outbox, i: usize) {
        let r = &other.routes[i];
        let mut copied = self.copied.take().unwrap_or_default();
        let copy = |this: &mut Outbox,
                    src: &Range<usize>,
                    last: &mut Option<(Range<usize>, Range<usize>)>| {
            match last {
                Some((from, to)) if from == src => to.clone(),
                _ => {
                    let to = this.push_bytes(&other.bytes[src.clone()]);
                    *last = Some((src.clone(), to.clone()));
                    to
                }
            }
        };
        let topic = r.topic.as_ref().map(|t| copy(self, t, &mut copied.topic));
        let pattern = r
            .pattern
            .as_ref()
            .map(|p| copy(self, p, &mut copied.pattern));
        let mut last_payload = Some(copied.payload.clone()).filter(|(from, _)| !from.is_empty());
        let payload = copy(self, &r.payload, &mut last_payload);
        copied.payload = last_payload.unwrap_or_default();
        self.copied = Some(copied);
        self.routes.push(Route {
            from: r.from,
            to: r.to,
            as_of: r.as_of,
            topic,
            pattern,
            payload,
        });
    }

    /// Copy the messages for other loops into `remote[loop]`; what stays
    /// is for `here`. Says whether any message is for `here`, and whether
    /// any went to another loop.
    pub(crate) fn split_remote(&self, here: usize, remote: &mut [Outbox]) -> (bool, bool) {
        let (mut any_local, mut any_remote) = (false, false);
        for (i, r) in self.routes.iter().enumerate() {
            if r.to.loop_id() == here {
                any_local = true;
            } else if let Some(batch) = remote.get_mut(r.to.loop_id()) {
                batch.copy_from(self, i);
                any_remote = true;
            }
        }
        (any_local, any_remote)
    }

    /// The messages for loop `here`.
    pub(crate) fn local<'a>(
        &'a self,
        here: usize,
    ) -> impl Iterator<Item = (To, u64, Message<'a>)> + 'a {
        self.iter_with_clock()
            .filter(move |(to, _, _)| to.loop_id() == here)
    }
}

/// A member of a group, and when it joined: the directory's clock
/// ([`Groups::clock`]) at its join. A publication reaches the members that
/// joined before it was published and are still members when it is
/// delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Member {
    id: ConnId,
    joined: u64,
}

/// The group directory: who is a member of which topic, who listens on
/// which pattern. Members in join order, so receivers are served in that
/// order; patterns in the order they were first listened on.
#[derive(Debug, Default)]
struct Groups {
    exact: HashMap<Vec<u8>, Vec<Member>>,
    patterns: HashMap<Vec<u8>, Vec<Member>>,
    pattern_order: Names,
    /// Counts joins: a publication notes it, and a member that joined
    /// after that does not get it, even if it is a member at delivery.
    clock: u64,
}

impl Groups {
    fn tick(&mut self, id: ConnId) -> Member {
        self.clock += 1;
        Member {
            id,
            joined: self.clock,
        }
    }

    fn join(&mut self, topic: &[u8], me: ConnId) {
        let member = self.tick(me);
        self.exact.entry(topic.to_vec()).or_default().push(member);
    }

    fn leave(&mut self, topic: &[u8], me: ConnId) {
        if let Some(members) = self.exact.get_mut(topic) {
            members.retain(|m| m.id != me);
            if members.is_empty() {
                self.exact.remove(topic);
            }
        }
    }

    fn join_pattern(&mut self, pattern: &[u8], me: ConnId) {
        let member = self.tick(me);
        self.pattern_order.insert(pattern);
        self.patterns
            .entry(pattern.to_vec())
            .or_default()
            .push(member);
    }

    fn leave_pattern(&mut self, pattern: &[u8], me: ConnId) {
        if let Some(members) = self.patterns.get_mut(pattern) {
            members.retain(|m| m.id != me);
            if members.is_empty() {
                self.patterns.remove(pattern);
                self.pattern_order.remove(pattern);
            }
        }
    }

    /// The patterns with their listeners, in the order first listened on.
    fn patterns(&self) -> impl Iterator<Item = (&[u8], &[Member])> + '_ {
        self.pattern_order
            .iter()
            .filter_map(|p| self.patterns.get(p).map(|m| (p, m.as_slice())))
    }
}

/// One loop's door: its queue and its waker.
#[derive(Debug)]
struct Door {
    tx: SyncSender<Outbox>,
    rx: Mutex<Option<Receiver<Outbox>>>,
    waker: OnceLock<Arc<Waker>>,
    /// What the batches in the queue weigh ([`Outbox::weight`]), bounded
    /// by [`LOOP_QUEUE_BYTES`].
    queued: AtomicUsize,
    /// Loops waiting for room in this queue (a bit per loop, the 64
    /// first; loops past them are woken whenever room frees).
    waiting: AtomicU64,
}

/// What every loop of a process shares for messaging: the loops' queues
/// and wakers, and the group directory. Made once per process (one per
/// [`Server`](crate::Server) when it runs alone, one for all the loops a
/// supervisor runs).
///
/// The directory is behind a read-write lock: `publish` and the `PUBSUB`
/// queries read it, joins and leaves write it. With one loop the lock is
/// never contended (one uncontended atomic operation to take it); with
/// several it is what lets `PUBLISH` count every loop's receivers.
#[derive(Debug)]
pub struct Hub {
    doors: Vec<Door>,
    groups: RwLock<Groups>,
}

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
                    queued: AtomicUsize::new(0),
                    waiting: AtomicU64::new(0),
                }
            })
            .collect();
        Arc::new(Self {
            groups: RwLock::default(),
            doors,
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
    /// is full (in batches or in bytes: [`LOOP_QUEUE_BYTES`]) or it is
    /// gone: the batch is dropped by the caller.
    pub(crate) fn post(&self, from: usize, id: usize, batch: Outbox) -> Result<(), Refused> {
        let Some(door) = self.doors.get(id) else {
            return Err(Refused::Full(Box::new(batch)));
        };
        let weight = batch.weight();
        let before = door.queued.fetch_add(weight, Ordering::AcqRel);
        // One batch always fits an empty queue, however heavy it is.
        if before > 0 && before + weight > LOOP_QUEUE_BYTES {
            door.queued.fetch_sub(weight, Ordering::AcqRel);
            door.waiting.fetch_or(
                1u64.checked_shl(from as u32).unwrap_or(u64::MAX),
                Ordering::AcqRel,
            );
            // It may have drained between the two steps: look again.
            if door.queued.load(Ordering::Acquire) <= LOOP_QUEUE_BYTES / 2 {
                self.wake_waiting(door);
            }
            return Err(Refused::Heavy(Box::new(batch)));
        }
        match door.tx.try_send(batch) {
            Ok(()) => {
                if let Some(waker) = door.waker.get() {
                    let _ = waker.wake();
                }
                Ok(())
            }
            Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => {
                door.queued.fetch_sub(weight, Ordering::AcqRel);
                Err(Refused::Full(Box::new(batch)))
            }
        }
    }

    /// Wake the loops waiting for room in `door`'s queue.
    fn wake_waiting(&self, door: &Door) {
        let waiting = door.waiting.swap(0, Ordering::AcqRel);
        for (id, other) in self.doors.iter().enumerate() {
            let bit = 1u64.checked_shl(id as u32).unwrap_or(u64::MAX);
            if waiting & bit != 0 {
                if let Some(waker) = other.waker.get() {
                    let _ = waker.wake();
                }
            }
        }
    }

    /// Loop `id` took `batch` out of its queue: its weight no longer counts.
    pub(crate) fn received(&self, id: usize, batch: &Outbox) {
        if let Some(door) = self.doors.get(id) {
            let weight = batch.weight();
            let before = door.queued.fetch_sub(weight, Ordering::AcqRel);
            if before - weight <= LOOP_QUEUE_BYTES / 2 && door.waiting.load(Ordering::Acquire) != 0
            {
                self.wake_waiting(door);
            }
        }
    }

    /// What the batches queued for loop `id` weigh now.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self, id: usize) -> usize {
        self.doors
            .get(id)
            .map_or(0, |d| d.queued.load(Ordering::Acquire))
    }

    /// Look at the group directory (read lock).
    fn with_groups<R>(&self, f: impl FnOnce(&Groups) -> R) -> R {
        f(&self.groups.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Change the group directory (write lock).
    fn with_groups_mut<R>(&self, f: impl FnOnce(&mut Groups) -> R) -> R {
        f(&mut self.groups.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many connections are members of `topic` itself (patterns not
    /// counted).
    pub(crate) fn members(&self, topic: &[u8]) -> usize {
        self.with_groups(|g| g.exact.get(topic).map_or(0, Vec::len))
    }

    /// The topics with at least one member, optionally only those whose
    /// name matches the glob `pattern` (`PUBSUB CHANNELS`).
    pub(crate) fn topics(&self, pattern: Option<&[u8]>) -> Vec<Vec<u8>> {
        self.with_groups(|g| {
            g.exact
                .keys()
                .filter(|t| pattern.is_none_or(|p| glob::matches(p, t)))
                .cloned()
                .collect()
        })
    }

    /// The receivers of a message published to `topic` that are on loop
    /// `loop_id`, in delivery order: the topic's members, then each
    /// listener of each matching pattern (once per pattern). Written into
    /// `into` (cleared first), with the patterns' names in its arena, so the
    /// directory is not locked while they are delivered to.
    ///
    /// `as_of` is the directory's clock when the message was published: a
    /// member that joined after that does not get it (a `SUBSCRIBE` read
    /// after a `PUBLISH` never receives that message, as in redis).
    pub fn receivers(&self, topic: &[u8], loop_id: usize, as_of: u64, into: &mut Receivers) {
        into.clear();
        let ours = |m: &&Member| m.id.loop_id == loop_id && m.joined <= as_of;
        self.with_groups(|groups| {
            if let Some(members) = groups.exact.get(topic) {
                into.list
                    .extend(members.iter().filter(ours).map(|m| (m.id, None)));
            }
            for (pattern, members) in groups.patterns() {
                if !members.iter().any(|m| ours(&m)) || !glob::matches(pattern, topic) {
                    continue;
                }
                let at = into.names.len()..into.names.len() + pattern.len();
                into.names.extend_from_slice(pattern);
                into.list.extend(
                    members
                        .iter()
                        .filter(ours)
                        .map(|m| (m.id, Some(at.clone()))),
                );
            }
        });
    }

    /// The directory's clock now (see [`Hub::receivers`]).
    pub fn clock(&self) -> u64 {
        self.with_groups(|g| g.clock)
    }

    /// How many distinct patterns are listened on (`PUBSUB NUMPAT`).
    pub(crate) fn pattern_count(&self) -> usize {
        self.with_groups(|g| g.patterns.len())
    }
}

/// The receivers of one publication on one loop (see [`Hub::receivers`]):
/// kept by the loop and reused, so delivering allocates nothing once warm.
#[derive(Debug, Default)]
pub struct Receivers {
    list: Vec<(ConnId, Option<Range<usize>>)>,
    names: Vec<u8>,
}

impl Receivers {
    fn clear(&mut self) {
        self.list.clear();
        self.names.clear();
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Receiver `i` and the pattern it gets the message through (`None`:
    /// a member of the topic itself).
    pub fn get(&self, i: usize) -> Option<(ConnId, Option<&[u8]>)> {
        let (id, pattern) = self.list.get(i)?;
        Some((*id, pattern.clone().map(|p| &self.names[p])))
    }
}

/// A protocol's messaging handle: its identity, its sends, its groups.
///
/// Made detached with [`Mailbox::new`] in the protocol's constructor;
/// the loop attaches it when the connection opens. Detached, it has no
/// identity and no hub: sends to a connection are recorded, groups joined
/// are remembered, publications reach nobody. See the module docs for the
/// guarantees once attached.
///
/// Small while unused (40 B, no heap): what it sends and the groups it is
/// in are allocated on first use.
///
/// A chat room in a few lines: every line a member types goes to the
/// room; what the room says is written to the member's peer as it is
/// (the default [`Protocol::on_message`](crate::Protocol::on_message)).
///
/// ```
/// use std::time::Instant;
/// use tcp_reactor::mailbox::{Hub, To};
/// use tcp_reactor::{ConnId, Decision, Mailbox, Output, Protocol, Step};
///
/// struct Member {
///     mailbox: Mailbox,
/// }
///
/// impl Protocol for Member {
///     const NAME: &'static str = "room";
///
///     fn mailbox(&mut self) -> Option<&mut Mailbox> {
///         Some(&mut self.mailbox)
///     }
///
///     fn on_open(&mut self, _out: &mut Output) {
///         self.mailbox.join(b"room");
///     }
///
///     fn on_input(&mut self, _now: Instant, input: &[u8], _out: &mut Output) -> Step {
///         let line = input.iter().position(|&b| b == b'\n').map_or(0, |end| end + 1);
///         if line > 0 {
///             self.mailbox.publish(b"room", &input[..line]);
///         }
///         Step { consumed: line, decision: Decision::Continue }
///     }
/// }
///
/// // Sans-IO: attached to a hub of its own, a mailbox records what it
/// // sends; in a server the loop attaches it and routes what it sent.
/// let mut member = Member { mailbox: Mailbox::new() };
/// let me = ConnId { loop_id: 0, key: 1, generation: 1 };
/// member.mailbox.attach(me, Hub::new(1));
/// member.on_open(&mut Output::new());
/// member.on_input(Instant::now(), b"hi all\n", &mut Output::new());
/// let (to, message) = member.mailbox.sent().iter().next().unwrap();
/// assert_eq!(to, To::Members { loop_id: 0 }); // the room's members on loop 0
/// assert_eq!((message.topic, message.payload), (Some(&b"room"[..]), &b"hi all\n"[..]));
/// ```
///
/// `examples/chat.rs` is the whole program, with names and notices.
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
    topics: Names,
    patterns: Names,
}

/// What an unused mailbox reads as.
static UNUSED: Outbox = Outbox {
    routes: Vec::new(),
    bytes: Vec::new(),
    copied: None,
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
            to: To::Conn(to),
            as_of: 0,
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
                to: To::Conn(to),
                as_of: 0,
                topic: None,
                pattern: None,
                payload: payload.clone(),
            });
        }
    }

    /// Publish `payload` to group `topic`: every member gets it (this
    /// connection too, if it is one), then every listener of a matching
    /// pattern, once per matching pattern (as Redis counts). Returns the
    /// number of receivers now, on all loops.
    ///
    /// What is recorded is one entry per loop with receivers: each loop
    /// looks its receivers up when it delivers (see [`To::Members`]), so a
    /// connection that left the group by then does not get the message,
    /// and the bytes cross to another loop once.
    pub fn publish(&mut self, topic: &[u8], payload: &[u8]) -> usize {
        let from = self.from();
        let Some(hub) = self.hub.as_ref() else {
            return 0;
        };
        let loops = hub.loops();
        let sent = &mut self.used.get_or_insert_with(Box::default).sent;
        let mut on_loop = [false; 64];
        let mut beyond: Vec<usize> = Vec::new(); // loops past the 64th, rare
        let (receivers, as_of) = hub.with_groups(|groups| {
            let mut count = 0;
            let mut mark = |m: &Member| {
                match on_loop.get_mut(m.id.loop_id) {
                    Some(seen) => *seen = true,
                    None => beyond.push(m.id.loop_id),
                }
                count += 1;
            };
            if let Some(members) = groups.exact.get(topic) {
                members.iter().for_each(&mut mark);
            }
            for (pattern, members) in groups.patterns() {
                if glob::matches(pattern, topic) {
                    members.iter().for_each(&mut mark);
                }
            }
            (count, groups.clock)
        });
        if receivers == 0 {
            return 0;
        }
        beyond.sort_unstable();
        beyond.dedup();
        let topic_at = sent.push_bytes(topic);
        let payload_at = sent.push_bytes(payload);
        let with_receivers = (0..loops.min(64)).filter(|&l| on_loop[l]).chain(beyond);
        for loop_id in with_receivers {
            sent.routes.push(Route {
                from,
                to: To::Members { loop_id },
                as_of,
                topic: Some(topic_at.clone()),
                pattern: None,
                payload: payload_at.clone(),
            });
        }
        receivers
    }

    /// The hub and identity, once attached.
    fn attached(&self) -> Option<(&Hub, ConnId)> {
        self.hub.as_deref().map(|hub| (hub, self.me))
    }

    /// Join group `topic`. `false` if already a member.
    pub fn join(&mut self, topic: &[u8]) -> bool {
        if !self.used().topics.insert(topic) {
            return false;
        }
        if let Some((hub, me)) = self.attached() {
            hub.with_groups_mut(|g| g.join(topic, me));
        }
        true
    }

    /// Leave group `topic`. `false` if not a member.
    pub fn leave(&mut self, topic: &[u8]) -> bool {
        if !self.used.as_mut().is_some_and(|u| u.topics.remove(topic)) {
            return false;
        }
        if let Some((hub, me)) = self.attached() {
            hub.with_groups_mut(|g| g.leave(topic, me));
        }
        true
    }

    /// Listen on every group whose name matches the glob `pattern` (see
    /// [`glob`]). `false` if already listening on it.
    pub fn join_pattern(&mut self, pattern: &[u8]) -> bool {
        if !self.used().patterns.insert(pattern) {
            return false;
        }
        if let Some((hub, me)) = self.attached() {
            hub.with_groups_mut(|g| g.join_pattern(pattern, me));
        }
        true
    }

    /// Stop listening on `pattern`. `false` if not listening on it.
    pub fn leave_pattern(&mut self, pattern: &[u8]) -> bool {
        if !self
            .used
            .as_mut()
            .is_some_and(|u| u.patterns.remove(pattern))
        {
            return false;
        }
        if let Some((hub, me)) = self.attached() {
            hub.with_groups_mut(|g| g.leave_pattern(pattern, me));
        }
        true
    }

    /// Whether this connection is a member of group `topic`.
    pub(crate) fn is_member(&self, topic: &[u8]) -> bool {
        self.used.as_ref().is_some_and(|u| u.topics.contains(topic))
    }

    /// Whether this connection listens on `pattern`.
    pub fn listens(&self, pattern: &[u8]) -> bool {
        self.used
            .as_ref()
            .is_some_and(|u| u.patterns.contains(pattern))
    }

    /// Whether `msg` is for this connection now: one sent by id always is;
    /// one published to a group only while this connection is still a
    /// member of it (or still listens on the pattern it matched). The loop
    /// asks at delivery, so a message routed before this connection left a
    /// group, and delivered after, is dropped, not framed.
    pub fn accepts(&self, msg: &Message<'_>) -> bool {
        match (msg.topic, msg.pattern) {
            (None, _) => true,
            (Some(_), Some(pattern)) => self.listens(pattern),
            (Some(topic), None) => self.is_member(topic),
        }
    }

    /// The groups joined, in join order.
    pub fn topics(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.used.iter().flat_map(|u| u.topics.iter())
    }

    /// The patterns listened on, in join order.
    pub fn patterns(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.used.iter().flat_map(|u| u.patterns.iter())
    }

    /// How many groups joined.
    pub(crate) fn topic_count(&self) -> usize {
        self.used.as_ref().map_or(0, |u| u.topics.len())
    }

    /// How many patterns listened on.
    pub(crate) fn pattern_count(&self) -> usize {
        self.used.as_ref().map_or(0, |u| u.patterns.len())
    }

    /// The oldest group joined.
    pub(crate) fn first_topic(&self) -> Option<Vec<u8>> {
        self.used.as_ref()?.topics.first().map(<[u8]>::to_vec)
    }

    /// The oldest pattern listened on.
    pub(crate) fn first_pattern(&self) -> Option<Vec<u8>> {
        self.used.as_ref()?.patterns.first().map(<[u8]>::to_vec)
    }

    /// The process's directory, once attached: who is in which group on
    /// every loop (for `PUBSUB CHANNELS`, `NUMSUB`, `NUMPAT`).
    pub(crate) fn hub(&self) -> Option<&Hub> {
        self.hub.as_deref()
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
            for topic in used.topics.iter() {
                groups.leave(topic, me);
            }
            for pattern in used.patterns.iter() {
                groups.leave_pattern(pattern, me);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hub_has_its_own_directory_and_a_closed_connection_leaves_it() {
        let (hub, other_hub) = (Hub::new(1), Hub::new(1));
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
        assert_eq!(elsewhere, 1, "one directory, whichever thread asks");
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
        let sent: Vec<_> = a.sent().iter().map(|(to, m)| (to, m.payload)).collect();
        assert_eq!(
            sent,
            vec![
                (To::Conn(id(0, 2, 2)), &b"one"[..]),
                (To::Conn(id(0, 3, 3)), &b"two"[..]),
                (To::Conn(id(0, 2, 2)), &b"two"[..])
            ]
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
        // One entry per loop with receivers; each loop looks them up.
        let got: Vec<_> = publisher.sent().iter().map(|(to, _)| to).collect();
        assert_eq!(
            got,
            [To::Members { loop_id: 0 }, To::Members { loop_id: 1 }]
        );
        let mut on = Receivers::default();
        let now = hub.clock();
        hub.receivers(b"news", 1, now, &mut on);
        let receivers: Vec<_> = (0..on.len())
            .filter_map(|i| on.get(i))
            .map(|(to, p)| (to, p.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            receivers,
            vec![
                (id(1, 1, 1), None),
                (id(1, 2, 2), Some(b"n*".to_vec())),
                (id(1, 2, 2), Some(b"*s".to_vec())),
            ]
        );
        hub.receivers(b"news", 0, now, &mut on);
        assert_eq!(on.get(0), Some((id(0, 1, 1), None)));
        assert_eq!(on.len(), 1);
        // A member that joins after a publication does not get it.
        let mut late = attached(&hub, id(0, 3, 3));
        late.join(b"news");
        hub.receivers(b"news", 0, now, &mut on);
        assert_eq!(on.len(), 1, "not the late joiner");
        hub.receivers(b"news", 0, hub.clock(), &mut on);
        assert_eq!(on.len(), 2, "a later publication reaches it");
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
        assert!(sub.topic_count() == 0 && sub.pattern_count() == 0);
    }

    #[test]
    fn a_batch_for_another_loop_carries_its_own_copy_of_the_bytes() {
        let hub = Hub::new(2);
        let mut a = attached(&hub, id(0, 1, 1));
        a.send(id(1, 5, 5), b"far");
        a.send(id(0, 6, 6), b"near");
        let mut remote = vec![Outbox::default(), Outbox::default()];
        assert!(a.sent().split_remote(0, &mut remote).0);
        assert!(remote[0].is_empty());
        let far: Vec<_> = remote[1].iter().map(|(to, m)| (to, m.payload)).collect();
        assert_eq!(far, vec![(To::Conn(id(1, 5, 5)), &b"far"[..])]);
        let near: Vec<_> = a.sent().local(0).map(|(to, _, _)| to).collect();
        assert_eq!(near, vec![To::Conn(id(0, 6, 6))]);
    }

    #[test]
    fn a_publish_to_many_receivers_on_another_loop_crosses_once() {
        let hub = Hub::new(2);
        let mut subs: Vec<Mailbox> = (0..50)
            .map(|k| attached(&hub, id(1, k, k as u64)))
            .collect();
        for sub in &mut subs {
            sub.join(b"news");
        }
        subs[0].join_pattern(b"n*");
        let mut publisher = attached(&hub, id(0, 99, 99));
        let payload = vec![b'x'; 1024];
        assert_eq!(publisher.publish(b"news", &payload), 51);
        let mut remote = vec![Outbox::default(), Outbox::default()];
        assert!(!publisher.sent().split_remote(0, &mut remote).0);
        assert_eq!(remote[1].len(), 1, "one entry for loop 1's 51 receivers");
        assert!(remote[1].weight() < 2 * 1024, "{} B", remote[1].weight());
        let mut on = Receivers::default();
        hub.receivers(b"news", 1, hub.clock(), &mut on);
        assert_eq!(on.len(), 51);
    }

    #[test]
    fn a_loop_s_queue_is_bounded_in_bytes_as_well_as_in_batches() {
        let hub = Hub::new(2);
        let mut sender = attached(&hub, id(0, 1, 1));
        let big = vec![0u8; LOOP_QUEUE_BYTES / 4];
        let mut posted = 0;
        for _ in 0..8 {
            sender.send(id(1, 2, 2), &big);
            let mut batch = Outbox::default();
            sender.take_sent(&mut batch);
            match hub.post(0, 1, batch) {
                Ok(()) => posted += 1,
                Err(Refused::Heavy(kept)) => assert_eq!(kept.len(), 1, "handed back whole"),
                Err(Refused::Full(_)) => panic!("room for batches, not for bytes"),
            }
        }
        assert_eq!(
            posted, 3,
            "a quarter of the bound each: the fourth would pass it"
        );
        assert!(hub.queued_bytes(1) <= LOOP_QUEUE_BYTES);
        let rx = hub.open_door(1, Arc::new(waker())).expect("the door");
        for _ in 0..2 {
            let batch = rx.try_recv().expect("a batch");
            hub.received(1, &batch);
        }
        assert!(hub.queued_bytes(1) <= LOOP_QUEUE_BYTES / 2);
        assert_eq!(
            hub.doors[1].waiting.load(Ordering::Acquire),
            0,
            "loop 0 was woken"
        );
    }

    fn waker() -> Waker {
        let poll = mio::Poll::new().expect("poll");
        Waker::new(poll.registry(), mio::Token(0)).expect("waker")
    }

    #[test]
    fn a_group_message_is_accepted_only_while_the_receiver_is_in_the_group() {
        let hub = Hub::new(1);
        let mut sub = attached(&hub, id(0, 1, 1));
        let msg = |topic: Option<&'static [u8]>, pattern: Option<&'static [u8]>| Message {
            from: id(0, 2, 2),
            topic,
            pattern,
            payload: b"x",
        };
        assert!(sub.accepts(&msg(None, None)), "sent by id");
        assert!(!sub.accepts(&msg(Some(b"news"), None)));
        sub.join(b"news");
        sub.join_pattern(b"n*");
        assert!(sub.accepts(&msg(Some(b"news"), None)));
        assert!(sub.accepts(&msg(Some(b"nope"), Some(b"n*"))));
        sub.leave(b"news");
        sub.leave_pattern(b"n*");
        assert!(!sub.accepts(&msg(Some(b"news"), None)));
        assert!(!sub.accepts(&msg(Some(b"nope"), Some(b"n*"))));
    }

    #[test]
    fn the_directory_answers_pubsub_queries_over_every_loop() {
        let hub = Hub::new(2);
        let mut a = attached(&hub, id(0, 1, 1));
        let mut b = attached(&hub, id(1, 1, 1));
        a.join(b"news");
        b.join(b"news");
        b.join(b"nap");
        a.join_pattern(b"n*");
        b.join_pattern(b"n*");
        b.join_pattern(b"x*");
        let mut topics = hub.topics(None);
        topics.sort();
        assert_eq!(topics, [b"nap".to_vec(), b"news".to_vec()]);
        assert_eq!(hub.topics(Some(b"ne*")), [b"news".to_vec()]);
        assert_eq!(hub.members(b"news"), 2);
        assert_eq!(hub.pattern_count(), 2, "distinct patterns");
    }
}
