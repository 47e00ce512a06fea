//! Guest tests of `umcg-runtime`: spawn/join, blocking tasks, panics, shutdown, preemption.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use umcg_guest_tests::{block_in_kernel, check, needs_kernel, Context};
use umcg_runtime::{Builder, Lifo};

fn spawn_and_join() -> Result<(), String> {
    let rt = Builder::new().servers(2).build().ctx("build")?;
    let hs: Vec<_> = (0..100u64).map(|i| rt.spawn(move || i * i)).collect();
    for (i, h) in hs.into_iter().enumerate() {
        let v = h.join().map_err(|_| "task panicked")?;
        check!(v == (i * i) as u64, "task {i} returned {v}");
    }
    rt.shutdown();
    Ok(())
}

/// Many more tasks than servers, half of them blocking in system calls: blocking must not
/// stall a server. If it did, at most 2 tasks (one per server) could be asleep at once; the
/// test counts how many are.
fn mixed_load() -> Result<(), String> {
    let rt = Builder::new().servers(2).build().ctx("build")?;
    let asleep = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut hs = Vec::new();
    for i in 0..200u64 {
        let (asleep, most) = (asleep.clone(), most.clone());
        hs.push(rt.spawn(move || {
            if i % 2 == 0 {
                let n = asleep.fetch_add(1, SeqCst) + 1;
                most.fetch_max(n, SeqCst);
                umcg_guest_tests::sleep(Duration::from_millis(100));
                asleep.fetch_sub(1, SeqCst);
            } else {
                std::hint::black_box(
                    (0..20_000u64).fold(i, |a, x| a.wrapping_mul(31).wrapping_add(x)),
                );
            }
            i
        }));
    }
    let sum: u64 = hs.into_iter().map(|h| h.join().unwrap_or(u64::MAX)).sum();
    let most = most.load(SeqCst);
    println!(
        "200 tasks (100 sleeping 100 ms) on 2 servers: {:?}, up to {most} asleep at once, {} worker threads",
        start.elapsed(),
        rt.worker_threads()
    );
    check!(sum == (0..200).sum::<u64>(), "sum {sum}");
    check!(
        most > 10,
        "only {most} tasks asleep at once: blocked tasks stalled their servers"
    );
    rt.shutdown();
    Ok(())
}

/// The README's example: 1000 tasks doing blocking reads, on 2 servers.
fn thousand_blocking_reads() -> Result<(), String> {
    let rt = Builder::new()
        .servers(2)
        .stack_size(64 << 10)
        .build()
        .ctx("build")?;
    let (r, mut w) = std::io::pipe().ctx("pipe")?;
    let r = Arc::new(r);
    let hs: Vec<_> = (0..1000)
        .map(|_| {
            let r = r.clone();
            rt.spawn(move || {
                let mut b = [0u8; 4];
                block_in_kernel(|| (&*r).read_exact(&mut b)).map(|()| u32::from_le_bytes(b))
            })
        })
        .collect();
    // Every task is (or will be) blocked in read(): feed them from outside.
    for i in 0..1000u32 {
        w.write_all(&i.to_le_bytes()).ctx("write")?;
    }
    let mut sum = 0u64;
    for h in hs {
        sum += u64::from(h.join().map_err(|_| "task panicked")?.ctx("read")?);
    }
    check!(sum == (0..1000u64).sum::<u64>(), "sum {sum}");
    println!(
        "1000 blocking reads on 2 servers: {} worker threads",
        rt.worker_threads()
    );
    rt.shutdown();
    Ok(())
}

fn panic_is_returned_by_join() -> Result<(), String> {
    let rt = Builder::new().servers(2).build().ctx("build")?;
    let bad = rt.spawn(|| -> u32 { panic!("task failed on purpose") });
    let good = rt.spawn(|| 5u32);
    let err = bad.join().expect_err("the panic");
    check!(err.is_panic() && !err.is_cancelled(), "a panic: {err:?}");
    let err = err.try_into_panic().map_err(|e| format!("{e:?}"))?;
    let msg = err.downcast_ref::<&str>().copied().unwrap_or("?");
    check!(msg == "task failed on purpose", "payload {msg:?}");
    check!(good.join().ok() == Some(5), "other task");
    // The runtime goes on.
    check!(rt.spawn(|| 6u32).join().ok() == Some(6), "after the panic");
    rt.shutdown();
    Ok(())
}

/// `shutdown()` while tasks are blocked waits for them, then stops everything.
fn shutdown_waits_for_blocked_tasks() -> Result<(), String> {
    let rt = Builder::new().servers(2).build().ctx("build")?;
    let mut writers = Vec::new();
    let mut hs = Vec::new();
    for i in 0..20u8 {
        let (mut r, w) = std::io::pipe().ctx("pipe")?;
        writers.push(w);
        hs.push(rt.spawn(move || {
            let mut b = [0u8; 1];
            block_in_kernel(|| r.read_exact(&mut b)).map(|()| b[0] ^ i)
        }));
    }
    umcg_guest_tests::sleep(Duration::from_millis(50));
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let closer = thread::spawn(move || {
        rt.shutdown();
        d.store(true, SeqCst);
    });
    umcg_guest_tests::sleep(Duration::from_millis(200));
    check!(!done.load(SeqCst), "shutdown returned with tasks blocked");
    for (i, mut w) in writers.into_iter().enumerate() {
        w.write_all(&[i as u8]).ctx("write")?;
    }
    closer.join().map_err(|_| "shutdown panicked")?;
    check!(done.load(SeqCst), "shutdown did not finish");
    for h in hs {
        check!(h.is_finished(), "a task outlived shutdown");
        check!(h.join().ok().and_then(|r| r.ok()) == Some(0), "task result");
    }
    Ok(())
}

/// Tasks spawn tasks and join them (a join blocks the task, not its server).
/// Tasks that spawn tasks and join them, on two servers, and on one without time slices: a
/// task that waits in `join()` blocks, and the server runs the task it waits for.
fn nested_spawn_and_join() -> Result<(), String> {
    for b in [
        Builder::new().servers(2),
        Builder::new().servers(1).no_preemption(),
    ] {
        let rt = b.build().ctx("build")?;
        let h = rt.handle();
        let top = rt.spawn(move || {
            let kids: Vec<_> = (0..20u64)
                .map(|i| {
                    let h2 = h.clone();
                    h.spawn(move || h2.spawn(move || i + 1).join().unwrap_or(0))
                })
                .collect();
            kids.into_iter().map(|k| k.join().unwrap_or(0)).sum::<u64>()
        });
        let v = bounded(20, "nested joins", move || top.join())?.map_err(|_| "panicked")?;
        check!(v == (1..=20).sum::<u64>(), "sum {v}");
        bounded(20, "shutdown", move || rt.shutdown())?;
    }
    Ok(())
}

/// On one server, two tasks that yield alternate.
fn yield_alternates_on_one_server() -> Result<(), String> {
    let rt = Builder::new().servers(1).build().ctx("build")?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let go = Arc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    for id in 0..2u8 {
        let (log, go) = (log.clone(), go.clone());
        hs.push(rt.spawn(move || {
            go.fetch_add(1, SeqCst);
            while go.load(SeqCst) < 2 {
                umcg_runtime::yield_now();
            }
            for _ in 0..5 {
                log.lock().unwrap().push(id);
                umcg_runtime::yield_now();
            }
        }));
    }
    for h in hs {
        h.join().map_err(|_| "panicked")?;
    }
    let log = log.lock().unwrap().clone();
    check!(log.len() == 10, "log {log:?}");
    check!(
        log.windows(2).all(|w| w[0] != w[1]),
        "no alternation: {log:?}"
    );
    rt.shutdown();
    Ok(())
}

/// With time slices, a task spinning on one server cannot keep the other task from running.
fn preemption_time_slices() -> Result<(), String> {
    let rt = Builder::new()
        .servers(1)
        .preemption(Duration::from_millis(10))
        .build()
        .ctx("build")?;
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let spinner = rt.spawn(move || {
        let start = Instant::now();
        while !f.load(SeqCst) {
            if start.elapsed() > Duration::from_secs(20) {
                return false;
            }
            std::hint::spin_loop();
        }
        true
    });
    // Give the spinner the server first.
    umcg_guest_tests::sleep(Duration::from_millis(20));
    let f2 = flag.clone();
    let setter = rt.spawn(move || f2.store(true, SeqCst));
    setter.join().map_err(|_| "setter panicked")?;
    check!(
        spinner.join().map_err(|_| "spinner panicked")?,
        "the spinner was never preempted"
    );
    rt.shutdown();
    Ok(())
}

/// Worker threads are reused: sequential short tasks do not create a thread each.
fn workers_are_reused() -> Result<(), String> {
    let rt = Builder::new().servers(2).build().ctx("build")?;
    for i in 0..500u32 {
        check!(rt.spawn(move || i).join().ok() == Some(i), "task {i}");
    }
    let n = rt.worker_threads();
    check!(n <= 4, "{n} worker threads for sequential tasks");
    rt.shutdown();
    Ok(())
}

/// A LIFO policy runs the most recently queued task first.
fn lifo_policy() -> Result<(), String> {
    let rt = Builder::new()
        .servers(1)
        .policy(Lifo)
        .build()
        .ctx("build")?;
    let order = Arc::new(Mutex::new(Vec::new()));
    // Hold the only server with a task that spawns the others, then lets go.
    let (o, h) = (order.clone(), rt.handle());
    let first = rt.spawn(move || {
        let kids: Vec<_> = (1..=3u32)
            .map(|i| {
                let o = o.clone();
                h.spawn(move || o.lock().unwrap().push(i))
            })
            .collect();
        kids
    });
    for k in first.join().map_err(|_| "panicked")? {
        k.join().map_err(|_| "kid panicked")?;
    }
    let order = order.lock().unwrap().clone();
    check!(order == [3, 2, 1], "order {order:?}");
    rt.shutdown();
    Ok(())
}

/// Runs one of the workspace's examples, installed next to this binary.
fn run_example(name: &str, args: &[&str], expect: &str) -> Result<(), String> {
    needs_kernel("the example is a program of its own, blocking in real system calls")?;
    let exe = std::env::current_exe().ctx("current_exe")?;
    let path = exe.with_file_name(name);
    let out = std::process::Command::new(&path)
        .args(args)
        .output()
        .ctx(name)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    check!(out.status.success(), "{name}: {}", out.status);
    check!(stdout.contains(expect), "{name} did not print {expect:?}");
    Ok(())
}

/// The README's program completes: 1000 blocking reads on 2 servers.
fn readme_example() -> Result<(), String> {
    run_example(
        "thousand_reads",
        &[],
        "1000 tasks did a blocking read on 2 servers",
    )
}

/// The hand-written scheduler on the protocol layer runs its 8 workers to the end.
fn simple_scheduler_example() -> Result<(), String> {
    run_example("simple_scheduler", &[], "all 8 workers done")
}

/// The blocking-I/O echo server serves 20 concurrent clients over loopback.
fn echo_server_example() -> Result<(), String> {
    // The guest's init may leave loopback down.
    let _ = std::process::Command::new("ifconfig")
        .args(["lo", "127.0.0.1", "up"])
        .status();
    run_example("echo_server", &["--self-test", "20"], "20 clients served")
}

/// A task spawned through a `Handle` after the runtime shut down never runs, and its join
/// reports that at once instead of waiting for ever; tasks spawned by running tasks while the
/// runtime shuts down still run.
fn spawn_after_shutdown_is_cancelled() -> Result<(), String> {
    let rt = Builder::new().servers(2).build().ctx("build")?;
    let handle = rt.handle();
    let h = handle.clone();
    let parent = rt.spawn(move || {
        umcg_guest_tests::sleep(Duration::from_millis(50));
        h.spawn(|| 7u32)
    });
    rt.shutdown();
    let child = parent.join().map_err(|e| format!("parent: {e:?}"))?;
    check!(
        child.join().ok() == Some(7),
        "a task spawned during shutdown ran"
    );
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let late = handle.spawn(move || r.store(true, SeqCst));
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(late.join());
    });
    let res = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "join of a task spawned after shutdown hangs")?;
    let err = res.err().ok_or("a task spawned after shutdown ran")?;
    check!(err.is_cancelled(), "cancelled: {err:?}");
    check!(!ran.load(SeqCst), "the closure ran");
    Ok(())
}

/// Spawns that race with the end of the runtime: each task either runs or is cancelled, and
/// shutdown finishes.
fn spawns_racing_shutdown() -> Result<(), String> {
    for round in 0..20 {
        let rt = Builder::new().servers(2).build().ctx("build")?;
        let handle = rt.handle();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        // Spawns until told to stop, shortly after shutdown began (spawns that never stop
        // would keep the runtime alive, as documented), and then a few more.
        let spawner = thread::spawn(move || {
            let mut joins = Vec::new();
            while !st.load(SeqCst) {
                joins.push(handle.spawn(|| 1u32));
            }
            for _ in 0..10 {
                joins.push(handle.spawn(|| 1u32));
                thread::yield_now();
            }
            joins
        });
        umcg_guest_tests::sleep(Duration::from_millis(5));
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            rt.shutdown();
            let _ = tx.send(());
        });
        umcg_guest_tests::sleep(Duration::from_millis(1 + round % 5));
        stop.store(true, SeqCst);
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| format!("round {round}: shutdown hangs while tasks are spawned"))?;
        let joins = spawner.join().map_err(|_| "spawner panicked")?;
        for j in joins {
            match j.join() {
                Ok(v) => check!(v == 1, "round {round}: result"),
                Err(e) => check!(e.is_cancelled(), "round {round}: {e:?}"),
            }
        }
    }
    Ok(())
}

/// A result whose `Drop` panics, dropped by the runtime because nobody joins the task, neither
/// takes the runtime down nor keeps it from shutting down.
fn result_whose_drop_panics() -> Result<(), String> {
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("dropping the result failed on purpose");
        }
    }
    let rt = Builder::new().servers(1).build().ctx("build")?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    // The task returns only after its JoinHandle is dropped.
    drop(rt.spawn(move || {
        let _ = rx.recv();
        PanicOnDrop
    }));
    tx.send(()).map_err(|_| "send")?;
    check!(
        rt.spawn(|| 3u32).join().ok() == Some(3),
        "the runtime goes on"
    );
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        rt.shutdown();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "shutdown hangs after a panicking drop")?;
    Ok(())
}

/// An allocator that takes one process-wide lock around every call while `STRICT` is set, as
/// musl's does (and glibc's, once its arenas are shared): a worker stopped inside it (preempted,
/// or blocked on a page fault) holds the lock until a server runs it again.
mod strict_alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::Mutex;

    pub static STRICT: AtomicBool = AtomicBool::new(false);
    static LOCK: Mutex<()> = Mutex::new(());

    pub struct Strict;

    fn locked<R>(f: impl FnOnce() -> R) -> R {
        if STRICT.load(SeqCst) {
            let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
            f()
        } else {
            f()
        }
    }

    // SAFETY: every call is passed on to `System` unchanged; the lock only serializes them.
    unsafe impl GlobalAlloc for Strict {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            // SAFETY: as promised by the caller.
            locked(|| unsafe { System.alloc(l) })
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: as promised by the caller.
            locked(|| unsafe { System.dealloc(p, l) })
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            // SAFETY: as promised by the caller.
            locked(|| unsafe { System.alloc_zeroed(l) })
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            // SAFETY: as promised by the caller.
            locked(|| unsafe { System.realloc(p, l, n) })
        }
    }
}

#[global_allocator]
static ALLOC: strict_alloc::Strict = strict_alloc::Strict;

/// Waits up to `secs` for `rx`, or fails with `what` (the allocator lock is dropped first, so
/// that the failure can be reported even if the runtime hangs holding it).
fn within<T>(rx: &std::sync::mpsc::Receiver<T>, secs: u64, what: &str) -> Result<T, String> {
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => Ok(v),
        Err(_) => {
            strict_alloc::STRICT.store(false, SeqCst);
            Err(format!("{what}: no progress in {secs} s"))
        }
    }
}

/// Runs `f` on a thread of its own and waits up to `secs` for it.
fn bounded<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    within(&rx, secs, what)
}

/// Workers are preempted (and block) inside the allocator, holding its lock, while one server
/// schedules: the server must not need that lock to run them again.
fn allocator_held_by_preempted_workers() -> Result<(), String> {
    let rt = Builder::new()
        .servers(1)
        .preemption(Duration::from_millis(1))
        .build()
        .ctx("build")?;
    let handle = rt.handle();
    strict_alloc::STRICT.store(true, SeqCst);
    let res = bounded(60, "tasks allocating under preemption", move || {
        let tasks: Vec<_> = (0..6u64)
            .map(|t| {
                let h = handle.clone();
                handle.spawn(move || {
                    let start = Instant::now();
                    let mut kids = Vec::new();
                    let mut n = 0u64;
                    while start.elapsed() < Duration::from_secs(3) {
                        let size = 1000 + ((n * 7919 + t * 104_729) % 60_000) as usize;
                        let v = vec![n as u8; size];
                        n += std::hint::black_box(&v)[size / 2] as u64 % 2 + 1;
                        if n % 64 < 2 {
                            // New tasks: their nodes are freed wherever the runtime frees them.
                            kids.push(h.spawn(move || vec![1u8; 3000 + (n % 5000) as usize].len()));
                        }
                        if n % 512 < 2 {
                            umcg_guest_tests::sleep(Duration::from_micros(200));
                        }
                    }
                    kids.into_iter()
                        .map(|k| k.join().unwrap_or(0))
                        .sum::<usize>()
                        > 0
                })
            })
            .collect();
        tasks.into_iter().all(|t| t.join().unwrap_or(false))
    })?;
    strict_alloc::STRICT.store(false, SeqCst);
    check!(res, "a task failed");
    bounded(20, "shutdown", move || rt.shutdown())?;
    Ok(())
}

/// Twice as many tasks as a thread pool of 2 per server would run, each spinning (or yielding)
/// until all have started: they finish with one thread per task, so they must finish here.
fn spin_waiting_tasks_finish() -> Result<(), String> {
    // The default time slices, and short ones.
    spin_waiting_tasks_finish_on(Builder::new().servers(2))?;
    spin_waiting_tasks_finish_on(
        Builder::new()
            .servers(2)
            .preemption(Duration::from_millis(2)),
    )
}

fn spin_waiting_tasks_finish_on(b: Builder) -> Result<(), String> {
    let rt = b.build().ctx("build")?;
    const N: usize = 10;
    let started = Arc::new(AtomicUsize::new(0));
    let handle = rt.handle();
    let s = started.clone();
    bounded(60, "tasks that wait for tasks spawned later", move || {
        let hs: Vec<_> = (0..N)
            .map(|i| {
                let s = s.clone();
                handle.spawn(move || {
                    s.fetch_add(1, SeqCst);
                    while s.load(SeqCst) < N {
                        if i % 2 == 0 {
                            umcg_runtime::yield_now();
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        hs.into_iter().all(|h| h.join().is_ok())
    })?;
    check!(started.load(SeqCst) == N, "not all started");
    bounded(20, "shutdown", move || rt.shutdown())?;
    Ok(())
}

fn threads_now() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The kernel names and states of this process's threads, for a failure report.
fn thread_names() -> String {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            out.push(format!(
                "{}({})",
                e.file_name().to_string_lossy(),
                stat.split(") ")
                    .next()
                    .unwrap_or("")
                    .split(" (")
                    .nth(1)
                    .unwrap_or("?")
                    .to_string()
                    + " "
                    + stat
                        .split(") ")
                        .nth(1)
                        .unwrap_or("?")
                        .get(..1)
                        .unwrap_or("?")
            ));
        }
    }
    out.join(", ")
}

/// Waits up to 10 s for the process to be back to `n` threads.
fn threads_back_to(n: usize) -> Result<(), String> {
    let start = Instant::now();
    while threads_now() > n {
        check!(
            start.elapsed() < Duration::from_secs(10),
            "{} threads left, {n} before the runtime: {}",
            threads_now(),
            thread_names()
        );
        umcg_guest_tests::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Dropping the runtime inside one of its tasks (or shutting it down there) cannot wait for
/// that task: it returns, the runtime ends once its tasks have, and its threads go away.
fn drop_runtime_inside_a_task() -> Result<(), String> {
    let before = threads_now();
    for shutdown in [false, true] {
        let rt = Builder::new().servers(2).build().ctx("build")?;
        let handle = rt.handle();
        let slot = Arc::new(Mutex::new(Some(rt)));
        let s = slot.clone();
        let other = handle.spawn(|| {
            umcg_guest_tests::sleep(Duration::from_millis(100));
            5u32
        });
        let t = handle.spawn(move || {
            let rt = s.lock().unwrap().take();
            match rt {
                Some(rt) if shutdown => rt.shutdown(),
                Some(rt) => drop(rt),
                None => {}
            }
            7u32
        });
        let r = bounded(20, "a task that drops its runtime", move || t.join().ok())?;
        check!(r == Some(7), "the task's result: {r:?}");
        check!(
            other.join().ok() == Some(5),
            "the other task ran to its end"
        );
        check!(slot.lock().unwrap().is_none(), "the task took the runtime");
        threads_back_to(before)?;
        let late = handle.spawn(|| 1u32);
        let r = bounded(10, "join of a late spawn", move || late.join())?;
        check!(
            r.as_ref().is_err_and(|e| e.is_cancelled()),
            "a spawn after the end: {r:?}"
        );
    }
    Ok(())
}

fn set_address_space_limit(bytes: u64) -> Result<(), String> {
    let lim = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
    check!(rc == 0, "setrlimit: {}", std::io::Error::last_os_error());
    Ok(())
}

fn address_space_now() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmSize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// `build()` that fails half-way (here: threads that cannot start, for lack of address space)
/// returns the error, and leaves no thread behind.
fn build_failing_half_way() -> Result<(), String> {
    let before = threads_now();
    // Room for a few threads' stacks, not for 64 servers'.
    set_address_space_limit(address_space_now() + (24 << 20))?;
    let res = bounded(30, "build() with too little address space", || {
        Builder::new().servers(64).build().map(drop)
    });
    set_address_space_limit(libc::RLIM_INFINITY)?;
    let res = res?;
    check!(res.is_err(), "build() succeeded with 64 servers in 24 MiB");
    println!("build(): {:?}", res.unwrap_err());
    threads_back_to(before)?;
    // The process is fine.
    let rt = Builder::new().servers(2).build().ctx("build after")?;
    check!(rt.spawn(|| 2u32).join().ok() == Some(2), "a task after");
    rt.shutdown();
    Ok(())
}

/// Worker threads that cannot start (no address space) delay their tasks instead of taking the
/// process down; the tasks run once threads can start again.
fn worker_thread_start_failure_waits() -> Result<(), String> {
    let rt = Builder::new().servers(2).build().ctx("build")?;
    check!(rt.spawn(|| 1u32).join().ok() == Some(1), "warm-up");
    set_address_space_limit(address_space_now() + (2 << 20))?;
    let hs: Vec<_> = (0..20u32)
        .map(|i| {
            rt.spawn(move || {
                umcg_guest_tests::sleep(Duration::from_millis(20));
                i
            })
        })
        .collect();
    umcg_guest_tests::sleep(Duration::from_millis(300));
    let failures = rt.metrics().thread_start_failures;
    set_address_space_limit(libc::RLIM_INFINITY)?;
    check!(
        failures > 0,
        "no thread start failed: the test tested nothing"
    );
    let sum = bounded(
        30,
        "tasks whose threads could not start at first",
        move || {
            hs.into_iter()
                .map(|h| h.join().unwrap_or(1000))
                .sum::<u32>()
        },
    )?;
    check!(sum == (0..20).sum::<u32>(), "sum {sum}");
    bounded(20, "shutdown", move || rt.shutdown())?;
    Ok(())
}

/// Spins for about `d` (counting `inside` while it does), then returns.
fn spin_for(d: Duration, inside: &AtomicUsize, most: &AtomicUsize) {
    let n = inside.fetch_add(1, SeqCst) + 1;
    most.fetch_max(n, SeqCst);
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
    inside.fetch_sub(1, SeqCst);
}

/// Waits up to 5 s for the runtime to have no task left and nothing running, blocked or
/// queued: the counts must settle once every task was joined.
fn settled(h: &umcg_runtime::Handle) -> Result<umcg_runtime::Metrics, String> {
    let start = Instant::now();
    loop {
        let m = h.metrics();
        if m.live_tasks == 0 && m.running == 0 && m.blocked == 0 && m.queued == 0 {
            return Ok(m);
        }
        check!(
            start.elapsed() < Duration::from_secs(5),
            "counts left over: {m:?}"
        );
        umcg_guest_tests::sleep(Duration::from_millis(5));
    }
}

/// Four servers (more than the vCPUs of the test guests with 2): tasks that compute, block
/// and yield all finish, more than two of them run at once, and the counts settle at zero.
fn four_servers() -> Result<(), String> {
    let rt = Builder::new().servers(4).build().ctx("build")?;
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..400u64)
        .map(|i| {
            let (inside, most) = (inside.clone(), most.clone());
            rt.spawn(move || {
                match i % 4 {
                    0 => umcg_guest_tests::sleep(Duration::from_millis(2)),
                    1 => umcg_runtime::yield_now(),
                    _ => {}
                }
                spin_for(Duration::from_millis(3), &inside, &most);
                i
            })
        })
        .collect();
    let sum: u64 = bounded(100, "400 tasks on 4 servers", move || {
        hs.into_iter().map(|h| h.join().unwrap_or(u64::MAX)).sum()
    })?;
    check!(sum == (0..400).sum::<u64>(), "sum {sum}");
    let most = most.load(SeqCst);
    check!(most >= 3, "at most {most} tasks ran at once on 4 servers");
    // A task's result is delivered just before the task is counted out.
    let m = settled(&rt.handle())?;
    println!("400 tasks on 4 servers: up to {most} running at once; {m:?}");
    bounded(20, "shutdown", move || rt.shutdown())?;
    Ok(())
}

/// Preemption and blocking at once, on one server: tasks that spin through several time
/// slices and block in between (a worker may be preempted just as it blocks, BLOCKED with
/// PREEMPTED set), all finish, none starves, and the counts settle at zero.
fn preemption_with_blocking() -> Result<(), String> {
    let rt = Builder::new()
        .servers(1)
        .preemption(Duration::from_millis(1))
        .build()
        .ctx("build")?;
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, w) = std::io::pipe().ctx("pipe")?;
    let (r, w) = (Arc::new(r), Arc::new(w));
    let hs: Vec<_> = (0..40u64)
        .map(|i| {
            let (inside, most, r, w) = (inside.clone(), most.clone(), r.clone(), w.clone());
            rt.spawn(move || -> std::io::Result<u64> {
                for round in 0..10u64 {
                    spin_for(
                        Duration::from_micros(500 + (i * 137 + round * 71) % 3000),
                        &inside,
                        &most,
                    );
                    if (i + round) % 2 == 0 {
                        umcg_guest_tests::sleep(Duration::from_micros(300));
                    } else {
                        // A token through a pipe: a blocking read another task wakes.
                        (&*w).write_all(&[1])?;
                        let mut b = [0u8; 1];
                        block_in_kernel(|| (&*r).read_exact(&mut b))?;
                    }
                }
                Ok(i)
            })
        })
        .collect();
    let sum: u64 = bounded(
        100,
        "spinning, blocking tasks under preemption",
        move || {
            hs.into_iter()
                .map(|h| h.join().ok().and_then(|r| r.ok()).unwrap_or(u64::MAX))
                .sum()
        },
    )?;
    check!(sum == (0..40).sum::<u64>(), "sum {sum} (a task failed)");
    // One server: two tasks spinning at once means one was preempted mid-spin.
    let most = most.load(SeqCst);
    check!(
        most >= 2,
        "never preempted: at most {most} spinning at once"
    );
    let m = settled(&rt.handle())?;
    println!("40 tasks, 1 server, 1 ms slices: up to {most} mid-spin at once; {m:?}");
    bounded(20, "shutdown", move || rt.shutdown())?;
    Ok(())
}

/// Raises the kernel's thread limit to at least `n` (the default scales with memory: about
/// 8000 in a 1 GiB guest).
fn allow_threads(n: u64) -> Result<(), String> {
    let path = "/proc/sys/kernel/threads-max";
    let now: u64 = std::fs::read_to_string(path)
        .ctx(path)?
        .trim()
        .parse()
        .ctx(path)?;
    if now < n {
        std::fs::write(path, n.to_string()).ctx(path)?;
    }
    Ok(())
}

/// 10000 tasks blocked at once (each in a read() of one pipe) on two servers, then all fed
/// and joined: one worker thread each, and back to the threads of before after the
/// keep-alive.
fn ten_thousand_blocked_tasks() -> Result<(), String> {
    const N: usize = 10_000;
    allow_threads(3 * N as u64)?;
    let before = threads_now();
    let rt = Builder::new()
        .servers(2)
        .stack_size(32 << 10)
        .keep_alive(Duration::from_millis(100))
        .build()
        .ctx("build")?;
    let (r, mut w) = std::io::pipe().ctx("pipe")?;
    let r = Arc::new(r);
    let start = Instant::now();
    let hs: Vec<_> = (0..N)
        .map(|_| {
            let r = r.clone();
            rt.spawn(move || {
                let mut b = [0u8; 4];
                block_in_kernel(|| (&*r).read_exact(&mut b)).map(|()| u32::from_le_bytes(b))
            })
        })
        .collect();
    let handle = rt.handle();
    // Within the harness's 120 s: 50 + 30 + 10 + 15 + 10.
    let m = bounded(50, "10000 tasks blocking", move || loop {
        let m = handle.metrics();
        // Until every task is blocked (a worker still starting does not count).
        if m.blocked >= N {
            return m;
        }
        umcg_guest_tests::sleep(Duration::from_millis(50));
    })?;
    let all_blocked = start.elapsed();
    check!(m.blocked == N, "{} blocked of {N}: {m:?}", m.blocked);
    let sum = bounded(30, "feeding 10000 blocked tasks", move || {
        for i in 0..N as u32 {
            w.write_all(&i.to_le_bytes()).ctx("write")?;
        }
        let mut sum = 0u64;
        for h in hs {
            sum += u64::from(h.join().map_err(|_| "task panicked")?.ctx("read")?);
        }
        Ok::<u64, String>(sum)
    })??;
    check!(sum == (0..N as u64).sum::<u64>(), "sum {sum}");
    println!(
        "{N} tasks blocked at once after {all_blocked:?} ({} worker threads started), all done after {:?}",
        m.threads_started,
        start.elapsed()
    );
    // The keeper, the waker, the two servers and the preemptor stay.
    threads_back_to(before + 5)?;
    bounded(15, "shutdown", move || rt.shutdown())?;
    threads_back_to(before)?;
    Ok(())
}

/// Preemption signals only a worker that it saw RUNNING and marked PREEMPTED: tasks waiting
/// in poll() (blocked) are not interrupted, but for the narrow race of a worker that blocks
/// just after it was marked. The test counts the EINTR that tasks in poll() see while
/// spinning tasks are preempted every millisecond, and retries them, as the documentation
/// says a task must.
fn eintr_is_rare_and_retried() -> Result<(), String> {
    needs_kernel("what a signal does to a task asleep in poll() is the kernel's")?;
    let rt = Builder::new()
        .servers(1)
        .preemption(Duration::from_millis(1))
        .build()
        .ctx("build")?;
    let stop = Arc::new(AtomicBool::new(false));
    let spins = Arc::new(AtomicUsize::new(0));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let (stop, spins) = (stop.clone(), spins.clone());
            rt.spawn(move || {
                while !stop.load(SeqCst) {
                    spins.fetch_add(1, SeqCst);
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let (r, _w) = std::io::pipe().ctx("pipe")?;
    let r = Arc::new(r);
    let pollers: Vec<_> = (0..4)
        .map(|_| {
            let r = r.clone();
            rt.spawn(move || -> Result<(u32, u32), String> {
                use std::os::fd::AsRawFd;
                let (mut polls, mut eintr) = (0u32, 0u32);
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(2) {
                    let mut pfd = libc::pollfd {
                        fd: r.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    let n = unsafe { libc::poll(&mut pfd, 1, 5) };
                    polls += 1;
                    if n < 0 {
                        let e = std::io::Error::last_os_error();
                        if e.kind() != std::io::ErrorKind::Interrupted {
                            return Err(format!("poll: {e}"));
                        }
                        eintr += 1;
                    }
                }
                Ok((polls, eintr))
            })
        })
        .collect();
    let results: Vec<_> = bounded(60, "pollers", move || {
        pollers
            .into_iter()
            .map(|p| {
                p.join()
                    .map_err(|_| "a poller panicked".to_string())
                    .and_then(|r| r)
            })
            .collect::<Result<Vec<_>, String>>()
    })??;
    stop.store(true, SeqCst);
    for s in spinners {
        s.join().map_err(|_| "a spinner panicked")?;
    }
    let polls: u32 = results.iter().map(|r| r.0).sum();
    let eintr: u32 = results.iter().map(|r| r.1).sum();
    println!(
        "{polls} poll() calls (5 ms) beside spinners preempted every 1 ms: {eintr} EINTR ({} spin rounds)",
        spins.load(SeqCst)
    );
    check!(polls > 40, "only {polls} polls in 2 s: pollers starved");
    check!(
        eintr * 20 <= polls,
        "{eintr} of {polls} polls interrupted: blocked tasks are being signalled"
    );
    bounded(20, "shutdown", move || rt.shutdown())?;
    Ok(())
}

/// `join_timeout` gives the handle back while the task runs and the result once it ended.
fn join_with_timeout() -> Result<(), String> {
    let rt = Builder::new().servers(1).build().ctx("build")?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let h = rt.spawn(move || rx.recv().is_ok());
    let start = Instant::now();
    let h = match h.join_timeout(Duration::from_millis(50)) {
        Err(h) => h,
        Ok(r) => return Err(format!("finished early: {r:?}")),
    };
    let waited = start.elapsed();
    check!(
        waited >= Duration::from_millis(50) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
    let h = h.join_timeout(Duration::ZERO).expect_err("still running");
    tx.send(()).ctx("send")?;
    let r = h.join_timeout(Duration::from_secs(20));
    check!(
        matches!(r, Ok(Ok(true))),
        "result {:?}",
        r.map_err(|_| "timed out")
    );
    // A panic is a result too, and a timeout as long as join's works.
    let bad = rt.spawn(|| -> u8 { panic!("on purpose") });
    let r = bad.join_timeout(Duration::MAX);
    check!(matches!(r, Ok(Err(ref e)) if e.is_panic()), "a panic");
    bounded(20, "shutdown", move || rt.shutdown())?;
    Ok(())
}

/// Scoped tasks borrow from the caller (mutably too), the scope waits for all of them (joined
/// or not, blocked ones included), a joined panic is the joiner's, an unjoined one makes the
/// scope panic, and a scope works inside a task.
fn scoped_tasks() -> Result<(), String> {
    let rt = Builder::new().servers(2).build().ctx("build")?;
    let mut counts = vec![0u64; 50];
    let words: Vec<String> = (0..50).map(|i| "x".repeat(i)).collect();
    let finished = AtomicUsize::new(0);
    let total = rt.scope(|s| {
        for (c, w) in counts.iter_mut().zip(&words) {
            let finished = &finished;
            // Not joined: the scope waits for them.
            s.spawn(move || {
                umcg_guest_tests::sleep(Duration::from_millis(5));
                *c = w.len() as u64;
                finished.fetch_add(1, SeqCst);
            });
        }
        let h = s.spawn(|| words.iter().map(|w| w.len()).sum::<usize>());
        h.join().unwrap_or(0)
    });
    check!(
        finished.load(SeqCst) == 50,
        "the scope returned before its tasks finished"
    );
    check!(
        counts.iter().enumerate().all(|(i, &c)| c == i as u64),
        "counts {counts:?}"
    );
    check!(total == (0..50).sum::<usize>(), "total {total}");
    // A panic returned by join is handled: the scope returns normally.
    let r = rt.scope(|s| s.spawn(|| -> u8 { panic!("joined on purpose") }).join());
    check!(r.is_err_and(|e| e.is_panic()), "the joined panic");
    // An unjoined panic makes the scope panic, after every task finished.
    let done = AtomicBool::new(false);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.scope(|s| {
            s.spawn(|| panic!("unjoined on purpose"));
            s.spawn(|| {
                umcg_guest_tests::sleep(Duration::from_millis(50));
                done.store(true, SeqCst);
            });
        })
    }));
    check!(r.is_err(), "the scope did not panic");
    check!(
        done.load(SeqCst),
        "the scope panicked before its tasks ended"
    );
    // A scope in a task, its tasks on the same runtime.
    let v: Vec<u64> = (1..=100).collect();
    let sum = rt
        .spawn(move || {
            let h = umcg_runtime::Handle::current();
            let (a, b) = v.split_at(50);
            h.scope(|s| {
                let x = s.spawn(|| a.iter().sum::<u64>());
                let y = s.spawn(|| b.iter().sum::<u64>());
                x.join().unwrap_or(0) + y.join().unwrap_or(0)
            })
        })
        .join()
        .map_err(|_| "the task panicked")?;
    check!(sum == 5050, "sum {sum}");
    bounded(20, "shutdown", move || rt.shutdown())?;
    Ok(())
}

/// A named task sees its name and carries it as its thread's kernel name while it runs (cut
/// to 15 bytes); its worker thread goes back to `umcg-worker`, and unnamed tasks have none.
fn named_tasks() -> Result<(), String> {
    let rt = Builder::new().servers(1).build().ctx("build")?;
    let comm =
        || std::fs::read_to_string("/proc/thread-self/comm").map(|c| c.trim_end().to_string());
    let (name, kname, tid) = rt
        .spawn_named("fetch-and-parse-loop", move || {
            (
                umcg_runtime::current_task_name(),
                comm().ok(),
                umcg::sys::gettid(),
            )
        })
        .join()
        .map_err(|_| "the task panicked")?;
    check!(
        name.as_deref() == Some("fetch-and-parse-loop"),
        "name {name:?}"
    );
    check!(
        kname.as_deref() == Some("fetch-and-parse"),
        "kernel name {kname:?}"
    );
    // Unnamed tasks, until one runs on the same worker thread (one server: soon).
    let mut same = false;
    for _ in 0..50 {
        let (name, kname, tid2) = rt
            .spawn(move || {
                (
                    umcg_runtime::current_task_name(),
                    comm().ok(),
                    umcg::sys::gettid(),
                )
            })
            .join()
            .map_err(|_| "the task panicked")?;
        check!(name.is_none(), "an unnamed task has the name {name:?}");
        if tid2 == tid {
            check!(
                kname.as_deref() == Some("umcg-worker"),
                "kernel name after: {kname:?}"
            );
            same = true;
            break;
        }
    }
    check!(same, "no later task ran on the named task's worker thread");
    check!(umcg_runtime::current_task_name().is_none(), "not a task");
    bounded(20, "shutdown", move || rt.shutdown())?;
    Ok(())
}

/// Without time slices, a task spinning on one server waits for tasks that sleep and wake
/// over and over: every wake-up must reach an idle server (one parks as the group's idle
/// server, the others take over when it leaves), or the spinner waits for ever. Several
/// rounds, so that the hand-overs race with the wake-ups.
fn idle_servers_take_over_parking() -> Result<(), String> {
    let rt = Builder::new()
        .servers(4)
        .no_preemption()
        .build()
        .ctx("build")?;
    let handle = rt.handle();
    bounded(
        90,
        "a spinner waiting for sleepers on 4 servers",
        move || {
            for round in 0..5 {
                let left = Arc::new(AtomicUsize::new(3));
                let spinner = {
                    let left = left.clone();
                    handle.spawn(move || {
                        while left.load(SeqCst) > 0 {
                            std::hint::spin_loop();
                        }
                    })
                };
                let sleepers: Vec<_> = (0..3)
                    .map(|_| {
                        let left = left.clone();
                        handle.spawn(move || {
                            for _ in 0..200 {
                                umcg_guest_tests::sleep(Duration::from_micros(100));
                            }
                            left.fetch_sub(1, SeqCst);
                        })
                    })
                    .collect();
                for s in sleepers {
                    s.join()
                        .map_err(|_| format!("round {round}: a sleeper panicked"))?;
                }
                spinner
                    .join()
                    .map_err(|_| format!("round {round}: the spinner panicked"))?;
            }
            Ok::<(), String>(())
        },
    )??;
    bounded(20, "shutdown", move || rt.shutdown())?;
    Ok(())
}

/// The context switches of each thread of this process but the caller, by TID and name.
fn switches_by_thread() -> Vec<(u32, String, u64)> {
    let me = umcg::sys::gettid();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        if tid == me {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map_or(String::new(), |v| v.trim().to_string())
        };
        let n = |name: &str| field(name).parse::<u64>().unwrap_or(0);
        let switches = n("voluntary_ctxt_switches:") + n("nonvoluntary_ctxt_switches:");
        out.push((tid, field("Name:"), switches));
    }
    out
}

/// An idle runtime wakes no thread: once its tasks are done, with time slices on (the
/// default), its servers, waker, keeper and timer sleep until there is work, and a free worker
/// thread sleeps until its keep-alive runs out: a whole second passes without a wake-up.
fn idle_runtime_sleeps() -> Result<(), String> {
    let rt = Builder::new().servers(2).build().ctx("build")?;
    let hs: Vec<_> = (0..8u32).map(|i| rt.spawn(move || i)).collect();
    for h in hs {
        check!(h.join().is_ok(), "task");
    }
    // Let everything settle (the time-slice timer sleeps after 100 ms without a task), then
    // look for a quiet second; a loaded machine gets three tries at settling.
    umcg_guest_tests::sleep(Duration::from_millis(200));
    let mut woke = Vec::new();
    for _ in 0..3 {
        let before = switches_by_thread();
        umcg_guest_tests::sleep(Duration::from_secs(1));
        let after = switches_by_thread();
        woke = after
            .iter()
            .filter_map(|(tid, name, n)| {
                let was = before.iter().find(|b| b.0 == *tid).map_or(0, |b| b.2);
                (*n > was).then(|| format!("{name} ({tid}): {}", n - was))
            })
            .collect();
        println!("idle for 1 s: {} threads, woken: {woke:?}", after.len());
        if woke.is_empty() {
            break;
        }
    }
    check!(woke.is_empty(), "an idle runtime woke threads: {woke:?}");
    rt.shutdown();
    Ok(())
}

/// A task spawned while one server is busy and the other is parked as the group's idle
/// server runs at once on the parked one, without time slices to rescue it: the busy server
/// may be passing through its scheduling step just then (so it looks like a waiter for work)
/// and then run something else, and the parked one must be woken all the same.
fn new_task_wakes_the_parked_server() -> Result<(), String> {
    let rt = Builder::new()
        .servers(2)
        .no_preemption()
        .keep_alive(Duration::from_secs(1000))
        .build()
        .ctx("build")?;
    // Free worker threads, so that new tasks need no thread start.
    let hs: Vec<_> = (0..4).map(|_| rt.spawn(|| ())).collect();
    for h in hs {
        check!(h.join().is_ok(), "warm-up");
    }
    umcg_guest_tests::sleep(Duration::from_millis(50));
    for round in 0..500 {
        let spawned = Arc::new(AtomicBool::new(false));
        let ran = Arc::new(AtomicBool::new(false));
        let (s, r) = (spawned.clone(), ran.clone());
        // Keeps one server busy: yields (its server passes through its scheduling step
        // again and again) until the second task is spawned, then spins until it ran.
        let busy = rt.spawn(move || {
            while !s.load(SeqCst) {
                umcg_runtime::yield_now();
            }
            let start = Instant::now();
            while !r.load(SeqCst) {
                if start.elapsed() > Duration::from_secs(3) {
                    return false;
                }
                std::hint::spin_loop();
            }
            true
        });
        umcg_guest_tests::sleep(Duration::from_millis(2));
        let r = ran.clone();
        let second = rt.spawn(move || r.store(true, SeqCst));
        spawned.store(true, SeqCst);
        let ok = busy.join().map_err(|_| "busy task panicked")?;
        check!(second.join().is_ok(), "second task");
        check!(
            ok,
            "round {round}: a new task waited 3 s while a server was parked"
        );
    }
    bounded(20, "shutdown", move || rt.shutdown())?;
    Ok(())
}

fn main() {
    umcg_guest_tests::main(
        "umcg-runtime",
        &[
            ("spawn_and_join", spawn_and_join),
            ("mixed_load", mixed_load),
            ("thousand_blocking_reads", thousand_blocking_reads),
            ("panic_is_returned_by_join", panic_is_returned_by_join),
            (
                "spawn_after_shutdown_is_cancelled",
                spawn_after_shutdown_is_cancelled,
            ),
            ("result_whose_drop_panics", result_whose_drop_panics),
            ("spawns_racing_shutdown", spawns_racing_shutdown),
            (
                "allocator_held_by_preempted_workers",
                allocator_held_by_preempted_workers,
            ),
            ("spin_waiting_tasks_finish", spin_waiting_tasks_finish),
            ("drop_runtime_inside_a_task", drop_runtime_inside_a_task),
            ("build_failing_half_way", build_failing_half_way),
            (
                "worker_thread_start_failure_waits",
                worker_thread_start_failure_waits,
            ),
            (
                "shutdown_waits_for_blocked_tasks",
                shutdown_waits_for_blocked_tasks,
            ),
            ("nested_spawn_and_join", nested_spawn_and_join),
            (
                "yield_alternates_on_one_server",
                yield_alternates_on_one_server,
            ),
            ("preemption_time_slices", preemption_time_slices),
            ("workers_are_reused", workers_are_reused),
            ("lifo_policy", lifo_policy),
            ("readme_example", readme_example),
            ("simple_scheduler_example", simple_scheduler_example),
            ("echo_server_example", echo_server_example),
            ("four_servers", four_servers),
            (
                "idle_servers_take_over_parking",
                idle_servers_take_over_parking,
            ),
            ("preemption_with_blocking", preemption_with_blocking),
            ("ten_thousand_blocked_tasks", ten_thousand_blocked_tasks),
            ("eintr_is_rare_and_retried", eintr_is_rare_and_retried),
            ("join_with_timeout", join_with_timeout),
            ("scoped_tasks", scoped_tasks),
            ("named_tasks", named_tasks),
            ("idle_runtime_sleeps", idle_runtime_sleeps),
            (
                "new_task_wakes_the_parked_server",
                new_task_wakes_the_parked_server,
            ),
        ],
        Duration::from_secs(120),
    )
}
