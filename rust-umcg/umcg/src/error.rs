//! The errors of the calls that hand a worker over.

use crate::state::State;
use crate::worker::Runnable;
use std::fmt;
use std::io;

/// Why [`Server::run`], [`Server::wake_worker`] or [`Worker::switch_to`] did not hand the
/// worker over. Whenever the worker was not handed over, its [`Runnable`] comes back in the
/// error ([`Error::into_runnable`]), so that an error never loses a worker.
///
/// ```no_run
/// # fn f(server: &umcg::Server, group: &umcg::Group<()>, r: umcg::Runnable<()>) {
/// match server.run(group, r) {
///     Ok(event) => println!("{event:?}"),
///     Err(e) => {
///         eprintln!("{e}");
///         if let Some(r) = e.into_runnable() {
///             // Still ours: queue it again, or run it later.
///             drop(r);
///         }
///     }
/// }
/// # }
/// ```
///
/// [`Server::run`]: crate::Server::run
/// [`Server::wake_worker`]: crate::Server::wake_worker
/// [`Worker::switch_to`]: crate::Worker::switch_to
#[non_exhaustive]
#[must_use]
pub enum Error<T> {
    /// The worker is not IDLE (its state is given): it was made RUNNING by other means (it
    /// timed out of a timed wait, say) or it is gone.
    NotIdle(Runnable<T>, State),
    /// The calling server or worker is not RUNNING (its state is given), so it has no CPU to
    /// hand over.
    CallerNotRunning(Runnable<T>, State),
    /// The kernel refused the call, after the worker was made RUNNING: the worker is no longer
    /// the caller's to run.
    Os(io::Error),
}

impl<T> Error<T> {
    /// The worker's [`Runnable`], if the worker was not handed over.
    pub fn into_runnable(self) -> Option<Runnable<T>> {
        match self {
            Error::NotIdle(r, _) | Error::CallerNotRunning(r, _) => Some(r),
            Error::Os(_) => None,
        }
    }

    /// The worker's [`Runnable`], if the worker was not handed over.
    pub fn runnable(&self) -> Option<&Runnable<T>> {
        match self {
            Error::NotIdle(r, _) | Error::CallerNotRunning(r, _) => Some(r),
            Error::Os(_) => None,
        }
    }
}

impl<T> fmt::Debug for Error<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotIdle(r, s) => write!(f, "NotIdle(worker {}, {s:?})", r.worker().tid()),
            Error::CallerNotRunning(r, s) => {
                write!(f, "CallerNotRunning(worker {}, {s:?})", r.worker().tid())
            }
            Error::Os(e) => write!(f, "Os({e:?})"),
        }
    }
}

impl<T> fmt::Display for Error<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotIdle(r, s) => write!(f, "worker {} is {s:?}, not IDLE", r.worker().tid()),
            Error::CallerNotRunning(_, s) => write!(f, "the caller is {s:?}, not RUNNING"),
            Error::Os(e) => write!(f, "umcg_wait(): {e}"),
        }
    }
}

impl<T> std::error::Error for Error<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os(e) => Some(e),
            _ => None,
        }
    }
}

/// For callers that only report errors: the [`Runnable`] in the error, if any, is dropped.
impl<T> From<Error<T>> for io::Error {
    fn from(e: Error<T>) -> io::Error {
        match e {
            Error::Os(e) => e,
            Error::NotIdle(..) => io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
            Error::CallerNotRunning(..) => {
                io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
            }
        }
    }
}
