//! A blocking-I/O TCP echo server on the UMCG runtime: one task per connection, written with
//! plain blocking `read`/`write`. A connection waiting for data blocks only its own task; the
//! servers run the others.
//!
//! `cargo run --example echo_server -- [ADDR]` serves forever (default 127.0.0.1:7007);
//! `cargo run --example echo_server -- --self-test [CLIENTS]` serves on a free port, runs
//! CLIENTS clients (threads) against it, checks every echo, and exits.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

fn serve(stream: TcpStream) -> std::io::Result<u64> {
    let mut out = stream.try_clone()?;
    let mut lines = 0;
    for line in BufReader::new(stream).lines() {
        let line = line?; // blocks this task only
        writeln!(out, "{line}")?;
        lines += 1;
    }
    Ok(lines)
}

fn client(addr: std::net::SocketAddr, id: usize) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    for n in 0..10 {
        let msg = format!("client {id} message {n}");
        writeln!(w, "{msg}")?;
        let mut back = String::new();
        r.read_line(&mut back)?;
        assert_eq!(back.trim_end(), msg, "echo mismatch");
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let self_test = args.first().is_some_and(|a| a == "--self-test");
    let addr = if self_test {
        "127.0.0.1:0".to_string()
    } else {
        args.first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1:7007".into())
    };
    let rt = umcg_runtime::Builder::new().build()?;
    let listener = TcpListener::bind(&addr)?;
    let local = listener.local_addr()?;
    println!("echo server on {local}");

    let clients: usize = if self_test {
        args.get(1).and_then(|n| n.parse().ok()).unwrap_or(50)
    } else {
        usize::MAX
    };
    let handle = rt.handle();
    // The acceptor is a task too: accept() blocks it, not a server.
    let acceptor = rt.spawn(move || -> std::io::Result<()> {
        let mut conns = Vec::new();
        for stream in listener.incoming().take(clients) {
            conns.push(handle.spawn(move || serve(stream?)));
        }
        for c in conns {
            let lines = c.join().expect("connection task panicked")?;
            assert_eq!(lines, 10);
        }
        Ok(())
    });
    if self_test {
        let threads: Vec<_> = (0..clients)
            .map(|id| std::thread::spawn(move || client(local, id)))
            .collect();
        for t in threads {
            t.join().expect("client panicked")?;
        }
        acceptor.join().expect("acceptor panicked")?;
        println!("{clients} clients served");
    } else {
        acceptor.join().expect("acceptor panicked")?;
    }
    rt.shutdown();
    Ok(())
}
