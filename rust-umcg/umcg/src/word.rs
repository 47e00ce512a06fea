//! `struct umcg_task` as atomics, and the cache line that holds one.

use crate::state::{State, TaskState};
use crate::sys;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

/// The four fields of `struct umcg_task`, as atomics: the kernel and other threads change them
/// while we look.
///
/// Only the start of a [`TaskCell`]; never created on its own.
#[repr(C)]
#[derive(Debug, Default)]
pub struct TaskWord {
    state: AtomicU32,
    next_tid: AtomicU32,
    idle_workers_ptr: AtomicU64,
    idle_server_tid_ptr: AtomicU64,
}

const _: () = assert!(std::mem::offset_of!(TaskWord, state) == 0);
const _: () = assert!(std::mem::offset_of!(TaskWord, next_tid) == 4);
const _: () = assert!(std::mem::offset_of!(TaskWord, idle_workers_ptr) == 8);
const _: () = assert!(std::mem::offset_of!(TaskWord, idle_server_tid_ptr) == 16);

impl TaskWord {
    /// The current `state`.
    pub fn state(&self) -> State {
        State::from_raw(self.state.load(SeqCst))
    }

    /// Compare-and-exchange of `state`; on failure, the value found.
    pub fn cas(&self, old: State, new: State) -> Result<(), State> {
        self.state
            .compare_exchange(old.raw(), new.raw(), SeqCst, SeqCst)
            .map(drop)
            .map_err(State::from_raw)
    }

    /// Moves `state` from task state `from` (no flags) to `to`, keeping the user bits and
    /// retrying while only they change. Returns the word found if it was not `from`.
    pub fn transition(&self, from: TaskState, to: State) -> Result<(), State> {
        let mut cur = self.state();
        loop {
            if cur.with_user_bits(0) != State::new(from) {
                return Err(cur);
            }
            match self.cas(cur, to.with_user_bits(cur.user_bits())) {
                Ok(()) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// The current `state`, once it is no longer `task_state`|LOCKED: a transition under
    /// `UMCG_TF_LOCKED` is a few steps of another thread (or of the kernel), waited out here.
    pub(crate) fn state_unlocked_from(&self, task_state: TaskState) -> State {
        let mut spins = 0u32;
        loop {
            let s = self.state();
            if !(s.locked() && s.task_state() == task_state) {
                return s;
            }
            crate::backoff(&mut spins);
        }
    }

    /// Stores `state` (only where no one else may change it).
    pub(crate) fn store_state(&self, s: State) {
        self.state.store(s.raw(), SeqCst)
    }

    /// `next_tid`.
    pub fn next_tid(&self) -> u32 {
        self.next_tid.load(SeqCst)
    }

    pub(crate) fn take_next_tid(&self) -> u32 {
        self.next_tid.swap(0, SeqCst)
    }

    pub(crate) fn set_next_tid(&self, tid: u32) {
        self.next_tid.store(tid, SeqCst)
    }

    /// The idle-list field: the head's address, or a link while on the list.
    pub(crate) fn idle_workers_ptr(&self) -> &AtomicU64 {
        &self.idle_workers_ptr
    }

    pub(crate) fn set_idle_server_tid_ptr(&self, addr: u64) {
        self.idle_server_tid_ptr.store(addr, SeqCst)
    }

    /// The address the kernel is given.
    pub(crate) fn as_raw(&self) -> *mut sys::umcg_task {
        (self as *const TaskWord).cast_mut().cast()
    }
}

/// One UMCG task's cache line: the kernel's [`TaskWord`], then the thread's TID and the
/// scheduler's own data `T` (which the kernel never touches).
///
/// Worker cells live in an [`Arc`](std::sync::Arc), so that a node found on the idle list can
/// be turned back into a counted reference.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct TaskCell<T> {
    word: TaskWord,
    tid: AtomicU32,
    /// In a worker's cell: the cell of the server that runs it (or ran it last), as a strong
    /// reference turned into a pointer by [`Arc::into_raw`] (null before its first run). The
    /// reference keeps that server's cell alive for as long as the worker may name it, however
    /// long its [`Server`](crate::Server) guard lives.
    server: AtomicPtr<TaskCell<()>>,
    data: T,
}

const _: () = assert!(std::mem::offset_of!(TaskCell<u64>, word) == 0);
const _: () = assert!(std::mem::align_of::<TaskCell<u8>>() == 64);

impl<T> TaskCell<T> {
    pub(crate) fn new(state: TaskState, data: T) -> Self {
        TaskCell {
            word: TaskWord {
                state: AtomicU32::new(state.raw()),
                ..TaskWord::default()
            },
            tid: AtomicU32::new(0),
            server: AtomicPtr::new(std::ptr::null_mut()),
            data,
        }
    }

    /// The kernel-visible fields.
    pub fn word(&self) -> &TaskWord {
        &self.word
    }

    /// The TID of the thread that registered this cell (0 before registration).
    pub fn tid(&self) -> u32 {
        self.tid.load(SeqCst)
    }

    pub(crate) fn set_tid(&self, tid: u32) {
        self.tid.store(tid, SeqCst)
    }

    /// The scheduler's data.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// The cell of this worker's server, to compare with another cell's address only.
    pub(crate) fn server_addr(&self) -> *const TaskCell<()> {
        self.server.load(SeqCst)
    }

    /// The state word of this worker's server, if it has had one.
    ///
    /// # Safety
    ///
    /// No [`TaskCell::set_server`] on this cell may run until the returned reference is gone.
    /// The protocol gives that to the worker itself while it runs user code: only a holder of
    /// its [`Runnable`](crate::Runnable) (or a worker switching to it) sets its server, and
    /// only once the worker is IDLE and unlocked, that is, parked in the kernel.
    pub(crate) unsafe fn server_word(&self) -> Option<&TaskWord> {
        let p = self.server.load(SeqCst);
        // SAFETY: a non-null pointer is a strong reference that this cell owns (see
        // `set_server()`), which the caller promises is not dropped meanwhile.
        (!p.is_null()).then(|| unsafe { (*p).word() })
    }

    /// Makes `server` this worker's server, keeping its cell alive (and dropping the reference
    /// to the previous one, which frees it if its server is gone already).
    pub(crate) fn set_server(&self, server: &Arc<TaskCell<()>>) {
        let new = Arc::into_raw(server.clone()).cast_mut();
        self.drop_server_ref(self.server.swap(new, SeqCst));
    }

    /// Takes this worker's server from `other` (a worker that switches to this one).
    pub(crate) fn set_server_from<U>(&self, other: &TaskCell<U>) {
        let p = other.server.load(SeqCst);
        if p.is_null() {
            self.drop_server_ref(self.server.swap(p, SeqCst));
            return;
        }
        // SAFETY: `p` is a strong reference that `other` owns, which stays alive while the
        // caller (`other`'s own thread, in `Worker::switch_to()`) runs.
        unsafe { Arc::increment_strong_count(p) };
        self.drop_server_ref(self.server.swap(p, SeqCst));
    }

    fn drop_server_ref(&self, p: *mut TaskCell<()>) {
        if !p.is_null() {
            // SAFETY: every non-null value of `server` is a strong reference made by
            // `Arc::into_raw()` or counted by `increment_strong_count()`, and the exchange that
            // took it out of the cell made it the caller's.
            drop(unsafe { Arc::from_raw(p) });
        }
    }

    #[cfg(test)]
    pub(crate) fn server_strong_count(&self) -> usize {
        let p = self.server.load(SeqCst);
        if p.is_null() {
            return 0;
        }
        // SAFETY: a live strong reference owned by this cell; counted, not dropped.
        let a = unsafe { std::mem::ManuallyDrop::new(Arc::from_raw(p)) };
        Arc::strong_count(&a)
    }

    /// The byte offset of the idle-list field in the cell: a list node's address minus this is
    /// the cell's address.
    pub(crate) const NODE_OFFSET: usize = std::mem::offset_of!(TaskCell<T>, word) + 8;
}

impl<T> Drop for TaskCell<T> {
    fn drop(&mut self) {
        let p = std::mem::replace(self.server.get_mut(), std::ptr::null_mut());
        self.drop_server_ref(p);
    }
}
