//! The raw ABI: `struct umcg_task`, the constants of `<linux/umcg.h>` and the two system calls.
//!
//! Everything here mirrors the kernel header one to one, so that code written against the C
//! header translates directly. The functions are thin: they return the kernel's answer as an
//! [`io::Result`] and check nothing themselves. Prefer the safe layer in the crate root.
//!
//! The syscall numbers are this patch series' own (the RFC's are taken upstream), and mainline
//! 6.13 and later use them for `setxattrat()`/`getxattrat()`. So the wrappers first check, once,
//! that the kernel really is a UMCG one ([`is_supported`]), and otherwise fail with an error of
//! kind [`io::ErrorKind::Unsupported`] without making the call.
//!
//! Built with `--cfg umcg_model`, the two system calls go to a model of the kernel's half of
//! the protocol in user space instead (see the crate's `model` module), for tests on hosts
//! without UMCG.

use std::io;

/// System call number of `umcg_ctl()` on x86_64.
#[cfg(target_arch = "x86_64")]
pub const SYS_UMCG_CTL: libc::c_long = 463;
/// System call number of `umcg_wait()` on x86_64.
#[cfg(target_arch = "x86_64")]
pub const SYS_UMCG_WAIT: libc::c_long = 464;

/// Not a UMCG task.
pub const UMCG_TASK_NONE: u32 = 0;
/// May run (servers and workers).
pub const UMCG_TASK_RUNNING: u32 = 1;
/// Parked until made RUNNING.
pub const UMCG_TASK_IDLE: u32 = 2;
/// A worker blocked in the kernel.
pub const UMCG_TASK_BLOCKED: u32 = 3;
/// Bits 0-7 of `state`: the task state.
pub const UMCG_TASK_STATE_MASK: u32 = 0xff;

/// User space is in the middle of a transition of this task: no block or wake detection.
pub const UMCG_TF_LOCKED: u32 = 1 << 8;
/// User space asks the kernel to take the CPU away from this RUNNING worker.
pub const UMCG_TF_PREEMPTED: u32 = 1 << 9;
/// Bits 8-15 of `state`: the flags.
pub const UMCG_TF_MASK: u32 = 0xff00;
/// Bits 16-23 of `state`: reserved, must be zero.
pub const UMCG_RESERVED_MASK: u32 = 0x00ff_0000;
/// Bits 24-31 of `state`: free for user space; the kernel preserves them.
pub const UMCG_USER_MASK: u32 = 0xff00_0000;
/// The shift of the user bits.
pub const UMCG_USER_SHIFT: u32 = 24;

/// `umcg_ctl()`: register the calling thread.
pub const UMCG_CTL_REGISTER: u32 = 0x00001;
/// `umcg_ctl()`: unregister the calling thread.
pub const UMCG_CTL_UNREGISTER: u32 = 0x00002;
/// `umcg_ctl()`, with [`UMCG_CTL_REGISTER`]: register as a worker, not a server.
pub const UMCG_CTL_WORKER: u32 = 0x10000;

/// `umcg_wait()`: wake `next_tid` and return, do not sleep.
pub const UMCG_WAIT_WAKE_ONLY: u32 = 1;
/// `umcg_wait()`, with [`UMCG_WAIT_WAKE_ONLY`]: wake it on this CPU.
pub const UMCG_WAIT_WF_CURRENT_CPU: u32 = 2;

/// The value a worker's `idle_workers_ptr` holds while the kernel pushes it on the idle list.
pub const UMCG_IDLE_NODE_PENDING: u64 = 1;

/// `struct umcg_task`: the user-memory state of one UMCG task, one cache line.
///
/// The kernel reads and writes only the four fields; the rest of the line is padding. The
/// safe layer never hands out `&mut` to a registered task: it uses atomics of the same layout
/// (see [`crate::TaskWord`]).
#[repr(C, align(64))]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct umcg_task {
    /// State (bits 0-7), flags (8-15), reserved (16-23), user bits (24-31).
    pub state: u32,
    /// The task `umcg_wait()` wakes or switches to; a RUNNING worker's server.
    pub next_tid: u32,
    /// A worker's idle-list head; while on the list, the link to the next node.
    pub idle_workers_ptr: u64,
    /// A worker's pointer to the `u32` holding an idle server's TID.
    pub idle_server_tid_ptr: u64,
}

const _: () = assert!(std::mem::size_of::<umcg_task>() == 64);
const _: () = assert!(std::mem::align_of::<umcg_task>() == 64);
const _: () = assert!(std::mem::offset_of!(umcg_task, next_tid) == 4);
const _: () = assert!(std::mem::offset_of!(umcg_task, idle_workers_ptr) == 8);
const _: () = assert!(std::mem::offset_of!(umcg_task, idle_server_tid_ptr) == 16);

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "this kernel does not support UMCG (CONFIG_UMCG=n, or another kernel's syscall numbers)",
    )
}

#[cfg_attr(umcg_model, allow(dead_code))]
fn result(ret: libc::c_long) -> io::Result<()> {
    if ret == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOSYS) {
        return Err(unsupported());
    }
    Err(err)
}

/// `umcg_ctl(flags, self)`.
///
/// # Safety
///
/// With [`UMCG_CTL_REGISTER`], `task` must stay valid and must not move until the calling
/// thread unregisters or exits: the kernel keeps its address and writes to it at any time.
pub unsafe fn umcg_ctl(flags: u32, task: *mut umcg_task) -> io::Result<()> {
    if !is_supported() {
        return Err(unsupported());
    }
    stats::count(&stats::UMCG_CTL);
    #[cfg(umcg_model)]
    return crate::model::ctl(flags, task).map_err(io::Error::from_raw_os_error);
    // SAFETY: the system call only reads and writes `task` as the caller promised.
    #[cfg(not(umcg_model))]
    result(unsafe { libc::syscall(SYS_UMCG_CTL, flags, task) })
}

/// `umcg_wait(flags, abs_timeout)`.
///
/// `abs_timeout` is absolute `CLOCK_REALTIME` in nanoseconds, 0 for none.
///
/// This is safe to call: it acts only on the calling thread's registered task, which the
/// registration made the kernel's to access, and on the task its `next_tid` names.
pub fn umcg_wait(flags: u32, abs_timeout: u64) -> io::Result<()> {
    if !is_supported() {
        return Err(unsupported());
    }
    stats::count(&stats::UMCG_WAIT);
    #[cfg(umcg_model)]
    return crate::model::wait(flags, abs_timeout).map_err(io::Error::from_raw_os_error);
    // SAFETY: the system call takes no pointers.
    #[cfg(not(umcg_model))]
    result(unsafe { libc::syscall(SYS_UMCG_WAIT, flags, abs_timeout) })
}

/// Whether the running kernel implements UMCG. Asked once, then remembered.
///
/// The probe is `umcg_wait()` with an unknown flag: a UMCG kernel rejects it with `EINVAL`
/// before anything else. A kernel without the syscall says `ENOSYS`. Mainline 6.13 and later
/// have `getxattrat()` at this number, which also answers `EINVAL` to many arguments, so every
/// one of the six argument registers is passed explicitly (none is left to whatever the
/// registers happen to hold), with values on which `getxattrat()` answers something else: its
/// sixth argument, the size of its argument structure, above `PAGE_SIZE` is `E2BIG`, checked
/// before anything is read. `umcg_wait()` ignores arguments three to six.
pub fn is_supported() -> bool {
    // The model of the kernel's half is always there.
    if cfg!(umcg_model) {
        return true;
    }
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| probe(raw_syscall6))
}

/// The arguments of the probe: an unknown `umcg_wait()` flag, no timeout, then zeros (a
/// `NULL` path, no `AT_` flags, a `NULL` name and argument pointer for `getxattrat()`) and a
/// size no kernel accepts for `getxattrat()`'s argument structure.
const PROBE_ARGS: [libc::c_long; 6] = [1 << 31, 0, 0, 0, 0, libc::c_long::MAX];

/// A system call with all six argument registers given: the result, and `errno` if it failed.
type Syscall6 = fn(libc::c_long, [libc::c_long; 6]) -> (libc::c_long, i32);

fn raw_syscall6(nr: libc::c_long, a: [libc::c_long; 6]) -> (libc::c_long, i32) {
    // SAFETY: the only caller passes PROBE_ARGS: no pointers (a NULL path and name for
    // getxattrat(), which fails on its size argument before it reads them).
    let ret = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    let errno = if ret == -1 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    (ret, errno)
}

/// The probe behind [`is_supported`], with the system call made by `syscall`.
fn probe(syscall: Syscall6) -> bool {
    let (ret, errno) = syscall(SYS_UMCG_WAIT, PROBE_ARGS);
    ret == -1 && errno == libc::EINVAL
}

/// The calling thread's TID.
pub fn gettid() -> u32 {
    // SAFETY: gettid() has no preconditions and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    u32::try_from(tid).expect("TIDs are positive")
}

/// Sends `signal` to the thread `tid` of this process (`tgkill()`).
pub fn tgkill(tid: u32, signal: libc::c_int) -> io::Result<()> {
    stats::count(&stats::TGKILL);
    // SAFETY: no pointers; the kernel checks the arguments.
    let ret = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, signal) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `sigaction(2)`: sets `new` (if any) as the disposition of `signal`; returns the previous
/// one.
pub(crate) fn sigaction(
    signal: libc::c_int,
    new: Option<&libc::sigaction>,
) -> io::Result<libc::sigaction> {
    // SAFETY: a zeroed sigaction is a valid buffer for the old disposition, and `new`, if any,
    // is a valid sigaction. Callers install only async-signal-safe handlers or dispositions
    // that sigaction() gave them earlier.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        let new = new.map_or(std::ptr::null(), |n| n as *const libc::sigaction);
        if libc::sigaction(signal, new, &mut old) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(old)
    }
}

/// `FUTEX_WAIT` (private) on `word`: sleeps while it holds `expected`, until a
/// [`futex_wake`], a signal or, if given, the (relative) `timeout`. Returns whether the call
/// slept and was woken (`false`: the word had changed, a timeout or an interruption; callers
/// check their condition again in every case).
pub fn futex_wait(
    word: &std::sync::atomic::AtomicU32,
    expected: u32,
    timeout: Option<std::time::Duration>,
) -> bool {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    stats::count(&stats::FUTEX_WAIT);
    // SAFETY: the kernel reads the futex word, which `word` keeps alive across the call, and
    // the timespec, which lives on this stack frame.
    let wait = || unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            tsp,
        )
    };
    // A blocking point that the model of the kernel must be told about.
    #[cfg(umcg_model)]
    let ret = crate::model::blocking(wait);
    #[cfg(not(umcg_model))]
    let ret = wait();
    ret == 0
}

/// `FUTEX_WAKE` (private): wakes up to `n` threads waiting on `word`; returns how many.
pub fn futex_wake(word: &std::sync::atomic::AtomicU32, n: i32) -> usize {
    stats::count(&stats::FUTEX_WAKE);
    // SAFETY: the kernel only hashes the address of the word, which `word` keeps alive.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        )
    };
    usize::try_from(ret).unwrap_or(0)
}

/// Counts of the system calls made through this module, process-wide, for benchmarks: each
/// counter is a relaxed atomic add next to the call, compiled in only with the
/// `syscall-stats` feature (without it, [`snapshot`](stats::snapshot) reads zeros).
pub mod stats {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    pub(super) static UMCG_CTL: AtomicU64 = AtomicU64::new(0);
    pub(super) static UMCG_WAIT: AtomicU64 = AtomicU64::new(0);
    pub(super) static FUTEX_WAIT: AtomicU64 = AtomicU64::new(0);
    pub(super) static FUTEX_WAKE: AtomicU64 = AtomicU64::new(0);
    pub(super) static TGKILL: AtomicU64 = AtomicU64::new(0);

    #[inline]
    pub(super) fn count(_c: &AtomicU64) {
        #[cfg(feature = "syscall-stats")]
        _c.fetch_add(1, Relaxed);
    }

    /// The system calls made so far, by kind.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Counts {
        /// `umcg_ctl()`.
        pub umcg_ctl: u64,
        /// `umcg_wait()`.
        pub umcg_wait: u64,
        /// `FUTEX_WAIT` through [`super::futex_wait`].
        pub futex_wait: u64,
        /// `FUTEX_WAKE` through [`super::futex_wake`].
        pub futex_wake: u64,
        /// `tgkill()`.
        pub tgkill: u64,
    }

    impl Counts {
        /// All of them.
        pub fn total(&self) -> u64 {
            self.umcg_ctl + self.umcg_wait + self.futex_wait + self.futex_wake + self.tgkill
        }
    }

    /// Whether the counters count (the `syscall-stats` feature).
    pub const ENABLED: bool = cfg!(feature = "syscall-stats");

    /// The counts now.
    pub fn snapshot() -> Counts {
        Counts {
            umcg_ctl: UMCG_CTL.load(Relaxed),
            umcg_wait: UMCG_WAIT.load(Relaxed),
            futex_wait: FUTEX_WAIT.load(Relaxed),
            futex_wake: FUTEX_WAKE.load(Relaxed),
            tgkill: TGKILL.load(Relaxed),
        }
    }
}

/// Absolute `CLOCK_REALTIME` nanoseconds `after` from now, for `umcg_wait()`'s timeout.
pub fn realtime_deadline(after: std::time::Duration) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from((now + after).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without UMCG (the usual build host) the wrappers say `Unsupported`; with it, an
    /// unregistered thread gets `EINVAL`. Either way, no crash.
    #[test]
    fn errors_are_precise() {
        let e = umcg_wait(0, 0).expect_err("not registered");
        if is_supported() {
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        } else {
            assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        }
    }

    /// `umcg_wait()` as a UMCG kernel implements it: an unknown flag is `EINVAL`.
    fn umcg_kernel(nr: libc::c_long, a: [libc::c_long; 6]) -> (libc::c_long, i32) {
        assert_eq!(nr, SYS_UMCG_WAIT);
        if a[0] as u32 & !3 != 0 {
            (-1, libc::EINVAL)
        } else {
            (0, 0)
        }
    }

    /// `getxattrat()` (mainline 6.13 and later) at the same number, with the order of its
    /// checks: the size of its argument structure first (`EINVAL` below the first version,
    /// `E2BIG` above `PAGE_SIZE`), then its flags (`EINVAL`), then the path (`EFAULT` for
    /// `NULL`).
    fn getxattrat(nr: libc::c_long, a: [libc::c_long; 6]) -> (libc::c_long, i32) {
        assert_eq!(nr, SYS_UMCG_WAIT);
        let usize = a[5] as u64;
        if usize < 16 {
            (-1, libc::EINVAL)
        } else if usize > 4096 {
            (-1, libc::E2BIG)
        } else if a[2] & !0x1100 != 0 {
            (-1, libc::EINVAL)
        } else {
            (-1, libc::EFAULT)
        }
    }

    /// A kernel without a system call at that number.
    fn no_syscall(_: libc::c_long, _: [libc::c_long; 6]) -> (libc::c_long, i32) {
        (-1, libc::ENOSYS)
    }

    #[test]
    fn probe_tells_umcg_from_getxattrat_and_from_nothing() {
        assert!(probe(umcg_kernel));
        assert!(!probe(getxattrat));
        assert!(!probe(no_syscall));
    }

    /// The probe passes all six registers: a `getxattrat()` that reads a register the probe
    /// left to chance (here: poisoned with small values, which give `EINVAL`) would see it.
    #[test]
    fn probe_passes_every_argument() {
        for poison in [0, 1, 8, 15] {
            let mut args = PROBE_ARGS;
            // What the registers would hold if the probe passed only two arguments.
            for a in args.iter_mut().skip(2) {
                *a = poison;
            }
            assert_eq!(getxattrat(SYS_UMCG_WAIT, args), (-1, libc::EINVAL));
        }
        // The real arguments are explicit and make getxattrat() fail otherwise.
        assert_eq!(getxattrat(SYS_UMCG_WAIT, PROBE_ARGS), (-1, libc::E2BIG));
        assert_eq!(umcg_kernel(SYS_UMCG_WAIT, PROBE_ARGS), (-1, libc::EINVAL));
    }

    #[test]
    fn deadline_is_in_the_future() {
        let now = realtime_deadline(std::time::Duration::ZERO);
        let later = realtime_deadline(std::time::Duration::from_secs(1));
        assert!(later >= now + 999_000_000);
    }
}
