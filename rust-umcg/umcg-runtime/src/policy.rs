//! Run-queue policies: which runnable task a free server takes next.

use std::collections::VecDeque;

/// A task waiting for a server: one that never ran, or one that yielded or woke up.
///
/// Opaque: a policy only orders them.
#[derive(Debug)]
pub struct Task {
    pub(crate) id: u64,
    pub(crate) kind: crate::TaskKind,
}

impl Task {
    /// The task's number, in spawn order from 1.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether it has not run yet.
    pub fn is_new(&self) -> bool {
        matches!(self.kind, crate::TaskKind::New(_))
    }
}

/// A run-queue policy. Servers call it with the runtime's scheduler lock held, so it need
/// not be thread-safe itself, and it must not block.
pub trait Policy: Send + 'static {
    /// Queues a task that is ready to run.
    fn push(&mut self, task: Task);
    /// The task to run next, if any.
    fn pop(&mut self) -> Option<Task>;
    /// How many tasks are queued.
    fn len(&self) -> usize;
    /// Whether none is.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// First in, first out: tasks run in the order they became ready (the default).
#[derive(Debug, Default)]
pub struct Fifo(VecDeque<Task>);

impl Policy for Fifo {
    fn push(&mut self, task: Task) {
        self.0.push_back(task)
    }
    fn pop(&mut self) -> Option<Task> {
        self.0.pop_front()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Last in, first out: the most recently readied task runs first (better cache locality,
/// no fairness).
#[derive(Debug, Default)]
pub struct Lifo(Vec<Task>);

impl Policy for Lifo {
    fn push(&mut self, task: Task) {
        self.0.push(task)
    }
    fn pop(&mut self) -> Option<Task> {
        self.0.pop()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskKind;

    fn task(id: u64) -> Task {
        Task {
            id,
            kind: TaskKind::New(Box::new(|| {})),
        }
    }

    #[test]
    fn fifo_and_lifo_orders() {
        let mut f = Fifo::default();
        let mut l = Lifo::default();
        for i in 1..=3 {
            f.push(task(i));
            l.push(task(i));
        }
        assert_eq!(f.len(), 3);
        let fo: Vec<u64> = std::iter::from_fn(|| f.pop().map(|t| t.id())).collect();
        let lo: Vec<u64> = std::iter::from_fn(|| l.pop().map(|t| t.id())).collect();
        assert_eq!(fo, [1, 2, 3]);
        assert_eq!(lo, [3, 2, 1]);
        assert!(f.is_empty() && l.is_empty());
    }
}
