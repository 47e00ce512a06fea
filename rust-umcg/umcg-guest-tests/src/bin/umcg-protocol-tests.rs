//! Guest tests of the `umcg` crate's protocol layer: every method against the real kernel.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use umcg::{sys, Event, Group, Runnable, Server, State, TaskState};
use umcg_guest_tests::{check, Context};

/// What a test server saw, in order.
#[derive(Debug, Default)]
struct Seen {
    events: Vec<String>,
}

fn kind<T>(e: &Event<T>) -> &'static str {
    match e {
        Event::Yielded(_) => "yielded",
        Event::Blocked(_) => "blocked",
        Event::Preempted(_) => "preempted",
        Event::Exited(_) => "exited",
    }
}

/// A minimal scheduler: runs the group's workers on the calling thread (a server) until
/// `exits` of them exited, re-running yielded ones at once. Returns the events.
fn serve<T>(group: &Group<T>, server: &Server, exits: usize) -> Result<Seen, String> {
    let mut seen = Seen::default();
    let mut ready: Vec<Runnable<T>> = Vec::new();
    let mut exited = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while exited < exits {
        check!(
            Instant::now() < deadline,
            "workers did not finish: {:?}",
            seen.events
        );
        if ready.is_empty() {
            group
                .park(server, Some(Duration::from_millis(200)))
                .ctx("park")?;
            ready.extend(group.take_idle());
            continue;
        }
        let w = ready.remove(0);
        let ev = server.run(group, w).ctx("run")?;
        seen.events.push(kind(&ev).to_string());
        match ev {
            Event::Yielded(r) => ready.push(r),
            Event::Exited(_) => exited += 1,
            Event::Blocked(_) | Event::Preempted(_) => {}
        }
        check!(
            server.state().task_state() == TaskState::Running,
            "server left {:?}",
            server.state()
        );
    }
    Ok(seen)
}

/// Parks `server` as the idle server until the kernel queues workers, and takes them.
fn queued<T>(
    group: &Group<T>,
    server: &Server,
    deadline: Instant,
    what: &str,
) -> Result<Vec<Runnable<T>>, String> {
    loop {
        let got = group.take_idle();
        if !got.is_empty() {
            return Ok(got);
        }
        check!(Instant::now() < deadline, "{what}");
        group
            .park(server, Some(Duration::from_millis(100)))
            .ctx("park")?;
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn sys_errors() -> Result<(), String> {
    // Not registered: EINVAL, not a crash.
    let e = sys::umcg_wait(0, 0).expect_err("wait while unregistered");
    check!(errno(&e) == libc::EINVAL, "umcg_wait unregistered: {e}");
    // SAFETY: an unregister with NULL passes no memory.
    let e = unsafe { sys::umcg_ctl(sys::UMCG_CTL_UNREGISTER, std::ptr::null_mut()) }
        .expect_err("unregister");
    check!(errno(&e) == libc::EINVAL, "unregister unregistered: {e}");
    check!(umcg::is_supported(), "is_supported() on a UMCG kernel");
    Ok(())
}

/// `umcg_ctl()` on a `struct umcg_task` prepared by hand.
fn ctl(flags: u32, task: *mut sys::umcg_task) -> i32 {
    // SAFETY: every caller unregisters before its task goes out of scope.
    match unsafe { sys::umcg_ctl(flags, task) } {
        Ok(()) => 0,
        Err(e) => errno(&e),
    }
}

fn wait_errno(flags: u32, abs_timeout: u64) -> i32 {
    match sys::umcg_wait(flags, abs_timeout) {
        Ok(()) => 0,
        Err(e) => errno(&e),
    }
}

/// The raw calls' checks and errors, as the ABI gives them, from a hand-made task: what the
/// safe layer never does, so that the kernel and the host model of it are held to the same
/// answers.
fn abi_errors() -> Result<(), String> {
    use sys::*;
    let running = || umcg_task {
        state: UMCG_TASK_RUNNING,
        ..Default::default()
    };
    let mut t = running();
    let p: *mut umcg_task = &mut t;
    for flags in [
        0,
        4,
        UMCG_CTL_WORKER,
        UMCG_CTL_REGISTER | UMCG_CTL_UNREGISTER,
    ] {
        check!(ctl(flags, p) == libc::EINVAL, "ctl flags {flags:#x}");
    }
    check!(
        ctl(UMCG_CTL_REGISTER, std::ptr::null_mut()) == libc::EINVAL,
        "register NULL"
    );
    check!(
        ctl(UMCG_CTL_UNREGISTER, p) == libc::EINVAL,
        "unregister with a task"
    );
    // A server registers RUNNING, with no flags, no reserved bits and no next_tid.
    for (what, state, next_tid) in [
        ("IDLE", UMCG_TASK_IDLE, 0),
        ("BLOCKED", UMCG_TASK_BLOCKED, 0),
        ("LOCKED", UMCG_TASK_RUNNING | UMCG_TF_LOCKED, 0),
        ("reserved bits", UMCG_TASK_RUNNING | 1 << 16, 0),
        ("next_tid", UMCG_TASK_RUNNING, 1),
    ] {
        let mut bad = umcg_task {
            state,
            next_tid,
            ..Default::default()
        };
        check!(
            ctl(UMCG_CTL_REGISTER, &mut bad) == libc::EINVAL,
            "server registered {what}"
        );
    }
    // Not 8-byte aligned.
    let mut buf = [0u64; 16];
    let odd = (buf.as_mut_ptr() as usize + 4) as *mut umcg_task;
    // SAFETY: 4 bytes into a 128-byte buffer: the 64 bytes of a task are inside it.
    unsafe { std::ptr::write_unaligned(odd, running()) };
    check!(
        ctl(UMCG_CTL_REGISTER, odd) == libc::EINVAL,
        "misaligned task"
    );
    // A worker registers BLOCKED, with an aligned list head and server slot.
    let head = 0u64;
    let slot = 0u32;
    let head_ptr = &head as *const u64 as u64;
    let slot_ptr = &slot as *const u32 as u64;
    for (what, state, h, s) in [
        ("RUNNING", UMCG_TASK_RUNNING, head_ptr, slot_ptr),
        ("without a head", UMCG_TASK_BLOCKED, 0, slot_ptr),
        ("without a slot", UMCG_TASK_BLOCKED, head_ptr, 0),
        ("misaligned head", UMCG_TASK_BLOCKED, head_ptr + 4, slot_ptr),
        ("misaligned slot", UMCG_TASK_BLOCKED, head_ptr, slot_ptr + 2),
    ] {
        let mut bad = umcg_task {
            state,
            idle_workers_ptr: h,
            idle_server_tid_ptr: s,
            ..Default::default()
        };
        check!(
            ctl(UMCG_CTL_REGISTER | UMCG_CTL_WORKER, &mut bad) == libc::EINVAL,
            "worker registered {what}"
        );
    }

    check!(ctl(UMCG_CTL_REGISTER, p) == 0, "register");
    check!(ctl(UMCG_CTL_REGISTER, p) == libc::EINVAL, "register twice");
    let set = |state: u32, next_tid: u32| {
        // SAFETY: `t` is this thread's task; the kernel writes it only in this thread's calls.
        unsafe {
            std::ptr::write_volatile(&mut (*p).state, state);
            std::ptr::write_volatile(&mut (*p).next_tid, next_tid);
        }
    };
    check!(wait_errno(1 << 5, 0) == libc::EINVAL, "unknown wait flag");
    check!(
        wait_errno(UMCG_WAIT_WAKE_ONLY, 0) == libc::EINVAL,
        "WAKE_ONLY without next_tid"
    );
    // A thread of this process that is not a UMCG task, and a TID that names no thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let other = thread::spawn(move || {
        let _ = tx.send(sys::gettid());
        let _ = stop_rx.recv();
    });
    let plain = rx.recv().ctx("tid")?;
    set(UMCG_TASK_RUNNING, plain);
    check!(
        wait_errno(
            UMCG_WAIT_WAKE_ONLY,
            sys::realtime_deadline(Duration::from_secs(1))
        ) == libc::EINVAL,
        "WAKE_ONLY with a timeout"
    );
    check!(
        wait_errno(UMCG_WAIT_WAKE_ONLY, 0) == libc::ESRCH,
        "waking a thread that is not a UMCG task"
    );
    check!(
        wait_errno(0, 0) == libc::ESRCH,
        "switching to a thread that is not a UMCG task"
    );
    set(UMCG_TASK_RUNNING, 0x3fff_fff0);
    check!(
        wait_errno(UMCG_WAIT_WAKE_ONLY, 0) == libc::ESRCH,
        "waking a TID that names no task"
    );
    let _ = stop_tx.send(());
    let _ = other.join();
    // A RUNNING caller returns at once; an IDLE one sleeps until its deadline.
    set(UMCG_TASK_RUNNING, 0);
    check!(wait_errno(0, 0) == 0, "wait while RUNNING");
    set(UMCG_TASK_IDLE, 0);
    let start = Instant::now();
    check!(
        wait_errno(0, sys::realtime_deadline(Duration::from_millis(20))) == libc::ETIMEDOUT,
        "timed wait"
    );
    check!(
        start.elapsed() >= Duration::from_millis(15),
        "timed out after {:?}",
        start.elapsed()
    );
    // SAFETY: as in `set`.
    let state = unsafe { std::ptr::read_volatile(&(*p).state) };
    check!(
        state & UMCG_TASK_STATE_MASK == UMCG_TASK_IDLE,
        "a server stays IDLE after a timeout: {state:#x}"
    );
    set(UMCG_TASK_RUNNING, 0);
    check!(
        ctl(UMCG_CTL_UNREGISTER, std::ptr::null_mut()) == 0,
        "unregister"
    );
    check!(wait_errno(0, 0) == libc::EINVAL, "wait after unregister");
    Ok(())
}

fn server_registration() -> Result<(), String> {
    let s = Server::register().ctx("register")?;
    check!(
        s.tid() == sys::gettid(),
        "tid {} != {}",
        s.tid(),
        sys::gettid()
    );
    check!(
        s.state() == State::new(TaskState::Running),
        "state {:?}",
        s.state()
    );
    let e = Server::register().expect_err("second registration");
    check!(errno(&e) == libc::EINVAL, "double register: {e}");
    let g: Group<()> = Group::new();
    let e = g
        .register_worker(())
        .expect_err("worker registration of a server");
    check!(
        errno(&e) == libc::EINVAL,
        "server registering as worker: {e}"
    );
    drop(s);
    let s = Server::register().ctx("register after drop")?;
    drop(s);
    Ok(())
}

fn worker_runs_and_exits() -> Result<(), String> {
    let group: Group<u32> = Group::new();
    let server = Server::register().ctx("server")?;
    let g = group.clone();
    let stid = server.tid();
    let ran_on = Arc::new(AtomicU32::new(0));
    let r2 = ran_on.clone();
    let t = thread::spawn(move || {
        let w = g.register_worker(7).expect("register worker");
        r2.store(w.server_tid(), SeqCst);
        assert_eq!(*w.data(), 7);
        assert_eq!(w.handle().state().task_state(), TaskState::Running);
    });
    let seen = serve(&group, &server, 1)?;
    t.join().map_err(|_| "worker panicked")?;
    check!(seen.events == ["exited"], "events {:?}", seen.events);
    check!(
        ran_on.load(SeqCst) == stid,
        "worker's server {} != {stid}",
        ran_on.load(SeqCst)
    );
    check!(!group.has_idle(), "idle list not empty");
    Ok(())
}

fn yield_comes_back_directly() -> Result<(), String> {
    let group: Group<()> = Group::new();
    let server = Server::register().ctx("server")?;
    let g = group.clone();
    let t = thread::spawn(move || {
        let w = g.register_worker(()).expect("register worker");
        for _ in 0..20 {
            w.yield_now().expect("yield");
        }
    });
    let seen = serve(&group, &server, 1)?;
    t.join().map_err(|_| "worker panicked")?;
    let yields = seen.events.iter().filter(|e| *e == "yielded").count();
    check!(yields == 20, "{yields} yields seen: {:?}", seen.events);
    check!(seen.events.len() == 21, "events {:?}", seen.events);
    Ok(())
}

fn block_comes_back_through_idle_list() -> Result<(), String> {
    let group: Group<()> = Group::new();
    let server = Server::register().ctx("server")?;
    let g = group.clone();
    let t = thread::spawn(move || {
        let w = g.register_worker(()).expect("register worker");
        for _ in 0..5 {
            umcg_guest_tests::sleep(Duration::from_millis(5));
        }
        drop(w);
    });
    let seen = serve(&group, &server, 1)?;
    t.join().map_err(|_| "worker panicked")?;
    let blocks = seen.events.iter().filter(|e| *e == "blocked").count();
    check!(blocks >= 5, "{blocks} blocks: {:?}", seen.events);
    check!(
        !seen.events.iter().any(|e| e == "yielded"),
        "a block reported as a yield: {:?}",
        seen.events
    );
    Ok(())
}

/// The trap: a worker that blocks and is woken and queued before its server looks is IDLE,
/// like one that yielded; it must be reported as blocked, and reach the server exactly once,
/// through the idle list.
fn block_then_wake_is_not_a_yield() -> Result<(), String> {
    let group: Group<()> = Group::new();
    let server = Server::register().ctx("server")?;
    let g = group.clone();
    let t = thread::spawn(move || {
        let w = g.register_worker(()).expect("register worker");
        // Short blocks: likely to be over (worker queued) before the server checks.
        for _ in 0..50 {
            umcg_guest_tests::sleep(Duration::from_micros(20));
        }
        drop(w);
    });
    let mut ready = Vec::new();
    let mut exited = false;
    let mut runs = 0;
    let mut blocks = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !exited {
        check!(
            Instant::now() < deadline,
            "did not finish after {runs} runs"
        );
        if ready.is_empty() {
            group
                .park(&server, Some(Duration::from_millis(200)))
                .ctx("park")?;
            ready.extend(group.take_idle());
            check!(ready.len() <= 1, "worker queued {} times", ready.len());
            continue;
        }
        runs += 1;
        match server.run(&group, ready.remove(0)).ctx("run")? {
            Event::Blocked(w) => {
                blocks += 1;
                let s = w.state();
                check!(
                    matches!(
                        s.task_state(),
                        TaskState::Blocked | TaskState::Idle | TaskState::Running
                    ),
                    "blocked worker in {s:?}"
                );
            }
            Event::Exited(_) => exited = true,
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    t.join().map_err(|_| "worker panicked")?;
    // A 1 us sleep may end before it blocks; most of them block.
    check!(
        blocks >= 10 && runs == blocks + 1,
        "{runs} runs, {blocks} blocks"
    );
    Ok(())
}

fn worker_to_worker_switch() -> Result<(), String> {
    let group: Group<u32> = Group::new();
    let server = Server::register().ctx("server")?;
    let handoff: Arc<Mutex<Option<Runnable<u32>>>> = Arc::new(Mutex::new(None));
    let parked: Arc<Mutex<Option<Runnable<u32>>>> = Arc::new(Mutex::new(None));
    let w2_server = Arc::new(AtomicU32::new(0));
    let (g1, g2) = (group.clone(), group.clone());
    let (h, p) = (handoff.clone(), parked.clone());
    let w2s = w2_server.clone();
    // W2 registers first and waits on the list until W1 switches to it.
    let t2 = thread::spawn(move || {
        let w = g2.register_worker(2).expect("register w2");
        w2s.store(w.server_tid(), SeqCst);
    });
    let mut ready = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    ready.extend(queued(&group, &server, deadline, "w2 never queued")?);
    *handoff.lock().unwrap() = Some(ready.remove(0));
    let t1 = thread::spawn(move || {
        let w = g1.register_worker(1).expect("register w1");
        let target = h.lock().unwrap().take().expect("w2's runnable");
        w.switch_to(target, |me| *p.lock().unwrap() = Some(me))
            .expect("switch");
        // Back: run again by the server after W2 exited.
    });
    ready.extend(queued(&group, &server, deadline, "w1 never queued")?);
    let ev = server.run(&group, ready.remove(0)).ctx("run w1")?;
    // W1 switched to W2, W2 exited: the server hears about W2.
    match ev {
        Event::Exited(w) => check!(*w.data() == 2, "exited worker {}", w.data()),
        other => return Err(format!("expected W2's exit, got {other:?}")),
    }
    t2.join().map_err(|_| "w2 panicked")?;
    check!(
        w2_server.load(SeqCst) == server.tid(),
        "w2 ran under {}",
        w2_server.load(SeqCst)
    );
    let w1 = parked
        .lock()
        .unwrap()
        .take()
        .ok_or("w1 did not park itself")?;
    check!(*w1.worker().data() == 1, "parked {}", w1.worker().data());
    match server.run(&group, w1).ctx("run w1 again")? {
        Event::Exited(w) => check!(*w.data() == 1, "exited {}", w.data()),
        other => return Err(format!("expected W1's exit, got {other:?}")),
    }
    t1.join().map_err(|_| "w1 panicked")?;
    Ok(())
}

fn wake_worker_requeues_it() -> Result<(), String> {
    let group: Group<()> = Group::new();
    let server = Server::register().ctx("server")?;
    let g = group.clone();
    let t = thread::spawn(move || drop(g.register_worker(()).expect("register worker")));
    let mut ready = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    ready.extend(queued(&group, &server, deadline, "worker never queued")?);
    let w = ready.remove(0);
    let tid = w.worker().tid();
    server.wake_worker(w).ctx("wake_worker")?;
    // It has no server: the kernel queues it again.
    ready.extend(queued(
        &group,
        &server,
        deadline,
        "woken worker never queued again",
    )?);
    check!(ready[0].worker().tid() == tid, "another worker queued");
    let ev = server.run(&group, ready.remove(0)).ctx("run")?;
    check!(matches!(ev, Event::Exited(_)), "got {ev:?}");
    t.join().map_err(|_| "worker panicked")?;
    Ok(())
}

fn preempt_a_spinning_worker() -> Result<(), String> {
    let signal = libc::SIGRTMIN() + 1;
    let _handler = umcg::install_preemption_handler(signal).ctx("handler")?;
    let group: Group<()> = Group::new();
    let server = Server::register().ctx("server")?;
    let stop = Arc::new(AtomicBool::new(false));
    let (g, s2) = (group.clone(), stop.clone());
    let t = thread::spawn(move || {
        let w = g.register_worker(()).expect("register worker");
        while !s2.load(SeqCst) {
            std::hint::spin_loop();
        }
        drop(w);
    });
    let mut ready = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    ready.extend(queued(&group, &server, deadline, "worker never queued")?);
    let r = ready.remove(0);
    check!(group.take_idle().is_empty(), "queued twice");
    let w = r.worker().clone();
    check!(
        group.worker(w.tid()).is_some_and(|x| x.same(&w)),
        "registry lookup"
    );
    let timer = thread::spawn(move || {
        for _ in 0..200 {
            umcg_guest_tests::sleep(Duration::from_millis(20));
            if w.preempt(signal).unwrap_or(false) {
                return true;
            }
        }
        false
    });
    let ev = server.run(&group, r).ctx("run")?;
    check!(
        timer.join().map_err(|_| "timer panicked")?,
        "never preempted"
    );
    check!(matches!(ev, Event::Preempted(_)), "got {ev:?}");
    // The kernel queued it: it comes back through the list, exactly once, PREEMPTED set.
    let mut back = Vec::new();
    back.extend(queued(
        &group,
        &server,
        deadline,
        "preempted worker never queued",
    )?);
    check!(back.len() == 1, "queued {} times", back.len());
    check!(
        back[0].worker().state().preempted(),
        "state {:?}",
        back[0].worker().state()
    );
    stop.store(true, SeqCst);
    let ev = server.run(&group, back.remove(0)).ctx("run again")?;
    check!(matches!(ev, Event::Exited(_)), "got {ev:?}");
    t.join().map_err(|_| "worker panicked")?;
    Ok(())
}

/// A worker that yields is woken at once with `wake_worker()` (RUNNING without a server until
/// the kernel queues it), while another thread keeps trying to preempt it: a preemption in that
/// window would get the process killed ("preempted without a server"), so it must be refused.
fn preempt_racing_wake_worker() -> Result<(), String> {
    const ROUNDS: u32 = 300;
    let signal = libc::SIGRTMIN() + 2;
    let _handler = umcg::install_preemption_handler(signal).ctx("handler")?;
    let group: Group<()> = Group::new();
    let server = Server::register().ctx("server")?;
    let g = group.clone();
    let t = thread::spawn(move || {
        let w = g.register_worker(()).expect("register worker");
        for _ in 0..ROUNDS {
            w.yield_now().expect("yield");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = queued(&group, &server, deadline, "worker never queued")?;
    let w = ready[0].worker().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let preemptor = thread::spawn(move || {
        let mut n = 0u32;
        while !st.load(SeqCst) {
            if w.preempt(signal).unwrap_or(false) {
                n += 1;
                // Let the worker run a little between preemptions.
                umcg_guest_tests::sleep(Duration::from_micros(200));
            }
        }
        n
    });
    let (mut woken, mut exited) = (0u32, false);
    while !exited {
        check!(Instant::now() < deadline, "stuck after {woken} wake-ups");
        let Some(r) = ready.pop() else {
            ready = queued(&group, &server, deadline, "worker lost")?;
            continue;
        };
        match server.run(&group, r).ctx("run")? {
            Event::Yielded(r) => {
                server.wake_worker(r).ctx("wake_worker")?;
                woken += 1;
            }
            Event::Exited(_) => exited = true,
            Event::Blocked(_) | Event::Preempted(_) => {}
        }
    }
    stop.store(true, SeqCst);
    let preempted = preemptor.join().map_err(|_| "preemptor panicked")?;
    println!("{woken} wake-ups, {preempted} preemptions");
    t.join().map_err(|_| "worker panicked")?;
    Ok(())
}

/// A server that waits for its worker is not made RUNNING by `Server::wake()` from another
/// server: a preemption of its worker would then find it RUNNING and get the process killed.
fn waking_a_serving_server_is_refused() -> Result<(), String> {
    let signal = libc::SIGRTMIN() + 3;
    let _handler = umcg::install_preemption_handler(signal).ctx("handler")?;
    let group: Group<()> = Group::new();
    let server = Server::register().ctx("server")?;
    let me = server.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let (g, s2) = (group.clone(), stop.clone());
    let t = thread::spawn(move || {
        let w = g.register_worker(()).expect("register worker");
        let start = Instant::now();
        while !s2.load(SeqCst) && start.elapsed() < Duration::from_secs(30) {
            std::hint::spin_loop();
        }
        drop(w);
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = queued(&group, &server, deadline, "worker never queued")?;
    let w = ready[0].worker().clone();
    let s3 = stop.clone();
    // Another server wakes this one, and a third thread preempts the worker, for 300 ms.
    let waker = thread::spawn(move || {
        let other = Server::register().expect("second server");
        let start = Instant::now();
        let mut woke = 0u32;
        while start.elapsed() < Duration::from_millis(300) {
            if other.wake(&me).unwrap_or(false) {
                woke += 1;
            }
        }
        woke
    });
    let preemptor = thread::spawn(move || {
        umcg_guest_tests::sleep(Duration::from_millis(150));
        let mut tries = 0u32;
        while !w.preempt(signal).unwrap_or(false) && tries < 100_000 {
            tries += 1;
        }
        umcg_guest_tests::sleep(Duration::from_millis(200));
        s3.store(true, SeqCst);
    });
    let mut exited = false;
    while !exited {
        check!(Instant::now() < deadline, "worker never exited");
        let Some(r) = ready.pop() else {
            ready = queued(&group, &server, deadline, "worker lost")?;
            continue;
        };
        exited = matches!(server.run(&group, r).ctx("run")?, Event::Exited(_));
    }
    let woke = waker.join().map_err(|_| "waker panicked")?;
    preemptor.join().map_err(|_| "preemptor panicked")?;
    t.join().map_err(|_| "worker panicked")?;
    check!(woke == 0, "a serving server was woken {woke} times");
    Ok(())
}

fn server_switch_ping_pong() -> Result<(), String> {
    const ROUNDS: u32 = 200;
    let other: Arc<Mutex<Option<umcg::ServerRef>>> = Arc::new(Mutex::new(None));
    let me_ref: Arc<Mutex<Option<umcg::ServerRef>>> = Arc::new(Mutex::new(None));
    let count = Arc::new(AtomicU32::new(0));
    let barrier = Arc::new(Barrier::new(2));
    let (o, m, c, b) = (
        other.clone(),
        me_ref.clone(),
        count.clone(),
        barrier.clone(),
    );
    let s1 = Server::register().ctx("s1")?;
    *me_ref.lock().unwrap() = Some(s1.handle());
    let t = thread::spawn(move || -> Result<(), String> {
        let s2 = Server::register().ctx("s2")?;
        *o.lock().unwrap() = Some(s2.handle());
        b.wait();
        let s1 = m.lock().unwrap().clone().ok_or("no s1")?;
        // Wait to be switched to, then switch back, ROUNDS times.
        check!(
            s2.wait(Some(Duration::from_secs(10))).ctx("s2 wait")?,
            "s2 timed out"
        );
        for _ in 0..ROUNDS {
            c.fetch_add(1, SeqCst);
            while s1.state().task_state() != TaskState::Idle {
                std::hint::spin_loop();
            }
            s2.switch_to(&s1).ctx("s2 -> s1")?;
        }
        Ok(())
    });
    barrier.wait();
    let s2 = other.lock().unwrap().clone().ok_or("no s2")?;
    for i in 0..ROUNDS {
        while s2.state().task_state() != TaskState::Idle {
            std::hint::spin_loop();
        }
        s1.switch_to(&s2).ctx("s1 -> s2")?;
        check!(
            count.load(SeqCst) == i + 1,
            "round {i}: count {}",
            count.load(SeqCst)
        );
    }
    // s2 is now IDLE after its last switch: wake it so it can finish.
    while !s1.wake(&s2).ctx("wake")? {
        thread::yield_now();
    }
    t.join().map_err(|_| "s2 panicked")??;
    Ok(())
}

fn server_wake_only_idle() -> Result<(), String> {
    let s1 = Server::register().ctx("s1")?;
    let s2: Arc<Mutex<Option<umcg::ServerRef>>> = Arc::new(Mutex::new(None));
    let b = Arc::new(Barrier::new(2));
    let (s2c, bc) = (s2.clone(), b.clone());
    let t = thread::spawn(move || -> Result<bool, String> {
        let me = Server::register().ctx("s2")?;
        *s2c.lock().unwrap() = Some(me.handle());
        bc.wait();
        bc.wait(); // s1 tried to wake us while RUNNING
        me.wait(Some(Duration::from_secs(10))).ctx("wait")
    });
    b.wait();
    let h = s2.lock().unwrap().clone().ok_or("no s2")?;
    check!(!s1.wake(&h).ctx("wake running")?, "woke a RUNNING server");
    b.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s1.wake(&h).ctx("wake idle")? {
        check!(Instant::now() < deadline, "s2 never idle");
        thread::yield_now();
    }
    check!(
        t.join().map_err(|_| "s2 panicked")??,
        "s2 reported a timeout"
    );
    Ok(())
}

fn park_times_out() -> Result<(), String> {
    let group: Group<()> = Group::new();
    let server = Server::register().ctx("server")?;
    let start = Instant::now();
    let woken = group
        .park(&server, Some(Duration::from_millis(50)))
        .ctx("park")?;
    check!(!woken, "woken with nothing queued");
    check!(
        start.elapsed() >= Duration::from_millis(45),
        "returned after {:?}",
        start.elapsed()
    );
    check!(
        server.state().task_state() == TaskState::Running,
        "state {:?}",
        server.state()
    );
    check!(group.idle_server() == 0, "still in the slot");
    let woken = server.wait(Some(Duration::from_millis(20))).ctx("wait")?;
    check!(!woken, "wait woken");
    Ok(())
}

/// A server parked as the group's idle server is woken by another server, and leaves the
/// slot empty.
fn parked_idle_server_is_woken() -> Result<(), String> {
    let group: Group<()> = Group::new();
    let g = group.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = thread::spawn(move || -> Result<bool, String> {
        let s = Server::register().ctx("parked server")?;
        tx.send(s.handle()).map_err(|_| "send")?;
        g.park(&s, Some(Duration::from_secs(10))).ctx("park")
    });
    let parked = rx.recv().map_err(|_| "no handle")?;
    let waker = Server::register().ctx("waker")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while group.idle_server() != parked.tid() || parked.state().task_state() != TaskState::Idle {
        check!(Instant::now() < deadline, "never parked");
        thread::yield_now();
    }
    check!(
        waker.wake(&parked).ctx("wake")?,
        "parked server was not IDLE"
    );
    check!(
        t.join().map_err(|_| "parked server panicked")??,
        "park reported a timeout"
    );
    check!(
        group.idle_server() == 0,
        "slot still holds {}",
        group.idle_server()
    );
    let mut buf = Vec::new();
    group.take_idle_into(&mut buf);
    check!(buf.is_empty(), "workers in an empty group");
    Ok(())
}

fn many_workers_two_servers() -> Result<(), String> {
    const WORKERS: usize = 40;
    let group: Group<usize> = Group::new();
    let handles: Arc<Mutex<Vec<umcg::WorkerRef<usize>>>> = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..WORKERS {
        let (g, h) = (group.clone(), handles.clone());
        threads.push(thread::spawn(move || {
            let w = g.register_worker(i).expect("register");
            h.lock().unwrap().push(w.handle());
            for j in 0..3 {
                if (i + j) % 2 == 0 {
                    umcg_guest_tests::sleep(Duration::from_millis(1));
                } else {
                    w.yield_now().expect("yield");
                }
            }
        }));
    }
    // Two servers share the group: whoever parks first is the idle server, the other polls.
    let exits = Arc::new(AtomicU32::new(0));
    let shared_ready: Arc<Mutex<Vec<Runnable<usize>>>> = Arc::new(Mutex::new(Vec::new()));
    let doing: Arc<Vec<Mutex<String>>> =
        Arc::new((0..2).map(|_| Mutex::new(String::new())).collect());
    type ServerSlot = Mutex<Option<umcg::ServerRef>>;
    let srefs: Arc<Vec<ServerSlot>> = Arc::new((0..2).map(|_| Mutex::new(None)).collect());
    let mut servers = Vec::new();
    for n in 0..2 {
        let sref = srefs.clone();
        let (g, ex, rq, doing) = (
            group.clone(),
            exits.clone(),
            shared_ready.clone(),
            doing.clone(),
        );
        servers.push(thread::spawn(move || -> Result<(), String> {
            let s = Server::register().ctx("server")?;
            let deadline = Instant::now() + Duration::from_secs(60);
            while ex.load(SeqCst) < WORKERS as u32 {
                check!(Instant::now() < deadline, "{} exits", ex.load(SeqCst));
                let next = {
                    let mut q = rq.lock().unwrap();
                    q.extend(g.take_idle());
                    if q.is_empty() {
                        None
                    } else {
                        Some(q.remove(0))
                    }
                };
                let Some(w) = next else {
                    *doing[n].lock().unwrap() = format!("server {} parks", s.tid());
                    *sref[n].lock().unwrap() = Some(s.handle());
                    g.park(&s, Some(Duration::from_millis(10))).ctx("park")?;
                    continue;
                };
                *doing[n].lock().unwrap() = format!("server {} runs {}", s.tid(), w.worker().tid());
                *sref[n].lock().unwrap() = Some(s.handle());
                match s.run(&g, w).ctx("run")? {
                    Event::Yielded(r) => rq.lock().unwrap().push(r),
                    Event::Exited(_) => {
                        ex.fetch_add(1, SeqCst);
                    }
                    _ => {}
                }
            }
            Ok(())
        }));
    }
    // A watchdog: a hang shows who waits for what.
    let start = Instant::now();
    while !servers.iter().all(|s| s.is_finished()) {
        if start.elapsed() > Duration::from_secs(30) {
            for d in doing.iter() {
                println!("{}", d.lock().unwrap());
            }
            for r in srefs.iter() {
                if let Some(r) = &*r.lock().unwrap() {
                    println!("server {} {:?}", r.tid(), r.state());
                }
            }
            for w in handles.lock().unwrap().iter() {
                println!("worker {} {:?} next_tid {}", w.tid(), w.state(), w.data());
            }
            println!(
                "idle list {} slot {}",
                group.has_idle(),
                group.idle_server()
            );
            return Err(format!("hung with {} exits", exits.load(SeqCst)));
        }
        umcg_guest_tests::sleep(Duration::from_millis(10));
    }
    for s in servers {
        s.join().map_err(|_| "server panicked")??;
    }
    for t in threads {
        t.join().map_err(|_| "worker panicked")?;
    }
    Ok(())
}

fn unregistered_worker_thread_can_register_again() -> Result<(), String> {
    let group: Group<()> = Group::new();
    let server = Server::register().ctx("server")?;
    let g = group.clone();
    let t = thread::spawn(move || -> Result<(), String> {
        drop(g.register_worker(()).ctx("register")?);
        // Unregistered: it may register as a server now, and plain syscalls do not block on
        // UMCG any more.
        let s = Server::register().ctx("server after worker")?;
        umcg_guest_tests::sleep(Duration::from_millis(2));
        drop(s);
        Ok(())
    });
    let seen = serve(&group, &server, 1)?;
    t.join().map_err(|_| "thread panicked")??;
    check!(seen.events == ["exited"], "events {:?}", seen.events);
    Ok(())
}

fn main() {
    umcg_guest_tests::main(
        "umcg-protocol",
        &[
            ("sys_errors", sys_errors),
            ("abi_errors", abi_errors),
            ("server_registration", server_registration),
            ("worker_runs_and_exits", worker_runs_and_exits),
            ("yield_comes_back_directly", yield_comes_back_directly),
            (
                "block_comes_back_through_idle_list",
                block_comes_back_through_idle_list,
            ),
            (
                "block_then_wake_is_not_a_yield",
                block_then_wake_is_not_a_yield,
            ),
            ("worker_to_worker_switch", worker_to_worker_switch),
            ("wake_worker_requeues_it", wake_worker_requeues_it),
            ("preempt_racing_wake_worker", preempt_racing_wake_worker),
            (
                "waking_a_serving_server_is_refused",
                waking_a_serving_server_is_refused,
            ),
            ("preempt_a_spinning_worker", preempt_a_spinning_worker),
            ("server_switch_ping_pong", server_switch_ping_pong),
            ("server_wake_only_idle", server_wake_only_idle),
            ("park_times_out", park_times_out),
            ("parked_idle_server_is_woken", parked_idle_server_is_woken),
            ("many_workers_two_servers", many_workers_two_servers),
            (
                "unregistered_worker_thread_can_register_again",
                unregistered_worker_thread_can_register_again,
            ),
        ],
        Duration::from_secs(60),
    )
}
