//! Servers: the threads that run workers.

use crate::error::Error;
use crate::group::{mark, Group};
use crate::state::{State, TaskState};
use crate::sys;
use crate::word::{TaskCell, TaskWord};
use crate::worker::{Runnable, WorkerRef};
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// The calling thread, registered as a UMCG server; unregistered when dropped.
///
/// Not `Send`: a registration belongs to the thread that made it.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # if !umcg::is_supported() { return Ok(()); }
/// let server = umcg::Server::register()?;
/// println!("server {} registered", server.tid());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    cell: Arc<TaskCell<()>>,
    _thread_bound: PhantomData<*const ()>,
}

/// A handle on a server, for other threads: to wake it or switch to it.
#[derive(Debug, Clone)]
pub struct ServerRef {
    cell: Arc<TaskCell<()>>,
}

impl ServerRef {
    /// Its TID.
    pub fn tid(&self) -> u32 {
        self.cell.tid()
    }

    /// Its current state.
    pub fn state(&self) -> State {
        self.cell.word().state()
    }
}

/// Why [`Server::run`] returned: what became of the worker that had the CPU last.
#[derive(Debug)]
#[must_use = "a Yielded event holds the only right to run its worker"]
pub enum Event<T> {
    /// It yielded: it is IDLE, not on the idle list, and the caller decides when it runs again.
    Yielded(Runnable<T>),
    /// It blocked in the kernel; it comes back through the idle list once it wakes (it may be
    /// there already). By the time this server looks, another server may even have taken it
    /// from the list and run it: what it did there (a yield, an exit, a preemption) is that
    /// server's event, and this server reports only that the worker left it in the kernel.
    Blocked(WorkerRef<T>),
    /// It was preempted ([`WorkerRef::preempt`]); it comes back through the idle list. If it
    /// was preempted in user space, the kernel queued it before it woke this server, and did
    /// not wake the group's idle server for it: take it with [`Group::take_idle`].
    ///
    /// [`Group::take_idle`]: crate::Group::take_idle
    Preempted(WorkerRef<T>),
    /// It unregistered or exited.
    Exited(WorkerRef<T>),
}

impl<T> Event<T> {
    /// The worker concerned.
    pub fn worker(&self) -> &WorkerRef<T> {
        match self {
            Event::Yielded(r) => r.worker(),
            Event::Blocked(w) | Event::Preempted(w) | Event::Exited(w) => w,
        }
    }
}

/// A worker state as the server sees it when it wakes.
enum Seen {
    StillRunning,
    Yielded,
    Blocked,
    Preempted,
    Exited,
}

/// What became of the worker that a server ran, from its state `s` and whether it is still
/// that server's (`mine`: no other server has run it since).
///
/// A worker that leaves its server in the kernel (it blocks, or is preempted) comes back
/// through the idle list; by the time its server looks, another server may have taken it from
/// there and run it, and it may even have yielded to that server or exited on it. Its state
/// then says nothing about this server, and a mark in it is another server's: it blocked (or
/// was preempted) as far as this server is concerned, which is all this server may report.
fn classify(s: State, mine: bool) -> Seen {
    if !mine {
        return Seen::Blocked;
    }
    match (s.task_state(), s.user_bits()) {
        (TaskState::None, _) | (_, mark::EXITING) => Seen::Exited,
        (TaskState::Running, _) => Seen::StillRunning,
        _ if s.preempted() => Seen::Preempted,
        (TaskState::Idle, mark::YIELDED) => Seen::Yielded,
        // Switched away: its new server took over; the one this server runs now is next_tid.
        (TaskState::Idle, mark::SWITCHED) => Seen::StillRunning,
        // BLOCKED, or IDLE without a mark: it blocked, woke, and was queued.
        _ => Seen::Blocked,
    }
}

impl Server {
    /// Registers the calling thread as a server.
    ///
    /// Errors: [`io::ErrorKind::Unsupported`] without UMCG in the kernel, `EINVAL` if the thread
    /// is registered already.
    pub fn register() -> io::Result<Server> {
        let cell = Arc::new(TaskCell::new(TaskState::Running, ()));
        cell.set_tid(sys::gettid());
        // SAFETY: the cell is kept alive by the guard, which unregisters on drop (or by the
        // leaked Arc if the guard is leaked); it never moves.
        unsafe { sys::umcg_ctl(sys::UMCG_CTL_REGISTER, cell.word().as_raw())? };
        Ok(Server {
            cell,
            _thread_bound: PhantomData,
        })
    }

    /// Its TID.
    pub fn tid(&self) -> u32 {
        self.cell.tid()
    }

    /// Its current state.
    pub fn state(&self) -> State {
        self.cell.word().state()
    }

    pub(crate) fn word(&self) -> &TaskWord {
        self.cell.word()
    }

    /// A handle that other threads can use to wake or switch to this server.
    pub fn handle(&self) -> ServerRef {
        ServerRef {
            cell: self.cell.clone(),
        }
    }

    fn go_idle(&self) -> io::Result<()> {
        self.word()
            .transition(TaskState::Running, State::new(TaskState::Idle))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    }

    /// Becomes RUNNING again unless someone already made it so.
    fn go_running(&self) {
        let _ = self
            .word()
            .transition(TaskState::Idle, State::new(TaskState::Running));
    }

    /// RUNNING to IDLE with the [`mark::SERVING`] mark: waiting for the worker it runs. The
    /// mark keeps [`Server::wake`] and [`Server::switch_to`] of other servers from making it
    /// RUNNING while its worker runs (a preemption of the worker would then find no IDLE
    /// server, and the kernel would kill the process).
    fn serve(&self) -> Result<(), State> {
        let word = self.word();
        let mut cur = word.state();
        loop {
            if cur.task_state() != TaskState::Running || cur.locked() {
                return Err(cur);
            }
            let serving = State::new(TaskState::Idle).with_user_bits(mark::SERVING);
            match word.cas(cur, serving) {
                Ok(()) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Done serving: plain RUNNING, whoever made it RUNNING (its worker, the kernel, or itself
    /// now). Only once the worker is no longer RUNNING.
    fn done_serving(&self) {
        let word = self.word();
        let mut cur = word.state();
        while let Err(now) = word.cas(cur, State::new(TaskState::Running)) {
            cur = now;
        }
    }

    /// Looks at `w`, which this server ran, to see what became of it.
    ///
    /// RUNNING|LOCKED is a transition in flight: a server (or a worker switching to `w`) is
    /// handing `w` a CPU and names its server before it unlocks it, so that state is waited
    /// out. Any state seen after it implies the server pointer set before the unlock.
    fn look_at<T>(&self, w: &WorkerRef<T>) -> Seen {
        let s = w.word().state_unlocked_from(TaskState::Running);
        classify(
            s,
            std::ptr::eq(w.cell().server_addr(), Arc::as_ptr(&self.cell)),
        )
    }

    /// Runs `worker` on this server's CPU until it yields, blocks, is preempted or exits.
    ///
    /// The sequence: the server becomes IDLE, the worker IDLE -> RUNNING|LOCKED, each names
    /// the other in `next_tid`, the worker is unlocked, and `umcg_wait()` hands it the CPU. If
    /// the worker switches to another worker meanwhile, the server goes on with that one, and
    /// the event is about whichever worker had the CPU last.
    ///
    /// Once the worker has the CPU, this returns only when it no longer runs: the server stays
    /// IDLE for as long as its worker is RUNNING, which is what the kernel needs to preempt the
    /// worker (see [`WorkerRef::preempt`]).
    ///
    /// A worker is free to run from the moment it is unlocked, so it may be done and gone
    /// before this server's `umcg_wait()` names it (`ESRCH`): its state then says how it left,
    /// as after any wake-up.
    ///
    /// A worker that has just yielded may still be IDLE|LOCKED (the kernel unlocks it in its
    /// `umcg_wait()`): that is waited out.
    ///
    /// Errors, with the [`Runnable`] given back: the server is not RUNNING
    /// ([`Error::CallerNotRunning`]), or the worker is not IDLE ([`Error::NotIdle`]). The server
    /// is RUNNING again when this returns.
    pub fn run<T>(&self, group: &Group<T>, worker: Runnable<T>) -> Result<Event<T>, Error<T>> {
        if let Err(s) = self.serve() {
            return Err(Error::CallerNotRunning(worker, s));
        }
        let w = match claim(worker, State::new(TaskState::Running).with_locked(true)) {
            Ok(w) => w,
            Err(e) => {
                self.done_serving();
                return Err(e);
            }
        };
        w.cell().set_server(&self.cell);
        w.word().set_next_tid(self.tid());
        self.word().set_next_tid(w.tid());
        let unlocked = w.word().cas(
            State::new(TaskState::Running).with_locked(true),
            State::new(TaskState::Running),
        );
        debug_assert!(unlocked.is_ok(), "nobody changes a RUNNING|LOCKED worker");

        let mut current = w;
        loop {
            match sys::umcg_wait(0, 0) {
                // Made RUNNING; or no UMCG task to hand the CPU to: the worker, RUNNING since
                // before the call, got a CPU elsewhere first and is gone already (it exited or
                // unregistered), and its state says how it left.
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                // The kernel restarts interrupted waits; any other failure would be a bug of
                // its own. Poll rather than leave a running worker without its IDLE server.
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
            // From here on the server waits without switching (next_tid 0); a worker that
            // switches to another worker names the new one here, so read and clear it at once.
            let tid = self.word().take_next_tid();
            if tid != 0 && tid != current.tid() {
                if let Some(w) = group.worker(tid) {
                    current = w;
                }
            }
            let seen = self.look_at(&current);
            if !matches!(seen, Seen::StillRunning) {
                self.done_serving();
                return Ok(match seen {
                    Seen::Yielded => Event::Yielded(Runnable::new(current)),
                    Seen::Preempted => Event::Preempted(current),
                    Seen::Exited => {
                        group.forget_worker(&current);
                        Event::Exited(current)
                    }
                    _ => Event::Blocked(current),
                });
            }
            // Woken while the worker still runs (a switch in flight, or a stray wake-up): IDLE
            // again at once, and wait. If the worker leaves meanwhile, it (or the kernel) makes
            // this server RUNNING first, and umcg_wait() returns at once.
            if self.word().state().task_state() == TaskState::Running {
                let _ = self.serve();
            }
        }
    }

    /// Makes `worker` RUNNING without running it here: it has no server, so the kernel queues
    /// it on the idle list again and wakes the idle server ("wake a worker without running
    /// it"). Until it is queued, it carries a mark of its own in the user bits, so that
    /// [`WorkerRef::preempt`] leaves it alone.
    ///
    /// Errors: the worker is not IDLE ([`Error::NotIdle`], with its [`Runnable`]); the kernel
    /// refused to wake it ([`Error::Os`]).
    pub fn wake_worker<T>(&self, worker: Runnable<T>) -> Result<(), Error<T>> {
        let woken = State::new(TaskState::Running).with_user_bits(mark::WOKEN);
        let w = claim_with(worker, woken, |w| w.word().set_next_tid(0))?;
        self.word().set_next_tid(w.tid());
        let res = sys::umcg_wait(sys::UMCG_WAIT_WAKE_ONLY, 0);
        self.word().set_next_tid(0);
        res.map_err(Error::Os)
    }

    /// Makes the server `target` RUNNING and wakes it. Returns `Ok(false)` if it was not IDLE,
    /// or was IDLE waiting for a worker that it runs (only that worker, or the kernel for it,
    /// may wake it then).
    pub fn wake(&self, target: &ServerRef) -> io::Result<bool> {
        if !make_running_if_idle(target) {
            return Ok(false);
        }
        match self.wake_tid(target.tid()) {
            // Once RUNNING, the target may see it before it sleeps, return, unregister and
            // exit, all before the wake-up: then the kernel finds no UMCG task to wake, and
            // the target has nothing left to be woken from.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(true),
            r => r.map(|()| true),
        }
    }

    /// Wakes the UMCG task `tid` (which the caller made RUNNING), on this CPU.
    fn wake_tid(&self, tid: u32) -> io::Result<()> {
        self.word().set_next_tid(tid);
        let res = sys::umcg_wait(sys::UMCG_WAIT_WAKE_ONLY | sys::UMCG_WAIT_WF_CURRENT_CPU, 0);
        self.word().set_next_tid(0);
        res
    }

    /// Hands this CPU to the IDLE server `target` and sleeps until someone makes this server
    /// RUNNING again (a server-to-server context switch).
    ///
    /// Errors: `target` is not IDLE, or waits for a worker that it runs
    /// ([`io::ErrorKind::InvalidInput`]; nothing happens then).
    pub fn switch_to(&self, target: &ServerRef) -> io::Result<()> {
        self.go_idle()?;
        if !make_running_if_idle(target) {
            self.go_running();
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        self.word().set_next_tid(target.tid());
        let res = sys::umcg_wait(0, 0);
        self.word().set_next_tid(0);
        if res.is_err() {
            self.go_running();
        }
        res
    }

    /// Sleeps until someone makes this server RUNNING ([`Server::wake`], [`Server::switch_to`])
    /// or `timeout` passes. Returns `Ok(false)` on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        self.go_idle()?;
        self.word().set_next_tid(0);
        match sys::umcg_wait(0, timeout.map_or(0, sys::realtime_deadline)) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => {
                let mine = self
                    .word()
                    .transition(TaskState::Idle, State::new(TaskState::Running))
                    .is_ok();
                Ok(!mine)
            }
            Err(e) => {
                self.go_running();
                Err(e)
            }
        }
    }
}

/// Takes an IDLE worker for the holder of its [`Runnable`]: waits out IDLE|LOCKED (a worker
/// that has just yielded or switched is unlocked by the kernel in its `umcg_wait()`), then
/// moves it to `to`. Gives the `Runnable` back if the worker is not IDLE.
pub(crate) fn claim<T>(worker: Runnable<T>, to: State) -> Result<WorkerRef<T>, Error<T>> {
    claim_with(worker, to, |_| {})
}

/// As [`claim`], calling `before` once the worker is known to be IDLE and unlocked, before it
/// leaves IDLE (to set up what the new state needs).
pub(crate) fn claim_with<T>(
    worker: Runnable<T>,
    to: State,
    before: impl FnOnce(&WorkerRef<T>),
) -> Result<WorkerRef<T>, Error<T>> {
    let mut cur = worker.worker().word().state_unlocked_from(TaskState::Idle);
    if cur.task_state() != TaskState::Idle || cur.locked() {
        return Err(Error::NotIdle(worker, cur));
    }
    before(worker.worker());
    let w = worker.into_worker();
    loop {
        match w.word().cas(cur, to) {
            Ok(()) => return Ok(w),
            // Only user bits (or a flag of the kernel's) may change under the holder of the
            // `Runnable`; anything else gives it back.
            Err(now) if now.task_state() == TaskState::Idle && !now.locked() => cur = now,
            Err(now) => return Err(Error::NotIdle(Runnable::new(w), now)),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: unregistering passes no pointer.
        let _ = unsafe { sys::umcg_ctl(sys::UMCG_CTL_UNREGISTER, std::ptr::null_mut()) };
    }
}

/// Makes the server `target` RUNNING if it is IDLE, plainly or as a group's idle server
/// ([`Group::park`](crate::Group::park), whose mark is cleared: the server tells this wake-up
/// from the kernel's by it); not if it serves a worker.
fn make_running_if_idle(target: &ServerRef) -> bool {
    let word = target.cell.word();
    let running = State::new(TaskState::Running);
    let idle = State::new(TaskState::Idle);
    word.cas(idle, running).is_ok() || word.cas(idle.with_user_bits(mark::PARKED), running).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(state: TaskState, user: u8) -> State {
        State::new(state).with_user_bits(user)
    }

    #[test]
    fn classification() {
        let mine = |st| classify(st, true);
        assert!(matches!(
            mine(s(TaskState::Idle, mark::YIELDED)),
            Seen::Yielded
        ));
        assert!(matches!(
            mine(s(TaskState::Idle, mark::YIELDED).with_locked(true)),
            Seen::Yielded
        ));
        // The trap: IDLE without the mark is a worker that blocked, woke and was queued.
        assert!(matches!(mine(s(TaskState::Idle, 0)), Seen::Blocked));
        assert!(matches!(mine(s(TaskState::Blocked, 0)), Seen::Blocked));
        assert!(matches!(
            mine(s(TaskState::Blocked, 0).with_preempted(true)),
            Seen::Preempted
        ));
        assert!(matches!(
            mine(s(TaskState::Idle, 0).with_preempted(true)),
            Seen::Preempted
        ));
        // A preemption in flight: the kernel has not acted yet.
        assert!(matches!(
            mine(s(TaskState::Running, 0).with_preempted(true)),
            Seen::StillRunning
        ));
        assert!(matches!(mine(s(TaskState::None, 0)), Seen::Exited));
        assert!(matches!(
            mine(s(TaskState::Idle, mark::EXITING).with_locked(true)),
            Seen::Exited
        ));
        assert!(matches!(
            mine(s(TaskState::Idle, mark::SWITCHED).with_locked(true)),
            Seen::StillRunning
        ));
    }

    #[test]
    fn a_worker_that_moved_on_blocked_here() {
        // It blocked here, came back through the idle list and another server ran it: its
        // yield, exit, switch or preemption there is not this server's event, and a RUNNING
        // worker of another server must not keep this one waiting.
        for st in [
            s(TaskState::Idle, mark::YIELDED),
            s(TaskState::Idle, mark::YIELDED).with_locked(true),
            s(TaskState::Idle, mark::EXITING).with_locked(true),
            s(TaskState::Idle, mark::SWITCHED).with_locked(true),
            s(TaskState::Idle, 0).with_preempted(true),
            s(TaskState::Running, 0),
            s(TaskState::None, 0),
        ] {
            assert!(matches!(classify(st, false), Seen::Blocked), "{st:?}");
        }
    }

    #[test]
    fn look_at_tells_its_own_worker_from_one_that_moved_on() {
        use crate::word::TaskCell;
        let cell = Arc::new(TaskCell::new(TaskState::Idle, ()));
        cell.word().store_state(s(TaskState::Idle, mark::YIELDED));
        let w = WorkerRef::from_cell(cell.clone());
        let here = Server {
            cell: Arc::new(TaskCell::new(TaskState::Running, ())),
            _thread_bound: PhantomData,
        };
        let there = Arc::new(TaskCell::new(TaskState::Running, ()));
        cell.set_server(&here.cell);
        assert!(matches!(here.look_at(&w), Seen::Yielded));
        cell.set_server(&there);
        assert!(matches!(here.look_at(&w), Seen::Blocked));
    }

    /// A worker's cell keeps the cell of the server that ran it alive, whatever becomes of the
    /// `Server` guard: the worker (and the kernel, through it) may still name that server.
    #[test]
    fn a_worker_keeps_its_servers_cell_alive() {
        use crate::word::TaskCell;
        let worker = Arc::new(TaskCell::new(TaskState::Idle, ()));
        let server = Arc::new(TaskCell::new(TaskState::Running, ()));
        worker.set_server(&server);
        let weak = Arc::downgrade(&server);
        drop(server);
        assert!(weak.upgrade().is_some(), "freed while its worker names it");
        assert_eq!(worker.server_strong_count(), 1);
        // SAFETY: nobody sets the server meanwhile.
        let word = unsafe { worker.server_word() }.expect("a server");
        assert_eq!(word.state(), State::new(TaskState::Running));
        // Another server takes over: the first one's cell goes.
        let other = Arc::new(TaskCell::new(TaskState::Running, ()));
        worker.set_server(&other);
        assert!(weak.upgrade().is_none());
        assert_eq!(Arc::strong_count(&other), 2);
        // A worker switched to takes its server from the switching worker.
        let target = Arc::new(TaskCell::new(TaskState::Idle, ()));
        target.set_server_from(&worker);
        assert_eq!(Arc::strong_count(&other), 3);
        drop(worker);
        drop(target);
        assert_eq!(
            Arc::strong_count(&other),
            1,
            "the references go with the cells"
        );
    }

    /// The holder of a `Runnable` waits out IDLE|LOCKED (a worker that has just yielded) and
    /// gets the `Runnable` back when the worker is not IDLE.
    #[test]
    fn claiming_waits_for_the_unlock_and_gives_the_runnable_back() {
        use crate::word::TaskCell;
        let cell = Arc::new(TaskCell::new(TaskState::Idle, 7u32));
        let locked = s(TaskState::Idle, mark::YIELDED).with_locked(true);
        cell.word().store_state(locked);
        let c = cell.clone();
        let unlocker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c.word().store_state(s(TaskState::Idle, mark::YIELDED));
        });
        let r = Runnable::new(WorkerRef::from_cell(cell.clone()));
        let to = State::new(TaskState::Running).with_locked(true);
        let w = claim(r, to).expect("claimed once unlocked");
        unlocker.join().unwrap();
        assert_eq!(w.state(), to);
        // Not IDLE: the Runnable comes back.
        cell.word().store_state(State::new(TaskState::Running));
        let e = claim(Runnable::new(w), to).expect_err("RUNNING");
        assert!(matches!(e, Error::NotIdle(_, st) if st == State::new(TaskState::Running)));
        let back = e.into_runnable().expect("given back");
        assert_eq!(*back.worker().data(), 7);
    }
}
