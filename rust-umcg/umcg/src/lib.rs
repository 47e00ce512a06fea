//! Safe Rust bindings to Linux's User Managed Concurrency Groups (UMCG).
//!
//! UMCG lets a process run its own M:N scheduler: *worker* threads run only when a *server*
//! thread hands them its CPU; when a worker blocks in the kernel its server gets the CPU back
//! at once, and when it wakes the kernel queues it on an *idle-worker list* and wakes an idle
//! server. See the kernel's `Documentation/userspace-api/umcg.rst` for the protocol.
//!
//! This crate has two layers:
//!
//! - [`sys`]: the ABI as it is: `struct umcg_task`, the constants, and the two system calls.
//! - The safe layer: a [`Group`] (the idle-worker list and the idle-server slot that a set of
//!   workers share), [`Server`] and [`Worker`] registrations that unregister when dropped, and
//!   the protocol's sequences as methods: [`Server::run`], [`Worker::yield_now`],
//!   [`Worker::switch_to`], [`Server::wake_worker`], [`WorkerRef::preempt`],
//!   [`Server::switch_to`] and [`Server::wake`] between servers, [`Group::park`] as the idle
//!   server.
//!
//! The safe layer takes care of the protocol's traps: a server that wakes to find its worker
//! IDLE cannot tell from the state alone whether it yielded or blocked and was queued already
//! (the library marks a yield in the state word's user bits, so [`Event::Yielded`] and
//! [`Event::Blocked`] are told apart), and a preempted worker is queued by the kernel, so
//! [`Event::Preempted`] hands out no [`Runnable`]: each worker has at most one `Runnable` at a
//! time, which is what it takes to run it, so it cannot be queued twice.
//!
//! The library uses bits 24-31 of each `state` word (the user bits) itself.
//!
//! # Testing without a UMCG kernel
//!
//! Built with `RUSTFLAGS="--cfg umcg_model"`, the crate talks to `umcg::model` instead of the
//! kernel: a model of the kernel's half of the protocol in user space, so that schedulers
//! built on this crate can be tested on any Linux host. The kernel sees every sleep of a
//! worker; the model sees those that go through `umcg::model::blocking` (and
//! [`sys::futex_wait`]). The module's documentation says what else it leaves out.
//!
//! # Example
//!
//! A scheduler on this layer: one server runs eight workers that yield and block. The
//! program is `examples/simple_scheduler.rs`, which the guest tests run on a UMCG kernel:
//!
#![doc = concat!("```no_run\n", include_str!("../examples/simple_scheduler.rs"), "```")]

pub mod sys;

#[cfg(umcg_model)]
pub mod model;

mod error;
mod group;
mod idle;
mod server;
mod state;
mod word;
mod worker;

pub use error::Error;
pub use group::Group;
pub use server::{Event, Server, ServerRef};
pub use state::{State, TaskState};
pub use word::{TaskCell, TaskWord};
pub use worker::{install_preemption_handler, PreemptionHandler, Runnable, Worker, WorkerRef};

/// Whether the running kernel implements UMCG (see [`sys::is_supported`]).
pub fn is_supported() -> bool {
    sys::is_supported()
}

/// One round of waiting for another thread to finish a short step (a kernel push between its
/// exchange and its store, a transition under `UMCG_TF_LOCKED`): spins at first, then yields
/// the CPU, in case the other thread was preempted in the middle.
pub(crate) fn backoff(spins: &mut u32) {
    // A model check explores the other thread's step instead.
    #[cfg(loom)]
    {
        let _ = spins;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        *spins += 1;
        if *spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
