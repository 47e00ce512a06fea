//! The workloads of `umcg-runtime-bench` (see its documentation).

pub mod echo;

/// Context switches of the whole process so far (voluntary and involuntary, every thread,
/// those that exited included), from `getrusage(RUSAGE_SELF)`.
pub fn context_switches() -> u64 {
    // SAFETY: a zeroed rusage is a valid buffer.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage buffer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0;
    }
    (u.ru_nvcsw + u.ru_nivcsw) as u64
}
