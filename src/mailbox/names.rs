//! A set of group names kept in the order they were added: what one
//! mailbox has joined, and the pattern list of the directory. Adding,
//! removing and looking one up cost O(log n) whatever the set's size, so
//! subscribing to n channels costs O(n log n), not O(n²).

use std::collections::{BTreeMap, HashMap};

/// Names in insertion order, each at most once.
#[derive(Debug, Default)]
pub(crate) struct Names {
    /// Name → its position in `order`.
    index: HashMap<Vec<u8>, u64>,
    /// Position → name: iterated in insertion order.
    order: BTreeMap<u64, Vec<u8>>,
    /// The next position to hand out (positions are never reused).
    next: u64,
}

impl Names {
    /// How many names.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `name` is in the set.
    pub(crate) fn contains(&self, name: &[u8]) -> bool {
        self.index.contains_key(name)
    }

    /// Add `name` at the end. `false` (and nothing changes) if it is in already.
    pub(crate) fn insert(&mut self, name: &[u8]) -> bool {
        if self.index.contains_key(name) {
            return false;
        }
        let at = self.next;
        self.next += 1;
        self.index.insert(name.to_vec(), at);
        self.order.insert(at, name.to_vec());
        true
    }

    /// Remove `name`. `false` if it was not in the set.
    pub(crate) fn remove(&mut self, name: &[u8]) -> bool {
        match self.index.remove(name) {
            Some(at) => {
                self.order.remove(&at);
                true
            }
            None => false,
        }
    }

    /// The oldest name.
    pub(crate) fn first(&self) -> Option<&[u8]> {
        self.order.values().next().map(Vec::as_slice)
    }

    /// The names, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.order.values().map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::Names;

    #[test]
    fn names_keep_their_first_insertion_order_and_appear_once() {
        let mut names = Names::default();
        assert!(names.insert(b"b"));
        assert!(names.insert(b"a"));
        assert!(!names.insert(b"b"));
        assert!(names.insert(b"c"));
        assert!(names.remove(b"a"));
        assert!(!names.remove(b"a"));
        assert!(names.insert(b"a"));
        let order: Vec<&[u8]> = names.iter().collect();
        assert_eq!(order, [&b"b"[..], b"c", b"a"]);
        assert_eq!(names.first(), Some(&b"b"[..]));
        assert_eq!(names.len(), 3);
        assert!(names.contains(b"c") && !names.contains(b"d"));
    }

    #[test]
    fn a_hundred_thousand_names_come_and_go_in_order() {
        let mut names = Names::default();
        let n = 100_000u32;
        for i in 0..n {
            assert!(names.insert(&i.to_be_bytes()));
        }
        assert_eq!(names.len(), n as usize);
        for i in 0..n {
            assert_eq!(names.first(), Some(&i.to_be_bytes()[..]));
            assert!(names.remove(&i.to_be_bytes()));
        }
        assert!(names.is_empty());
    }
}
