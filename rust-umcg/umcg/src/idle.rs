//! The idle-worker list and the idle-server slot, as user space sees them.
//!
//! The kernel pushes a worker that becomes IDLE on wake-up onto a lock-free stack whose nodes
//! are the workers' own `idle_workers_ptr` fields:
//!
//! 1. it stores [`UMCG_IDLE_NODE_PENDING`](crate::sys::UMCG_IDLE_NODE_PENDING) in the node,
//! 2. exchanges the head with the node's address, getting the old head,
//! 3. stores the old head in the node.
//!
//! User space takes the whole stack with one exchange of the head with zero, then walks it,
//! waiting out nodes that still read PENDING (step 3 has not happened yet), and points every
//! node back at the head before the worker may run again.

use crate::sys::UMCG_IDLE_NODE_PENDING;
use std::sync::atomic::Ordering::SeqCst;

/// The list's words: loom's under `--cfg loom`, for the model check below.
#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicU64;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicU64;

/// Takes every node off the list at `head`, re-points each to `head`, and returns their
/// addresses oldest push first.
///
/// # Safety
///
/// As for [`take_each`].
#[cfg(all(test, not(loom)))]
pub(crate) unsafe fn take_all(head: &AtomicU64) -> Vec<u64> {
    let mut nodes = Vec::new();
    // SAFETY: as promised by the caller.
    unsafe { take_each(head, |n| nodes.push(n)) };
    nodes
}

/// Takes every node off the list at `head`, re-points each to `head`, and calls `f` with each
/// node's address, oldest push first. Allocates nothing.
///
/// # Safety
///
/// Every address reachable from `head` must be that of a live, 8-byte aligned `AtomicU64` (a
/// node), which nobody but the pusher and this function writes while it is on the list.
pub(crate) unsafe fn take_each(head: &AtomicU64, mut f: impl FnMut(u64)) {
    let home = head as *const AtomicU64 as u64;
    // The list is a stack: reverse it in place (through the links) for oldest-first order.
    let mut node = head.swap(0, SeqCst);
    let mut reversed = 0u64;
    while node != 0 {
        // SAFETY: the caller promises that list nodes are live atomics.
        let link = unsafe { &*(node as *const AtomicU64) };
        let next = wait_link(link);
        link.store(reversed, SeqCst);
        reversed = node;
        node = next;
    }
    while reversed != 0 {
        // SAFETY: as above; these nodes are off the list and only this function writes them.
        let link = unsafe { &*(reversed as *const AtomicU64) };
        let next = link.load(SeqCst);
        link.store(home, SeqCst);
        f(reversed);
        reversed = next;
    }
}

/// The link a node holds, once its pusher stored it.
fn wait_link(link: &AtomicU64) -> u64 {
    let mut spins = 0u32;
    loop {
        let v = link.load(SeqCst);
        if v != UMCG_IDLE_NODE_PENDING {
            return v;
        }
        // The pusher is between its exchange and its final store: a few instructions, unless
        // it faulted or was preempted.
        crate::backoff(&mut spins);
    }
}

/// Pushes `node` on the list at `head` the way the kernel does, pausing between the steps if
/// asked: the other side of [`take_all`], for tests without a UMCG kernel.
///
/// # Safety
///
/// As for [`take_all`]; `node` must not be on the list already.
#[cfg(test)]
pub(crate) unsafe fn simulate_kernel_push(head: &AtomicU64, node: &AtomicU64, pause: impl Fn()) {
    node.store(UMCG_IDLE_NODE_PENDING, SeqCst);
    let old = head.swap(node as *const AtomicU64 as u64, SeqCst);
    pause();
    node.store(old, SeqCst);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Barrier};

    #[test]
    fn empty_list() {
        let head = AtomicU64::new(0);
        // SAFETY: empty list.
        assert!(unsafe { take_all(&head) }.is_empty());
    }

    #[test]
    fn order_and_repointing() {
        let head = AtomicU64::new(0);
        let nodes: Vec<AtomicU64> = (0..5).map(|_| AtomicU64::new(0)).collect();
        for n in &nodes {
            // SAFETY: the nodes outlive the list.
            unsafe { simulate_kernel_push(&head, n, || {}) };
        }
        // SAFETY: as above.
        let got = unsafe { take_all(&head) };
        let want: Vec<u64> = nodes.iter().map(|n| n as *const _ as u64).collect();
        assert_eq!(got, want, "oldest push first");
        for n in &nodes {
            assert_eq!(
                n.load(SeqCst),
                &head as *const _ as u64,
                "node re-pointed at head"
            );
        }
        assert_eq!(head.load(SeqCst), 0);
    }

    /// Pushers behave like the kernel, with random pauses between the exchange and the link
    /// store, while a consumer takes the list concurrently: every push is seen exactly once.
    #[test]
    fn concurrent_pushes_are_seen_once() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 500;
        let head = Arc::new(AtomicU64::new(0));
        let nodes: Arc<Vec<AtomicU64>> =
            Arc::new((0..THREADS).map(|_| AtomicU64::new(0)).collect());
        // A node may be pushed again only after the consumer took it.
        let on_list: Arc<Vec<AtomicBool>> =
            Arc::new((0..THREADS).map(|_| AtomicBool::new(false)).collect());
        let start = Arc::new(Barrier::new(THREADS + 1));
        let mut pushers = Vec::new();
        for i in 0..THREADS {
            let (head, nodes, on_list, start) =
                (head.clone(), nodes.clone(), on_list.clone(), start.clone());
            pushers.push(std::thread::spawn(move || {
                start.wait();
                let mut seed = i as u32 * 7919 + 1;
                for _ in 0..ROUNDS {
                    while on_list[i].load(SeqCst) {
                        std::thread::yield_now();
                    }
                    on_list[i].store(true, SeqCst);
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let pause = seed & 3 == 0;
                    // SAFETY: the nodes outlive the list; the node is not on it.
                    unsafe {
                        simulate_kernel_push(&head, &nodes[i], || {
                            if pause {
                                std::thread::yield_now()
                            }
                        })
                    };
                }
            }));
        }
        start.wait();
        let mut seen: HashMap<u64, usize> = HashMap::new();
        let total = THREADS * ROUNDS;
        let mut count = 0;
        while count < total {
            // SAFETY: the nodes outlive the list.
            for node in unsafe { take_all(&head) } {
                let i = nodes
                    .iter()
                    .position(|n| n as *const _ as u64 == node)
                    .expect("a known node");
                assert!(on_list[i].swap(false, SeqCst), "node {i} taken twice");
                *seen.entry(node).or_default() += 1;
                count += 1;
            }
        }
        for p in pushers {
            p.join().unwrap();
        }
        // SAFETY: as above.
        assert!(unsafe { take_all(&head) }.is_empty());
        assert_eq!(seen.values().sum::<usize>(), total);
        assert!(seen.values().all(|&n| n == ROUNDS));
    }
}

/// A model check of the list with loom (`RUSTFLAGS="--cfg loom" cargo test -p umcg --lib
/// loom`), in every interleaving up to the preemption bound: one pusher pushes two nodes in
/// turn and another a third one, as the kernel pushes, while a consumer takes the list; the
/// consumer pushes again a node that it took (its worker woke once more), and takes what is
/// left once the pushers are done. Every push is taken exactly once, the first pusher's two
/// nodes oldest first when one take gets both, and every taken node is re-pointed at the
/// head.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn loom_idle_list_loses_nothing_and_takes_each_push_once() {
        let mut builder = loom::model::Builder::new();
        // 3 unless LOOM_MAX_PREEMPTIONS says otherwise.
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(3);
        }
        builder.check(|| {
            let head = Arc::new(AtomicU64::new(0));
            let nodes = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
            let push = |head: &AtomicU64, node: &AtomicU64| {
                // SAFETY: the nodes outlive the list; a node is pushed again only after it
                // was taken.
                unsafe { simulate_kernel_push(head, node, || {}) }
            };
            let (h, n) = (head.clone(), nodes.clone());
            let first = loom::thread::spawn(move || {
                push(&h, &n[0]);
                push(&h, &n[1]);
            });
            let (h, n) = (head.clone(), nodes.clone());
            let second = loom::thread::spawn(move || push(&h, &n[2]));

            let addr = |i: usize| &nodes[i] as *const AtomicU64 as u64;
            let index = |a: u64| (0..3).find(|&i| addr(i) == a).expect("a known node");
            let mut takes: Vec<Vec<usize>> = Vec::new();
            let mut took = Vec::new();
            // SAFETY: the nodes outlive the list.
            unsafe { take_each(&head, |a| took.push(index(a))) };
            let again = took.contains(&2);
            takes.push(took);
            if again {
                push(&head, &nodes[2]);
            }
            first.join().unwrap();
            second.join().unwrap();
            let mut took = Vec::new();
            // SAFETY: as above.
            unsafe { take_each(&head, |a| took.push(index(a))) };
            takes.push(took);

            let mut count = [0usize; 3];
            for take in &takes {
                for &i in take {
                    count[i] += 1;
                }
                let pos = |i| take.iter().position(|&x| x == i);
                if let (Some(a), Some(b)) = (pos(0), pos(1)) {
                    assert!(a < b, "oldest push first: {take:?}");
                }
            }
            assert_eq!(
                count,
                [1, 1, 1 + usize::from(again)],
                "each push taken once"
            );
            let home = &*head as *const AtomicU64 as u64;
            for n in nodes.iter() {
                assert_eq!(n.load(SeqCst), home, "re-pointed at the head");
            }
            assert_eq!(head.load(SeqCst), 0);
        });
    }
}
