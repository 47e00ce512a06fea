//! Run-queue policies: which ready task a free server takes next.
//!
//! The policies are built in: a server picks the next task with no lock that a worker may hold
//! and without allocating (a worker stopped inside the allocator would otherwise stop the
//! server too), which rules out running user code there.

mod sealed {
    pub trait Sealed {}
}

/// A run-queue policy: [`Fifo`] (the default) or [`Lifo`].
pub trait Policy: sealed::Sealed + Send + 'static {
    /// Whether the most recently readied task runs first.
    #[doc(hidden)]
    fn lifo(&self) -> bool;
}

/// First in, first out: tasks run in the order they became ready (the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct Fifo;

/// Last in, first out: the most recently readied task runs first (better cache locality, no
/// fairness: a task that keeps readying others can starve the older ones).
#[derive(Debug, Default, Clone, Copy)]
pub struct Lifo;

impl sealed::Sealed for Fifo {}
impl sealed::Sealed for Lifo {}

impl Policy for Fifo {
    fn lifo(&self) -> bool {
        false
    }
}

impl Policy for Lifo {
    fn lifo(&self) -> bool {
        true
    }
}
