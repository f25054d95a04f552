//! A ring of time slots shared by the windowed histogram and ratio.
//!
//! Slot `i` holds the data of epoch `e` (an epoch is one slot length of time since the ring was built) with
//! `e % slots == i`. Writers reset a slot lazily when they find it holding an older epoch, so nothing ever
//! allocates after construction and no background task is needed. Each slot has its own mutex: a writer
//! touches one slot, a reader walks them one at a time, so a reader never stalls writers for a whole scan.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// What a slot holds; `reset` empties it for reuse by a newer epoch.
pub(super) trait SlotData {
    fn reset(&mut self);
}

#[derive(Debug)]
struct Slot<T> {
    epoch: u64,
    data: T,
}

#[derive(Debug)]
pub(super) struct Ring<T> {
    origin: Instant,
    slot_nanos: u64,
    slots: Box<[Mutex<Slot<T>>]>,
}

impl<T: SlotData> Ring<T> {
    /// `window` is split into `slots` equal slots (at least one, each at least 1 ms long).
    pub(super) fn new(window: Duration, slots: usize, mut make: impl FnMut() -> T) -> Self {
        let slots = slots.max(1);
        let window_nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let slot_nanos = (window_nanos / slots as u64).max(1_000_000);
        let slots = (0..slots)
            // Epoch u64::MAX marks a slot that has never been written: no live epoch reaches it.
            .map(|_| {
                Mutex::new(Slot {
                    epoch: u64::MAX,
                    data: make(),
                })
            })
            .collect();
        Self {
            origin: Instant::now(),
            slot_nanos,
            slots,
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let since = u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        since / self.slot_nanos
    }

    fn lock(slot: &Mutex<Slot<T>>) -> MutexGuard<'_, Slot<T>> {
        // A panic while holding a slot cannot leave counters in a state worse than slightly off.
        slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `write` on the slot for `now`, resetting it first if it holds an older epoch.
    pub(super) fn write(&self, now: Instant, write: impl FnOnce(&mut T)) {
        let epoch = self.epoch(now);
        let index = (epoch % self.slots.len() as u64) as usize;
        let mut slot = Self::lock(&self.slots[index]);
        if slot.epoch != epoch {
            if slot.epoch != u64::MAX && slot.epoch > epoch {
                // A late writer (a `now` taken before a newer epoch reused this slot): its sample belongs to
                // a slot that no longer exists; dropping it is cheaper than keeping history.
                return;
            }
            slot.data.reset();
            slot.epoch = epoch;
        }
        write(&mut slot.data);
    }

    /// Calls `read` on every slot whose epoch lies inside the window ending at `now`.
    pub(super) fn read(&self, now: Instant, mut read: impl FnMut(&T)) {
        let current = self.epoch(now);
        let oldest = current.saturating_sub(self.slots.len() as u64 - 1);
        for slot in self.slots.iter() {
            let slot = Self::lock(slot);
            if slot.epoch != u64::MAX && (oldest..=current).contains(&slot.epoch) {
                read(&slot.data);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Visits every slot's data, live or not (tests check that storage stays fixed).
    #[cfg(test)]
    pub(super) fn for_each_slot(&self, mut visit: impl FnMut(&T)) {
        for slot in self.slots.iter() {
            visit(&Self::lock(slot).data);
        }
    }
}
