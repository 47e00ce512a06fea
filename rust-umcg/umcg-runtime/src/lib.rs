//! An M:N thread runtime on Linux UMCG: tasks are threads that may block in any system call
//! without stalling a CPU.
//!
//! Each task runs on a UMCG *worker* thread; a few *server* threads (one per CPU by default)
//! run the workers, at most one per server at a time. When a task blocks in the kernel, its
//! server gets the CPU back at once and runs the next task; when the task wakes, the kernel
//! queues its worker and the runtime runs it again. Worker threads are reused for new tasks.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::sync::Arc;
//!
//! let rt = umcg_runtime::Builder::new().servers(2).build()?;
//! let (reader, mut writer) = std::io::pipe()?;
//! let reader = Arc::new(reader);
//! let tasks: Vec<_> = (0..1000)
//!     .map(|_| {
//!         let r = reader.clone();
//!         // Each task blocks in read(): its server runs the next task meanwhile.
//!         rt.spawn(move || {
//!             let mut b = [0u8; 4];
//!             (&*r).read_exact(&mut b).map(|()| u32::from_le_bytes(b))
//!         })
//!     })
//!     .collect();
//! for i in 0..1000u32 {
//!     writer.write_all(&i.to_le_bytes())?;
//! }
//! let sum: u32 = tasks.into_iter().map(|t| t.join().unwrap().unwrap()).sum();
//! assert_eq!(sum, (0..1000).sum());
//! rt.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Design
//!
//! - Servers take tasks from one run queue, ordered by a [`Policy`] ([`Fifo`] by default).
//! - A *reactor* thread, itself a UMCG server, is the group's idle server: the kernel wakes it
//!   whenever it queues a worker that woke up (or was preempted), and it moves those workers to
//!   the run queue. Servers with nothing to run sleep on a futex.
//! - A worker can be stopped anywhere (it blocks, faults or is preempted) and then needs a
//!   server to run again, so workers never take a lock that servers take: they hand new tasks
//!   and wake-ups to the servers through lock-free structures.
//! - Time slices are optional ([`Builder::preemption`]): a timer thread preempts a task that
//!   ran longer than its slice, with `UMCG_TF_PREEMPTED` and a signal.
//! - [`Runtime::shutdown`] (and dropping the runtime) waits for every task, including those
//!   still blocked, then stops every thread.
//!
//! A panic in a task is caught and returned by [`JoinHandle::join`].
//!
//! Limitation: servers allocate memory when the run queue grows or when they start a worker
//! thread. A worker stopped while it holds a lock of the C library's allocator can make such
//! a server wait until that worker runs again on another server.

mod policy;
mod sync;

pub use policy::{Fifo, Lifo, Policy, Task};

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use sync::{EventCount, Injector};
use umcg::{Event, Group, Runnable, Server, ServerRef, Worker, WorkerRef};

type Job = Box<dyn FnOnce() + Send + 'static>;

pub(crate) enum TaskKind {
    New(Job),
    Resume(Runnable<Slot>),
}

impl std::fmt::Debug for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskKind::New(_) => f.write_str("New"),
            TaskKind::Resume(r) => write!(f, "Resume({})", r.worker().tid()),
        }
    }
}

/// What a worker thread carries in its UMCG cell.
#[derive(Default)]
pub(crate) struct Slot {
    /// The next task, set by the server that hands it to this (free) worker.
    job: Mutex<Option<(u64, Job)>>,
    /// The task it runs.
    task: AtomicU64,
    /// Finished its task, waits for another.
    free: AtomicBool,
    /// Told to leave (shutdown).
    exit: AtomicBool,
    /// Counted in `Shared::blocked`: it blocked and has not been queued again yet.
    blocked: AtomicBool,
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

/// The scheduler state that only servers (and the reactor) touch.
struct Sched {
    queue: Box<dyn Policy>,
    /// New tasks that wait for a worker thread, oldest first.
    pending: VecDeque<(u64, Job)>,
    /// Worker threads without a task.
    free: Vec<Runnable<Slot>>,
}

/// What a server does next.
enum Next {
    /// Run this worker (resumed, or free and given a task, or told to leave).
    Run(Runnable<Slot>),
    /// Start a worker thread for this new task.
    Start(u64, Job),
}

struct Shared {
    group: Group<Slot>,
    sched: Mutex<Sched>,
    /// New tasks, from any thread.
    injector: Injector<Task>,
    /// Servers with nothing to run sleep here.
    work: EventCount,
    /// `shutdown()` sleeps here until the last task finishes.
    done: EventCount,
    /// Tasks spawned and not finished; [`CLOSED`] once the runtime takes no more.
    live: AtomicUsize,
    next_id: AtomicU64,
    shutdown: AtomicBool,
    finished: AtomicBool,
    workers_alive: AtomicUsize,
    /// Workers that blocked and have not come back yet.
    blocked: AtomicUsize,
    /// At most this many workers that are not blocked: more would only wait for a server.
    max_unblocked: usize,
    servers_left: AtomicUsize,
    reactor: OnceLock<ServerRef>,
    reactor_done: AtomicBool,
    /// The worker each server runs and since when, for time slices.
    running: Vec<Mutex<Option<Running>>>,
    preemption: Option<(Duration, libc::c_int)>,
    stack_size: usize,
    worker_threads: Mutex<Vec<thread::JoinHandle<()>>>,
}

/// A worker on a server, and since when.
type Running = (WorkerRef<Slot>, Instant);

/// The bit of `Shared::live` that says the runtime has shut down: set only while no task is
/// live, after which a spawn is refused. Setting it and counting a new task are
/// read-modify-writes of the same word, so exactly one of them comes first.
const CLOSED: usize = 1 << (usize::BITS - 1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fatal: the runtime cannot go on without breaking the protocol or losing tasks.
fn fatal(what: &str, e: io::Error) -> ! {
    eprintln!("umcg-runtime: {what}: {e}");
    std::process::abort()
}

impl Shared {
    /// Queues `job` as a new task; `false` (and `job` dropped) if the runtime has shut down.
    fn spawn_job(&self, job: Job) -> bool {
        if self.live.fetch_add(1, SeqCst) & CLOSED != 0 {
            self.live.fetch_sub(1, SeqCst);
            return false;
        }
        let id = self.next_id.fetch_add(1, SeqCst);
        self.injector.push(Task {
            id,
            kind: TaskKind::New(job),
        });
        self.work.notify_one();
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

    /// A task for a worker that comes back from the idle list.
    fn resume(&self, r: Runnable<Slot>) -> Task {
        let d = r.worker().data();
        if d.blocked.swap(false, SeqCst) {
            self.blocked.fetch_sub(1, SeqCst);
        }
        Task {
            id: d.task.load(SeqCst),
            kind: TaskKind::Resume(r),
        }
    }

    /// Whether a new worker thread may start: not while enough workers that are not blocked
    /// exist, since they will take the task as soon as they are free.
    fn may_start_worker(&self) -> bool {
        let alive = self.workers_alive.load(SeqCst);
        alive.saturating_sub(self.blocked.load(SeqCst)) < self.max_unblocked
    }

    fn task_done(&self) {
        if self.live.fetch_sub(1, SeqCst) == 1 {
            self.done.notify_all();
            self.work.notify_all();
        }
    }

    /// What a server does next; `None` once the runtime has shut down.
    fn next(&self) -> Option<Next> {
        loop {
            let ticket = self.work.prepare();
            if let Some(next) = self.pick() {
                self.work.cancel();
                return next;
            }
            self.work.wait(ticket, None);
        }
    }

    /// Gives the oldest pending new task (or `new`, if none is pending) a free worker or a new
    /// worker thread if it may; otherwise leaves it pending.
    fn place_new(&self, s: &mut Sched, new: Option<(u64, Job)>) -> Option<Next> {
        if let Some(n) = new {
            s.pending.push_back(n);
        }
        if let Some(r) = s.free.pop() {
            let (id, job) = s.pending.pop_front().expect("a pending task");
            *lock(&r.worker().data().job) = Some((id, job));
            return Some(Next::Run(r));
        }
        if self.may_start_worker() {
            let (id, job) = s.pending.pop_front().expect("a pending task");
            return Some(Next::Start(id, job));
        }
        None
    }

    /// `Some(next)` if there is something to do now (or `Some(None)`: the runtime is done).
    fn pick(&self) -> Option<Option<Next>> {
        let mut s = lock(&self.sched);
        self.injector.take_all(|t| s.queue.push(t));
        // New tasks that no worker could take wait in `pending`, oldest first, until a worker
        // is free or blocks; then they go before the policy's queue.
        if !s.pending.is_empty() {
            if let Some(next) = self.place_new(&mut s, None) {
                return Some(Some(next));
            }
        }
        while let Some(t) = s.queue.pop() {
            match t.kind {
                TaskKind::Resume(r) => return Some(Some(Next::Run(r))),
                TaskKind::New(job) => {
                    if let Some(next) = self.place_new(&mut s, Some((t.id, job))) {
                        return Some(Some(next));
                    }
                }
            }
        }
        if self.close() {
            if let Some(r) = s.free.pop() {
                r.worker().data().exit.store(true, SeqCst);
                return Some(Some(Next::Run(r)));
            }
            if self.workers_alive.load(SeqCst) == 0 {
                self.finished.store(true, SeqCst);
                self.work.notify_all();
                return Some(None);
            }
        }
        None
    }

    fn run(&self, server: &Server, idx: usize, r: Runnable<Slot>) {
        if self.preemption.is_some() {
            *lock(&self.running[idx]) = Some((r.worker().clone(), Instant::now()));
        }
        let ev = server.run(&self.group, r);
        if self.preemption.is_some() {
            *lock(&self.running[idx]) = None;
        }
        match ev {
            Ok(Event::Yielded(r)) => {
                let d = r.worker().data();
                if d.free.load(SeqCst) {
                    lock(&self.sched).free.push(r);
                    if self.shutdown.load(SeqCst) {
                        self.work.notify_all();
                    }
                } else {
                    let id = d.task.load(SeqCst);
                    lock(&self.sched).queue.push(Task {
                        id,
                        kind: TaskKind::Resume(r),
                    });
                }
            }
            // Back through the idle list and the reactor.
            Ok(Event::Blocked(w)) => {
                if !w.data().blocked.swap(true, SeqCst) {
                    self.blocked.fetch_add(1, SeqCst);
                }
            }
            // Preempted in user space, it is on the idle list already, and the kernel woke
            // only this server: queue it here.
            Ok(Event::Preempted(_)) => {
                let woken = self.group.take_idle();
                if !woken.is_empty() {
                    let mut s = lock(&self.sched);
                    for r in woken {
                        let t = self.resume(r);
                        s.queue.push(t);
                    }
                }
            }
            Ok(Event::Exited(_)) => {
                self.workers_alive.fetch_sub(1, SeqCst);
                self.work.notify_all();
            }
            Err(e) => fatal("server", e),
        }
    }

    fn start_worker(self: &Arc<Self>, id: u64, job: Job) {
        self.workers_alive.fetch_add(1, SeqCst);
        let shared = self.clone();
        let t = thread::Builder::new()
            .name("umcg-worker".into())
            .stack_size(self.stack_size)
            .spawn(move || worker_main(shared, id, job));
        match t {
            Ok(t) => lock(&self.worker_threads).push(t),
            Err(e) => fatal("cannot start a worker thread", e),
        }
    }
}

thread_local! {
    static CURRENT: Cell<*const Worker<Slot>> = const { Cell::new(std::ptr::null()) };
}

fn worker_main(shared: Arc<Shared>, id: u64, job: Job) {
    let slot = Slot {
        job: Mutex::new(Some((id, job))),
        task: AtomicU64::new(id),
        ..Slot::default()
    };
    // Returns once a server runs it.
    let w = match shared.group.register_worker(slot) {
        Ok(w) => w,
        Err(e) => fatal("cannot register a worker", e),
    };
    CURRENT.with(|c| c.set(&w));
    let d = w.data();
    loop {
        let next = lock(&d.job).take();
        if let Some((id, job)) = next {
            d.task.store(id, SeqCst);
            d.free.store(false, SeqCst);
            job();
            shared.task_done();
        }
        if d.exit.load(SeqCst) {
            break;
        }
        d.free.store(true, SeqCst);
        if let Err(e) = w.yield_now() {
            fatal("worker", e);
        }
        if d.exit.load(SeqCst) {
            break;
        }
    }
    CURRENT.with(|c| c.set(std::ptr::null()));
    drop(w);
    drop(shared);
}

fn server_main(shared: Arc<Shared>, idx: usize, ready: mpsc::Sender<io::Result<()>>) {
    let server = match Server::register() {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    while let Some(next) = shared.next() {
        match next {
            Next::Run(r) => shared.run(&server, idx, r),
            // It comes back through the idle list once registered.
            Next::Start(id, job) => shared.start_worker(id, job),
        }
    }
    if shared.servers_left.fetch_sub(1, SeqCst) == 1 {
        // The last server out wakes the reactor, which sleeps as the idle server.
        if let Some(reactor) = shared.reactor.get() {
            while !shared.reactor_done.load(SeqCst) {
                let _ = server.wake(reactor);
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn reactor_main(shared: Arc<Shared>, ready: mpsc::Sender<io::Result<()>>) {
    let server = match Server::register() {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = shared.reactor.set(server.handle());
    let _ = ready.send(Ok(()));
    let mut woken = Vec::with_capacity(1024);
    loop {
        shared.group.take_idle_into(&mut woken);
        if !woken.is_empty() {
            let n = woken.len();
            {
                let mut s = lock(&shared.sched);
                for r in woken.drain(..) {
                    let t = shared.resume(r);
                    s.queue.push(t);
                }
            }
            if n == 1 {
                shared.work.notify_one();
            } else {
                shared.work.notify_all();
            }
        }
        if shared.finished.load(SeqCst) {
            break;
        }
        if let Err(e) = shared.group.park(&server, None) {
            fatal("reactor", e);
        }
    }
    shared.reactor_done.store(true, SeqCst);
}

fn preemptor_main(shared: Arc<Shared>, slice: Duration, signal: libc::c_int) {
    let tick = (slice / 2).max(Duration::from_millis(1));
    while !shared.finished.load(SeqCst) {
        thread::sleep(tick);
        for r in &shared.running {
            if let Some((w, since)) = &*lock(r) {
                if since.elapsed() >= slice {
                    let _ = w.preempt(signal);
                }
            }
        }
    }
}

/// Configures and starts a [`Runtime`].
///
/// ```no_run
/// use std::time::Duration;
/// use umcg_runtime::{Builder, Lifo};
///
/// let rt = Builder::new()
///     .servers(4)
///     .preemption(Duration::from_millis(10))
///     .policy(Lifo::default())
///     .stack_size(128 << 10)
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
    policy: Box<dyn Policy>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("servers", &self.servers)
            .field("preemption", &self.preemption)
            .field("preemption_signal", &self.preemption_signal)
            .field("stack_size", &self.stack_size)
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// One server per CPU, FIFO, no time slices, 256 KiB worker stacks.
    pub fn new() -> Self {
        Builder {
            servers: thread::available_parallelism().map_or(1, |n| n.get()),
            preemption: None,
            preemption_signal: libc::SIGRTMIN() + 1,
            stack_size: 256 << 10,
            policy: Box::new(Fifo::default()),
        }
    }

    /// How many servers (tasks running at once). At least 1.
    pub fn servers(mut self, n: usize) -> Self {
        self.servers = n.max(1);
        self
    }

    /// Time slices: a task that runs longer than `slice` without blocking or yielding is
    /// preempted and queued again. Uses the real-time signal `SIGRTMIN + 1` unless
    /// [`Builder::preemption_signal`] names another, in either order.
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
        self.policy = Box::new(policy);
        self
    }

    /// The time slice and its signal, if time slices are on.
    fn time_slices(&self) -> Option<(Duration, libc::c_int)> {
        self.preemption.map(|slice| (slice, self.preemption_signal))
    }

    /// Starts the runtime's threads.
    ///
    /// Errors: [`io::ErrorKind::Unsupported`] on a kernel without UMCG; whatever starting
    /// threads or registering them returns.
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
                queue: self.policy,
                pending: VecDeque::new(),
                free: Vec::new(),
            }),
            injector: Injector::new(),
            work: EventCount::default(),
            done: EventCount::default(),
            live: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            shutdown: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            workers_alive: AtomicUsize::new(0),
            blocked: AtomicUsize::new(0),
            max_unblocked: 2 * self.servers,
            servers_left: AtomicUsize::new(self.servers),
            reactor: OnceLock::new(),
            reactor_done: AtomicBool::new(false),
            running: (0..self.servers).map(|_| Mutex::new(None)).collect(),
            preemption: time_slices,
            stack_size: self.stack_size,
            worker_threads: Mutex::new(Vec::new()),
        });
        let mut rt = Runtime {
            shared: shared.clone(),
            threads: Vec::new(),
            _preemption_handler: preemption_handler,
        };
        let (tx, rx) = mpsc::channel();
        let s = shared.clone();
        let t = tx.clone();
        rt.threads.push(
            thread::Builder::new()
                .name("umcg-reactor".into())
                .spawn(move || reactor_main(s, t))?,
        );
        rx.recv().map_err(io::Error::other)??;
        for idx in 0..self.servers {
            let s = shared.clone();
            let t = tx.clone();
            rt.threads.push(
                thread::Builder::new()
                    .name(format!("umcg-server-{idx}"))
                    .spawn(move || server_main(s, idx, t))?,
            );
        }
        for _ in 0..self.servers {
            if let Err(e) = rx.recv().map_err(io::Error::other)? {
                rt.shutdown_inner();
                return Err(e);
            }
        }
        if let Some((slice, signal)) = time_slices {
            let s = shared.clone();
            rt.threads.push(
                thread::Builder::new()
                    .name("umcg-preempt".into())
                    .spawn(move || preemptor_main(s, slice, signal))?,
            );
        }
        Ok(rt)
    }
}

/// A running UMCG runtime. Dropping it is [`Runtime::shutdown`].
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Vec<thread::JoinHandle<()>>,
    /// Dropped after `threads` are joined, which the `Drop` of `Runtime` does first.
    _preemption_handler: Option<umcg::PreemptionHandler>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("live_tasks", &self.shared.live_tasks())
            .field("worker_threads", &self.shared.workers_alive.load(SeqCst))
            .finish()
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
    let inner = Arc::new(JoinInner {
        result: Mutex::new(None),
        cv: Condvar::new(),
    });
    let mine = inner.clone();
    let queued = shared.spawn_job(Box::new(move || {
        let r = panic::catch_unwind(AssertUnwindSafe(f)).map_err(JoinError::panic);
        *lock(&mine.result) = Some(r);
        mine.cv.notify_all();
        // If the `JoinHandle` is gone, the result is dropped here, and its `Drop` may panic:
        // that panic must not unwind out of the job, past the bookkeeping of the worker that
        // runs it. Its payload is leaked, in case dropping that panics too.
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(move || drop(mine))) {
            std::mem::forget(payload);
        }
    }));
    if !queued {
        *lock(&inner.result) = Some(Err(JoinError(JoinErrorKind::Cancelled)));
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
}

impl Runtime {
    /// A runtime with the default settings ([`Builder::new`]).
    ///
    /// ```no_run
    /// let rt = umcg_runtime::Runtime::new()?;
    /// let answer = rt.spawn(|| 6 * 7);
    /// assert_eq!(answer.join().unwrap(), 42);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> io::Result<Runtime> {
        Builder::new().build()
    }

    /// Runs `f` as a new task. It may block in any system call: only the task waits.
    ///
    /// ```no_run
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

    /// Waits for every task (blocked ones included) to finish, then stops all threads.
    ///
    /// Must not be called from a task of this runtime.
    pub fn shutdown(mut self) {
        self.shutdown_inner();
    }

    fn shutdown_inner(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        let s = &self.shared;
        s.shutdown.store(true, SeqCst);
        loop {
            let ticket = s.done.prepare();
            if s.live_tasks() == 0 {
                s.done.cancel();
                break;
            }
            s.done.wait(ticket, None);
        }
        s.work.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let workers = std::mem::take(&mut *lock(&s.worker_threads));
        for t in workers {
            let _ = t.join();
        }
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
        fatal("yield", e);
    }
}

/// The number of the task the caller runs, if it is a task.
pub fn current_task() -> Option<u64> {
    let w = CURRENT.with(|c| c.get());
    // SAFETY: as in `yield_now()`.
    (!w.is_null()).then(|| unsafe { &*w }.data().task.load(SeqCst))
}

struct JoinInner<T> {
    result: Mutex<Option<Result<T, JoinError>>>,
    cv: Condvar,
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
    /// ```no_run
    /// let rt = umcg_runtime::Runtime::new()?;
    /// let bad = rt.spawn(|| -> u32 { panic!("oops") });
    /// assert!(bad.join().unwrap_err().is_panic());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn join(self) -> Result<T, JoinError> {
        let mut r = lock(&self.inner.result);
        loop {
            if let Some(r) = r.take() {
                return r;
            }
            r = self.inner.cv.wait(r).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        lock(&self.inner.result).is_some()
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
}
