//! The pieces that workers use to talk to servers, and the run queue of new tasks.
//!
//! A worker may be stopped at any instruction (it blocks, faults, or is preempted) and then
//! waits for a server to run it again. So a worker must never hold a lock that a server needs,
//! and neither may a server wait for the C library's allocator, whose locks a
//! stopped worker may hold: everything a worker hands to the scheduler goes through these, and
//! none of them allocates or frees memory on the server's side.

use crate::Job;
#[cfg(loom)]
use loom::sync::atomic::{AtomicPtr, AtomicU32};
use std::ptr;
use std::sync::atomic::Ordering::SeqCst;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicPtr, AtomicU32};

/// A task that has not run yet. The spawner allocates it, servers only link it (through the
/// [`Injector`] and a [`NewQueue`]) and hand it to a worker, and that worker frees it: no
/// server allocates or frees one.
pub(crate) struct NewTask {
    pub(crate) id: u64,
    /// Its place in the order of readiness, set when a server queues it.
    pub(crate) seq: u64,
    pub(crate) job: Job,
    next: *mut NewTask,
}

impl NewTask {
    pub(crate) fn new(id: u64, job: Job) -> Box<Self> {
        Box::new(NewTask {
            id,
            seq: 0,
            job,
            next: ptr::null_mut(),
        })
    }
}

/// A multi-producer stack of new tasks that a server empties at once: any thread pushes (a
/// compare-and-exchange), a server takes everything into its [`NewQueue`].
#[derive(Debug)]
pub(crate) struct Injector {
    head: AtomicPtr<NewTask>,
}

// SAFETY: the stack owns its nodes (boxes given up by `push()`), whose jobs are `Send`; a node
// is reached only by the thread that pushes it, before it is published, or by the thread whose
// exchange took the whole stack.
unsafe impl Send for Injector {}
// SAFETY: as above.
unsafe impl Sync for Injector {}

impl Injector {
    pub(crate) fn new() -> Self {
        Injector {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    pub(crate) fn push(&self, task: Box<NewTask>) {
        let node = Box::into_raw(task);
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

    /// Moves everything pushed so far to the back of `queue`, oldest first, numbering the tasks
    /// from `*seq` on. Allocates and frees nothing. Returns how many it moved.
    pub(crate) fn take_into(&self, queue: &mut NewQueue, seq: &mut u64) -> usize {
        let mut node = self.head.swap(ptr::null_mut(), SeqCst);
        // The stack is newest first: reverse it.
        let mut reversed: *mut NewTask = ptr::null_mut();
        let mut n = 0;
        while !node.is_null() {
            // SAFETY: the exchange made the whole chain ours; each node came from
            // `Box::into_raw()` in `push()` and is visited once.
            let next = unsafe { (*node).next };
            // SAFETY: as above.
            unsafe { (*node).next = reversed };
            reversed = node;
            node = next;
            n += 1;
        }
        while !reversed.is_null() {
            // SAFETY: as above: ours, from `Box::into_raw()`, taken back once.
            let mut task = unsafe { Box::from_raw(reversed) };
            reversed = task.next;
            *seq += 1;
            task.seq = *seq;
            queue.push(task);
        }
        n
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let mut q = NewQueue::new(false);
        self.take_into(&mut q, &mut 0);
    }
}

/// The servers' queue of new tasks, linked through the tasks themselves: pushing and popping
/// allocate and free nothing. First in, first out, or last in, first out.
pub(crate) struct NewQueue {
    lifo: bool,
    head: *mut NewTask,
    tail: *mut NewTask,
    len: usize,
}

// SAFETY: the queue owns its nodes (boxes given up by `push()`), whose jobs are `Send`.
unsafe impl Send for NewQueue {}

impl NewQueue {
    pub(crate) fn new(lifo: bool) -> Self {
        NewQueue {
            lifo,
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            len: 0,
        }
    }

    #[cfg(test)]
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The readiness number of the task that `pop()` would return.
    pub(crate) fn peek_seq(&self) -> Option<u64> {
        // SAFETY: a non-null head is a node the queue owns.
        (!self.head.is_null()).then(|| unsafe { (*self.head).seq })
    }

    pub(crate) fn push(&mut self, task: Box<NewTask>) {
        let node = Box::into_raw(task);
        // SAFETY: `node` is ours, and `head`/`tail` are null or nodes the queue owns.
        unsafe {
            if self.lifo || self.head.is_null() {
                (*node).next = self.head;
                if self.head.is_null() {
                    self.tail = node;
                }
                self.head = node;
            } else {
                (*node).next = ptr::null_mut();
                (*self.tail).next = node;
                self.tail = node;
            }
        }
        self.len += 1;
    }

    pub(crate) fn pop(&mut self) -> Option<Box<NewTask>> {
        if self.head.is_null() {
            return None;
        }
        // SAFETY: the head is a node the queue owns, from `Box::into_raw()` in `push()`; it
        // leaves the queue here, once.
        let mut task = unsafe { Box::from_raw(self.head) };
        self.head = task.next;
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        task.next = ptr::null_mut();
        self.len -= 1;
        Some(task)
    }
}

impl Drop for NewQueue {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

/// A load that takes part in a store-buffering handshake (each side stores, then loads what
/// the other stored), which needs it sequentially consistent. loom models sequentially
/// consistent loads as acquire loads only, so under loom a read-modify-write that adds 0 (and
/// so reads the latest value) stands in for it; the stores it pairs with are exchanges in every
/// build, since loom lets a read-modify-write read around a plain store.
///
/// This checks the same program as the one that runs only because every atomic access of the
/// runtime is `SeqCst` (its executions are interleavings, in which a load and an added 0 read
/// the same): an access made weaker breaks that, and the model check with it.
pub(crate) fn handshake_load_u32(a: &AtomicU32) -> u32 {
    #[cfg(loom)]
    return a.fetch_add(0, SeqCst);
    #[cfg(not(loom))]
    a.load(SeqCst)
}

/// An event count on a futex: `prepare()` returns a ticket, `wait(ticket)` sleeps only if no
/// `notify` happened since. Notifying takes no lock, so workers may do it.
#[derive(Debug, Default)]
pub(crate) struct EventCount {
    seq: AtomicU32,
    waiters: AtomicU32,
    /// Under loom, a model of the futex's queue.
    #[cfg(loom)]
    futex: loom_futex::Futex,
}

impl EventCount {
    pub(crate) fn prepare(&self) -> u32 {
        self.waiters.fetch_add(1, SeqCst);
        self.seq.load(SeqCst)
    }

    /// Whether a thread is between `prepare()` and the end of its `wait()` (or `cancel()`).
    pub(crate) fn has_waiters(&self) -> bool {
        handshake_load_u32(&self.waiters) != 0
    }

    pub(crate) fn cancel(&self) {
        self.waiters.fetch_sub(1, SeqCst);
    }

    pub(crate) fn wait(&self, ticket: u32, timeout: Option<std::time::Duration>) {
        #[cfg(not(loom))]
        umcg::sys::futex_wait(&self.seq, ticket, timeout);
        #[cfg(loom)]
        self.futex.wait(&self.seq, ticket, timeout);
        self.waiters.fetch_sub(1, SeqCst);
    }

    /// Wakes up to `n` sleepers; returns how many slept and were woken (a waiter that has
    /// not gone to sleep yet sees the notification when it does, but is not counted).
    fn wake(&self, n: i32) -> usize {
        self.seq.fetch_add(1, SeqCst);
        if handshake_load_u32(&self.waiters) == 0 {
            return 0;
        }
        #[cfg(not(loom))]
        return umcg::sys::futex_wake(&self.seq, n);
        #[cfg(loom)]
        self.futex.wake(n)
    }

    /// Wakes one sleeper; returns whether there was one.
    pub(crate) fn notify_one(&self) -> bool {
        self.wake(1) != 0
    }

    pub(crate) fn notify_all(&self) {
        self.wake(i32::MAX);
    }
}

/// A model of a futex for loom: a waiter sleeps only if the word still holds what it expects,
/// and a wake dequeues up to `n` sleepers and says how many (as `FUTEX_WAKE` does).
#[cfg(loom)]
mod loom_futex {
    use loom::sync::atomic::AtomicU32;
    use loom::sync::{Condvar, Mutex};
    use std::sync::atomic::Ordering::SeqCst;

    #[derive(Debug, Default)]
    pub(crate) struct Futex {
        /// Sleepers, and wake-ups given and not yet taken by one.
        queue: Mutex<(usize, usize)>,
        cv: Condvar,
    }

    impl Futex {
        /// The timeout is not modelled: a waiter sleeps until woken.
        pub(crate) fn wait(&self, word: &AtomicU32, expected: u32, _: Option<std::time::Duration>) {
            let mut q = self.queue.lock().unwrap();
            // The kernel compares the word after a full barrier.
            if word.fetch_add(0, SeqCst) != expected {
                return;
            }
            q.0 += 1;
            while q.1 == 0 {
                q = self.cv.wait(q).unwrap();
            }
            q.1 -= 1;
        }

        pub(crate) fn wake(&self, n: i32) -> usize {
            let mut q = self.queue.lock().unwrap();
            let k = q.0.min(usize::try_from(n).unwrap_or(0));
            q.0 -= k;
            q.1 += k;
            drop(q);
            if k > 0 {
                self.cv.notify_all();
            }
            k
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn job() -> Job {
        Box::new(|| {})
    }

    #[test]
    fn injector_is_fifo_and_loses_nothing() {
        let inj = Arc::new(Injector::new());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let inj = inj.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        inj.push(NewTask::new(t * 1000 + i, job()));
                    }
                })
            })
            .collect();
        let mut q = NewQueue::new(false);
        let mut seq = 0;
        while q.len() < 4000 {
            inj.take_into(&mut q, &mut seq);
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(inj.take_into(&mut q, &mut seq), 0);
        assert_eq!(q.len(), 4000);
        let got: Vec<(u64, u64)> = std::iter::from_fn(|| q.pop().map(|t| (t.id, t.seq))).collect();
        assert!(
            got.windows(2).all(|w| w[0].1 + 1 == w[1].1),
            "numbered in order"
        );
        for t in 0..4 {
            let mine: Vec<u64> = got.iter().map(|g| g.0).filter(|v| v / 1000 == t).collect();
            assert_eq!(mine.len(), 1000);
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "per-producer order kept"
            );
        }
        assert!(q.is_empty() && q.pop().is_none());
    }

    #[test]
    fn new_queue_orders() {
        for lifo in [false, true] {
            let mut q = NewQueue::new(lifo);
            for i in 1..=3 {
                let mut t = NewTask::new(i, job());
                t.seq = i;
                q.push(t);
            }
            assert_eq!(q.peek_seq(), Some(if lifo { 3 } else { 1 }));
            let order: Vec<u64> = std::iter::from_fn(|| q.pop().map(|t| t.id)).collect();
            assert_eq!(order, if lifo { [3, 2, 1] } else { [1, 2, 3] });
            // Refilled after being emptied.
            q.push(NewTask::new(9, job()));
            assert_eq!(q.pop().map(|t| t.id), Some(9));
            assert_eq!(q.len(), 0);
        }
        // What is left is freed with the queue.
        let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut q = NewQueue::new(false);
        for _ in 0..3 {
            let d = dropped.clone();
            let guard = Guard(d);
            q.push(NewTask::new(0, Box::new(move || drop(guard))));
        }
        drop(q);
        assert_eq!(dropped.load(SeqCst), 3);
    }

    struct Guard(Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    /// Whether the thread `tid` of this process sleeps (`S` in its `stat`).
    fn sleeping(tid: libc::pid_t) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // The state follows the command name, which is in parentheses.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.starts_with('S')
    }

    /// Starts `n` threads that each wait once (with a long timeout) and waits until all of
    /// them sleep in the futex; each sends how long its wait took.
    fn sleepers(ec: &Arc<EventCount>, n: usize) -> std::sync::mpsc::Receiver<Duration> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (tids_tx, tids_rx) = std::sync::mpsc::channel();
        for _ in 0..n {
            let (ec, tx, tids_tx) = (ec.clone(), tx.clone(), tids_tx.clone());
            std::thread::spawn(move || {
                // SAFETY: gettid() has no preconditions.
                tids_tx.send(unsafe { libc::gettid() }).unwrap();
                let ticket = ec.prepare();
                let start = Instant::now();
                ec.wait(ticket, Some(Duration::from_secs(30)));
                tx.send(start.elapsed()).unwrap();
            });
        }
        let tids: Vec<_> = (0..n).map(|_| tids_rx.recv().unwrap()).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(ec.waiters.load(SeqCst) == n as u32 && tids.iter().all(|&t| sleeping(t))) {
            assert!(Instant::now() < deadline, "the waiters never went to sleep");
            std::thread::sleep(Duration::from_millis(1));
        }
        rx
    }

    #[test]
    fn notify_one_wakes_a_sleeping_waiter() {
        let ec = Arc::new(EventCount::default());
        for _ in 0..5 {
            let rx = sleepers(&ec, 1);
            ec.notify_one();
            // Woken, not timed out (30 s): the wake reached the futex.
            let took = rx.recv_timeout(Duration::from_secs(10)).expect("not woken");
            assert!(took < Duration::from_secs(10), "{took:?}");
        }
    }

    #[test]
    fn notify_all_wakes_every_sleeping_waiter() {
        let ec = Arc::new(EventCount::default());
        let rx = sleepers(&ec, 4);
        ec.notify_all();
        for _ in 0..4 {
            rx.recv_timeout(Duration::from_secs(10)).expect("not woken");
        }
        assert_eq!(ec.waiters.load(SeqCst), 0);
    }

    #[test]
    fn a_notify_between_prepare_and_wait_is_not_missed() {
        let ec = EventCount::default();
        for _ in 0..100 {
            let ticket = ec.prepare();
            ec.notify_one();
            let start = Instant::now();
            ec.wait(ticket, Some(Duration::from_secs(30)));
            assert!(start.elapsed() < Duration::from_secs(10));
        }
        assert_eq!(ec.waiters.load(SeqCst), 0);
    }
}

/// Model checks of the injector with loom (`RUSTFLAGS="--cfg loom" cargo test -p
/// umcg-runtime --lib loom`): every interleaving of two producers and the server that takes
/// the stack, up to a bounded number of preemptions (`LOOM_MAX_PREEMPTIONS`, 3 by default here).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    fn job() -> Job {
        Box::new(|| {})
    }

    #[test]
    fn loom_injector_loses_nothing_and_keeps_each_producers_order() {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(3);
        }
        builder.check(|| {
            let inj = loom::sync::Arc::new(Injector::new());
            let producers: Vec<_> = (0..2u64)
                .map(|p| {
                    let inj = inj.clone();
                    loom::thread::spawn(move || {
                        for i in 0..2 {
                            inj.push(NewTask::new(p * 10 + i, job()));
                        }
                    })
                })
                .collect();
            let mut q = NewQueue::new(false);
            let mut seq = 0;
            // The server takes whatever is there, while the producers push.
            inj.take_into(&mut q, &mut seq);
            for p in producers {
                p.join().unwrap();
            }
            inj.take_into(&mut q, &mut seq);
            let got: Vec<(u64, u64)> =
                std::iter::from_fn(|| q.pop().map(|t| (t.id, t.seq))).collect();
            assert_eq!(got.len(), 4, "{got:?}");
            assert!(got.windows(2).all(|w| w[0].1 + 1 == w[1].1), "{got:?}");
            for p in 0..2 {
                let mine: Vec<u64> = got.iter().map(|g| g.0).filter(|v| v / 10 == p).collect();
                assert_eq!(mine, [p * 10, p * 10 + 1], "{got:?}");
            }
        });
    }
}
