//! Typed views of a `state` word.

use crate::sys;
use std::fmt;

/// The task state in bits 0-7 of a `state` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Not a UMCG task (or a worker that exited: the kernel marks it so).
    None,
    /// Runnable by the kernel.
    Running,
    /// Parked until made RUNNING.
    Idle,
    /// A worker blocked in the kernel.
    Blocked,
    /// A value this library does not know.
    Unknown(u8),
}

impl TaskState {
    /// The ABI value.
    pub const fn raw(self) -> u32 {
        match self {
            TaskState::None => sys::UMCG_TASK_NONE,
            TaskState::Running => sys::UMCG_TASK_RUNNING,
            TaskState::Idle => sys::UMCG_TASK_IDLE,
            TaskState::Blocked => sys::UMCG_TASK_BLOCKED,
            TaskState::Unknown(v) => v as u32,
        }
    }

    /// Decodes bits 0-7.
    pub const fn from_raw(v: u8) -> Self {
        match v as u32 {
            sys::UMCG_TASK_NONE => TaskState::None,
            sys::UMCG_TASK_RUNNING => TaskState::Running,
            sys::UMCG_TASK_IDLE => TaskState::Idle,
            sys::UMCG_TASK_BLOCKED => TaskState::Blocked,
            _ => TaskState::Unknown(v),
        }
    }
}

/// A whole `state` word: task state, flags and user bits.
///
/// ```
/// use umcg::{State, TaskState};
///
/// let s = State::new(TaskState::Idle).with_locked(true).with_user_bits(3);
/// assert_eq!(s.task_state(), TaskState::Idle);
/// assert!(s.locked() && !s.preempted());
/// assert_eq!(s.user_bits(), 3);
/// assert_eq!(s.raw(), 2 | 1 << 8 | 3 << 24);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct State(u32);

impl State {
    /// A word with `state`, no flags and no user bits.
    pub const fn new(state: TaskState) -> Self {
        State(state.raw())
    }

    /// Wraps a raw word.
    pub const fn from_raw(raw: u32) -> Self {
        State(raw)
    }

    /// The raw word.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Bits 0-7.
    pub const fn task_state(self) -> TaskState {
        TaskState::from_raw((self.0 & sys::UMCG_TASK_STATE_MASK) as u8)
    }

    /// `UMCG_TF_LOCKED`.
    pub const fn locked(self) -> bool {
        self.0 & sys::UMCG_TF_LOCKED != 0
    }

    /// `UMCG_TF_PREEMPTED`.
    pub const fn preempted(self) -> bool {
        self.0 & sys::UMCG_TF_PREEMPTED != 0
    }

    /// Bits 24-31, which belong to user space.
    pub const fn user_bits(self) -> u8 {
        (self.0 >> sys::UMCG_USER_SHIFT) as u8
    }

    /// The same word with another task state (flags and user bits kept).
    pub const fn with_task_state(self, state: TaskState) -> Self {
        State((self.0 & !sys::UMCG_TASK_STATE_MASK) | state.raw())
    }

    /// The same word with `UMCG_TF_LOCKED` set or cleared.
    pub const fn with_locked(self, on: bool) -> Self {
        if on {
            State(self.0 | sys::UMCG_TF_LOCKED)
        } else {
            State(self.0 & !sys::UMCG_TF_LOCKED)
        }
    }

    /// The same word with `UMCG_TF_PREEMPTED` set or cleared.
    pub const fn with_preempted(self, on: bool) -> Self {
        if on {
            State(self.0 | sys::UMCG_TF_PREEMPTED)
        } else {
            State(self.0 & !sys::UMCG_TF_PREEMPTED)
        }
    }

    /// The same word with other user bits.
    pub const fn with_user_bits(self, bits: u8) -> Self {
        State((self.0 & !sys::UMCG_USER_MASK) | (bits as u32) << sys::UMCG_USER_SHIFT)
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.task_state())?;
        if self.locked() {
            f.write_str("|LOCKED")?;
        }
        if self.preempted() {
            f.write_str("|PREEMPTED")?;
        }
        let other =
            self.0 & !(sys::UMCG_TASK_STATE_MASK | sys::UMCG_TF_LOCKED | sys::UMCG_TF_PREEMPTED);
        if other != 0 {
            write!(f, "|{other:#x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for raw in [0u8, 1, 2, 3, 7, 255] {
            assert_eq!(TaskState::from_raw(raw).raw(), raw as u32);
        }
        let s = State::new(TaskState::Running).with_preempted(true);
        assert_eq!(s.raw(), sys::UMCG_TASK_RUNNING | sys::UMCG_TF_PREEMPTED);
        assert_eq!(s.with_preempted(false), State::new(TaskState::Running));
        assert_eq!(
            s.with_task_state(TaskState::Idle).task_state(),
            TaskState::Idle
        );
        assert!(s.with_task_state(TaskState::Idle).preempted());
        assert_eq!(
            format!("{:?}", s.with_user_bits(1)),
            "Running|PREEMPTED|0x1000000"
        );
    }
}
