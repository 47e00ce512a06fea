//! Lock-free pieces that workers use to talk to servers.
//!
//! A worker may be stopped at any instruction (it blocks, faults, or is preempted) and then
//! waits for a server to run it again. So a worker must never hold a lock that a server or the
//! reactor needs: everything a worker hands to the scheduler goes through these.

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering::SeqCst};

/// A multi-producer stack that the consumer empties at once: workers and other threads push,
/// servers take everything.
#[derive(Debug)]
pub(crate) struct Injector<T> {
    head: AtomicPtr<Node<T>>,
}

#[derive(Debug)]
struct Node<T> {
    value: T,
    next: *mut Node<T>,
}

// SAFETY: values move between threads through the stack; nodes are owned by it.
unsafe impl<T: Send> Send for Injector<T> {}
// SAFETY: as above; every access to a node is by its single owner of the moment.
unsafe impl<T: Send> Sync for Injector<T> {}

impl<T> Injector<T> {
    pub(crate) fn new() -> Self {
        Injector {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    pub(crate) fn push(&self, value: T) {
        let node = Box::into_raw(Box::new(Node {
            value,
            next: ptr::null_mut(),
        }));
        let mut head = self.head.load(SeqCst);
        loop {
            // SAFETY: the node is ours until the exchange publishes it.
            unsafe { (*node).next = head };
            match self.head.compare_exchange(head, node, SeqCst, SeqCst) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.load(SeqCst).is_null()
    }

    /// Everything pushed so far, oldest first.
    pub(crate) fn take_all(&self, mut f: impl FnMut(T)) {
        let mut node = self.head.swap(ptr::null_mut(), SeqCst);
        let mut reversed: *mut Node<T> = ptr::null_mut();
        while !node.is_null() {
            // SAFETY: the exchange made the whole chain ours.
            let next = unsafe { (*node).next };
            // SAFETY: as above.
            unsafe { (*node).next = reversed };
            reversed = node;
            node = next;
        }
        while !reversed.is_null() {
            // SAFETY: each node was made by `Box::into_raw` and is visited once.
            let b = unsafe { Box::from_raw(reversed) };
            reversed = b.next;
            f(b.value);
        }
    }
}

impl<T> Drop for Injector<T> {
    fn drop(&mut self) {
        self.take_all(drop);
    }
}

/// An event count on a futex: `prepare()` returns a ticket, `wait(ticket)` sleeps only if no
/// `notify` happened since. Notifying takes no lock, so workers may do it.
#[derive(Debug, Default)]
pub(crate) struct EventCount {
    seq: AtomicU32,
    waiters: AtomicU32,
}

impl EventCount {
    pub(crate) fn prepare(&self) -> u32 {
        self.waiters.fetch_add(1, SeqCst);
        self.seq.load(SeqCst)
    }

    pub(crate) fn cancel(&self) {
        self.waiters.fetch_sub(1, SeqCst);
    }

    pub(crate) fn wait(&self, ticket: u32, timeout: Option<std::time::Duration>) {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: the futex word and the timeout live across the call.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.seq.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                ticket,
                tsp,
            )
        };
        self.waiters.fetch_sub(1, SeqCst);
    }

    fn wake(&self, n: i32) {
        self.seq.fetch_add(1, SeqCst);
        if self.waiters.load(SeqCst) == 0 {
            return;
        }
        // SAFETY: the futex word lives across the call.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.seq.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                n,
            )
        };
    }

    pub(crate) fn notify_one(&self) {
        self.wake(1)
    }

    pub(crate) fn notify_all(&self) {
        self.wake(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn injector_is_fifo_and_loses_nothing() {
        let inj = Arc::new(Injector::new());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let inj = inj.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        inj.push(t * 1000 + i);
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 4000 {
            inj.take_all(|v| got.push(v));
        }
        for t in threads {
            t.join().unwrap();
        }
        inj.take_all(|v| got.push(v));
        assert_eq!(got.len(), 4000);
        for t in 0..4 {
            let mine: Vec<u64> = got.iter().copied().filter(|v| v / 1000 == t).collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "per-producer order kept"
            );
        }
        assert!(inj.is_empty());
    }

    #[test]
    fn event_count_wakes_a_waiter_and_never_misses() {
        let ec = Arc::new(EventCount::default());
        for _ in 0..200 {
            let ticket = ec.prepare();
            let e2 = ec.clone();
            let t = std::thread::spawn(move || e2.notify_one());
            // Whether the notify came before or after, this returns.
            ec.wait(ticket, Some(std::time::Duration::from_secs(10)));
            t.join().unwrap();
        }
    }
}
