//! A model of the kernel's half of the UMCG protocol, in user space, for hosts without UMCG.
//!
//! Compiled only with `--cfg umcg_model` (`RUSTFLAGS="--cfg umcg_model" cargo test`). The
//! crate's two system calls then go to this model instead of the kernel, and
//! [`is_supported`](crate::is_supported) says yes, so the library, the runtime and their tests
//! run on any Linux host: the protocol's logic (the transitions, the idle-worker list, the
//! idle-server slot, preemption, exits) is tested there, while what needs the kernel itself
//! (real blocking in `read()`, signals during waits, job control, the scheduler's handoff)
//! stays with the tests in a UMCG guest.
//!
//! The model follows the kernel's implementation (`kernel/sched/umcg.rs`) and the ABI's
//! document step by step:
//!
//! - `umcg_ctl()` and `umcg_wait()` with the kernel's checks and errors, the handoff to
//!   `next_tid`, the worker's unlock before it sleeps, timeouts on `CLOCK_REALTIME` (a worker
//!   that times out while IDLE becomes BLOCKED and is queued).
//! - Block detection where the kernel has it, before a worker sleeps: the kernel sees every
//!   sleep, the model only the ones it is told about. A worker thread sleeps through
//!   [`blocking`] (which [`sys::futex_wait`](crate::sys::futex_wait) uses); a sleep the model
//!   does not see keeps its server waiting, as a busy worker would.
//! - Wake detection where the kernel has it: after such a sleep, after a worker's
//!   `umcg_wait()` and registration, and when a signal is delivered to a worker (the
//!   preemption handler of [`install_preemption_handler`](crate::install_preemption_handler)
//!   calls into the model: the kernel acts on the way back to user space, which a process
//!   cannot hook). It queues the worker on its idle list, wakes an idle server, or, for a
//!   worker preempted in user space, its own server, and parks the worker until a server runs
//!   it.
//! - Where the kernel would kill the process for a broken contract, the model does so too
//!   (with `SIGKILL`, after saying why on standard error), so that a test sees what a program
//!   on a UMCG kernel would.
//!
//! Sleeping tasks wait on a futex on their own `state` word, which the model wakes where the
//! kernel would wake the task: a wake-up is never lost, since the futex compares the word
//! before it sleeps. A worker waits with every signal blocked, so that its handlers run only
//! once a server runs it again, as on the kernel.
//!
//! What the model does not do: stops, ptrace and the freezer; the scheduler's direct handoff
//! (a woken task here competes for a CPU like any thread); tasks of other processes (a TID
//! names a task of this process or none); faults on the task's memory (the library's cells
//! are always mapped).

use crate::sys::*;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};

/// How many tasks can be registered at once: an open-addressing table indexed by TID.
const SLOTS: usize = 1 << 16;
/// A table entry that was used and is free again (lookups go on past it).
const GONE: u32 = u32::MAX;
/// A table entry being filled in.
const CLAIMED: u32 = u32::MAX - 1;
/// A table entry whose task unregisters: lookups skip it, and it is not reused until the
/// lookups that found it before are done.
const DYING: u32 = u32::MAX - 2;

/// The registered tasks, by TID: the kernel's `task_struct`s, as far as UMCG is concerned.
struct Entry {
    /// The task's TID, 0 if never used, [`GONE`] or [`CLAIMED`].
    tid: AtomicU32,
    /// The address of its `struct umcg_task`.
    task: AtomicUsize,
    /// Whether it is a worker.
    worker: AtomicBool,
    /// Lookups that use the entry now: unregistering waits for them (the kernel holds a
    /// reference on a task it looked up).
    users: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Entry = Entry {
    tid: AtomicU32::new(0),
    task: AtomicUsize::new(0),
    worker: AtomicBool::new(false),
    users: AtomicU32::new(0),
};

static TABLE: [Entry; SLOTS] = [FREE; SLOTS];

/// A registered task, looked up by TID; its registration lasts at least as long.
struct Task {
    entry: &'static Entry,
    ut: Ut,
    worker: bool,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.entry.users.fetch_sub(1, SeqCst);
    }
}

impl Task {
    fn lookup(tid: u32) -> Option<Task> {
        if tid == 0 || tid >= DYING {
            return None;
        }
        for i in 0..SLOTS {
            let entry = &TABLE[(tid as usize + i) % SLOTS];
            match entry.tid.load(SeqCst) {
                0 => return None,
                t if t == tid => {
                    entry.users.fetch_add(1, SeqCst);
                    // Unregistered meanwhile? It waits for `users` only after it changed `tid`,
                    // and the entry is not reused before: what it holds now is this task's.
                    if entry.tid.load(SeqCst) == tid {
                        return Some(Task {
                            entry,
                            ut: Ut(entry.task.load(SeqCst)),
                            worker: entry.worker.load(SeqCst),
                        });
                    }
                    entry.users.fetch_sub(1, SeqCst);
                }
                _ => {}
            }
        }
        None
    }

    fn ut(&self) -> Ut {
        self.ut
    }

    fn is_worker(&self) -> bool {
        self.worker
    }

    /// The task, if it is a server (the kernel's `server_of()`, which refuses workers).
    fn server(tid: u32) -> Option<Task> {
        Self::lookup(tid).filter(|t| !t.is_worker())
    }

    /// Wakes the task if it sleeps in the model.
    fn wake(&self) {
        futex(self.ut().state(), libc::FUTEX_WAKE, i32::MAX as u32, None);
    }
}

fn insert(tid: u32, task: usize, worker: bool) -> Result<(), i32> {
    for i in 0..SLOTS {
        let entry = &TABLE[(tid as usize + i) % SLOTS];
        let t = entry.tid.load(SeqCst);
        if (t == 0 || t == GONE)
            && entry
                .tid
                .compare_exchange(t, CLAIMED, SeqCst, SeqCst)
                .is_ok()
        {
            entry.task.store(task, SeqCst);
            entry.worker.store(worker, SeqCst);
            entry.tid.store(tid, SeqCst);
            return Ok(());
        }
    }
    Err(libc::ENOMEM)
}

fn remove(tid: u32) {
    for i in 0..SLOTS {
        let entry = &TABLE[(tid as usize + i) % SLOTS];
        match entry.tid.load(SeqCst) {
            0 => return,
            t if t == tid => {
                entry.tid.store(DYING, SeqCst);
                while entry.users.load(SeqCst) != 0 {
                    std::thread::yield_now();
                }
                entry.tid.store(GONE, SeqCst);
                return;
            }
            _ => {}
        }
    }
}

/// A `struct umcg_task` of this process, by address.
#[derive(Clone, Copy)]
struct Ut(usize);

impl Ut {
    fn state(self) -> &'static AtomicU32 {
        // SAFETY: registered tasks stay valid and in place until they unregister (the
        // contract of umcg_ctl()), and the model forgets them then; the field is 4-byte aligned.
        unsafe { &*(self.0 as *const AtomicU32) }
    }

    fn next_tid(self) -> u32 {
        // SAFETY: as in `state()`; `next_tid` is at offset 4.
        unsafe { &*((self.0 + 4) as *const AtomicU32) }.load(SeqCst)
    }

    fn idle_node(self) -> &'static AtomicU64 {
        // SAFETY: as in `state()`; `idle_workers_ptr` is at offset 8, 8-byte aligned.
        unsafe { &*((self.0 + 8) as *const AtomicU64) }
    }

    fn idle_server_slot(self) -> u64 {
        // SAFETY: as in `state()`; `idle_server_tid_ptr` is at offset 16.
        unsafe { &*((self.0 + 16) as *const AtomicU64) }.load(SeqCst)
    }

    /// The kernel's `transition()`: moves the task state from `from` to `to`, keeping flags and
    /// user bits, retrying while user space changes the word; whether it did.
    fn transition(self, from: u32, to: u32) -> bool {
        let word = self.state();
        let mut cur = word.load(SeqCst);
        loop {
            if cur & UMCG_TASK_STATE_MASK != from {
                return false;
            }
            let new = (cur & !UMCG_TASK_STATE_MASK) | to;
            match word.compare_exchange(cur, new, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Clears `UMCG_TF_LOCKED`, if set.
    fn unlock(self) {
        let _ = self.state().fetch_update(SeqCst, SeqCst, |s| {
            (s & UMCG_TF_LOCKED != 0).then_some(s & !UMCG_TF_LOCKED)
        });
    }
}

fn is_ready(s: u32) -> bool {
    s & UMCG_TASK_STATE_MASK == UMCG_TASK_RUNNING && s & UMCG_TF_LOCKED == 0
}

/// The calling thread's registration, as the kernel keeps it in its `task_struct`.
struct Me {
    /// Its `struct umcg_task`, 0 if not registered.
    task: Cell<usize>,
    worker: Cell<bool>,
    /// The server that wake detection let the worker run with (the kernel pins it): the one
    /// block detection wakes. 0 if none.
    pinned: Cell<u32>,
    /// In the model's "kernel": a signal delivered now is dealt with on the way out.
    in_kernel: Cell<bool>,
}

thread_local! {
    static ME: Me = const {
        Me {
            task: Cell::new(0),
            worker: Cell::new(false),
            pinned: Cell::new(0),
            in_kernel: Cell::new(false),
        }
    };
}

/// Unregisters a thread that exits registered, as the kernel does at exit: the destructor of
/// a POSIX thread-specific key that a registered thread sets. (Not a Rust thread-local with a
/// destructor: glibc allocates to register those, and tests run with the address space
/// limited.)
fn at_exit_key() -> libc::pthread_key_t {
    static KEY: std::sync::OnceLock<libc::pthread_key_t> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer; the destructor is a plain function.
        let ret = unsafe { libc::pthread_key_create(&mut key, Some(thread_exits)) };
        assert_eq!(ret, 0, "pthread_key_create");
        key
    })
}

extern "C" fn thread_exits(task: *mut libc::c_void) {
    let Ok(registered) = ME.try_with(|me| me.task.get()) else {
        return;
    };
    // Unregistered since, or registered anew: only its own registration is dropped here.
    if registered == 0 || registered != task as usize {
        return;
    }
    // The kernel delivers no signal while a task exits.
    let _k = InKernel::enter();
    let _blocked = SignalsBlocked::new();
    if ME.with(|me| me.worker.get()) {
        worker_leaves(Ut(registered));
    }
    remove(gettid());
    ME.with(|me| me.task.set(0));
}

/// The kernel kills the process for a broken contract: so does the model.
fn kill(why: &str) -> ! {
    eprintln!("umcg model: the kernel kills the process: {why}");
    // SAFETY: no pointers; a signal to this very process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    std::process::abort()
}

/// `FUTEX_WAIT_BITSET` (absolute `CLOCK_REALTIME` deadline) or `FUTEX_WAKE`, private.
fn futex(word: &AtomicU32, op: i32, val: u32, deadline: Option<&libc::timespec>) -> libc::c_long {
    let (op, ts, bitset) = if op == libc::FUTEX_WAKE {
        (op, std::ptr::null(), 0)
    } else {
        (
            libc::FUTEX_WAIT_BITSET | libc::FUTEX_CLOCK_REALTIME,
            deadline.map_or(std::ptr::null(), |t| t as *const libc::timespec),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    // SAFETY: the futex word lives as long as the registration; the timespec, if any, is the
    // caller's.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op | libc::FUTEX_PRIVATE_FLAG,
            val,
            ts,
            std::ptr::null::<u32>(),
            bitset,
        )
    }
}

fn now_realtime() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(PartialEq, Eq)]
enum Woken {
    Running,
    TimedOut,
}

/// The idle loop: sleeps until the task's state is RUNNING and not LOCKED, or `deadline`
/// (absolute `CLOCK_REALTIME` nanoseconds, 0 for none) passes. A worker that sleeps no longer
/// runs with a server: its pin goes.
fn idle_loop(ut: Ut, deadline: u64) -> Woken {
    let ts = (deadline != 0).then(|| libc::timespec {
        tv_sec: libc::time_t::try_from(deadline / 1_000_000_000).unwrap_or(libc::time_t::MAX),
        tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
    });
    loop {
        let s = ut.state().load(SeqCst);
        if is_ready(s) {
            return Woken::Running;
        }
        if deadline != 0 && now_realtime() >= deadline {
            return Woken::TimedOut;
        }
        ME.with(|me| me.pinned.set(0));
        futex(ut.state(), libc::FUTEX_WAIT, s, ts.as_ref());
    }
}

/// Blocks every signal but those that cannot be, for a worker's sleep in the model; restores
/// the mask when dropped.
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> Self {
        // SAFETY: both sets are valid; pthread_sigmask() only changes this thread's mask and
        // is async-signal-safe.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            SignalsBlocked(old)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: the set is the mask that `new()` saved.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// Marks the calling thread as in the model's "kernel" for as long as it lives.
struct InKernel(bool);

impl InKernel {
    fn enter() -> Self {
        InKernel(ME.with(|me| me.in_kernel.replace(true)))
    }
}

impl Drop for InKernel {
    fn drop(&mut self) {
        ME.with(|me| me.in_kernel.set(self.0));
    }
}

/// `umcg_ctl(flags, task)`: the result, or an `errno`.
pub(crate) fn ctl(flags: u32, task: *mut umcg_task) -> Result<(), i32> {
    let _k = InKernel::enter();
    let me_task = ME.with(|me| me.task.get());
    let addr = task as usize;
    let worker = match flags {
        UMCG_CTL_REGISTER => false,
        f if f == UMCG_CTL_REGISTER | UMCG_CTL_WORKER => true,
        UMCG_CTL_UNREGISTER => {
            if addr != 0 || me_task == 0 {
                return Err(libc::EINVAL);
            }
            remove(gettid());
            ME.with(|me| {
                me.task.set(0);
                me.pinned.set(0);
            });
            // SAFETY: the key exists.
            unsafe { libc::pthread_setspecific(at_exit_key(), std::ptr::null()) };
            return Ok(());
        }
        _ => return Err(libc::EINVAL),
    };
    if addr == 0 || me_task != 0 || !addr.is_multiple_of(8) {
        return Err(libc::EINVAL);
    }
    let ut = Ut(addr);
    let state = ut.state().load(SeqCst);
    let head = ut.idle_node().load(SeqCst);
    let slot = ut.idle_server_slot();
    if ut.next_tid() != 0 || state & UMCG_TF_MASK != 0 || state & UMCG_RESERVED_MASK != 0 {
        return Err(libc::EINVAL);
    }
    let want = if worker {
        UMCG_TASK_BLOCKED
    } else {
        UMCG_TASK_RUNNING
    };
    if state & UMCG_TASK_STATE_MASK != want {
        return Err(libc::EINVAL);
    }
    if worker && (head == 0 || slot == 0 || !head.is_multiple_of(8) || !slot.is_multiple_of(4)) {
        return Err(libc::EINVAL);
    }
    insert(gettid(), addr, worker)?;
    ME.with(|me| {
        me.task.set(addr);
        me.worker.set(worker);
        me.pinned.set(0);
    });
    // SAFETY: the key exists; the value is only compared with the registration at exit.
    unsafe { libc::pthread_setspecific(at_exit_key(), addr as *const libc::c_void) };
    if worker {
        // A new worker is BLOCKED: on its way out it is queued, and returns once run (its
        // signals wait until then).
        let _blocked = SignalsBlocked::new();
        wake_detection(ut);
    }
    Ok(())
}

/// Resolves `next_tid` to a task the caller may wake: `ESRCH` if it names no UMCG task.
fn wake_target(tid: u32) -> Result<Task, i32> {
    Task::lookup(tid).ok_or(libc::ESRCH)
}

/// `umcg_wait(flags, abs_timeout)`: the result, or an `errno`.
pub(crate) fn wait(flags: u32, abs_timeout: u64) -> Result<(), i32> {
    let _k = InKernel::enter();
    if flags & !(UMCG_WAIT_WAKE_ONLY | UMCG_WAIT_WF_CURRENT_CPU) != 0 {
        return Err(libc::EINVAL);
    }
    let wake_only = flags & UMCG_WAIT_WAKE_ONLY != 0;
    if wake_only && abs_timeout != 0 {
        return Err(libc::EINVAL);
    }
    let (task, worker) = ME.with(|me| (me.task.get(), me.worker.get()));
    if task == 0 {
        return Err(libc::EINVAL);
    }
    let ut = Ut(task);
    let next_tid = ut.next_tid();
    if wake_only {
        if next_tid == 0 {
            return Err(libc::EINVAL);
        }
        wake_target(next_tid)?.wake();
        return Ok(());
    }
    let target = match next_tid {
        0 => None,
        tid => Some(wake_target(tid)?),
    };
    if !worker {
        // A server's wait: a signal's handler runs at once (the futex wait ends), and then it
        // waits on, as the kernel restarts it.
        if let Some(t) = target {
            t.wake();
        }
        return match idle_loop(ut, abs_timeout) {
            Woken::Running => Ok(()),
            Woken::TimedOut => Err(libc::ETIMEDOUT),
        };
    }
    let _blocked = SignalsBlocked::new();
    ut.unlock();
    if let Some(t) = target {
        t.wake();
    }
    let res = match idle_loop(ut, abs_timeout) {
        Woken::Running => Ok(()),
        // Never picked: BLOCKED tells user space so, and wake detection queues it again.
        Woken::TimedOut if ut.transition(UMCG_TASK_IDLE, UMCG_TASK_BLOCKED) => Err(libc::ETIMEDOUT),
        Woken::TimedOut => Ok(()),
    };
    wake_detection(ut);
    res
}

/// A blocking point: the calling thread sleeps in `f` (a system call that may block). For a
/// worker, the model does what the kernel does around such a sleep: block detection before
/// (the worker becomes BLOCKED and its server gets the CPU back), wake detection after (it is
/// queued on the idle list and waits until a server runs it). For any other thread, it only
/// calls `f`.
///
/// On a UMCG kernel no such marking is needed: the kernel sees every sleep.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let (task, worker, nested) = ME.with(|me| (me.task.get(), me.worker.get(), me.in_kernel.get()));
    if task == 0 || !worker || nested {
        return f();
    }
    let ut = Ut(task);
    let _k = InKernel::enter();
    block_detection(ut);
    let r = f();
    // What `f` left in errno is the caller's to read.
    let errno = Errno::save();
    {
        let _blocked = SignalsBlocked::new();
        wake_detection(ut);
    }
    errno.restore();
    r
}

/// The calling thread's `errno`, saved around the model's own system calls.
struct Errno(i32);

impl Errno {
    fn save() -> Self {
        // SAFETY: errno is thread-local and always valid to read.
        Errno(unsafe { *libc::__errno_location() })
    }

    fn restore(self) {
        // SAFETY: as above, and to write.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

/// Block detection: the calling worker is about to sleep.
fn block_detection(ut: Ut) {
    let pinned = ME.with(|me| me.pinned.get());
    // Not run with a server: nothing to detect.
    if pinned == 0 {
        return;
    }
    let s = ut.state().load(SeqCst);
    if s & UMCG_TF_LOCKED != 0 || s & UMCG_TASK_STATE_MASK != UMCG_TASK_RUNNING {
        return;
    }
    if !ut.transition(UMCG_TASK_RUNNING, UMCG_TASK_BLOCKED) {
        kill("the state of a RUNNING worker was changed by another thread");
    }
    let tid = ut.next_tid();
    if tid != 0 && tid == pinned {
        if let Some(server) = Task::server(tid) {
            if server.ut().transition(UMCG_TASK_IDLE, UMCG_TASK_RUNNING) {
                server.wake();
            }
        }
    }
}

/// Pushes the calling worker on its idle-worker list, as the ABI says.
fn push_idle(ut: Ut) {
    let node = ut.idle_node();
    let head = node.load(SeqCst);
    if head == 0 || !head.is_multiple_of(8) {
        kill("a worker's idle-list head is gone");
    }
    // SAFETY: the head was checked non-zero and aligned at registration, and user space keeps
    // it valid while the worker is registered (the contract of the ABI).
    let head = unsafe { &*(head as usize as *const AtomicU64) };
    node.store(UMCG_IDLE_NODE_PENDING, SeqCst);
    let old = head.swap(node as *const AtomicU64 as u64, SeqCst);
    node.store(old, SeqCst);
}

/// Takes the idle server in the calling worker's server slot, if any, and makes it RUNNING.
fn take_idle_server(ut: Ut) -> Option<Task> {
    let slot = ut.idle_server_slot();
    if slot == 0 || !slot.is_multiple_of(4) {
        kill("a worker's idle-server slot is gone");
    }
    // SAFETY: as for the list head in `push_idle()`.
    let slot = unsafe { &*(slot as usize as *const AtomicU32) };
    let tid = slot.swap(0, SeqCst);
    let server = Task::server(tid)?;
    server
        .ut()
        .transition(UMCG_TASK_IDLE, UMCG_TASK_RUNNING)
        .then_some(server)
}

/// Wake detection: returns once the calling worker may run user code, having waited as long
/// as needed.
fn wake_detection(ut: Ut) {
    loop {
        let s = ut.state().load(SeqCst);
        match s & UMCG_TASK_STATE_MASK {
            UMCG_TASK_RUNNING if s & UMCG_TF_PREEMPTED == 0 => {
                if s & UMCG_TF_LOCKED != 0 {
                    // A server hands it the CPU: wait for that, without queueing.
                    idle_loop(ut, 0);
                    continue;
                }
                let tid = ut.next_tid();
                if tid != 0 {
                    // The kernel pins a server only: block detection wakes nobody else.
                    let server = Task::server(tid).map_or(0, |_| tid);
                    ME.with(|me| me.pinned.set(server));
                    return;
                }
                // RUNNING without a server (woken with UMCG_WAIT_WAKE_ONLY): queue it.
            }
            UMCG_TASK_IDLE => {
                if s & UMCG_TF_LOCKED != 0 {
                    // Preparing to sleep or to unregister: user space goes on.
                    return;
                }
                idle_loop(ut, 0);
                continue;
            }
            // BLOCKED, PREEMPTED, or a state the kernel does not know: queue it.
            _ => {}
        }
        let idle = (s & !UMCG_TASK_STATE_MASK) | UMCG_TASK_IDLE;
        if ut
            .state()
            .compare_exchange(s, idle, SeqCst, SeqCst)
            .is_err()
        {
            continue;
        }
        ME.with(|me| me.pinned.set(0));
        push_idle(ut);
        // Preempted while running in user space: its own server gets the CPU back.
        let preempted = s & UMCG_TF_PREEMPTED != 0 && s & UMCG_TASK_STATE_MASK == UMCG_TASK_RUNNING;
        let server = if preempted {
            let tid = ut.next_tid();
            if tid == 0 {
                kill("a preempted worker has no server");
            }
            match Task::server(tid) {
                Some(server) if server.ut().transition(UMCG_TASK_IDLE, UMCG_TASK_RUNNING) => {
                    Some(server)
                }
                _ => kill("the server of a preempted worker cannot be made RUNNING"),
            }
        } else {
            take_idle_server(ut)
        };
        if let Some(server) = server {
            server.wake();
        }
        idle_loop(ut, 0);
    }
}

/// What the kernel does when a signal is delivered to the calling thread: for a worker, wake
/// detection on its way back to user space (which takes a preempted worker off its server).
/// Called by the crate's preemption handler; async-signal-safe (no allocation, no lock), and
/// it keeps `errno` as it was.
pub(crate) fn signal_delivered() {
    let Ok((task, worker, in_kernel)) =
        ME.try_with(|me| (me.task.get(), me.worker.get(), me.in_kernel.get()))
    else {
        return;
    };
    // In the model's "kernel", the way out does wake detection.
    if task == 0 || !worker || in_kernel {
        return;
    }
    let errno = Errno::save();
    {
        let _k = InKernel::enter();
        let _blocked = SignalsBlocked::new();
        wake_detection(Ut(task));
    }
    errno.restore();
}

/// A worker exits registered: mark it NONE and make its server, if IDLE, RUNNING.
fn worker_leaves(ut: Ut) {
    let tid = ut.next_tid();
    let s = ut.state().load(SeqCst);
    if !matches!(
        s & UMCG_TASK_STATE_MASK,
        UMCG_TASK_RUNNING | UMCG_TASK_BLOCKED | UMCG_TASK_IDLE
    ) {
        return;
    }
    let _ = ut.state().fetch_update(SeqCst, SeqCst, |s| {
        Some((s & UMCG_USER_MASK) | UMCG_TASK_NONE)
    });
    if let Some(server) = Task::server(tid) {
        if server.ut().transition(UMCG_TASK_IDLE, UMCG_TASK_RUNNING) {
            server.wake();
        }
    }
}
