//! A minimal user-space scheduler on the protocol layer: one server runs eight worker threads
//! in FIFO order. Workers yield and block; the server prints what it sees.
//!
//! Run it on a UMCG kernel: `cargo run --example simple_scheduler`.

use std::collections::VecDeque;
use std::time::Duration;
use umcg::{Event, Group, Server};

fn main() -> std::io::Result<()> {
    let group: Group<usize> = Group::new();
    let server = Server::register()?;
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let g = group.clone();
            std::thread::spawn(move || {
                // Returns once the server runs this worker.
                let me = g.register_worker(i).expect("register worker");
                for round in 0..3 {
                    if (i + round) % 2 == 0 {
                        me.yield_now().expect("yield"); // straight back to the server
                    } else {
                        std::thread::sleep(Duration::from_millis(5)); // blocks: the server runs another
                    }
                }
                // Dropping `me` unregisters and hands the CPU back.
            })
        })
        .collect();

    let mut run_queue = VecDeque::new();
    let mut exited = 0;
    while exited < workers.len() {
        // Workers that woke up (or registered) are on the idle list.
        run_queue.extend(group.take_idle());
        let Some(next) = run_queue.pop_front() else {
            // Nothing to run: sleep as the idle server until the kernel queues a worker.
            group.park(&server, Some(Duration::from_secs(5)))?;
            continue;
        };
        match server.run(&group, next)? {
            Event::Yielded(w) => {
                println!("worker {} yielded", w.worker().data());
                run_queue.push_back(w);
            }
            Event::Blocked(w) => println!("worker {} blocked", w.data()),
            Event::Preempted(w) => println!("worker {} preempted", w.data()),
            Event::Exited(w) => {
                println!("worker {} exited", w.data());
                exited += 1;
            }
        }
    }
    for w in workers {
        w.join().expect("worker thread");
    }
    println!("all {exited} workers done");
    Ok(())
}
