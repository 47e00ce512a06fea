//! The blocking-I/O server workload: an echo server with one task (or thread) per connection,
//! driven by a closed-loop load generator on one thread with `epoll`.
//!
//! The server reads a fixed-size request and writes it back, with plain blocking `read` and
//! `write` (tokio async: the same with `AsyncReadExt`/`AsyncWriteExt`). The load generator
//! keeps one request in flight on every connection: it sends, waits for the echo, records the
//! round trip, and sends again, for a fixed time. It runs in the same process and shares the
//! vCPUs with the server.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The size of a request and of its echo.
pub const MSG: usize = 64;

/// A server implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// `umcg-runtime`: a task per connection, the acceptor a task too.
    Umcg,
    /// A `std::thread` per connection.
    Threads,
    /// tokio's async I/O: a tokio task per connection.
    TokioAsync,
    /// tokio's `spawn_blocking`: a blocking-pool thread per connection.
    TokioBlocking,
}

impl Impl {
    /// Every implementation, in the order of the report.
    pub const ALL: [Impl; 4] = [
        Impl::Umcg,
        Impl::Threads,
        Impl::TokioAsync,
        Impl::TokioBlocking,
    ];

    /// The name in metric names.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Umcg => "umcg",
            Impl::Threads => "threads",
            Impl::TokioAsync => "tokio_async",
            Impl::TokioBlocking => "tokio_blocking",
        }
    }
}

/// What one data point measured.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Round trips completed per second during the measurement.
    pub requests_per_sec: f64,
    /// The 99th percentile of the round trips, in microseconds.
    pub p99_us: f64,
    /// The median round trip, in microseconds.
    pub p50_us: f64,
    /// How much less memory the system had available with every connection open and served
    /// (both ends' sockets, the server's threads and stacks), per connection, in KiB.
    pub kib_per_conn: f64,
}

/// The server side while it runs: stop it with [`Server::stop`].
struct Server {
    stop: Box<dyn FnOnce()>,
}

impl Server {
    fn stop(self) {
        (self.stop)()
    }
}

/// Echoes fixed-size messages until the peer closes.
fn echo_blocking(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut b = [0u8; MSG];
    while s.read_exact(&mut b).is_ok() {
        if s.write_all(&b).is_err() {
            break;
        }
    }
}

/// A listener with a backlog for every connection of a data point (std's is 128).
fn listener(backlog: usize) -> io::Result<TcpListener> {
    // Best effort, and only upwards: the kernel caps the backlog at net.core.somaxconn.
    let path = "/proc/sys/net/core/somaxconn";
    let now: usize = std::fs::read_to_string(path)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(usize::MAX);
    if now < backlog {
        let _ = std::fs::write(path, backlog.to_string());
    }
    // SAFETY: plain socket calls on a new descriptor, owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid sockaddr_in of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a bound socket.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog.min(i32::MAX as usize) as i32) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(fd))
}

/// Accepts until `stop` is set (the stopper then connects once to wake the acceptor), handing
/// each connection to `handle`.
fn accept_loop(l: &TcpListener, stop: &AtomicBool, mut handle: impl FnMut(TcpStream)) {
    loop {
        match l.accept() {
            Ok((s, _)) if !stop.load(SeqCst) => handle(s),
            Ok(_) => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if stop.load(SeqCst) {
                    return;
                }
                // EMFILE and the like: wait instead of spinning.
                eprintln!("# accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn stopper(addr: SocketAddr, stop: Arc<AtomicBool>) -> impl FnOnce() {
    move || {
        stop.store(true, SeqCst);
        let _ = TcpStream::connect(addr);
    }
}

/// A tokio server: stopping it wakes the acceptor, waits for it and shuts the runtime down.
fn tokio_server(
    rt: tokio::runtime::Runtime,
    acceptor: tokio::task::JoinHandle<()>,
    wake: impl FnOnce() + 'static,
) -> Server {
    Server {
        stop: Box::new(move || {
            wake();
            let _ = rt.block_on(acceptor);
            rt.shutdown_timeout(Duration::from_secs(10));
        }),
    }
}

fn start(which: Impl, conns: usize, servers: usize) -> io::Result<(SocketAddr, Server)> {
    let l = listener(conns + 16)?;
    let addr = l.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let wake = stopper(addr, stop.clone());
    let server = match which {
        Impl::Umcg => {
            let rt = umcg_runtime::Builder::new()
                .servers(servers)
                .stack_size(64 << 10)
                .build()?;
            let h = rt.handle();
            let acceptor = rt.spawn(move || {
                accept_loop(&l, &stop, |s| {
                    // Detached: the task ends when its peer closes.
                    drop(h.spawn(move || echo_blocking(s)));
                })
            });
            Server {
                stop: Box::new(move || {
                    wake();
                    let _ = acceptor.join();
                    rt.shutdown();
                }),
            }
        }
        Impl::Threads => {
            let acceptor = std::thread::spawn(move || {
                let mut threads = Vec::new();
                accept_loop(&l, &stop, |s| {
                    match std::thread::Builder::new()
                        .stack_size(64 << 10)
                        .spawn(move || echo_blocking(s))
                    {
                        Ok(t) => threads.push(t),
                        Err(e) => eprintln!("# thread: {e}"),
                    }
                });
                for t in threads {
                    let _ = t.join();
                }
            });
            Server {
                stop: Box::new(move || {
                    wake();
                    let _ = acceptor.join();
                }),
            }
        }
        Impl::TokioAsync => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(servers)
                .enable_io()
                .build()?;
            l.set_nonblocking(true)?;
            let acceptor = rt.spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let l = tokio::net::TcpListener::from_std(l).expect("tokio listener");
                loop {
                    let Ok((mut s, _)) = l.accept().await else {
                        tokio::task::yield_now().await;
                        continue;
                    };
                    if stop.load(SeqCst) {
                        return;
                    }
                    tokio::spawn(async move {
                        let _ = s.set_nodelay(true);
                        let mut b = [0u8; MSG];
                        while s.read_exact(&mut b).await.is_ok() {
                            if s.write_all(&b).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            tokio_server(rt, acceptor, wake)
        }
        Impl::TokioBlocking => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(servers)
                .max_blocking_threads(conns + 16)
                .thread_stack_size(64 << 10)
                .build()?;
            let h = rt.handle().clone();
            let acceptor = rt.spawn_blocking(move || {
                accept_loop(&l, &stop, |s| {
                    drop(h.spawn_blocking(move || echo_blocking(s)));
                })
            });
            tokio_server(rt, acceptor, wake)
        }
    };
    Ok((addr, server))
}

/// `MemAvailable` of `/proc/meminfo`, in KiB (the per-CPU counters folded first, where
/// allowed).
pub fn mem_available_kib() -> u64 {
    let _ = std::fs::write("/proc/sys/vm/stat_refresh", "1");
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One client connection of the load generator.
struct Conn {
    s: TcpStream,
    /// Bytes of the echo received so far.
    got: usize,
    sent_at: Instant,
    buf: [u8; MSG],
}

struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> io::Result<Self> {
        // SAFETY: no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn add(&self, fd: RawFd, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key,
        };
        // SAFETY: a valid event for a valid descriptor.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, evs: &mut [libc::epoll_event], ms: i32) -> io::Result<usize> {
        // SAFETY: `evs` is a writable array of its length.
        let n =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), evs.as_mut_ptr(), evs.len() as i32, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize)
    }
}

/// Sends the next request on `c`.
fn send(c: &mut Conn, seq: u64) -> io::Result<()> {
    c.buf[..8].copy_from_slice(&seq.to_le_bytes());
    c.got = 0;
    c.sent_at = Instant::now();
    // 64 bytes into an empty socket buffer: a nonblocking write takes them all.
    (&c.s).write_all(&c.buf)
}

/// Reads what is there of `c`'s echo; `Some(round trip)` once it is complete.
fn receive(c: &mut Conn) -> io::Result<Option<Duration>> {
    let mut b = [0u8; MSG];
    loop {
        match (&c.s).read(&mut b[..MSG - c.got]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                if b[..n] != c.buf[c.got..c.got + n] {
                    return Err(io::Error::other("echo differs from the request"));
                }
                c.got += n;
                if c.got == MSG {
                    return Ok(Some(c.sent_at.elapsed()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Connects `n` clients, has each one do a first round trip (so that every server-side
/// handler is running), then keeps one request in flight per connection for `measure`.
fn drive(
    addr: SocketAddr,
    n: usize,
    measure: Duration,
    setup_limit: Duration,
) -> io::Result<(u64, Vec<u32>, u64)> {
    let ep = Epoll::new()?;
    let mut conns = Vec::with_capacity(n);
    let setup = Instant::now();
    let mem_before = mem_available_kib();
    for i in 0..n {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        ep.add(s.as_raw_fd(), i as u64)?;
        conns.push(Conn {
            s,
            got: 0,
            sent_at: Instant::now(),
            buf: [0x5a; MSG],
        });
        if setup.elapsed() > setup_limit {
            return Err(io::Error::other(format!(
                "only {i} of {n} connected in {setup_limit:?}"
            )));
        }
    }
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    // The first round trip on every connection.
    let mut seq = 0u64;
    for c in &mut conns {
        seq += 1;
        send(c, seq)?;
    }
    let mut warm = 0;
    while warm < n {
        if setup.elapsed() > setup_limit {
            return Err(io::Error::other(format!(
                "only {warm} of {n} served in {setup_limit:?}"
            )));
        }
        let k = ep.wait(&mut evs, 100)?;
        for e in &evs[..k] {
            let c = &mut conns[e.u64 as usize];
            if c.got < MSG && receive(c)?.is_some() {
                warm += 1;
            }
        }
    }
    let mem_kib = mem_before.saturating_sub(mem_available_kib());
    // The measurement: a round trip completes, the next request goes out at once.
    for c in &mut conns {
        seq += 1;
        send(c, seq)?;
    }
    let mut lat_us: Vec<u32> = Vec::with_capacity(1 << 20);
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < measure {
        let k = ep.wait(&mut evs, 10)?;
        for e in &evs[..k] {
            let c = &mut conns[e.u64 as usize];
            if let Some(rtt) = receive(c)? {
                done += 1;
                if lat_us.len() < lat_us.capacity() {
                    lat_us.push(rtt.as_micros().min(u32::MAX as u128) as u32);
                }
                seq += 1;
                send(c, seq)?;
            }
        }
    }
    let took = start.elapsed();
    let rps = (done as f64 / took.as_secs_f64()) as u64;
    // Closed with a reset, so that no TIME_WAIT socket outlives the data point.
    for c in &conns {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid linger of the size passed, on a valid socket.
        unsafe {
            libc::setsockopt(
                c.s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }
    Ok((rps, lat_us, mem_kib))
}

/// Brings the loopback interface up if it is down (a minimal guest's init may not), best
/// effort: without it every connect fails with `EADDRNOTAVAIL`.
fn loopback_up() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let works = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .and_then(TcpStream::connect)
            .is_ok();
        if !works {
            let _ = std::process::Command::new("ifconfig")
                .args(["lo", "127.0.0.1", "up"])
                .status();
        }
    });
}

/// Raises `RLIMIT_NOFILE` to at least `n` (the guest's hard limit is 4096 by default; root
/// may raise it).
pub fn allow_files(n: u64) -> io::Result<()> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit buffer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if r.rlim_cur >= n {
        return Ok(());
    }
    r.rlim_cur = n;
    r.rlim_max = r.rlim_max.max(n);
    // SAFETY: a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the kernel's thread limit to at least `n` (best effort; it scales with memory).
pub fn allow_threads(n: u64) {
    let path = "/proc/sys/kernel/threads-max";
    let now: u64 = std::fs::read_to_string(path)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if now < n {
        let _ = std::fs::write(path, n.to_string());
    }
}

/// One data point: `which` serving `conns` connections on `servers` servers (or tokio worker
/// threads), measured for `measure`.
pub fn run(which: Impl, conns: usize, servers: usize, measure: Duration) -> io::Result<Outcome> {
    loopback_up();
    allow_files(2 * conns as u64 + 256)?;
    allow_threads(4 * conns as u64 + 1024);
    let (addr, server) = start(which, conns, servers)?;
    let r = drive(addr, conns, measure, Duration::from_secs(120));
    // The clients close (the handlers see EOF and end) before the server stops.
    let r = r.map(|(rps, mut lat, mem)| {
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0) as f64
        };
        Outcome {
            requests_per_sec: rps as f64,
            p99_us: pct(0.99),
            p50_us: pct(0.50),
            kib_per_conn: mem as f64 / conns as f64,
        }
    });
    server.stop();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The load generator and the servers that need no UMCG, on the host: every connection
    /// is served, round trips are counted and timed.
    #[test]
    fn echo_workload_without_umcg() {
        for which in [Impl::Threads, Impl::TokioAsync, Impl::TokioBlocking] {
            let o = run(which, 50, 2, Duration::from_millis(200)).expect("data point");
            assert!(o.requests_per_sec > 0.0, "{which:?}: {o:?}");
            assert!(o.p99_us >= o.p50_us && o.p50_us > 0.0, "{which:?}: {o:?}");
        }
    }
}
