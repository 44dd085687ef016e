//! The client's queue bounds (`max_queued_messages`, `max_queued_bytes`): a reservation is taken
//! before a message is queued (or refused with `Error::QueueFull`) and released when its outcome is
//! known, whichever path it takes (PUBACK, failure, withdrawal, shutdown): releasing is `Drop`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

pub(crate) struct Budget {
    max_count: usize,
    max_bytes: usize,
    count: AtomicUsize,
    bytes: AtomicUsize,
}

/// One queued message's share of the budget.
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    pub fn new(max_count: usize, max_bytes: usize) -> Arc<Budget> {
        Arc::new(Budget { max_count, max_bytes, count: AtomicUsize::new(0), bytes: AtomicUsize::new(0) })
    }

    /// Takes room for one message of `bytes`, or says why there is none.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Reservation> {
        let count = self.count.fetch_add(1, Ordering::SeqCst);
        let used = self.bytes.fetch_add(bytes, Ordering::SeqCst);
        let refusal = if count >= self.max_count {
            Some(format!("{count} messages are already queued (max_queued_messages = {})", self.max_count))
        } else if used + bytes > self.max_bytes {
            Some(format!(
                "{used} bytes are already queued and this message needs {bytes} more (max_queued_bytes = {})",
                self.max_bytes
            ))
        } else {
            None
        };
        let r = Reservation { budget: self.clone(), bytes };
        match refusal {
            None => Ok(r),
            Some(why) => Err(Error::QueueFull(why)), // `r` drops here and gives the room back
        }
    }

    #[cfg(test)]
    pub fn used(&self) -> (usize, usize) {
        (self.count.load(Ordering::SeqCst), self.bytes.load(Ordering::SeqCst))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.count.fetch_sub(1, Ordering::SeqCst);
        self.budget.bytes.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_and_bytes_are_both_bounds_and_room_comes_back() {
        let b = Budget::new(2, 100);
        let r1 = b.reserve(40).unwrap();
        let r2 = b.reserve(40).unwrap();
        let e = b.reserve(1).err().expect("count bound");
        assert_eq!(e.kind(), crate::ErrorKind::Client);
        assert!(e.to_string().contains("max_queued_messages"), "{e}");
        drop(r1);
        let e = b.reserve(61).err().expect("bytes bound");
        assert!(e.to_string().contains("max_queued_bytes"), "{e}");
        let r3 = b.reserve(60).unwrap();
        assert_eq!(b.used(), (2, 100));
        drop((r2, r3));
        assert_eq!(b.used(), (0, 0), "refused reservations leave nothing behind");
    }
}
