//! A small KTAP test harness for tests that need a UMCG kernel.
//!
//! Each test runs in a child process (the binary re-executed with `--run NAME`), so that a
//! test that hangs or crashes costs only itself: the parent kills it after a timeout and
//! reports `not ok`. The output is KTAP, like the kernel's selftests, with each child's own
//! output as `#` diagnostic lines.
//!
//! Exit status: 0 if every test passed or was skipped, 1 otherwise, 4 (kselftest's "skip")
//! when the kernel has no UMCG.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A test: `Ok` passes, `Err` fails with a reason.
pub type TestFn = fn() -> Result<(), String>;

/// Fails the test with a formatted message unless the condition holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+)));
        }
    };
}

/// Turns any error into a failure with context.
pub trait Context<T> {
    /// The value, or a failure saying what was being done.
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Debug> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e:?}"))
    }
}

/// Sleeps for `d`. A worker that calls this blocks in the kernel, and its server gets the CPU
/// back. Built for the host model of the kernel (`--cfg umcg_model`), the sleep is marked as
/// the blocking point that the kernel would see.
pub fn sleep(d: Duration) {
    block_in_kernel(|| std::thread::sleep(d))
}

/// Runs `f`, a system call in which the calling thread may block: on a UMCG kernel, just
/// that; built for the host model, marked as a blocking point (see [`sleep`]).
pub fn block_in_kernel<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(umcg_model)]
    return umcg::model::blocking(f);
    #[cfg(not(umcg_model))]
    f()
}

/// How a failure's text starts when the test was skipped instead (see [`needs_kernel`]).
const SKIP: &str = "SKIP: ";

/// Skips the test when it runs against the host model of the kernel (`--cfg umcg_model`)
/// instead of a UMCG kernel: for what only the kernel does (`why` says what). Use with `?` at
/// the start of the test.
pub fn needs_kernel(why: &str) -> Result<(), String> {
    if cfg!(umcg_model) {
        return Err(format!("{SKIP}{why}"));
    }
    Ok(())
}

/// A child's exit status for a skipped test (kselftest's).
const SKIP_STATUS: i32 = 4;

/// The outcome of one test, run in a child process.
#[derive(PartialEq, Eq)]
enum Outcome {
    Passed,
    Skipped,
    Failed,
}

/// Runs the tests named on the command line (all if none) and exits.
pub fn main(suite: &str, tests: &[(&str, TestFn)], timeout: Duration) -> ! {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--run" {
        let Some((_, f)) = tests.iter().find(|(n, _)| *n == args[2]) else {
            eprintln!("no test {}", args[2]);
            std::process::exit(2);
        };
        match f() {
            Ok(()) => std::process::exit(0),
            Err(e) if e.starts_with(SKIP) => {
                println!("{e}");
                std::process::exit(SKIP_STATUS);
            }
            Err(e) => {
                println!("FAILED: {e}");
                std::process::exit(1);
            }
        }
    }
    if args.len() >= 3 && args[1] == "--stress" {
        let secs = args[2].parse().unwrap_or_else(|_| {
            eprintln!("--stress SECONDS [TEST...]");
            std::process::exit(2);
        });
        stress(suite, tests, &args[3..], Duration::from_secs(secs), timeout);
    }
    let chosen: Vec<&(&str, TestFn)> = if args.len() > 1 {
        tests
            .iter()
            .filter(|(n, _)| args[1..].iter().any(|a| a == n))
            .collect()
    } else {
        tests.iter().collect()
    };
    println!("TAP version 13");
    if !umcg::is_supported() {
        println!("1..0 # SKIP {suite}: the kernel has no UMCG");
        std::process::exit(4);
    }
    println!("1..{}", chosen.len());
    if cfg!(umcg_model) {
        println!("# {suite}: against the host model of the kernel (--cfg umcg_model)");
    }
    let (mut failed, mut skipped) = (0, 0);
    for (i, (name, _)) in chosen.iter().enumerate() {
        let n = i + 1;
        let start = Instant::now();
        let (outcome, why, out) = run_child(name, timeout);
        if outcome == Outcome::Skipped {
            skipped += 1;
            println!("ok {n} {suite}.{name} # SKIP {why}");
            continue;
        }
        for line in out.lines() {
            println!("# {line}");
        }
        let ms = start.elapsed().as_millis();
        if outcome == Outcome::Passed {
            println!("ok {n} {suite}.{name} # {ms} ms");
        } else {
            failed += 1;
            println!("not ok {n} {suite}.{name} # {why}");
        }
    }
    println!(
        "# {suite}: {} passed, {failed} failed, {skipped} skipped",
        chosen.len() - failed - skipped
    );
    std::process::exit(if failed == 0 { 0 } else { 1 })
}

/// `--stress SECONDS [TEST...]`: runs the tests (all if none are named), each in a child
/// process, round after round in a new order each round, until `budget` is spent (a round
/// is not cut short, so the bound is `budget` plus one round). One KTAP result: `not ok` at
/// the first failure, with that test's output, which is what a loop finds that single runs
/// do not (a race that shows once in a hundred runs).
fn stress(
    suite: &str,
    tests: &[(&str, TestFn)],
    names: &[String],
    budget: Duration,
    timeout: Duration,
) -> ! {
    let chosen: Vec<&str> = tests
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| names.is_empty() || names.iter().any(|a| a == n))
        .collect();
    println!("TAP version 13");
    if !umcg::is_supported() {
        println!("1..0 # SKIP {suite}: the kernel has no UMCG");
        std::process::exit(4);
    }
    println!("1..1");
    let start = Instant::now();
    // A seed from the clock, printed, so that a failing order can be replayed by hand.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!(
        "# {suite}.stress: {} tests, {} s, seed {seed}",
        chosen.len(),
        budget.as_secs()
    );
    let mut order = chosen.clone();
    let (mut rounds, mut runs) = (0u32, 0u32);
    while start.elapsed() < budget {
        // Fisher-Yates with xorshift64.
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        for name in &order {
            let (outcome, why, out) = run_child(name, timeout);
            runs += 1;
            if outcome == Outcome::Failed {
                for line in out.lines() {
                    println!("# {line}");
                }
                println!(
                    "not ok 1 {suite}.stress # {name} failed in round {} after {runs} runs: {why}",
                    rounds + 1
                );
                std::process::exit(1);
            }
        }
        rounds += 1;
    }
    println!(
        "ok 1 {suite}.stress # {rounds} rounds, {runs} runs in {} s",
        start.elapsed().as_secs()
    );
    std::process::exit(0)
}

fn run_child(name: &str, timeout: Duration) -> (Outcome, String, String) {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return (Outcome::Failed, format!("current_exe: {e}"), String::new()),
    };
    let mut child = match Command::new(exe)
        .args(["--run", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return (Outcome::Failed, format!("spawn: {e}"), String::new()),
    };
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut text = out.join().unwrap_or_default();
    text.push_str(&err.join().unwrap_or_default());
    match status {
        None => (
            Outcome::Failed,
            format!("TIMEOUT after {} s", timeout.as_secs()),
            text,
        ),
        Some(st) if st.success() => (Outcome::Passed, String::new(), text),
        // Only against the model, and only with the reason that `needs_kernel` printed.
        Some(st) if cfg!(umcg_model) && st.code() == Some(SKIP_STATUS) => {
            match text.lines().find_map(|l| l.strip_prefix(SKIP)) {
                Some(why) => (Outcome::Skipped, why.to_string(), text),
                None => (Outcome::Failed, format!("{st}"), text),
            }
        }
        Some(st) => (Outcome::Failed, format!("{st}"), text),
    }
}
