//! Workers: the threads that servers run.

use crate::error::Error;
use crate::group::{mark, Group};
use crate::server::claim;
use crate::state::{State, TaskState};
use crate::sys;
use crate::word::{TaskCell, TaskWord};
use std::io;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

/// The calling thread, registered as a UMCG worker of a [`Group`] (see
/// [`Group::register_worker`]); it unregisters when dropped, handing its server the CPU back.
///
/// Not `Send`: a registration belongs to the thread that made it. While the guard lives, the
/// thread runs only when a server runs it; when it blocks in the kernel, its server gets the
/// CPU back.
#[derive(Debug)]
pub struct Worker<T> {
    _group: Group<T>,
    cell: Arc<TaskCell<T>>,
    _thread_bound: PhantomData<*const ()>,
}

/// A shared handle on a worker: to look at its state and data, or to preempt it.
#[derive(Debug)]
pub struct WorkerRef<T> {
    cell: Arc<TaskCell<T>>,
}

impl<T> Clone for WorkerRef<T> {
    fn clone(&self) -> Self {
        WorkerRef {
            cell: self.cell.clone(),
        }
    }
}

/// The right to run an IDLE worker: from [`Group::take_idle`], [`Event::Yielded`] or
/// [`Worker::switch_to`]. Exactly one exists for each worker that waits to be run, so a worker
/// cannot be queued twice.
///
/// [`Event::Yielded`]: crate::Event::Yielded
#[derive(Debug)]
#[must_use = "dropping a Runnable leaves its worker parked for ever"]
pub struct Runnable<T> {
    worker: WorkerRef<T>,
}

impl<T> Runnable<T> {
    pub(crate) fn new(worker: WorkerRef<T>) -> Self {
        Runnable { worker }
    }

    /// The worker.
    pub fn worker(&self) -> &WorkerRef<T> {
        &self.worker
    }

    pub(crate) fn into_worker(self) -> WorkerRef<T> {
        self.worker
    }
}

impl<T> WorkerRef<T> {
    pub(crate) fn from_cell(cell: Arc<TaskCell<T>>) -> Self {
        WorkerRef { cell }
    }

    pub(crate) fn cell(&self) -> &TaskCell<T> {
        &self.cell
    }

    pub(crate) fn word(&self) -> &TaskWord {
        self.cell.word()
    }

    /// Its TID.
    pub fn tid(&self) -> u32 {
        self.cell.tid()
    }

    /// Its current state.
    pub fn state(&self) -> State {
        self.cell.word().state()
    }

    /// The scheduler data it was registered with.
    pub fn data(&self) -> &T {
        self.cell.data()
    }

    /// Whether both handles name the same worker.
    pub fn same(&self, other: &WorkerRef<T>) -> bool {
        Arc::ptr_eq(&self.cell, &other.cell)
    }

    /// Asks the kernel to take the CPU away from this worker if a server runs it: sets
    /// `UMCG_TF_PREEMPTED` and sends it `signal`, which must have a handler (any, see
    /// [`install_preemption_handler`]). Its server is woken with [`Event::Preempted`] and the
    /// worker comes back through the idle list.
    ///
    /// Only a worker in the plain RUNNING state is preempted, in one compare-and-exchange to
    /// RUNNING|PREEMPTED before the signal is sent: that is the state a server gives the
    /// worker it runs, and that server stays IDLE until the worker leaves RUNNING (see
    /// [`Server::run`]). A worker that is not run by a server (made RUNNING by
    /// [`Server::wake_worker`], on its way to the idle list) carries a mark that makes it
    /// differ, so that the kernel never finds a preempted worker without an IDLE server (it
    /// would kill the process).
    ///
    /// Returns `Ok(false)` if the worker was not preempted (not RUNNING, LOCKED, preempted
    /// already, or not run by a server).
    ///
    /// The signal interrupts what the worker does, as any signal does: a system call that it
    /// makes then is restarted if it can be (`SA_RESTART`), and otherwise fails with `EINTR`:
    /// `poll()`, `epoll_wait()`, `select()`, `nanosleep()` and the others that signal(7) lists
    /// are never restarted.
    ///
    /// ```no_run
    /// # fn f(w: umcg::WorkerRef<()>) -> std::io::Result<()> {
    /// let signal = libc::SIGRTMIN() + 1;
    /// let _handler = umcg::install_preemption_handler(signal)?;
    /// if w.preempt(signal)? {
    ///     // Its server wakes with Event::Preempted; the worker returns through the idle list.
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`Event::Preempted`]: crate::Event::Preempted
    /// [`Server::run`]: crate::Server::run
    /// [`Server::wake_worker`]: crate::Server::wake_worker
    pub fn preempt(&self, signal: libc::c_int) -> io::Result<bool> {
        let running = State::new(TaskState::Running);
        if self
            .word()
            .cas(running, running.with_preempted(true))
            .is_err()
        {
            return Ok(false);
        }
        sys::tgkill(self.tid(), signal)?;
        Ok(true)
    }

    /// The TID of the server that runs it, or ran it last (0 if none).
    pub fn server_tid(&self) -> u32 {
        self.word().next_tid()
    }
}

/// The preemption handler: the kernel does the work on the worker's way back to user space.
/// (The host model of the kernel is told here, where a process can see that way.)
extern "C" fn ignore_signal(_: libc::c_int) {
    #[cfg(umcg_model)]
    crate::model::signal_delivered();
}

/// The signals for which [`install_preemption_handler`] installed its handler: how many
/// [`PreemptionHandler`]s use each, and the disposition to restore when the last is dropped.
static INSTALLED: Mutex<Vec<Installed>> = Mutex::new(Vec::new());

struct Installed {
    signal: libc::c_int,
    users: usize,
    previous: libc::sigaction,
}

/// Installs a handler that does nothing for `signal` (with `SA_RESTART`), so that
/// [`WorkerRef::preempt`] can use it, for as long as the returned guard lives. Preemption needs
/// a signal that is delivered: one whose disposition is "ignore" would be dropped before the
/// worker sees it.
///
/// The signal must be left to this crate: if the application installed a handler of its own
/// for it, that handler stays and the call fails with [`io::ErrorKind::AlreadyExists`]. Guards
/// for the same signal may coexist (two runtimes, say); when the last one is dropped, the
/// disposition the signal had before (default or ignored) is restored.
pub fn install_preemption_handler(signal: libc::c_int) -> io::Result<PreemptionHandler> {
    let ours = ignore_signal as extern "C" fn(libc::c_int) as usize;
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = installed.iter_mut().find(|i| i.signal == signal) {
        // The application may have changed the disposition since.
        if sys::sigaction(signal, None)?.sa_sigaction != ours {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the preemption signal's handler was replaced by the application",
            ));
        }
        i.users += 1;
        return Ok(PreemptionHandler { signal });
    }
    // SAFETY: a zeroed sigaction is valid; the mask is then emptied by sigemptyset().
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = ours;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa.sa_mask` is a valid signal set to initialize.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // Install, then look at what was there, so that no handler set in between is lost.
    let previous = sys::sigaction(signal, Some(&sa))?;
    if previous.sa_sigaction != libc::SIG_DFL && previous.sa_sigaction != libc::SIG_IGN {
        // Putting back a disposition that sigaction() returned cannot fail.
        let _ = sys::sigaction(signal, Some(&previous));
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the preemption signal has a handler of the application",
        ));
    }
    installed.push(Installed {
        signal,
        users: 1,
        previous,
    });
    Ok(PreemptionHandler { signal })
}

/// Keeps the handler of [`install_preemption_handler`] installed; see there.
#[must_use = "the handler is removed when the guard is dropped"]
#[derive(Debug)]
pub struct PreemptionHandler {
    signal: libc::c_int,
}

impl PreemptionHandler {
    /// The signal.
    pub fn signal(&self) -> libc::c_int {
        self.signal
    }
}

impl Drop for PreemptionHandler {
    fn drop(&mut self) {
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        let Some(idx) = installed.iter().position(|i| i.signal == self.signal) else {
            return;
        };
        installed[idx].users -= 1;
        if installed[idx].users == 0 {
            let i = installed.swap_remove(idx);
            // Only our own handler is taken away: one that the application installed since
            // stays. Restoring a disposition that sigaction() returned cannot fail.
            let ours = ignore_signal as extern "C" fn(libc::c_int) as usize;
            if sys::sigaction(self.signal, None).is_ok_and(|cur| cur.sa_sigaction == ours) {
                let _ = sys::sigaction(self.signal, Some(&i.previous));
            }
        }
    }
}

impl<T> Worker<T> {
    pub(crate) fn new(group: Group<T>, cell: Arc<TaskCell<T>>) -> Self {
        Worker {
            _group: group,
            cell,
            _thread_bound: PhantomData,
        }
    }

    /// Its TID.
    pub fn tid(&self) -> u32 {
        self.cell.tid()
    }

    /// The data it was registered with.
    pub fn data(&self) -> &T {
        self.cell.data()
    }

    /// A shared handle on this worker.
    pub fn handle(&self) -> WorkerRef<T> {
        WorkerRef::from_cell(self.cell.clone())
    }

    /// The server that runs it now (its `next_tid`).
    pub fn server_tid(&self) -> u32 {
        self.cell.word().next_tid()
    }

    /// RUNNING (maybe with PREEMPTED set, which is dropped) to IDLE|LOCKED with `why` in the
    /// user bits. Only the worker itself leaves RUNNING this way. On failure, the state found.
    fn leave_running(&self, why: u8) -> Result<(), State> {
        let word = self.cell.word();
        let mut cur = word.state();
        loop {
            if cur.task_state() != TaskState::Running || cur.locked() {
                return Err(cur);
            }
            let idle = State::new(TaskState::Idle)
                .with_locked(true)
                .with_user_bits(why);
            match word.cas(cur, idle) {
                Ok(()) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// The server that runs it, made RUNNING again. Returns whether this call did it.
    fn release_server(&self) -> bool {
        // SAFETY: this worker runs (the caller is its own thread, with its guard), so no server
        // sets its server meanwhile (see `TaskCell::server_word()`).
        let Some(server) = (unsafe { self.cell.server_word() }) else {
            return false;
        };
        server
            .transition(TaskState::Idle, State::new(TaskState::Running))
            .is_ok()
    }

    /// Gives the CPU back to its server and waits until a server runs it again. The server
    /// gets an [`Event::Yielded`](crate::Event::Yielded) with the right to run it.
    ///
    /// ```no_run
    /// # let group: umcg::Group<()> = umcg::Group::new();
    /// let me = group.register_worker(())?;
    /// for _ in 0..3 {
    ///     me.yield_now()?; // the server decides who runs next
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn yield_now(&self) -> io::Result<()> {
        self.leave_running(mark::YIELDED)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let _ = self.release_server();
        // The kernel unlocks it, switches to next_tid (the server) and parks it.
        sys::umcg_wait(0, 0)
    }

    /// Hands the CPU straight to the IDLE worker `target`, which takes over this worker's
    /// server, and waits until a server runs this worker again.
    ///
    /// `park` receives this worker's [`Runnable`] before the switch: put it where a server
    /// will find it (a server that picks it up before the switch is complete waits for it).
    ///
    /// Errors, with `target`'s [`Runnable`] given back (`park` is not called): `target` is not
    /// IDLE ([`Error::NotIdle`]); this worker is not plainly RUNNING
    /// ([`Error::CallerNotRunning`]). Once the switch is done, an error of the wait is
    /// [`Error::Os`].
    pub fn switch_to(
        &self,
        target: Runnable<T>,
        park: impl FnOnce(Runnable<T>),
    ) -> Result<(), Error<T>> {
        let locked = State::new(TaskState::Running).with_locked(true);
        let t = claim(target, locked)?;
        let server_tid = self.cell.word().next_tid();
        if let Err(s) = self.leave_running(mark::SWITCHED) {
            // Nobody else changes a RUNNING|LOCKED worker: put it back as it was, and give its
            // right to run back to the caller, so that it is not lost.
            t.word().store_state(State::new(TaskState::Idle));
            return Err(Error::CallerNotRunning(Runnable::new(t), s));
        }
        t.cell().set_server_from(&self.cell);
        t.word().set_next_tid(server_tid);
        // SAFETY: as in `release_server()`: this worker still runs user code here.
        if let Some(server) = unsafe { self.cell.server_word() } {
            server.set_next_tid(t.tid());
        }
        self.cell.word().set_next_tid(t.tid());
        let _ = t.word().cas(locked, State::new(TaskState::Running));
        park(Runnable::new(self.handle()));
        match sys::umcg_wait(0, 0) {
            // `target`, RUNNING since before the call, got a CPU elsewhere first and is gone
            // already (it exited or unregistered). The switch is done all the same: this worker
            // gave its server away and waits, still LOCKED, for a server to run it. Without a
            // next_tid the kernel unlocks it and parks it.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                self.cell.word().set_next_tid(0);
                sys::umcg_wait(0, 0).map_err(Error::Os)
            }
            res => res.map_err(Error::Os),
        }
    }
}

impl<T> Drop for Worker<T> {
    fn drop(&mut self) {
        // Hand the CPU back (IDLE|LOCKED: no wake detection on the way out), then unregister.
        if self.leave_running(mark::EXITING).is_ok() && self.release_server() {
            let _ = sys::umcg_wait(sys::UMCG_WAIT_WAKE_ONLY, 0);
        }
        // SAFETY: unregistering passes no pointer.
        let _ = unsafe { sys::umcg_ctl(sys::UMCG_CTL_UNREGISTER, std::ptr::null_mut()) };
        // The server that handles the exit forgets it (it may still need to look it up).
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler_of(signal: libc::c_int) -> usize {
        // SAFETY: a zeroed sigaction is valid to be filled in by sigaction().
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            assert_eq!(libc::sigaction(signal, std::ptr::null(), &mut sa), 0);
            sa.sa_sigaction
        }
    }

    extern "C" fn foreign_handler(_: libc::c_int) {}

    // Each test uses a signal of its own: dispositions are process-wide and tests run in
    // parallel.
    #[test]
    fn handler_is_restored_when_the_last_user_drops_it() {
        let signal = libc::SIGRTMIN() + 5;
        assert_eq!(handler_of(signal), libc::SIG_DFL);
        let first = install_preemption_handler(signal).expect("install");
        let second = install_preemption_handler(signal).expect("install twice");
        assert_ne!(handler_of(signal), libc::SIG_DFL);
        drop(first);
        assert_ne!(handler_of(signal), libc::SIG_DFL, "still in use");
        drop(second);
        assert_eq!(
            handler_of(signal),
            libc::SIG_DFL,
            "the previous disposition is back"
        );
    }

    #[test]
    fn a_handler_the_application_installs_meanwhile_stays() {
        let signal = libc::SIGRTMIN() + 7;
        let guard = install_preemption_handler(signal).expect("install");
        let foreign = foreign_handler as extern "C" fn(libc::c_int) as usize;
        // SAFETY: as above; the handler does nothing.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = foreign;
            assert_eq!(libc::sigaction(signal, &sa, std::ptr::null_mut()), 0);
        }
        let err = install_preemption_handler(signal).expect_err("not ours any more");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        drop(guard);
        assert_eq!(
            handler_of(signal),
            foreign,
            "the application's handler stays"
        );
    }

    #[test]
    fn a_handler_of_the_application_is_not_replaced() {
        let signal = libc::SIGRTMIN() + 6;
        // SAFETY: as above; the handler does nothing.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = foreign_handler as extern "C" fn(libc::c_int) as usize;
            assert_eq!(libc::sigaction(signal, &sa, std::ptr::null_mut()), 0);
        }
        let err = install_preemption_handler(signal).expect_err("must refuse");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            handler_of(signal),
            foreign_handler as extern "C" fn(libc::c_int) as usize,
            "the application's handler stays"
        );
    }
}
