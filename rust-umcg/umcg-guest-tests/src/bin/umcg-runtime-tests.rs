//! Guest tests of `umcg-runtime`: spawn/join, blocking tasks, panics, shutdown, preemption.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use umcg_guest_tests::{check, Context};
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
                thread::sleep(Duration::from_millis(100));
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
                (&*r).read_exact(&mut b).map(|()| u32::from_le_bytes(b))
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
            r.read_exact(&mut b).map(|()| b[0] ^ i)
        }));
    }
    thread::sleep(Duration::from_millis(50));
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let closer = thread::spawn(move || {
        rt.shutdown();
        d.store(true, SeqCst);
    });
    thread::sleep(Duration::from_millis(200));
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
fn nested_spawn_and_join() -> Result<(), String> {
    let rt = Builder::new().servers(2).build().ctx("build")?;
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
    let v = top.join().map_err(|_| "panicked")?;
    check!(v == (1..=20).sum::<u64>(), "sum {v}");
    rt.shutdown();
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
    thread::sleep(Duration::from_millis(20));
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
        .policy(Lifo::default())
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
        thread::sleep(Duration::from_millis(50));
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
        thread::sleep(Duration::from_millis(5));
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            rt.shutdown();
            let _ = tx.send(());
        });
        thread::sleep(Duration::from_millis(1 + round % 5));
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
        ],
        Duration::from_secs(120),
    )
}
