//! A group: one idle-worker list and one idle-server slot, shared by its workers and servers.

use crate::idle::{self, AtomicU64};
use crate::server::Server;
use crate::state::{State, TaskState};
use crate::sys;
use crate::word::TaskCell;
use crate::worker::{Runnable, Worker, WorkerRef};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Reserved values of the user bits (24-31) of a worker's `state`, which this library uses to
/// tell its server why the worker handed the CPU back (the kernel preserves these bits).
pub(crate) mod mark {
    /// The worker yielded to its server: it is not on the idle list.
    pub const YIELDED: u8 = 1;
    /// The worker is unregistering.
    pub const EXITING: u8 = 2;
    /// The worker switched to another worker; whoever it handed its [`Runnable`] runs it.
    ///
    /// [`Runnable`]: crate::Runnable
    pub const SWITCHED: u8 = 3;
    /// The worker was made RUNNING without a server ([`Server::wake_worker`]) and waits for
    /// the kernel to queue it: it must not be preempted.
    ///
    /// [`Server::wake_worker`]: crate::Server::wake_worker
    pub const WOKEN: u8 = 4;
    /// In a server's word: IDLE while the worker it runs has its CPU.
    pub const SERVING: u8 = 5;
    /// In a server's word: IDLE as the group's idle server ([`Group::park`]). The kernel keeps
    /// the mark when it makes the server RUNNING, so the server can tell its wake-up from one
    /// by [`Server::wake`], which clears it.
    ///
    /// [`Group::park`]: crate::Group::park
    /// [`Server::wake`]: crate::Server::wake
    pub const PARKED: u8 = 6;
}

pub(crate) struct GroupInner<T> {
    /// The idle-worker list's head (a `u64` in user memory, as the ABI wants).
    head: AtomicU64,
    /// The idle-server slot: the TID of one idle server, or 0.
    slot: AtomicU32,
    /// Registered workers by TID, for following worker-to-worker switches.
    workers: Mutex<HashMap<u32, Weak<TaskCell<T>>>>,
}

/// A UMCG group: the idle-worker list and idle-server slot that a set of workers share, and the
/// workers registered with it.
///
/// Cloning gives another handle on the same group.
///
/// # Invariants
///
/// Only workers registered through [`Group::register_worker`] point their `idle_workers_ptr`
/// at `head`, and each of them is a [`TaskCell<T>`] in an [`Arc`] that its [`Worker`] guard
/// holds for as long as the kernel may push it: so every node on the list is the idle-list
/// field of a live `TaskCell<T>`.
pub struct Group<T> {
    pub(crate) inner: Arc<GroupInner<T>>,
}

impl<T> Clone for Group<T> {
    fn clone(&self) -> Self {
        Group {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for Group<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for Group<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("idle_head", &self.inner.head.load(SeqCst))
            .field("idle_server", &self.inner.slot.load(SeqCst))
            .finish()
    }
}

impl<T> Group<T> {
    /// A new group with an empty idle list and no idle server.
    pub fn new() -> Self {
        Group {
            inner: Arc::new(GroupInner {
                head: AtomicU64::new(0),
                slot: AtomicU32::new(0),
                workers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Registers the calling thread as a worker of this group, carrying `data` in its cell.
    ///
    /// Returns only once a server ran the new worker: the kernel queues it on the idle list,
    /// wakes the idle server if there is one, and parks it until a server picks it (see
    /// [`Group::take_idle`] and [`Server::run`]).
    ///
    /// Errors: [`io::ErrorKind::Unsupported`] without UMCG in the kernel, `EINVAL` if the thread
    /// is registered already.
    ///
    /// ```no_run
    /// let group: umcg::Group<String> = umcg::Group::new();
    /// let g = group.clone();
    /// std::thread::spawn(move || {
    ///     let me = g.register_worker("worker one".to_string()).unwrap();
    ///     // Runs only when a server runs it; blocking here gives the server its CPU back.
    ///     println!("{} on server {}", me.data(), me.server_tid());
    /// });
    /// ```
    pub fn register_worker(&self, data: T) -> io::Result<Worker<T>> {
        let cell = Arc::new(TaskCell::new(TaskState::Blocked, data));
        let tid = sys::gettid();
        cell.set_tid(tid);
        cell.word()
            .idle_workers_ptr()
            .store(&self.inner.head as *const AtomicU64 as u64, SeqCst);
        cell.word()
            .set_idle_server_tid_ptr(&self.inner.slot as *const AtomicU32 as u64);
        self.insert_worker(tid, Arc::downgrade(&cell));
        // SAFETY: the cell is kept alive by the returned guard, which unregisters on drop (or
        // by a leaked Arc if the guard is leaked); the cell never moves.
        let res = unsafe {
            sys::umcg_ctl(
                sys::UMCG_CTL_REGISTER | sys::UMCG_CTL_WORKER,
                cell.word().as_raw(),
            )
        };
        if let Err(e) = res {
            self.workers().remove(&tid);
            return Err(e);
        }
        Ok(Worker::new(self.clone(), cell))
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Weak<TaskCell<T>>>> {
        self.inner.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a worker to the registry. The registry's lock is never held across an allocation
    /// (servers take it, and the allocator's locks may be held by a stopped worker): a bigger
    /// table is made outside of it when needed.
    fn insert_worker(&self, tid: u32, cell: Weak<TaskCell<T>>) {
        loop {
            let mut map = self.workers();
            if map.len() < map.capacity() || map.contains_key(&tid) {
                let old = map.insert(tid, cell);
                drop(map);
                // An entry left by an exited thread with the same TID: freed outside the lock.
                drop(old);
                return;
            }
            let want = (map.capacity() * 2).max(16);
            drop(map);
            let mut bigger = HashMap::with_capacity(want);
            let mut map = self.workers();
            if map.capacity() < want {
                bigger.extend(map.drain());
                std::mem::swap(&mut *map, &mut bigger);
            }
            drop(map);
            // The old table is freed here, outside the lock.
        }
    }

    /// Drops the registry entry of an exited worker (unless the TID is in use again).
    pub(crate) fn forget_worker(&self, w: &WorkerRef<T>) {
        let mut map = self.workers();
        if map
            .get(&w.tid())
            .and_then(Weak::upgrade)
            .is_some_and(|c| WorkerRef::from_cell(c).same(w))
        {
            map.remove(&w.tid());
        }
    }

    /// The registered worker with this TID.
    pub fn worker(&self, tid: u32) -> Option<WorkerRef<T>> {
        self.workers()
            .get(&tid)?
            .upgrade()
            .map(WorkerRef::from_cell)
    }

    /// Whether the kernel queued workers since the last [`Group::take_idle`].
    pub fn has_idle(&self) -> bool {
        self.inner.head.load(SeqCst) != 0
    }

    /// Like [`Group::take_idle`], appending to `out` (which allocates nothing if `out` has room).
    pub fn take_idle_into(&self, out: &mut Vec<Runnable<T>>) {
        self.take_idle_each(|r| out.push(r));
    }

    /// Like [`Group::take_idle`], calling `f` with each worker, oldest first. Allocates and
    /// frees nothing: for a scheduler that must not, because a worker may be stopped while it
    /// holds a lock of the allocator.
    pub fn take_idle_each(&self, mut f: impl FnMut(Runnable<T>)) {
        // SAFETY: by the type invariant every node is the idle-list field of a live cell.
        unsafe { idle::take_each(&self.inner.head, |node| f(Self::runnable(node))) };
    }

    fn runnable(node: u64) -> Runnable<T> {
        let cell = (node as usize - TaskCell::<T>::NODE_OFFSET) as *const TaskCell<T>;
        // SAFETY: by the type invariant the cell is alive, in an Arc, and its guard holds a
        // count while the worker sleeps on the list; we take one more.
        let cell = unsafe {
            Arc::increment_strong_count(cell);
            Arc::from_raw(cell)
        };
        Runnable::new(WorkerRef::from_cell(cell))
    }

    /// Takes every worker off the idle list, oldest first, ready for a server to run.
    ///
    /// A worker that was preempted comes back this way too (with `PREEMPTED` set): it is
    /// returned once, like any other.
    pub fn take_idle(&self) -> Vec<Runnable<T>> {
        let mut out = Vec::new();
        self.take_idle_into(&mut out);
        out
    }

    /// Parks the calling server as this group's idle server until the kernel queues a worker
    /// (and wakes it), someone makes it RUNNING, or `timeout` passes.
    ///
    /// Returns `Ok(true)` when woken, `Ok(false)` on timeout. Returns at once with `Ok(true)`
    /// if workers are queued already. Only one server at a time can be the idle server: if
    /// another one is, this one sleeps until woken by other means or the timeout.
    pub fn park(&self, server: &Server, timeout: Option<Duration>) -> io::Result<bool> {
        let me = server.tid();
        let word = server.word();
        // Become IDLE first: the kernel makes the slot's server RUNNING only if it is IDLE.
        if let Err(s) = word.cas(State::new(TaskState::Running), parked()) {
            return Err(io::Error::other(format!(
                "server {me} is {s:?}, not RUNNING"
            )));
        }
        word.set_next_tid(0);
        let _ = self.inner.slot.compare_exchange(0, me, SeqCst, SeqCst);
        if self.has_idle() {
            self.unpark(me, server);
            return Ok(true);
        }
        let deadline = timeout.map_or(0, sys::realtime_deadline);
        match sys::umcg_wait(0, deadline) {
            Ok(()) => {
                self.unpark(me, server);
                Ok(true)
            }
            // Made RUNNING just as the timeout passed counts as woken.
            Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => Ok(self.unpark(me, server)),
            Err(e) => {
                self.unpark(me, server);
                Err(e)
            }
        }
    }

    /// Leaves the slot and makes the server RUNNING again (if nobody did). Returns whether
    /// someone else made it RUNNING.
    ///
    /// The kernel takes the slot, then makes its server RUNNING, a few steps later. If the
    /// server was woken by other means (or its timeout) in between, that step is still to
    /// come, and would find the server IDLE again as it serves a worker: a server made RUNNING
    /// while its worker runs, which the kernel punishes if the worker is then preempted. So
    /// when the slot was taken and the kernel's mark is missing, the server waits, IDLE and
    /// parked again, until the kernel's step comes (or, if it came while the server was
    /// RUNNING and so did nothing, for a short timeout).
    fn unpark(&self, me: u32, server: &Server) -> bool {
        let word = server.word();
        let running = State::new(TaskState::Running);
        let by_kernel = running.with_user_bits(mark::PARKED);
        let slot_was_ours = self
            .inner
            .slot
            .compare_exchange(me, 0, SeqCst, SeqCst)
            .is_ok();
        let woken = word.cas(parked(), running).is_err();
        if word.cas(by_kernel, running).is_ok() || slot_was_ours {
            return woken;
        }
        // The kernel took the slot and has not made this server RUNNING yet. Another
        // server's wake-up may come first again (it makes this one RUNNING without the mark):
        // then wait on, until the deadline.
        let deadline = std::time::Instant::now() + Duration::from_millis(10);
        while word.cas(running, parked()).is_ok() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let _ = sys::umcg_wait(0, sys::realtime_deadline(left));
            // The kernel's step came; or the deadline passed with this server still parked.
            if word.cas(by_kernel, running).is_ok()
                || word.cas(parked(), running).is_ok()
                || std::time::Instant::now() >= deadline
            {
                break;
            }
        }
        true
    }
    /// The TID in the idle-server slot (0 if none).
    pub fn idle_server(&self) -> u32 {
        self.inner.slot.load(SeqCst)
    }
}

/// A server's state while it is the group's idle server.
fn parked() -> State {
    State::new(TaskState::Idle).with_user_bits(mark::PARKED)
}

#[cfg(all(test, not(loom)))]
impl<T> Group<T> {
    /// Puts a cell on the list as the kernel would, for host tests.
    pub(crate) fn test_push(&self, cell: &Arc<TaskCell<T>>) {
        cell.word()
            .idle_workers_ptr()
            .store(&self.inner.head as *const AtomicU64 as u64, SeqCst);
        // SAFETY: test cells are kept alive by the test until the list is taken.
        unsafe {
            idle::simulate_kernel_push(&self.inner.head, cell.word().idle_workers_ptr(), || {})
        };
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn take_idle_finds_the_cells() {
        let g: Group<u32> = Group::new();
        let cells: Vec<_> = (0..3)
            .map(|i| {
                let c = Arc::new(TaskCell::new(TaskState::Idle, i));
                c.set_tid(100 + i);
                c
            })
            .collect();
        for c in &cells {
            g.test_push(c);
        }
        assert!(g.has_idle());
        let got = g.take_idle();
        assert!(!g.has_idle());
        let seen: Vec<(u32, u32)> = got
            .iter()
            .map(|r| (r.worker().tid(), *r.worker().data()))
            .collect();
        assert_eq!(seen, vec![(100, 0), (101, 1), (102, 2)]);
        drop(got);
        for c in &cells {
            assert_eq!(Arc::strong_count(c), 1, "the runnables were dropped");
            assert_eq!(
                c.word().idle_workers_ptr().load(SeqCst),
                &g.inner.head as *const AtomicU64 as u64
            );
        }
    }
}
