//! How servers with nothing to run wait for work, and how work that the kernel does not know
//! about reaches them.
//!
//! A server with nothing to run either parks as the group's idle server (one at a time, the
//! *parker*: the kernel wakes it when it queues a woken worker) or sleeps on the `work` event
//! count. Work from elsewhere (a new task, a free worker) wakes a sleeper, or, when no
//! sleeper was actually woken, rings the *bell* (shutdown wakes every sleeper and rings it): the waker thread, a UMCG server of its own,
//! then makes the parker RUNNING (only a server can wake a server). A server that has taken a
//! ticket of `work` but is still looking for work counts as a waiter without sleeping, and may
//! find other work and never sleep: a wake-up that only reaches it would be lost, so it does
//! not spare the parker its bell.

use crate::sync::EventCount;
#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::atomic::Ordering::SeqCst;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, AtomicUsize};

/// As [`crate::sync::handshake_load_u32`]: the spawner's look at the parker, after it queued
/// work, pairs with the parker's look for work after it became the parker.
fn handshake_load_usize(a: &AtomicUsize) -> usize {
    #[cfg(loom)]
    return a.fetch_add(0, SeqCst);
    #[cfg(not(loom))]
    a.load(SeqCst)
}

pub(crate) struct Doorbell {
    /// Idle servers but the parker sleep here.
    work: EventCount,
    /// The server (index + 1) parked as the group's idle server, 0 if none.
    parker: AtomicUsize,
    /// The waker's doorbell, and whether it was rung.
    bell: EventCount,
    rung: AtomicBool,
}

impl Doorbell {
    pub(crate) fn new() -> Self {
        Doorbell {
            work: EventCount::default(),
            parker: AtomicUsize::new(0),
            bell: EventCount::default(),
            rung: AtomicBool::new(false),
        }
    }

    /// The index of the server that holds the parking (it may still be on its way to sleep).
    pub(crate) fn parker(&self) -> Option<usize> {
        // The waker retries until the parker sleeps or is gone: it must see it go.
        handshake_load_usize(&self.parker).checked_sub(1)
    }

    /// Whether a server has nothing to run, or seems to (one that is looking for work counts).
    pub(crate) fn server_idle(&self) -> bool {
        self.work.has_waiters() || self.parker.load(SeqCst) != 0
    }

    /// Wakes a server with nothing to run (all of them with `all`): a sleeper, and the parker
    /// through the waker unless a sleeper was actually woken.
    pub(crate) fn wake_servers(&self, all: bool) {
        let woke = if all {
            self.work.notify_all();
            false
        } else {
            self.work.notify_one()
        };
        if handshake_load_usize(&self.parker) != 0 && (all || !woke) {
            self.ring();
        }
    }

    /// Rings the waker's bell.
    pub(crate) fn ring(&self) {
        // An exchange, as the waker's: a read-modify-write pairs with a read-modify-write
        // under any model of the memory (loom's included).
        self.rung.swap(true, SeqCst);
        self.bell.notify_one();
    }

    /// Gives up being the parked server: another idle server, if any, takes over (the kernel
    /// wakes nobody while no server is parked).
    fn leave_parking(&self) {
        // An exchange, not a store: the waker's and the spawners' reads of `parker` are
        // read-modify-writes under loom, which pair with read-modify-writes only.
        self.parker.swap(0, SeqCst);
        if self.work.has_waiters() {
            self.work.notify_one();
        }
    }

    /// What the server `idx` runs next, from `pick`: with nothing to pick, the first idle
    /// server parks (`park`, which returns when the server was made RUNNING), the others sleep
    /// on `work`, and the parker, once woken, wakes one of them to take its place.
    pub(crate) fn next<R>(
        &self,
        idx: usize,
        mut pick: impl FnMut() -> Option<R>,
        mut park: impl FnMut(),
    ) -> R {
        loop {
            let ticket = self.work.prepare();
            if let Some(next) = pick() {
                self.work.cancel();
                return next;
            }
            if self
                .parker
                .compare_exchange(0, idx + 1, SeqCst, SeqCst)
                .is_ok()
            {
                self.work.cancel();
                // Work that came before this server was the parker has woken nobody: look
                // again now that spawners see it.
                if let Some(next) = pick() {
                    self.leave_parking();
                    return next;
                }
                park();
                self.leave_parking();
                continue;
            }
            self.work.wait(ticket, None);
        }
    }

    /// The waker's wait: `true` when the bell was rung, `false` once `done` says that nobody
    /// will ring any more.
    pub(crate) fn wait_for_ring(&self, done: impl Fn() -> bool) -> bool {
        loop {
            let ticket = self.bell.prepare();
            if self.rung.swap(false, SeqCst) {
                self.bell.cancel();
                return true;
            }
            if done() {
                self.bell.cancel();
                return false;
            }
            self.bell.wait(ticket, None);
        }
    }
}

/// A model check of the hand-over with loom (`RUSTFLAGS="--cfg loom" cargo test -p
/// umcg-runtime --lib loom`): two servers look for work through [`Doorbell::next`], the
/// second of which first finds a piece of work of its own (a worker to resume) that the other
/// cannot take and then looks again; a spawner queues two tasks, waking a server for each;
/// a waker makes the parker RUNNING when rung. A server with nothing to run parks or sleeps on
/// `work`. In every interleaving up to the preemption bound, both tasks run: no server stays
/// parked or asleep with one queued (loom reports a deadlock otherwise). It fails with the
/// wake-up that a server looking for work took for a sleeper's (the bell rung only when no
/// server counted as waiting), and without the parker's second look for work.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::{Arc, Condvar, Mutex};

    /// A server's park: IDLE until the waker makes it RUNNING (which it can only do once the
    /// server is IDLE, as `Server::wake`).
    #[derive(Default)]
    struct Parking {
        idle: [AtomicBool; 2],
        woken: Mutex<[bool; 2]>,
        cv: Condvar,
    }

    impl Parking {
        fn park(&self, idx: usize) {
            self.idle[idx].store(true, SeqCst);
            let mut woken = self.woken.lock().unwrap();
            while !woken[idx] {
                woken = self.cv.wait(woken).unwrap();
            }
            woken[idx] = false;
        }

        /// The waker's `wake_parker()`: the parker, once it is IDLE; nothing if none parks.
        fn wake_parker(&self, bell: &Doorbell) {
            loop {
                let Some(idx) = bell.parker() else {
                    return;
                };
                if self.idle[idx]
                    .compare_exchange(true, false, SeqCst, SeqCst)
                    .is_ok()
                {
                    self.woken.lock().unwrap()[idx] = true;
                    self.cv.notify_all();
                    return;
                }
                loom::thread::yield_now();
            }
        }
    }

    #[test]
    fn loom_a_queued_task_reaches_a_server() {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(2);
        }
        // The waker retries while the parker is on its way to sleep.
        builder.max_branches = builder.max_branches.max(100_000);
        builder.check(|| {
            let bell = Arc::new(Doorbell::new());
            let parking = Arc::new(Parking::default());
            let tasks = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            // One task off the shared queue. Read-modify-writes only, as the runtime's take of
            // new tasks (an exchange): loom models sequentially consistent loads as acquire
            // loads, which these do not depend on.
            let take = |tasks: &AtomicUsize| {
                let mut n = tasks.fetch_add(0, SeqCst);
                while n > 0 {
                    match tasks.compare_exchange(n, n - 1, SeqCst, SeqCst) {
                        Ok(_) => return Some("task"),
                        Err(now) => n = now,
                    }
                }
                None
            };

            let (b, p, s) = (bell.clone(), parking.clone(), stop.clone());
            let waker = loom::thread::spawn(move || {
                while b.wait_for_ring(|| s.load(SeqCst)) {
                    p.wake_parker(&b);
                }
            });
            let (b, p, t) = (bell.clone(), parking.clone(), tasks.clone());
            let first = loom::thread::spawn(move || b.next(0, || take(&t), || p.park(0)));
            let (b, p, t) = (bell.clone(), parking.clone(), tasks.clone());
            let second = loom::thread::spawn(move || {
                let mut resume = Some("own");
                let own = b.next(1, || resume.take().or_else(|| take(&t)), || p.park(1));
                // Then it looks for work like the other one: it may sleep on `work`, or park.
                [own, b.next(1, || take(&t), || p.park(1))]
            });

            for _ in 0..2 {
                tasks.fetch_add(1, SeqCst);
                bell.wake_servers(false);
            }

            assert_eq!(first.join().unwrap(), "task");
            assert_eq!(second.join().unwrap(), ["own", "task"]);
            stop.store(true, SeqCst);
            bell.ring();
            waker.join().unwrap();
        });
    }
}
