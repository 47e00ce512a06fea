//! An M:N thread runtime on Linux UMCG: tasks are threads that may block in any system call
//! without stalling a CPU.
//!
//! Each task runs on a UMCG *worker* thread; a few *server* threads (one per CPU by default)
//! run the workers, at most one per server at a time. When a task blocks in the kernel, its
//! server gets the CPU back at once and runs the next task; when the task wakes, the kernel
//! queues its worker and the runtime runs it again. Worker threads are reused for new tasks.
//!
//! The program below is `examples/thousand_reads.rs`, which the guest tests run on a UMCG
//! kernel (`cargo run --example thousand_reads` there):
//!
#![doc = concat!("```no_run\n", include_str!("../examples/thousand_reads.rs"), "```")]
//!
//! # Design
//!
//! - Servers take tasks from one run queue, ordered by a [`Policy`] ([`Fifo`] by default).
//! - Before it picks, a server takes the workers that the kernel queued on the group's idle
//!   list (woken up or preempted). The first server with nothing to run parks as the group's
//!   idle server, so that the kernel wakes it directly when a worker wakes up, and it runs that
//!   worker itself; other idle servers sleep on a futex, and the parked one, once woken, wakes
//!   one of them to park in its place. New tasks and other work that the kernel does not see
//!   wake a futex sleeper, or the parked server through a *waker* thread (a UMCG server that
//!   runs no worker: only a server can wake another).
//! - A worker can be stopped anywhere (it blocks, faults or is preempted, maybe inside the C
//!   library's allocator, holding its lock) and then needs a server to run again. So the
//!   scheduling path of servers takes no lock that a worker may hold and never
//!   allocates or frees memory: new tasks are linked through their own nodes (allocated by the
//!   spawner, freed by the worker that runs them), the queues of workers have room for every
//!   worker thread before the thread starts, and worker threads are started, joined and freed
//!   by a *keeper* thread that is not a server.
//! - A new task runs on a free worker thread if there is one. Otherwise the keeper starts a
//!   thread for it: at once while there are fewer than two worker threads per server or while a
//!   server has nothing to run, and otherwise (every server busy) one thread per grace period
//!   of 5 ms while new tasks wait (a worker that finishes meanwhile takes one). So, without a
//!   cap ([`Builder::max_worker_threads`]), every task gets a thread of its own when it needs one, and a program that completes with one thread per
//!   task completes here too. Worker threads idle for longer than the keep-alive
//!   ([`Builder::keep_alive`]) exit.
//! - Time slices (10 ms by default, [`Builder::preemption`], off with
//!   [`Builder::no_preemption`]): a timer thread preempts a task that ran longer than its
//!   slice, with `UMCG_TF_PREEMPTED` and a signal. Without them a task keeps its server until it
//!   blocks, yields or ends, and tasks that spin waiting for a task spawned later can hold every
//!   server: the promise above then holds only for tasks that block or yield while they wait.
//! - [`Runtime::shutdown`] (and dropping the runtime) waits for every task, including those
//!   still blocked, then stops every thread.
//! - An idle runtime wakes no thread: its servers, the waker, the keeper and the time-slice
//!   timer (once no task ran for 100 ms) sleep until there is work (the keeper wakes once per
//!   keep-alive while free worker threads wait to retire).
//!
//! # What tasks see
//!
//! - A task is a thread: thread-locals are those of its worker thread, which runs other tasks
//!   before and after it (a thread-local set by a task may be seen by a later task).
//! - Blocking is free: `std::sync` locks and channels, `read()`, `sleep()` and any other system
//!   call block only the task. [`JoinHandle::join`] blocks the caller likewise.
//! - [`yield_now`] gives the server to the next ready task; `std::thread::yield_now()` does
//!   not: the kernel sees a worker that keeps running.
//! - With time slices, a task may be interrupted by the preemption signal at any point: system
//!   calls that are never restarted after a signal handler (`poll()`, `epoll_wait()`,
//!   `select()`, `nanosleep()`, see signal(7)) then fail with `EINTR`, as they can in any
//!   program that handles signals. The signal is sent only after a successful
//!   RUNNING -> RUNNING|PREEMPTED compare-and-exchange on a task that ran longer than its slice.
//!
//! A panic in a task is caught and returned by [`JoinHandle::join`].
//!
//! # Testing without a UMCG kernel
//!
//! Built with `RUSTFLAGS="--cfg umcg_model"`, the `umcg` crate runs against a model of the
//! kernel's half of the protocol in user space, and so does this runtime, on any Linux host.
//! The model sees a task block only where it is told (`umcg::model::blocking`) and in the
//! runtime's own waits ([`JoinHandle::join`], [`Runtime::scope`], shutdown); a task that
//! blocks anywhere else keeps its server there, as a task that spins would. The guest test
//! binaries (`umcg-guest-tests`) run that way in `make rust-check`.

mod doorbell;
mod policy;
mod scope;
mod sync;

pub use policy::{Fifo, Lifo, Policy};
pub use scope::{Scope, ScopedJoinHandle};

use doorbell::Doorbell;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};
use sync::{EventCount, Injector, NewQueue, NewTask};
use umcg::{Event, Group, Runnable, Server, ServerRef, Worker, WorkerRef};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// What a worker thread carries in its UMCG cell.
pub(crate) struct Slot {
    /// The thread, for the keeper to join it once it exits.
    thread: ThreadId,
    /// The next task, set by the server that hands it to this (free) worker, taken and freed
    /// by the worker.
    job: AtomicPtr<NewTask>,
    /// The task it runs.
    task: AtomicU64,
    /// Finished its task, waits for another.
    free: AtomicBool,
    /// Not free yet since it started: counted in `Shared::starting`.
    fresh: AtomicBool,
    /// Told to leave (shutdown, or idle for too long).
    exit: AtomicBool,
    /// How many servers hold a reference to it in `Shared::run()`; the keeper drops the last
    /// reference of an exited worker only when none does, so that no server frees its cell.
    in_run: AtomicUsize,
}

impl Slot {
    fn new() -> Self {
        Slot {
            thread: thread::current().id(),
            job: AtomicPtr::new(std::ptr::null_mut()),
            task: AtomicU64::new(0),
            free: AtomicBool::new(false),
            fresh: AtomicBool::new(true),
            exit: AtomicBool::new(false),
            in_run: AtomicUsize::new(0),
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("task", &self.task)
            .field("free", &self.free)
            .field("exit", &self.exit)
            .finish()
    }
}

/// The scheduler state that only servers and the keeper touch: none of them is a
/// worker, so none is stopped while it holds the lock until a server runs it.
///
/// # Invariants
///
/// `resume`, `free` and `exited` each have room for every worker thread (`workers_alive`), so
/// that pushing to them never allocates: a worker is in at most one of them at a time, and the
/// keeper makes room before it starts a thread.
struct Sched {
    /// Readiness numbers, for the order between resumed workers and new tasks.
    seq: u64,
    lifo: bool,
    /// Workers to run again (woken, yielded or preempted), with their readiness numbers.
    resume: VecDeque<(u64, Runnable<Slot>)>,
    /// New tasks.
    new: NewQueue,
    /// Worker threads without a task, most recently freed at the back, and since when.
    free: VecDeque<(Instant, Runnable<Slot>)>,
    /// Workers that exited, for the keeper to join and free.
    exited: Vec<WorkerRef<Slot>>,
}

impl Sched {
    fn push_resume(&mut self, r: Runnable<Slot>) {
        debug_assert!(self.resume.len() < self.resume.capacity());
        self.seq += 1;
        self.resume.push_back((self.seq, r));
    }

    fn pop_resume(&mut self) -> Option<Runnable<Slot>> {
        if self.lifo {
            self.resume.pop_back()
        } else {
            self.resume.pop_front()
        }
        .map(|(_, r)| r)
    }

    /// Whether the next new task goes before the next resumed worker.
    fn new_first(&self) -> bool {
        let resume = if self.lifo {
            self.resume.back()
        } else {
            self.resume.front()
        };
        match (self.new.peek_seq(), resume.map(|r| r.0)) {
            (Some(n), Some(r)) => (n > r) == self.lifo,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Makes room for `n` workers in the queues of workers. Called by the keeper, which
    /// allocates outside the lock: `make` and `drop` happen with `guard` released.
    fn reserve(shared: &Shared, n: usize) {
        let short =
            |s: &Sched| s.resume.capacity() < n || s.free.capacity() < n || s.exited.capacity() < n;
        if !short(&lock(&shared.sched)) {
            return;
        }
        let cap = n.max(16).next_power_of_two();
        let mut resume = VecDeque::with_capacity(cap);
        let mut free = VecDeque::with_capacity(cap);
        let mut exited = Vec::with_capacity(cap);
        {
            let mut s = lock(&shared.sched);
            if s.resume.capacity() < n {
                resume.extend(s.resume.drain(..));
                std::mem::swap(&mut s.resume, &mut resume);
            }
            if s.free.capacity() < n {
                free.extend(s.free.drain(..));
                std::mem::swap(&mut s.free, &mut free);
            }
            if s.exited.capacity() < n {
                exited.append(&mut s.exited);
                std::mem::swap(&mut s.exited, &mut exited);
            }
        }
        // The old (empty) buffers are freed here, outside the lock.
    }
}

struct Shared {
    group: Group<Slot>,
    sched: Mutex<Sched>,
    /// New tasks, from any thread.
    injector: Injector,
    /// Servers with nothing to run, parked or asleep, and how work reaches them.
    doorbell: Doorbell,
    /// `shutdown()` sleeps here until the last task finishes.
    done: EventCount,
    /// The keeper sleeps here.
    keeper: EventCount,
    /// Set when a server asks the keeper for a thread; cleared by the keeper.
    keeper_poked: AtomicBool,
    /// Tasks spawned and not finished; [`CLOSED`] once the runtime takes no more.
    live: AtomicUsize,
    next_id: AtomicU64,
    shutdown: AtomicBool,
    finished: AtomicBool,
    /// Worker threads started and not exited (those starting included).
    workers_alive: AtomicUsize,
    /// Worker threads started that have not become free yet.
    starting: AtomicUsize,
    /// New tasks queued by servers and not handed to a worker yet.
    waiting_new: AtomicUsize,
    /// Copies of the lengths of `Sched::free` and `Sched::resume`, for the keeper and metrics.
    free_workers: AtomicUsize,
    queued: AtomicUsize,
    /// Workers on a server right now.
    on_server: AtomicUsize,
    /// The time-slice timer sleeps here once no worker was on a server for [`TIMER_IDLE`];
    /// the first worker to get one (and the end of the runtime) wakes it.
    slices: EventCount,
    /// Worker threads that could not be started.
    start_failures: AtomicU64,
    threads_started: AtomicU64,
    servers: usize,
    servers_left: AtomicUsize,
    max_workers: Option<usize>,
    keep_alive: Duration,
    /// Each server's handle, for the waker.
    server_refs: Vec<OnceLock<ServerRef>>,
    /// The worker each server runs and since when, for time slices.
    running: Vec<Mutex<Option<Running>>>,
    preemption: Option<(Duration, libc::c_int)>,
    stack_size: usize,
    /// The runtime's threads and its signal handler, when the runtime was dropped by one of its
    /// own tasks: the keeper joins and drops them once everything else has ended.
    detached: Mutex<Option<Detached>>,
}

struct Detached {
    threads: Vec<thread::JoinHandle<()>>,
    _preemption_handler: Option<umcg::PreemptionHandler>,
}

/// A worker on a server: which, the server's TID, and since when.
struct Running {
    worker: WorkerRef<Slot>,
    server: u32,
    since: Instant,
}

/// The bit of `Shared::live` that says the runtime has shut down: set only while no task is
/// live, after which a spawn is refused. Setting it and counting a new task are
/// read-modify-writes of the same word, so exactly one of them comes first.
const CLOSED: usize = 1 << (usize::BITS - 1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fatal: the runtime cannot go on without breaking the protocol or losing tasks.
fn fatal(what: &str, e: &dyn std::fmt::Display) -> ! {
    eprintln!("umcg-runtime: {what}: {e}");
    std::process::abort()
}

/// Whether the preemptor should preempt the worker of a server record: it has run for its
/// whole slice on that server, and it still runs there (the record may be stale: the worker may
/// have blocked and moved to another server meanwhile, where its slice has just begun).
fn slice_is_over(since: Instant, now: Instant, slice: Duration, recorded: u32, named: u32) -> bool {
    recorded == named && now.saturating_duration_since(since) >= slice
}

impl Shared {
    /// Queues `job` as a new task; `false` (and `job` dropped) if the runtime has shut down.
    fn spawn_job(&self, job: Job) -> bool {
        if self.live.fetch_add(1, SeqCst) & CLOSED != 0 {
            self.live.fetch_sub(1, SeqCst);
            return false;
        }
        let id = self.next_id.fetch_add(1, SeqCst);
        self.injector.push(NewTask::new(id, job));
        self.wake_servers(false);
        true
    }

    /// The number of tasks spawned and not finished.
    fn live_tasks(&self) -> usize {
        self.live.load(SeqCst) & !CLOSED
    }

    /// Once shutdown was asked for: takes no more tasks if none is live; whether it took none.
    fn close(&self) -> bool {
        self.shutdown.load(SeqCst)
            && match self.live.compare_exchange(0, CLOSED, SeqCst, SeqCst) {
                Ok(_) => true,
                // A refused spawn may have the count at `CLOSED + 1` for a moment.
                Err(v) => v & CLOSED != 0,
            }
    }

    fn task_done(&self) {
        if self.live.fetch_sub(1, SeqCst) == 1 {
            self.done.notify_all();
            self.wake_servers(true);
            self.keeper.notify_all();
        }
    }

    /// Wakes a server with nothing to run (all of them with `all`), for work that did not come
    /// from the kernel: new tasks, free workers, shutdown (see [`Doorbell`]).
    fn wake_servers(&self, all: bool) {
        self.doorbell.wake_servers(all);
    }

    /// The worker a server runs next; `None` once the runtime has shut down.
    ///
    /// With nothing to run, the first idle server parks as the group's idle server, so that
    /// the kernel hands it the workers that wake up directly; the other idle servers sleep,
    /// and the parked one, once woken, wakes one of them to take its place.
    fn next(&self, server: &Server, idx: usize) -> Option<Runnable<Slot>> {
        self.doorbell.next(
            idx,
            || self.pick(),
            || {
                // No timeout: the kernel wakes it for a woken worker, the waker for any other
                // work (an idle runtime wakes no thread).
                if let Err(e) = self.group.park(server, None) {
                    fatal("server", &e);
                }
            },
        )
    }

    /// How many more worker threads the waiting new tasks need.
    fn threads_needed(&self) -> usize {
        let have = self.free_workers.load(SeqCst) + self.starting.load(SeqCst);
        self.waiting_new.load(SeqCst).saturating_sub(have)
    }

    /// `Some(next)` if there is something to do now (`Some(None)`: the runtime is done).
    fn pick(&self) -> Option<Option<Runnable<Slot>>> {
        let mut guard = lock(&self.sched);
        let s = &mut *guard;
        if self.group.has_idle() {
            self.take_idle(s);
        }
        let n = self.injector.take_into(&mut s.new, &mut s.seq);
        if n > 0 {
            self.waiting_new.fetch_add(n, SeqCst);
        }
        // New tasks without a worker: the keeper starts threads for them (even while this server
        // keeps running other tasks: those may never let it go).
        if !s.new.is_empty() && self.threads_needed() > 0 && !self.keeper_poked.swap(true, SeqCst) {
            self.keeper.notify_one();
        }
        let next = if !s.new.is_empty() && !s.free.is_empty() && s.new_first() {
            Some(self.hand_new_task(s))
        } else if let Some(r) = s.pop_resume() {
            self.queued.fetch_sub(1, SeqCst);
            Some(r)
        } else if !s.new.is_empty() && !s.free.is_empty() {
            Some(self.hand_new_task(s))
        } else {
            None
        };
        if let Some(next) = next {
            if !s.resume.is_empty() || !s.new.is_empty() && !s.free.is_empty() {
                // More for another server, if one is idle (the parked one included).
                self.wake_servers(false);
            }
            return Some(Some(next));
        }
        let closed = self.close();
        // A free worker idle for too long (or any, once the runtime is done) leaves.
        let retire = match s.free.front() {
            Some(_) if closed => true,
            Some((since, _)) => since.elapsed() >= self.keep_alive,
            None => false,
        };
        if retire {
            let (_, r) = s.free.pop_front().expect("a free worker");
            self.free_workers.fetch_sub(1, SeqCst);
            r.worker().data().exit.store(true, SeqCst);
            return Some(Some(r));
        }
        if closed && self.workers_alive.load(SeqCst) == 0 {
            self.finished.store(true, SeqCst);
            self.wake_servers(true);
            self.keeper.notify_all();
            self.slices.notify_all();
            return Some(None);
        }
        None
    }

    /// Gives the next new task to the most recently freed worker.
    fn hand_new_task(&self, s: &mut Sched) -> Runnable<Slot> {
        let task = s.new.pop().expect("a new task");
        let (_, r) = s.free.pop_back().expect("a free worker");
        self.free_workers.fetch_sub(1, SeqCst);
        self.waiting_new.fetch_sub(1, SeqCst);
        let d = r.worker().data();
        d.task.store(task.id, SeqCst);
        d.free.store(false, SeqCst);
        d.job.store(Box::into_raw(task), SeqCst);
        r
    }

    /// Queues workers that the kernel queued on the idle list. Allocates nothing.
    fn take_idle(&self, s: &mut Sched) -> usize {
        let mut n = 0;
        self.group.take_idle_each(|r| {
            s.push_resume(r);
            n += 1;
        });
        self.queued.fetch_add(n, SeqCst);
        n
    }

    fn run(&self, server: &Server, idx: usize, r: Runnable<Slot>) {
        let in_run: *const AtomicUsize = &r.worker().data().in_run;
        // SAFETY: the worker's cell is alive: `r` holds it.
        unsafe { &*in_run }.fetch_add(1, SeqCst);
        self.run_counted(server, idx, r);
        // SAFETY: the references this server held are gone, but the cell is still alive: until
        // this count drops, the worker thread's own guard (before it exits) or the keeper (after
        // it exited) holds it, and the keeper drops its reference only once the count is 0.
        unsafe { &*in_run }.fetch_sub(1, SeqCst);
    }

    fn run_counted(&self, server: &Server, idx: usize, r: Runnable<Slot>) {
        let worker = r.worker().clone();
        if self.preemption.is_some() {
            *lock(&self.running[idx]) = Some(Running {
                worker: worker.clone(),
                server: server.tid(),
                since: Instant::now(),
            });
        }
        if self.on_server.fetch_add(1, SeqCst) == 0 && self.preemption.is_some() {
            self.slices.notify_one();
        }
        let ev = server.run(&self.group, r);
        self.on_server.fetch_sub(1, SeqCst);
        if self.preemption.is_some() {
            *lock(&self.running[idx]) = None;
        }
        match ev {
            Ok(Event::Yielded(r)) => {
                let d = r.worker().data();
                let mut s = lock(&self.sched);
                if d.free.load(SeqCst) {
                    if d.fresh.swap(false, SeqCst) {
                        self.starting.fetch_sub(1, SeqCst);
                    }
                    debug_assert!(s.free.len() < s.free.capacity());
                    s.free.push_back((Instant::now(), r));
                    self.free_workers.fetch_add(1, SeqCst);
                    if !s.new.is_empty() || self.shutdown.load(SeqCst) {
                        self.wake_servers(false);
                    }
                } else {
                    s.push_resume(r);
                    self.queued.fetch_add(1, SeqCst);
                }
            }
            // Back through the idle list, when it wakes.
            Ok(Event::Blocked(_)) => {}
            // Preempted in user space, it is on the idle list already, and the kernel woke
            // only this server: queue it here.
            Ok(Event::Preempted(_)) => {
                let mut s = lock(&self.sched);
                self.take_idle(&mut s);
            }
            Ok(Event::Exited(w)) => {
                lock(&self.sched).exited.push(w);
                self.workers_alive.fetch_sub(1, SeqCst);
                self.keeper.notify_one();
                self.wake_servers(true);
            }
            Err(e) => fatal("server", &e),
        }
        drop(worker);
    }
}

thread_local! {
    static CURRENT: Cell<*const Worker<Slot>> = const { Cell::new(std::ptr::null()) };
    /// The runtime of the task that the thread runs.
    static RUNTIME: RefCell<Option<Handle>> = const { RefCell::new(None) };
    /// The name of the task that the thread runs, if it has one.
    static TASK_NAME: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// The kernel's name of the calling thread (`/proc/self/task/TID/comm`, what `ps` and `top`
/// show): at most 15 bytes, cut at a character boundary; an inner NUL ends it.
fn set_thread_name(name: &str) {
    let name = name.split('\0').next().unwrap_or("");
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let mut buf = [0u8; 16];
    buf[..end].copy_from_slice(&name.as_bytes()[..end]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which `buf` is.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
}

/// Runs `f` as the task named `name`: the thread carries the name while it runs.
fn named<T>(name: Arc<str>, f: impl FnOnce() -> T) -> T {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            TASK_NAME.with(|n| n.borrow_mut().take());
            set_thread_name(WORKER_NAME);
        }
    }
    set_thread_name(&name);
    TASK_NAME.with(|n| *n.borrow_mut() = Some(name));
    let _restore = Restore;
    f()
}

/// The name of worker threads between tasks and while they run unnamed tasks.
const WORKER_NAME: &str = "umcg-worker";

fn worker_main(shared: Arc<Shared>) {
    // Returns once a server runs it.
    let w = match shared.group.register_worker(Slot::new()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("umcg-runtime: cannot register a worker: {e}");
            shared.starting.fetch_sub(1, SeqCst);
            shared.workers_alive.fetch_sub(1, SeqCst);
            shared.start_failures.fetch_add(1, SeqCst);
            shared.keeper.notify_one();
            shared.wake_servers(true);
            return;
        }
    };
    CURRENT.with(|c| c.set(&w));
    RUNTIME.with(|r| {
        *r.borrow_mut() = Some(Handle {
            shared: shared.clone(),
        })
    });
    let d = w.data();
    loop {
        let job = d.job.swap(std::ptr::null_mut(), SeqCst);
        if !job.is_null() {
            // SAFETY: a server made the task with `Box::into_raw()` and handed it to this
            // worker alone, through the exchange above.
            let task = unsafe { Box::from_raw(job) };
            let NewTask { job, .. } = *task;
            job();
            shared.task_done();
        }
        if d.exit.load(SeqCst) {
            break;
        }
        d.free.store(true, SeqCst);
        if let Err(e) = w.yield_now() {
            fatal("worker", &e);
        }
    }
    RUNTIME.with(|r| r.borrow_mut().take());
    CURRENT.with(|c| c.set(std::ptr::null()));
    drop(w);
}

fn server_main(shared: Arc<Shared>, idx: usize, ready: mpsc::Sender<io::Result<()>>) {
    let server = match Server::register() {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = shared.server_refs[idx].set(server.handle());
    shared.servers_left.fetch_add(1, SeqCst);
    let _ = ready.send(Ok(()));
    while let Some(r) = shared.next(&server, idx) {
        shared.run(&server, idx, r);
    }
    if shared.servers_left.fetch_sub(1, SeqCst) == 1 {
        // The last server out stops the waker.
        shared.doorbell.ring();
    }
}

/// Wakes the parked server when work comes that the kernel does not know about (a new task
/// spawned by a thread that is not a task, a worker that became free, shutdown). Only a UMCG
/// server can wake another, so the waker is one, but it never runs a worker: it sleeps on a
/// futex of its own.
fn waker_main(shared: Arc<Shared>, ready: mpsc::Sender<io::Result<()>>) {
    let server = match Server::register() {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    // The last server out rings once more (or shutdown, when no server started).
    let done = || shared.finished.load(SeqCst) && shared.servers_left.load(SeqCst) == 0;
    while shared.doorbell.wait_for_ring(done) {
        wake_parker(&shared, &server);
    }
}

/// Makes the parked server, if any, RUNNING and wakes it. It may still be on its way to
/// sleep (not IDLE yet): then it is tried again until it is, or is no longer the parker.
fn wake_parker(shared: &Shared, server: &Server) {
    // A parker stopped on its way (a debugger stopping that one thread, say) is waited for
    // without spinning.
    let mut tries = 0u32;
    loop {
        let parker = shared.doorbell.parker();
        let Some(target) = parker.and_then(|i| shared.server_refs[i].get()) else {
            return;
        };
        match server.wake(target) {
            Ok(true) => return,
            Ok(false) if tries < 64 => {
                tries += 1;
                thread::yield_now();
            }
            Ok(false) => thread::sleep(Duration::from_micros(100)),
            Err(e) => fatal("waker", &e),
        }
    }
}

/// How long the time-slice timer goes on ticking with no worker on a server before it sleeps
/// until one gets a server: a runtime whose tasks block often is idle for moments, and waking
/// the timer each time would cost a context switch.
const TIMER_IDLE: Duration = Duration::from_millis(100);

fn preemptor_main(shared: Arc<Shared>, slice: Duration, signal: libc::c_int) {
    let tick = (slice / 2).max(Duration::from_millis(1));
    let mut idle_since: Option<Instant> = None;
    while !shared.finished.load(SeqCst) {
        if shared.on_server.load(SeqCst) != 0 {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= TIMER_IDLE {
            // Nothing to time for a while: sleep until a worker gets a server.
            let ticket = shared.slices.prepare();
            if shared.on_server.load(SeqCst) == 0 && !shared.finished.load(SeqCst) {
                shared.slices.wait(ticket, None);
                idle_since = None;
                continue;
            }
            shared.slices.cancel();
        }
        thread::sleep(tick);
        let now = Instant::now();
        for r in &shared.running {
            if let Some(run) = &*lock(r) {
                let named = run.worker.server_tid();
                if slice_is_over(run.since, now, slice, run.server, named) {
                    let _ = run.worker.preempt(signal);
                }
            }
        }
    }
}

/// How long a new task waits for a free worker, while every server is busy, before the keeper
/// starts a thread for it (one per period).
const GRACE: Duration = Duration::from_millis(5);

/// Starts worker threads when tasks need them, joins and frees those that exited, and, if the
/// runtime was dropped by one of its tasks, finishes it. Not a UMCG task: it may wait for the
/// allocator or anything else without stopping a server.
fn keeper_main(shared: Arc<Shared>) {
    let mut threads: HashMap<ThreadId, thread::JoinHandle<()>> = HashMap::new();
    let warm = 2 * shared.servers;
    let mut need_since: Option<Instant> = None;
    let mut backoff = Duration::ZERO;
    loop {
        let ticket = shared.keeper.prepare();
        shared.keeper_poked.store(false, SeqCst);
        reap(&shared, &mut threads);
        if shared.finished.load(SeqCst) {
            shared.keeper.cancel();
            break;
        }
        let alive = shared.workers_alive.load(SeqCst);
        let below_cap = shared.max_workers.is_none_or(|m| alive < m);
        let mut timeout = None;
        if shared.threads_needed() > 0 && below_cap && !shared.shutdown_done() {
            let since = *need_since.get_or_insert_with(Instant::now);
            let waited = since.elapsed();
            // A server with nothing to run could run the task now: start its thread at once.
            // Otherwise every server is busy, and the task gets a thread after the grace
            // period (one per period: tasks that keep the servers busy, preempted or not, do
            // not make the keeper start a thread for every waiting task at once).
            let server_idle = shared.doorbell.server_idle();
            if backoff.is_zero() && (alive < warm || server_idle) || waited >= GRACE + backoff {
                shared.keeper.cancel();
                if start_worker(&shared, &mut threads) {
                    backoff = Duration::ZERO;
                    need_since = (!server_idle).then(Instant::now);
                } else {
                    // Out of memory or threads: try again later, the task waits.
                    backoff = (backoff * 2).clamp(Duration::from_millis(1), Duration::from_secs(1));
                    need_since = Some(Instant::now());
                }
                continue;
            }
            timeout = Some(GRACE + backoff - waited);
        } else {
            need_since = None;
        }
        // Wake a server when the oldest free worker's keep-alive runs out.
        if shared.free_workers.load(SeqCst) > 0 {
            let t = shared.keep_alive.max(Duration::from_millis(10));
            timeout = Some(timeout.map_or(t, |x: Duration| x.min(t)));
            shared.keeper.wait(ticket, timeout);
            // Only when a keep-alive ran out: the keeper is woken for much else.
            let expired = lock(&shared.sched)
                .free
                .front()
                .is_some_and(|(since, _)| since.elapsed() >= shared.keep_alive);
            if expired {
                shared.wake_servers(false);
            }
        } else {
            shared.keeper.wait(ticket, timeout);
        }
    }
    // Every worker has exited; wait for their threads.
    reap(&shared, &mut threads);
    for (_, t) in threads.drain() {
        let _ = t.join();
    }
    let detached = lock(&shared.detached).take();
    if let Some(d) = detached {
        for t in d.threads {
            let _ = t.join();
        }
    }
}

impl Shared {
    /// Whether the runtime is done with new threads: shut down with no task left.
    fn shutdown_done(&self) -> bool {
        self.live.load(SeqCst) & CLOSED != 0
    }
}

/// Joins the threads of exited workers and drops the last references to their cells.
fn reap(shared: &Shared, threads: &mut HashMap<ThreadId, thread::JoinHandle<()>>) {
    if lock(&shared.sched).exited.is_empty() {
        return;
    }
    let cap = shared
        .workers_alive
        .load(SeqCst)
        .max(16)
        .next_power_of_two();
    let mut exited = Vec::with_capacity(cap);
    std::mem::swap(&mut lock(&shared.sched).exited, &mut exited);
    for w in exited {
        if let Some(t) = threads.remove(&w.data().thread) {
            let _ = t.join();
        }
        // A server that ran it may still hold a reference for a moment.
        while w.data().in_run.load(SeqCst) != 0 {
            thread::sleep(Duration::from_micros(100));
        }
        drop(w);
    }
}

/// Starts a worker thread (which registers and becomes free); `false` if it cannot start
/// (`true`, starting none, once the runtime is done).
fn start_worker(
    shared: &Arc<Shared>,
    threads: &mut HashMap<ThreadId, thread::JoinHandle<()>>,
) -> bool {
    let alive = {
        // Under the lock that `pick()` holds when it finds the runtime done (closed, no worker
        // left): a worker started after that would never be run, nor would it exit.
        let _s = lock(&shared.sched);
        if shared.shutdown_done() {
            return true;
        }
        shared.workers_alive.fetch_add(1, SeqCst) + 1
    };
    Sched::reserve(shared, alive);
    shared.starting.fetch_add(1, SeqCst);
    let s = shared.clone();
    let t = thread::Builder::new()
        .name(WORKER_NAME.into())
        .stack_size(shared.stack_size)
        .spawn(move || worker_main(s));
    match t {
        Ok(t) => {
            shared.threads_started.fetch_add(1, SeqCst);
            threads.insert(t.thread().id(), t);
            true
        }
        Err(_) => {
            shared.starting.fetch_sub(1, SeqCst);
            shared.workers_alive.fetch_sub(1, SeqCst);
            shared.start_failures.fetch_add(1, SeqCst);
            false
        }
    }
}

/// Configures and starts a [`Runtime`].
///
/// ```
/// # if !umcg::is_supported() { return Ok(()); }
/// use std::time::Duration;
/// use umcg_runtime::{Builder, Lifo};
///
/// let rt = Builder::new()
///     .servers(4)
///     .preemption(Duration::from_millis(10))
///     .policy(Lifo)
///     .stack_size(128 << 10)
///     .max_worker_threads(1000)
///     .keep_alive(Duration::from_secs(5))
///     .build()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Builder {
    servers: usize,
    /// The time slice, if any.
    preemption: Option<Duration>,
    /// The signal for time slices.
    preemption_signal: libc::c_int,
    stack_size: usize,
    lifo: bool,
    max_workers: Option<usize>,
    keep_alive: Duration,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("servers", &self.servers)
            .field("preemption", &self.preemption)
            .field("preemption_signal", &self.preemption_signal)
            .field("stack_size", &self.stack_size)
            .field("lifo", &self.lifo)
            .field("max_worker_threads", &self.max_workers)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// One server per CPU, FIFO, 10 ms time slices, 256 KiB worker stacks, no cap on worker
    /// threads, a keep-alive of 10 s.
    pub fn new() -> Self {
        Builder {
            servers: thread::available_parallelism().map_or(1, |n| n.get()),
            preemption: Some(Duration::from_millis(10)),
            preemption_signal: libc::SIGRTMIN() + 1,
            stack_size: 256 << 10,
            lifo: false,
            max_workers: None,
            keep_alive: Duration::from_secs(10),
        }
    }

    /// How many servers (tasks running at once). At least 1.
    pub fn servers(mut self, n: usize) -> Self {
        self.servers = n.max(1);
        self
    }

    /// No time slices: a task runs until it blocks, yields or ends. No signal is used then.
    pub fn no_preemption(mut self) -> Self {
        self.preemption = None;
        self
    }

    /// Time slices (10 ms by default): a task that runs longer than `slice` without blocking or
    /// yielding is preempted and queued again. Uses the real-time signal `SIGRTMIN + 1` unless
    /// [`Builder::preemption_signal`] names another, in either order.
    ///
    /// A debugger stops at every signal by default: under gdb, `handle SIG35 nostop noprint
    /// pass` (glibc's `SIGRTMIN + 1`) lets the preemption through, as Go's `SIGURG` needs.
    pub fn preemption(mut self, slice: Duration) -> Self {
        self.preemption = Some(slice);
        self
    }

    /// The signal used for time slices. While the runtime runs, it has a handler that does
    /// nothing (see [`umcg::install_preemption_handler`]): [`Builder::build`] fails with
    /// [`io::ErrorKind::AlreadyExists`] if the application has a handler of its own for it,
    /// and its previous disposition is restored when the runtime shuts down.
    pub fn preemption_signal(mut self, signal: libc::c_int) -> Self {
        self.preemption_signal = signal;
        self
    }

    /// Stack size of worker threads.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// The run-queue policy.
    pub fn policy(mut self, policy: impl Policy) -> Self {
        self.lifo = policy.lifo();
        self
    }

    /// At most `n` worker threads (at least 1). At the cap, a new task waits in the run queue
    /// until a worker thread finishes its task: like a fixed-size thread pool, tasks that wait
    /// for tasks still queued behind them can then wait for ever. No cap by default.
    pub fn max_worker_threads(mut self, n: usize) -> Self {
        self.max_workers = Some(n.max(1));
        self
    }

    /// How long a worker thread without a task waits for one before it exits (10 s by
    /// default).
    pub fn keep_alive(mut self, d: Duration) -> Self {
        self.keep_alive = d;
        self
    }

    /// The time slice and its signal, if time slices are on.
    fn time_slices(&self) -> Option<(Duration, libc::c_int)> {
        self.preemption.map(|slice| (slice, self.preemption_signal))
    }

    /// Starts the runtime's threads.
    ///
    /// Errors: [`io::ErrorKind::Unsupported`] on a kernel without UMCG; whatever starting
    /// threads or registering them returns. Nothing is left running after an error.
    pub fn build(self) -> io::Result<Runtime> {
        if !umcg::is_supported() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel does not support UMCG (CONFIG_UMCG=n or an older kernel)",
            ));
        }
        let time_slices = self.time_slices();
        let preemption_handler = match time_slices {
            Some((_, signal)) => Some(umcg::install_preemption_handler(signal)?),
            None => None,
        };
        let shared = Arc::new(Shared {
            group: Group::new(),
            sched: Mutex::new(Sched {
                seq: 0,
                lifo: self.lifo,
                resume: VecDeque::with_capacity(64),
                new: NewQueue::new(self.lifo),
                free: VecDeque::with_capacity(64),
                exited: Vec::with_capacity(64),
            }),
            injector: Injector::new(),
            doorbell: Doorbell::new(),
            done: EventCount::default(),
            keeper: EventCount::default(),
            keeper_poked: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            shutdown: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            workers_alive: AtomicUsize::new(0),
            starting: AtomicUsize::new(0),
            waiting_new: AtomicUsize::new(0),
            free_workers: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            on_server: AtomicUsize::new(0),
            slices: EventCount::default(),
            start_failures: AtomicU64::new(0),
            threads_started: AtomicU64::new(0),
            servers: self.servers,
            servers_left: AtomicUsize::new(0),
            max_workers: self.max_workers,
            keep_alive: self.keep_alive,
            server_refs: (0..self.servers).map(|_| OnceLock::new()).collect(),
            running: (0..self.servers).map(|_| Mutex::new(None)).collect(),
            preemption: time_slices,
            stack_size: self.stack_size,
            detached: Mutex::new(None),
        });
        let mut rt = Runtime {
            shared: shared.clone(),
            threads: Vec::new(),
            keeper: None,
            _preemption_handler: preemption_handler,
        };
        if let Err(e) = rt.start(self.servers, time_slices) {
            rt.shutdown_inner();
            return Err(e);
        }
        Ok(rt)
    }
}

/// A running UMCG runtime. Dropping it is [`Runtime::shutdown`].
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Vec<thread::JoinHandle<()>>,
    keeper: Option<thread::JoinHandle<()>>,
    /// Dropped after `threads` are joined, which the `Drop` of `Runtime` does first.
    _preemption_handler: Option<umcg::PreemptionHandler>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("metrics", &self.metrics())
            .finish()
    }
}

/// A snapshot of a runtime's counters ([`Runtime::metrics`], [`Handle::metrics`]). The
/// counters are read one after the other while the runtime runs: they need not add up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Tasks spawned and not finished. A task is counted until its worker is done with it,
    /// which may be a moment after its [`JoinHandle::join`] returned.
    pub live_tasks: usize,
    /// Worker threads (with a task, free, or starting).
    pub worker_threads: usize,
    /// Worker threads without a task.
    pub free_workers: usize,
    /// Tasks ready to run again (woken, yielded or preempted), waiting for a server.
    pub queued: usize,
    /// New tasks waiting for a worker thread.
    pub waiting_for_thread: usize,
    /// Tasks on a server right now.
    pub running: usize,
    /// Tasks blocked in the kernel (worker threads with a task that are neither running nor
    /// queued).
    pub blocked: usize,
    /// Worker threads started since the runtime was built.
    pub threads_started: u64,
    /// Worker threads that could not be started (their tasks waited for another).
    pub thread_start_failures: u64,
}

impl Shared {
    fn metrics(&self) -> Metrics {
        let worker_threads = self.workers_alive.load(SeqCst);
        let free_workers = self.free_workers.load(SeqCst);
        let queued = self.queued.load(SeqCst);
        let running = self.on_server.load(SeqCst);
        let starting = self.starting.load(SeqCst);
        Metrics {
            live_tasks: self.live_tasks(),
            worker_threads,
            free_workers,
            queued,
            waiting_for_thread: self.waiting_new.load(SeqCst),
            running,
            blocked: worker_threads.saturating_sub(free_workers + queued + running + starting),
            threads_started: self.threads_started.load(SeqCst),
            thread_start_failures: self.start_failures.load(SeqCst),
        }
    }
}

/// A handle to spawn tasks on a runtime from anywhere, tasks included.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handle")
    }
}

fn spawn_on<F, T>(shared: &Shared, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let inner = Arc::new(JoinInner::new());
    let mine = inner.clone();
    let queued = shared.spawn_job(Box::new(move || {
        let r = panic::catch_unwind(AssertUnwindSafe(f)).map_err(JoinError::panic);
        mine.set(r);
        // If the `JoinHandle` is gone, the result is dropped here, and its `Drop` may panic:
        // that panic must not unwind out of the job, past the bookkeeping of the worker that
        // runs it. Its payload is leaked, in case dropping that panics too.
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(move || drop(mine))) {
            std::mem::forget(payload);
        }
    }));
    if !queued {
        inner.set(Err(JoinError(JoinErrorKind::Cancelled)));
    }
    JoinHandle { inner }
}

impl Handle {
    /// Runs `f` as a new task. Once the runtime has shut down (its last task finished after
    /// [`Runtime::shutdown`] or the drop of the [`Runtime`]), `f` is dropped without running and
    /// the task's [`JoinHandle::join`] returns an error for which
    /// [`JoinError::is_cancelled`] is true.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_on(&self.shared, f)
    }

    /// Like [`Handle::spawn`], for a task with a name: [`current_task_name`] returns it
    /// inside the task, and its worker thread carries it as its kernel name (the first 15
    /// bytes, what `ps -L`, `top -H` and `/proc/self/task/TID/comm` show) while it runs the
    /// task. The thread's `std::thread::Thread::name()` stays `umcg-worker`.
    ///
    /// ```
    /// # if !umcg::is_supported() { return Ok(()); }
    /// let rt = umcg_runtime::Runtime::new()?;
    /// let h = rt.handle().spawn_named("fetcher", || umcg_runtime::current_task_name());
    /// assert_eq!(h.join().unwrap().as_deref(), Some("fetcher"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_named<F, T>(&self, name: &str, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let name: Arc<str> = name.into();
        spawn_on(&self.shared, move || named(name, f))
    }

    /// The runtime of the task that calls it, if the caller is a task.
    ///
    /// ```
    /// # if !umcg::is_supported() { return Ok(()); }
    /// let rt = umcg_runtime::Runtime::new()?;
    /// let t = rt.spawn(|| {
    ///     let me = umcg_runtime::Handle::try_current().expect("in a task");
    ///     me.spawn(|| 1).join().unwrap() + 1
    /// });
    /// assert_eq!(t.join().unwrap(), 2);
    /// assert!(umcg_runtime::Handle::try_current().is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_current() -> Option<Handle> {
        RUNTIME.with(|r| r.borrow().clone())
    }

    /// The runtime of the task that calls it.
    ///
    /// # Panics
    ///
    /// If the caller is not a task of a runtime (see [`Handle::try_current`]).
    pub fn current() -> Handle {
        Self::try_current().expect("umcg_runtime::Handle::current() called outside of a task")
    }

    /// The runtime's counters.
    pub fn metrics(&self) -> Metrics {
        self.shared.metrics()
    }
}

/// Runs `f` as a new task of the runtime of the calling task ([`Handle::current`]).
///
/// # Panics
///
/// If the caller is not a task of a runtime.
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Handle::current().spawn(f)
}

impl Runtime {
    /// A runtime with the default settings ([`Builder::new`]).
    ///
    /// ```
    /// # if !umcg::is_supported() { return Ok(()); }
    /// let rt = umcg_runtime::Runtime::new()?;
    /// let answer = rt.spawn(|| 6 * 7);
    /// assert_eq!(answer.join().unwrap(), 42);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> io::Result<Runtime> {
        Builder::new().build()
    }

    /// Starts the keeper, the waker, the servers and the preemptor, in that order.
    fn start(
        &mut self,
        servers: usize,
        time_slices: Option<(Duration, libc::c_int)>,
    ) -> io::Result<()> {
        let shared = &self.shared;
        let s = shared.clone();
        self.keeper = Some(
            thread::Builder::new()
                .name("umcg-keeper".into())
                .spawn(move || keeper_main(s))?,
        );
        let (tx, rx) = mpsc::channel();
        let (s, t) = (shared.clone(), tx.clone());
        self.threads.push(
            thread::Builder::new()
                .name("umcg-waker".into())
                .spawn(move || waker_main(s, t))?,
        );
        rx.recv().map_err(io::Error::other)??;
        let mut started = 0;
        let mut failed = None;
        for idx in 0..servers {
            let (s, t) = (shared.clone(), tx.clone());
            match thread::Builder::new()
                .name(format!("umcg-server-{idx}"))
                .spawn(move || server_main(s, idx, t))
            {
                Ok(t) => {
                    self.threads.push(t);
                    started += 1;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        for _ in 0..started {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(e) => failed = failed.or(Some(io::Error::other(e))),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some((slice, signal)) = time_slices {
            let s = shared.clone();
            self.threads.push(
                thread::Builder::new()
                    .name("umcg-preempt".into())
                    .spawn(move || preemptor_main(s, slice, signal))?,
            );
        }
        Ok(())
    }

    /// Runs `f` as a new task. It may block in any system call: only the task waits.
    ///
    /// ```
    /// # if !umcg::is_supported() { return Ok(()); }
    /// let rt = umcg_runtime::Builder::new().servers(2).build()?;
    /// let sleepers: Vec<_> = (0..100)
    ///     .map(|_| rt.spawn(|| std::thread::sleep(std::time::Duration::from_millis(100))))
    ///     .collect();
    /// for s in sleepers {
    ///     s.join().unwrap(); // about 100 ms in all, not 100 x 100 ms / 2
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_on(&self.shared, f)
    }

    /// Like [`Runtime::spawn`], for a task with a name; see [`Handle::spawn_named`].
    pub fn spawn_named<F, T>(&self, name: &str, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.handle().spawn_named(name, f)
    }

    /// Runs `f` with a [`Scope`] whose tasks may borrow from the caller; see
    /// [`Handle::scope`].
    pub fn scope<'env, F, R>(&self, f: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        self.handle().scope(f)
    }

    /// A handle that spawns on this runtime.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// How many tasks were spawned and have not finished.
    pub fn live_tasks(&self) -> usize {
        self.shared.live_tasks()
    }

    /// How many worker threads exist (tasks running or blocked, plus free ones).
    pub fn worker_threads(&self) -> usize {
        self.shared.workers_alive.load(SeqCst)
    }

    /// The runtime's counters.
    pub fn metrics(&self) -> Metrics {
        self.shared.metrics()
    }

    /// Waits for every task (blocked ones included) to finish, then stops all threads.
    ///
    /// Called by a task of this runtime (which cannot wait for itself), it returns at once
    /// instead: the runtime takes no new task once its last task has finished, and its threads
    /// then exit on their own.
    pub fn shutdown(mut self) {
        self.shutdown_inner();
    }

    /// Whether the calling thread runs a task of this runtime.
    fn called_from_own_task(&self) -> bool {
        RUNTIME.with(|r| {
            r.borrow()
                .as_ref()
                .is_some_and(|h| Arc::ptr_eq(&h.shared, &self.shared))
        })
    }

    fn shutdown_inner(&mut self) {
        let Some(keeper) = self.keeper.take() else {
            return;
        };
        let s = &self.shared;
        s.shutdown.store(true, SeqCst);
        if self.called_from_own_task() {
            // The keeper finishes the job once the last task (this one among them) is done.
            *lock(&s.detached) = Some(Detached {
                threads: std::mem::take(&mut self.threads),
                _preemption_handler: self._preemption_handler.take(),
            });
            s.wake_servers(true);
            s.keeper.notify_all();
            drop(keeper);
            return;
        }
        loop {
            let ticket = s.done.prepare();
            if s.live_tasks() == 0 {
                s.done.cancel();
                break;
            }
            s.done.wait(ticket, None);
        }
        s.wake_servers(true);
        if s.servers_left.load(SeqCst) == 0 {
            // No server started (a build() that failed): nobody else ends the runtime.
            s.close();
            s.finished.store(true, SeqCst);
            s.doorbell.ring();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        s.keeper.notify_all();
        let _ = keeper.join();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown_inner();
    }
}

/// Gives the server to another task if the caller is a task of a runtime, and
/// `std::thread::yield_now()` otherwise.
pub fn yield_now() {
    let w = CURRENT.with(|c| c.get());
    if w.is_null() {
        thread::yield_now();
        return;
    }
    // SAFETY: `CURRENT` points to the worker guard on this thread's stack in `worker_main()`,
    // which outlives every task it runs.
    if let Err(e) = unsafe { &*w }.yield_now() {
        fatal("yield", &e);
    }
}

/// The name of the task the caller runs, if it is a task spawned with a name
/// ([`Handle::spawn_named`]).
pub fn current_task_name() -> Option<Arc<str>> {
    TASK_NAME.with(|n| n.borrow().clone())
}

/// The number of the task the caller runs, if it is a task.
pub fn current_task() -> Option<u64> {
    let w = CURRENT.with(|c| c.get());
    // SAFETY: as in `yield_now()`.
    (!w.is_null()).then(|| unsafe { &*w }.data().task.load(SeqCst))
}

/// A task's result and the waits for it. The waits are on an [`EventCount`] (a futex through
/// `umcg::sys`), and the lock is held only to move the result.
struct JoinInner<T> {
    result: Mutex<Option<Result<T, JoinError>>>,
    done: EventCount,
}

impl<T> JoinInner<T> {
    fn new() -> Self {
        JoinInner {
            result: Mutex::new(None),
            done: EventCount::default(),
        }
    }

    fn set(&self, r: Result<T, JoinError>) {
        *lock(&self.result) = Some(r);
        self.done.notify_all();
    }

    /// Waits for the result and takes it.
    fn wait(&self) -> Result<T, JoinError> {
        loop {
            let ticket = self.done.prepare();
            if let Some(r) = lock(&self.result).take() {
                self.done.cancel();
                return r;
            }
            self.done.wait(ticket, None);
        }
    }

    /// Waits at most `timeout` for the result and takes it.
    fn wait_timeout(&self, timeout: Duration) -> Option<Result<T, JoinError>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let ticket = self.done.prepare();
            if let Some(r) = lock(&self.result).take() {
                self.done.cancel();
                return Some(r);
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if d <= now => {
                    self.done.cancel();
                    return None;
                }
                Some(d) => d - now,
                // So far away that it cannot come: wait as long as join() would.
                None => Duration::from_secs(3600),
            };
            self.done.wait(ticket, Some(left));
        }
    }

    fn is_finished(&self) -> bool {
        lock(&self.result).is_some()
    }
}

/// Why a task gave no result: it panicked, or it never ran because the runtime had shut down.
pub struct JoinError(JoinErrorKind);

enum JoinErrorKind {
    Panic(Box<dyn std::any::Any + Send + 'static>),
    Cancelled,
}

impl JoinError {
    fn panic(payload: Box<dyn std::any::Any + Send + 'static>) -> Self {
        JoinError(JoinErrorKind::Panic(payload))
    }

    /// Whether the task never ran: it was spawned after the runtime shut down.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.0, JoinErrorKind::Cancelled)
    }

    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.0, JoinErrorKind::Panic(_))
    }

    /// The payload of the task's panic, or the error itself if it did not panic.
    pub fn try_into_panic(self) -> Result<Box<dyn std::any::Any + Send + 'static>, JoinError> {
        match self.0 {
            JoinErrorKind::Panic(p) => Ok(p),
            kind => Err(JoinError(kind)),
        }
    }
}

impl std::fmt::Debug for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            JoinErrorKind::Panic(_) => f.write_str("JoinError::Panic(..)"),
            JoinErrorKind::Cancelled => f.write_str("JoinError::Cancelled"),
        }
    }
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            JoinErrorKind::Panic(_) => f.write_str("the task panicked"),
            JoinErrorKind::Cancelled => {
                f.write_str("the task was spawned after the runtime shut down")
            }
        }
    }
}

impl std::error::Error for JoinError {}

// SAFETY: no method that takes `&JoinError` reaches the panic payload (which is only `Send`);
// it is handed out by value, in `try_into_panic()`. So sharing a `&JoinError` between threads
// shares nothing that is not `Sync`.
unsafe impl Sync for JoinError {}

/// Waits for a task's result.
pub struct JoinHandle<T> {
    inner: Arc<JoinInner<T>>,
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> JoinHandle<T> {
    /// Waits for the task; an error says that it panicked (with the payload of its panic) or
    /// never ran (spawned after the runtime shut down).
    ///
    /// ```
    /// # if !umcg::is_supported() { return Ok(()); }
    /// let rt = umcg_runtime::Runtime::new()?;
    /// let bad = rt.spawn(|| -> u32 { panic!("oops") });
    /// assert!(bad.join().unwrap_err().is_panic());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn join(self) -> Result<T, JoinError> {
        self.inner.wait()
    }

    /// Waits for the task at most `timeout`: its result as [`join`](Self::join) gives it, or,
    /// when the task has not finished by then, the handle back (to wait again, or to drop,
    /// which detaches the task: it runs on).
    ///
    /// A task cannot be cancelled once it started: on a timeout it goes on running.
    ///
    /// ```
    /// # if !umcg::is_supported() { return Ok(()); }
    /// use std::time::Duration;
    /// let rt = umcg_runtime::Runtime::new()?;
    /// let slow = rt.spawn(|| std::thread::sleep(Duration::from_secs(1)));
    /// let slow = slow.join_timeout(Duration::from_millis(10)).expect_err("still running");
    /// assert!(slow.join_timeout(Duration::from_secs(10)).is_ok());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<T, JoinError>, Self> {
        self.inner.wait_timeout(timeout).ok_or(self)
    }

    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a kernel without UMCG (the usual build host), building fails cleanly.
    #[test]
    fn build_without_umcg_is_unsupported() {
        if umcg::is_supported() {
            return; // a UMCG host: the guest tests cover it
        }
        let e = Builder::new().servers(1).build().expect_err("no UMCG");
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    }

    /// Task names: the kernel name is cut to 15 bytes at a character boundary and restored
    /// after the task; the name is seen inside only.
    #[test]
    fn named_task_bookkeeping() {
        std::thread::spawn(|| {
            let comm = || std::fs::read_to_string("/proc/thread-self/comm").unwrap();
            let seen = named("abcdefghijklmn\u{e9}xyz".into(), || {
                (current_task_name(), comm())
            });
            assert_eq!(seen.0.as_deref(), Some("abcdefghijklmn\u{e9}xyz"));
            // 14 ASCII bytes, then a 2-byte character that does not fit in 15.
            assert_eq!(seen.1, "abcdefghijklmn\n");
            assert_eq!(comm(), "umcg-worker\n");
            assert!(current_task_name().is_none());
            // Restored when the task panics, too.
            let r = panic::catch_unwind(|| named("boom".into(), || panic!("on purpose")));
            assert!(r.is_err());
            assert_eq!(comm(), "umcg-worker\n");
            assert!(current_task_name().is_none());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn builder_settings() {
        let b = Builder::new()
            .servers(0)
            .preemption(Duration::from_millis(5))
            .stack_size(1 << 20);
        assert_eq!(b.servers, 1, "at least one server");
        assert_eq!(b.time_slices().map(|p| p.0), Some(Duration::from_millis(5)));
        let b = b.preemption_signal(libc::SIGUSR2);
        assert_eq!(b.time_slices().map(|p| p.1), Some(libc::SIGUSR2));
        assert_eq!(b.stack_size, 1 << 20);
    }

    #[test]
    fn time_slices_by_default() {
        assert_eq!(
            Builder::new().time_slices(),
            Some((Duration::from_millis(10), libc::SIGRTMIN() + 1))
        );
        assert_eq!(Builder::new().no_preemption().time_slices(), None);
        let b = Builder::new()
            .no_preemption()
            .preemption(Duration::from_millis(3));
        assert_eq!(b.time_slices().map(|p| p.0), Some(Duration::from_millis(3)));
    }

    #[test]
    fn preemption_signal_before_preemption_is_kept() {
        let b = Builder::new()
            .preemption_signal(libc::SIGUSR2)
            .preemption(Duration::from_millis(5));
        assert_eq!(
            b.time_slices(),
            Some((Duration::from_millis(5), libc::SIGUSR2)),
            "the signal chosen first must be used"
        );
    }

    /// The preemptor preempts only a worker that still runs on the server whose record says
    /// since when: a record is stale once its worker blocked and another server runs it.
    #[test]
    fn a_stale_record_preempts_nothing() {
        let slice = Duration::from_millis(10);
        let since = Instant::now();
        let later = since + Duration::from_millis(11);
        assert!(slice_is_over(since, later, slice, 7, 7));
        assert!(!slice_is_over(
            since,
            since + Duration::from_millis(9),
            slice,
            7,
            7
        ));
        assert!(
            !slice_is_over(since, later, slice, 7, 8),
            "it runs on another server now, its slice there just begun"
        );
        assert!(!slice_is_over(since, later, slice, 7, 0), "no server");
    }

    #[test]
    fn builder_thread_policy() {
        let b = Builder::new()
            .max_worker_threads(0)
            .keep_alive(Duration::from_secs(1));
        assert_eq!(b.max_workers, Some(1), "at least one worker thread");
        assert_eq!(b.keep_alive, Duration::from_secs(1));
        assert!(Builder::new().max_workers.is_none(), "no cap by default");
        assert!(Builder::new().policy(Lifo).lifo && !Builder::new().policy(Fifo).lifo);
    }
}
