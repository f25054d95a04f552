//! A ring of shared records bounded by a count and by an estimate of their heap bytes: the oldest go first.

use std::collections::VecDeque;
use std::sync::Arc;

/// One held record and its sequence number and estimated size.
pub(super) struct Entry<T> {
    pub(super) seq: u64,
    pub(super) bytes: usize,
    pub(super) value: Arc<T>,
}

pub(super) struct Ring<T> {
    entries: VecDeque<Entry<T>>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
    next_seq: u64,
}

/// What a push did, for the caller's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pushed {
    /// Older records removed to make room.
    pub(super) evicted: u64,
    /// Whether the record itself was refused: larger than the whole byte bound.
    pub(super) rejected: bool,
}

impl<T> Ring<T> {
    pub(super) fn new(max_count: usize, max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            max_count: max_count.max(1),
            max_bytes,
            next_seq: 1,
        }
    }

    /// Appends `value`, evicting the oldest records until both bounds hold.
    pub(super) fn push(&mut self, value: T, bytes: usize) -> Pushed {
        if bytes > self.max_bytes {
            return Pushed {
                evicted: 0,
                rejected: true,
            };
        }
        let mut evicted = 0;
        while self.entries.len() >= self.max_count || self.bytes + bytes > self.max_bytes {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.bytes;
            evicted += 1;
        }
        self.entries.push_back(Entry {
            seq: self.next_seq,
            bytes,
            value: Arc::new(value),
        });
        self.next_seq += 1;
        self.bytes += bytes;
        Pushed {
            evicted,
            rejected: false,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Held records, oldest first.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = &Entry<T>> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_bounds_hold_and_the_oldest_go_first() {
        let mut ring = Ring::new(3, 100);
        for i in 0..5 {
            ring.push(i, 10);
        }
        assert_eq!(ring.len(), 3);
        let held: Vec<i32> = ring.iter().map(|e| *e.value).collect();
        assert_eq!(held, [2, 3, 4]);
        assert_eq!(ring.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);

        // 30 held + 90 > 100: the two oldest go, the newest of them stays.
        let pushed = ring.push(9, 90);
        assert_eq!(
            pushed,
            Pushed {
                evicted: 2,
                rejected: false
            }
        );
        assert_eq!((ring.len(), ring.bytes()), (2, 100));
        assert!(ring.push(10, 101).rejected);
        assert_eq!((ring.len(), ring.bytes()), (2, 100));
    }
}
