//! Servers: the threads that run workers.

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
/// ```no_run
/// # fn main() -> std::io::Result<()> {
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
            .map_err(|s| io::Error::other(format!("server {} is {s:?}, not RUNNING", self.tid())))
    }

    /// Becomes RUNNING again unless someone already made it so.
    fn go_running(&self) {
        let _ = self
            .word()
            .transition(TaskState::Idle, State::new(TaskState::Running));
    }

    /// Looks at `w`, which this server ran, to see what became of it.
    ///
    /// RUNNING|LOCKED is a transition in flight: a server (or a worker switching to `w`) is
    /// handing `w` a CPU and names its server before it unlocks it, so that state is waited
    /// out. Any state seen after it implies the server pointer set before the unlock.
    fn look_at<T>(&self, w: &WorkerRef<T>) -> Seen {
        let s = w.word().state_unlocked_from(TaskState::Running);
        classify(s, std::ptr::eq(w.cell().server(), self.word()))
    }

    /// Runs `worker` on this server's CPU until it yields, blocks, is preempted or exits.
    ///
    /// The sequence: the server becomes IDLE, the worker IDLE -> RUNNING|LOCKED, each names
    /// the other in `next_tid`, the worker is unlocked, and `umcg_wait()` hands it the CPU. If
    /// the worker switches to another worker meanwhile, the server goes on with that one, and
    /// the event is about whichever worker had the CPU last.
    ///
    /// A worker is free to run from the moment it is unlocked, so it may be done and gone
    /// before this server's `umcg_wait()` names it (`ESRCH`): its state then says how it left,
    /// as after any wake-up.
    ///
    /// Errors: the worker is not IDLE (it was made RUNNING by someone else); an error of
    /// `umcg_wait()` other than that `ESRCH`. The server is RUNNING again in every case.
    pub fn run<T>(&self, group: &Group<T>, worker: Runnable<T>) -> io::Result<Event<T>> {
        let w = worker.into_worker();
        self.go_idle()?;
        // A yielding or switching worker is IDLE|LOCKED until the kernel unlocks it in its
        // umcg_wait(): wait that out.
        loop {
            let cur = w.word().state_unlocked_from(TaskState::Idle);
            if cur.task_state() != TaskState::Idle || cur.locked() {
                self.go_running();
                return Err(io::Error::other(format!(
                    "worker {} is {cur:?}, not IDLE",
                    w.tid()
                )));
            }
            if w.word()
                .cas(cur, State::new(TaskState::Running).with_locked(true))
                .is_ok()
            {
                break;
            }
        }
        w.cell().set_server(self.word());
        w.word().set_next_tid(self.tid());
        self.word().set_next_tid(w.tid());
        let unlocked = w.word().cas(
            State::new(TaskState::Running).with_locked(true),
            State::new(TaskState::Running),
        );
        debug_assert!(unlocked.is_ok(), "nobody changes a RUNNING|LOCKED worker");

        let mut current = w;
        loop {
            let res = sys::umcg_wait(0, 0);
            // From here on the server waits without switching (next_tid 0); a worker that
            // switches to another worker names the new one here, so read and clear it at once.
            let tid = self.word().take_next_tid();
            if tid != 0 && tid != current.tid() {
                if let Some(w) = group.worker(tid) {
                    current = w;
                }
            }
            match res {
                Ok(()) => {}
                // No UMCG task to hand the CPU to: the worker, RUNNING since before the call,
                // got a CPU elsewhere first (it had not gone to sleep yet) and is gone already
                // (it exited or unregistered). Its state says how it left, as after a wake-up.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => self.go_running(),
                Err(e) => {
                    self.go_running();
                    return Err(e);
                }
            }
            match self.look_at(&current) {
                Seen::Yielded => return Ok(Event::Yielded(Runnable::new(current))),
                Seen::Blocked => return Ok(Event::Blocked(current)),
                Seen::Preempted => return Ok(Event::Preempted(current)),
                Seen::Exited => {
                    group.forget_worker(&current);
                    return Ok(Event::Exited(current));
                }
                Seen::StillRunning => {}
            }
            // Woken while the worker still runs (its preemption or a switch is in flight, or
            // a stray wake-up): sleep again, unless it changed in the meantime.
            self.go_idle()?;
            if !matches!(self.look_at(&current), Seen::StillRunning) || self.word().next_tid() != 0
            {
                // umcg_wait() returns at once for a RUNNING caller.
                self.go_running();
            }
        }
    }

    /// Makes `worker` RUNNING without running it here: it has no server, so the kernel queues
    /// it on the idle list again and wakes the idle server ("wake a worker without running
    /// it").
    pub fn wake_worker<T>(&self, worker: Runnable<T>) -> io::Result<()> {
        let w = worker.into_worker();
        w.word().set_next_tid(0);
        w.word()
            .transition(TaskState::Idle, State::new(TaskState::Running))
            .map_err(|s| io::Error::other(format!("worker {} is {s:?}, not IDLE", w.tid())))?;
        self.word().set_next_tid(w.tid());
        let res = sys::umcg_wait(sys::UMCG_WAIT_WAKE_ONLY, 0);
        self.word().set_next_tid(0);
        res
    }

    /// Makes the server `target` RUNNING and wakes it. Returns `Ok(false)` if it was not IDLE.
    pub fn wake(&self, target: &ServerRef) -> io::Result<bool> {
        if target
            .cell
            .word()
            .transition(TaskState::Idle, State::new(TaskState::Running))
            .is_err()
        {
            return Ok(false);
        }
        self.wake_tid(target.tid()).map(|()| true)
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
    /// Errors: `target` is not IDLE (nothing happens then).
    pub fn switch_to(&self, target: &ServerRef) -> io::Result<()> {
        self.go_idle()?;
        if let Err(s) = target
            .cell
            .word()
            .transition(TaskState::Idle, State::new(TaskState::Running))
        {
            self.go_running();
            return Err(io::Error::other(format!(
                "server {} is {s:?}, not IDLE",
                target.tid()
            )));
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

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: unregistering passes no pointer.
        let _ = unsafe { sys::umcg_ctl(sys::UMCG_CTL_UNREGISTER, std::ptr::null_mut()) };
    }
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
        cell.set_server(here.word());
        assert!(matches!(here.look_at(&w), Seen::Yielded));
        cell.set_server(there.word());
        assert!(matches!(here.look_at(&w), Seen::Blocked));
    }
}
