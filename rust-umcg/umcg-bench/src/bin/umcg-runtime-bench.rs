//! The runtime benchmarks of `make bench`: `umcg-runtime` against thread-per-task and tokio.
//!
//! Prints one line per repetition, `bench <metric> <unit> <value>`, the format that
//! `make bench` collects:
//!
//! - `runtime_throughput/umcg/<tasks>`: spawn `<tasks>` tiny tasks on 2 servers and join them
//!   all (ns per task);
//! - `runtime_mixed/<impl>/<tasks>`: the mixed workload (each task computes, blocks in
//!   `nanosleep()`, computes again) with `<impl>` = `umcg` (2 servers), `threads` (a
//!   `std::thread` per task) or `tokio` (`spawn_blocking` on a 2-worker runtime); ns per task;
//!   beside it `runtime_mixed_csw/<impl>/<tasks>`, the process's context switches per task,
//!   `runtime_mixed_syscalls/umcg/<tasks>`, the runtime's own system calls per task
//!   (`umcg_wait`, `umcg_ctl`, futex, `tgkill`; those of the tasks are the same everywhere),
//!   and `runtime_mixed/floor/<tasks>`, the compute alone on two threads (no sleep): the
//!   floor no scheduler goes below;
//! - `server_{rps,p99,p50,mem}/<impl>/<conns>`: the blocking-I/O echo server (one task or
//!   thread per connection; see `umcg_bench::echo`) under a closed-loop load generator on one
//!   thread with `epoll`, for `umcg`, `threads`, `tokio_async` and `tokio_blocking`: requests
//!   per second, round-trip percentiles (µs), and memory per connection (KiB).
//!
//! Usage: `umcg-runtime-bench [--reps N] [--quick] [--only mixed|server] [--measure SECS]`.
//! Times are wall-clock in the guest, which may be emulated: only ratios between lines of one
//! run mean anything.

use std::time::{Duration, Instant};
use umcg_bench::{context_switches, echo};

/// The compute of one task of the mixed workload.
fn spin(seed: u64) -> u64 {
    (0..20_000u64).fold(seed, |a, x| {
        a.wrapping_mul(6364136223846793005).wrapping_add(x)
    })
}

/// One task of the mixed workload.
fn mixed_work(i: u64) -> u64 {
    let a = spin(i);
    std::thread::sleep(Duration::from_millis(1));
    std::hint::black_box(spin(a))
}

/// The mixed workload's compute without the sleep.
fn mixed_compute(i: u64) -> u64 {
    spin(std::hint::black_box(spin(i)))
}

fn per_task(start: Instant, tasks: u64) -> f64 {
    start.elapsed().as_nanos() as f64 / tasks as f64
}

fn throughput_umcg(tasks: u64) -> f64 {
    let rt = umcg_runtime::Builder::new()
        .servers(2)
        .build()
        .expect("umcg runtime");
    let start = Instant::now();
    let hs: Vec<_> = (0..tasks)
        .map(|i| rt.spawn(move || std::hint::black_box(i + 1)))
        .collect();
    let sum: u64 = hs.into_iter().map(|h| h.join().expect("task")).sum();
    let t = per_task(start, tasks);
    assert_eq!(sum, tasks * (tasks + 1) / 2);
    rt.shutdown();
    t
}

/// A mixed-workload run: ns per task, context switches per task, the runtime's system calls
/// per task.
struct Mixed {
    ns: f64,
    csw: f64,
    syscalls: f64,
}

/// Runs `f` (the spawning and joining of `tasks` tasks) and measures it: time, context
/// switches and the runtime's calls, over the same interval.
fn timed(tasks: u64, f: impl FnOnce()) -> Mixed {
    let (csw, calls) = (context_switches(), umcg::sys::stats::snapshot().total());
    let start = Instant::now();
    f();
    let ns = per_task(start, tasks);
    Mixed {
        ns,
        csw: (context_switches() - csw) as f64 / tasks as f64,
        syscalls: (umcg::sys::stats::snapshot().total() - calls) as f64 / tasks as f64,
    }
}

fn mixed_umcg(tasks: u64) -> Mixed {
    let rt = umcg_runtime::Builder::new()
        .servers(2)
        .stack_size(256 << 10)
        .build()
        .expect("umcg runtime");
    let m = timed(tasks, || {
        let hs: Vec<_> = (0..tasks)
            .map(|i| rt.spawn(move || mixed_work(i)))
            .collect();
        for h in hs {
            h.join().expect("task");
        }
    });
    rt.shutdown();
    m
}

/// The compute of the mixed workload alone, without its sleep, on two threads (the vCPUs of
/// the benchmark guest): the floor that no scheduler goes below.
fn mixed_floor(tasks: u64) -> f64 {
    let start = Instant::now();
    let hs: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                (t..tasks)
                    .step_by(2)
                    .fold(0u64, |a, i| a ^ std::hint::black_box(mixed_compute(i)))
            })
        })
        .collect();
    for h in hs {
        h.join().expect("thread");
    }
    per_task(start, tasks)
}

fn mixed_threads(tasks: u64) -> Mixed {
    timed(tasks, || {
        let hs: Vec<_> = (0..tasks)
            .map(|i| {
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn(move || mixed_work(i))
                    .expect("thread")
            })
            .collect();
        for h in hs {
            h.join().expect("task");
        }
    })
}

fn mixed_tokio(tasks: u64) -> Mixed {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(tasks as usize)
        .thread_stack_size(256 << 10)
        .build()
        .expect("tokio runtime");
    let m = timed(tasks, || {
        let hs: Vec<_> = (0..tasks)
            .map(|i| rt.spawn_blocking(move || mixed_work(i)))
            .collect();
        rt.block_on(async {
            for h in hs {
                h.await.expect("task");
            }
        });
    });
    rt.shutdown_timeout(Duration::from_secs(10));
    m
}

/// One implementation of the mixed workload, measured with so many tasks.
type Workload = fn(u64) -> Mixed;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut reps = 3;
    let mut quick = false;
    let mut only: Option<String> = None;
    let mut measure = Duration::from_secs(2);
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--reps" => {
                i += 1;
                reps = args.get(i).and_then(|v| v.parse().ok()).expect("--reps N");
            }
            "--quick" => quick = true,
            "--only" => {
                i += 1;
                only = Some(args.get(i).cloned().expect("--only mixed|server"));
            }
            "--measure" => {
                i += 1;
                measure = Duration::from_secs_f64(
                    args.get(i)
                        .and_then(|v| v.parse().ok())
                        .expect("--measure SECS"),
                );
            }
            other => panic!("unknown argument {other}"),
        }
        i += 1;
    }
    if !umcg::is_supported() {
        println!("# SKIP: the kernel has no UMCG");
        std::process::exit(4);
    }
    // 10000 threads, each with its sockets: more than the guest's defaults.
    echo::allow_threads(50_000);
    echo::allow_files(30_000).expect("RLIMIT_NOFILE");
    println!("# umcg-runtime-bench: wall-clock times; the guest may be emulated (TCG): compare ratios only");
    let want = |w: &str| only.as_deref().is_none_or(|o| o == w);
    if want("mixed") {
        let sizes: &[u64] = if quick {
            &[10, 100]
        } else {
            &[10, 100, 1000, 10000]
        };
        let mixed: &[u64] = if quick { &[100] } else { &[1000, 10000] };
        for _ in 0..reps {
            for &n in sizes {
                println!(
                    "bench runtime_throughput/umcg/{n} ns_per_task {:.1}",
                    throughput_umcg(n)
                );
            }
            for &n in mixed {
                println!(
                    "bench runtime_mixed/floor/{n} ns_per_task {:.1}",
                    mixed_floor(n)
                );
                // Interleaved, so that drift in the machine's speed hits them alike.
                let runs: [(&str, Workload); 3] = [
                    ("umcg", mixed_umcg),
                    ("threads", mixed_threads),
                    ("tokio", mixed_tokio),
                ];
                for (name, f) in runs {
                    let m = f(n);
                    println!("bench runtime_mixed/{name}/{n} ns_per_task {:.1}", m.ns);
                    println!(
                        "bench runtime_mixed_csw/{name}/{n} csw_per_task {:.2}",
                        m.csw
                    );
                    if name == "umcg" && umcg::sys::stats::ENABLED {
                        println!(
                            "bench runtime_mixed_syscalls/{name}/{n} syscalls_per_task {:.2}",
                            m.syscalls
                        );
                    }
                }
            }
        }
    }
    if want("server") {
        let conns: &[usize] = if quick { &[100] } else { &[100, 1000, 10000] };
        println!(
            "# echo server: {MSG}-byte requests, one in flight per connection, {} s per point; the load generator (1 thread, epoll) shares the vCPUs",
            measure.as_secs_f64(),
            MSG = echo::MSG
        );
        for (k, &n) in conns.iter().enumerate() {
            // A different implementation first at each size: what the first one pays (a
            // cold heap, the sockets of the previous size still closing) is spread.
            for j in 0..echo::Impl::ALL.len() {
                let which = echo::Impl::ALL[(j + k) % echo::Impl::ALL.len()];
                let name = which.name();
                match echo::run(which, n, 2, measure) {
                    Ok(o) => {
                        println!(
                            "bench server_rps/{name}/{n} req_per_s {:.0}",
                            o.requests_per_sec
                        );
                        println!("bench server_p99/{name}/{n} us {:.0}", o.p99_us);
                        println!("bench server_p50/{name}/{n} us {:.0}", o.p50_us);
                        println!(
                            "bench server_mem/{name}/{n} KiB_per_conn {:.1}",
                            o.kib_per_conn
                        );
                    }
                    Err(e) => println!("# server {name} with {n} connections failed: {e}"),
                }
            }
        }
    }
}
