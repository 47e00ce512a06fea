//! Scoped tasks: tasks that may borrow from the caller's stack, like `std::thread::scope`.
//!
//! [`Handle::scope`] returns only once every task spawned in the scope has finished, so the
//! tasks may borrow anything that outlives the scope. Joining blocks, which costs a task only
//! its own worker thread: the server runs other tasks meanwhile.

use crate::sync::EventCount;
use crate::{Handle, Job, JoinError, JoinErrorKind, JoinInner};
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

/// A scope to spawn tasks in; see [`Handle::scope`].
pub struct Scope<'scope, 'env: 'scope> {
    handle: Handle,
    state: Arc<ScopeState>,
    /// Invariant in `'scope` and `'env`, like `std::thread::Scope`.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("running", &self.state.running.load(SeqCst))
            .finish()
    }
}

#[derive(Default)]
struct ScopeState {
    /// Tasks spawned in the scope that have not finished.
    running: AtomicUsize,
    all_done: EventCount,
    /// Tasks that panicked and whose panic no `join` has returned.
    unjoined_panics: AtomicUsize,
}

impl ScopeState {
    fn task_done(&self) {
        if self.running.fetch_sub(1, SeqCst) == 1 {
            self.all_done.notify_all();
        }
    }

    fn wait_all(&self) {
        loop {
            let ticket = self.all_done.prepare();
            if self.running.load(SeqCst) == 0 {
                self.all_done.cancel();
                return;
            }
            self.all_done.wait(ticket, None);
        }
    }
}

/// An owned permission to join a task spawned in a [`Scope`].
pub struct ScopedJoinHandle<'scope, T> {
    inner: Arc<JoinInner<T>>,
    state: Arc<ScopeState>,
    scope: PhantomData<&'scope ()>,
}

impl<T> std::fmt::Debug for ScopedJoinHandle<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedJoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> ScopedJoinHandle<'_, T> {
    /// Waits for the task, as [`JoinHandle::join`](crate::JoinHandle::join) does. A panic
    /// returned here no longer makes the scope panic.
    pub fn join(self) -> Result<T, JoinError> {
        let r = self.inner.wait();
        if matches!(r, Err(JoinError(JoinErrorKind::Panic(_)))) {
            self.state.unjoined_panics.fetch_sub(1, SeqCst);
        }
        r
    }

    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Runs `f` as a new task of the scope's runtime; `f` may borrow from outside the scope.
    ///
    /// The task is joined when the scope ends, if it was not joined before. If the runtime has
    /// shut down, `f` is dropped without running, as with [`Handle::spawn`].
    ///
    /// A task cannot borrow what the scope's closure itself owns, which may be gone before
    /// the task ends:
    ///
    /// ```compile_fail,E0373
    /// let rt = umcg_runtime::Runtime::new().unwrap();
    /// rt.scope(|s| {
    ///     let local = 5;
    ///     s.spawn(|| local + 1);
    /// });
    /// ```
    pub fn spawn<F, T>(&'scope self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let inner = Arc::new(JoinInner::new());
        let mine = inner.clone();
        let state = self.state.clone();
        self.state.running.fetch_add(1, SeqCst);
        let job: Box<dyn FnOnce() + Send + 'scope> = Box::new(move || {
            let r = panic::catch_unwind(AssertUnwindSafe(f)).map_err(JoinError::panic);
            if r.is_err() {
                state.unjoined_panics.fetch_add(1, SeqCst);
            }
            mine.set(r);
            // Everything that may borrow from the scope is dropped before the scope learns
            // that the task is done (see `JoinHandle` for why a panicking drop is contained).
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(move || drop(mine))) {
                std::mem::forget(payload);
            }
            state.task_done();
        });
        // SAFETY: only the lifetime is changed. The job, and whatever it borrows for 'scope,
        // is done with before `Handle::scope` returns: either it ran, and its last act is
        // `task_done()`, after which it touches nothing of the scope (its captures were moved
        // into the body and dropped there, `state` is 'static), or the runtime refused it and
        // dropped it within `spawn_job`, before this function goes on. `Handle::scope` waits
        // until `running` is back to zero, and every task counted there calls `task_done()`
        // exactly once (below for a refused one).
        let job: Job =
            unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + 'scope>, Job>(job) };
        if !self.handle.shared.spawn_job(job) {
            inner.set(Err(JoinError(JoinErrorKind::Cancelled)));
            self.state.task_done();
        }
        ScopedJoinHandle {
            inner,
            state: self.state.clone(),
            scope: PhantomData,
        }
    }
}

impl Handle {
    /// Runs `f` with a [`Scope`] in which tasks may borrow from the caller, like
    /// `std::thread::scope`: returns `f`'s result once every task spawned in the scope has
    /// finished.
    ///
    /// # Panics
    ///
    /// If `f` panics, after all the tasks finished, with its panic; otherwise if a task
    /// panicked and no [`ScopedJoinHandle::join`] returned that panic.
    ///
    /// ```
    /// # if !umcg::is_supported() { return Ok(()); }
    /// let rt = umcg_runtime::Runtime::new()?;
    /// let mut counts = [0u32; 4];
    /// let words = ["one", "two", "three", "four"];
    /// rt.handle().scope(|s| {
    ///     for (c, w) in counts.iter_mut().zip(&words) {
    ///         s.spawn(move || *c = w.len() as u32);
    ///     }
    /// });
    /// assert_eq!(counts, [3, 3, 5, 4]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn scope<'env, F, R>(&self, f: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        let scope = Scope {
            handle: self.clone(),
            state: Arc::new(ScopeState::default()),
            scope: PhantomData,
            env: PhantomData,
        };
        let r = panic::catch_unwind(AssertUnwindSafe(|| f(&scope)));
        scope.state.wait_all();
        match r {
            Err(payload) => panic::resume_unwind(payload),
            Ok(_) if scope.state.unjoined_panics.load(SeqCst) > 0 => {
                panic!("a scoped task panicked")
            }
            Ok(r) => r,
        }
    }
}
