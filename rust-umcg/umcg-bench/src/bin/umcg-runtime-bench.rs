//! The runtime benchmarks of `make bench`: `umcg-runtime` against thread-per-task and tokio.
//!
//! Prints one line per repetition, `bench <metric> <unit> <value>`, the format that
//! `make bench` collects:
//!
//! - `runtime_throughput/umcg/<tasks>`: spawn `<tasks>` tiny tasks on 2 servers and join them
//!   all (ns per task);
//! - `runtime_mixed/<impl>/<tasks>`: the mixed workload (each task computes, blocks in
//!   `nanosleep()`, computes again) with `<impl>` = `umcg` (2 servers), `threads` (a
//!   `std::thread` per task) or `tokio` (`spawn_blocking` on a 2-worker runtime); ns per task.
//!
//! Usage: `umcg-runtime-bench [--reps N] [--quick]`. Times are wall-clock in the guest, which
//! may be emulated: only ratios between lines of one run mean anything.

use std::time::{Duration, Instant};

/// One task of the mixed workload.
fn mixed_work(i: u64) -> u64 {
    let spin = |seed: u64| {
        (0..20_000u64).fold(seed, |a, x| {
            a.wrapping_mul(6364136223846793005).wrapping_add(x)
        })
    };
    let a = spin(i);
    std::thread::sleep(Duration::from_millis(1));
    std::hint::black_box(spin(a))
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

fn mixed_umcg(tasks: u64) -> f64 {
    let rt = umcg_runtime::Builder::new()
        .servers(2)
        .build()
        .expect("umcg runtime");
    let start = Instant::now();
    let hs: Vec<_> = (0..tasks)
        .map(|i| rt.spawn(move || mixed_work(i)))
        .collect();
    for h in hs {
        h.join().expect("task");
    }
    let t = per_task(start, tasks);
    rt.shutdown();
    t
}

fn mixed_threads(tasks: u64) -> f64 {
    let start = Instant::now();
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
    per_task(start, tasks)
}

fn mixed_tokio(tasks: u64) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(tasks as usize)
        .thread_stack_size(256 << 10)
        .build()
        .expect("tokio runtime");
    let start = Instant::now();
    let hs: Vec<_> = (0..tasks)
        .map(|i| rt.spawn_blocking(move || mixed_work(i)))
        .collect();
    rt.block_on(async {
        for h in hs {
            h.await.expect("task");
        }
    });
    let t = per_task(start, tasks);
    rt.shutdown_timeout(Duration::from_secs(10));
    t
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut reps = 5;
    let mut quick = false;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--reps" => {
                i += 1;
                reps = args.get(i).and_then(|v| v.parse().ok()).expect("--reps N");
            }
            "--quick" => quick = true,
            other => panic!("unknown argument {other}"),
        }
        i += 1;
    }
    if !umcg::is_supported() {
        println!("# SKIP: the kernel has no UMCG");
        std::process::exit(4);
    }
    println!("# umcg-runtime-bench: wall-clock ns per task; the guest may be emulated (TCG): compare ratios only");
    let sizes: &[u64] = if quick {
        &[10, 100]
    } else {
        &[10, 100, 1000, 10000]
    };
    let mixed = if quick { 100 } else { 1000 };
    for _ in 0..reps {
        for &n in sizes {
            println!(
                "bench runtime_throughput/umcg/{n} ns_per_task {:.1}",
                throughput_umcg(n)
            );
        }
        // Interleave the three, so that drift in the machine's speed hits them alike.
        println!(
            "bench runtime_mixed/umcg/{mixed} ns_per_task {:.1}",
            mixed_umcg(mixed)
        );
        println!(
            "bench runtime_mixed/threads/{mixed} ns_per_task {:.1}",
            mixed_threads(mixed)
        );
        println!(
            "bench runtime_mixed/tokio/{mixed} ns_per_task {:.1}",
            mixed_tokio(mixed)
        );
    }
}
