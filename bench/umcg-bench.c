// SPDX-License-Identifier: GPL-2.0
/*
 * umcg-bench: what `make bench` measures in the guest.
 *
 * UMCG context switches (server <-> server, server -> worker -> server,
 * worker -> worker), block and wake detection latencies and the switch cost
 * with 2..1000 registered workers, next to the baselines they are judged
 * against, all in one run: futex wake+wait ping-pong (free and both threads
 * pinned to one CPU), pipe ping-pong (the `perf bench sched pipe` pattern)
 * and two threads pinned to one CPU alternating with sched_yield() (the
 * floor: one same-CPU context switch).
 *
 * The benchmarks run in rounds, one repetition of each per round, so that
 * a slow phase of the (emulated) machine hits all of them alike: only
 * ratios between figures of the same run mean anything.
 *
 * Output, one line per repetition: "bench <metric> <unit> <value>", and
 * "# ..." comments. Exit status 1 (after a "# error: ..." line) when a UMCG
 * operation fails: a benchmark that went wrong must not produce a number.
 *
 * With -B, only the benchmarks that do not use UMCG run (the baselines,
 * and "base/": fork + exit + wait, and a wake-up storm of many threads), on
 * any kernel, reported as "noumcg/METRIC": `make bench` runs them first in
 * every boot, before anything used UMCG, and compares them between the base
 * kernel, without UMCG, and the series, which must cost tasks that do not
 * use UMCG nothing.
 *
 * Usage: umcg-bench [-B] [-r ROUNDS] [-n ITERATIONS] [-b BLOCK_ITERATIONS]
 *                   [-w MAX_WORKERS] [-o ONLY_METRIC_PREFIX]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/umcg.h>

#ifndef __NR_umcg_ctl
#define __NR_umcg_ctl	463
#define __NR_umcg_wait	464
#endif

#define NSEC		1000000000ull
/* How long a server waits for something that must happen. */
#define DEADLINE_NS	(20 * NSEC)

static int rounds = 5;
static long iters = 2000;
static long block_iters = 200;
static int max_workers = 1000;
static const char *only = "";
/* -B: no UMCG (see above); every metric is reported as noumcg/METRIC. */
static int base_only;

/* ---- helpers ---------------------------------------------------------- */

static void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	printf("# error: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(1);
}

static uint64_t now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * NSEC + ts.tv_nsec;
}

static uint64_t realtime_in(uint64_t ns)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * NSEC + ts.tv_nsec + ns;
}

static pid_t gettid_(void)
{
	return syscall(SYS_gettid);
}

static void pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("sched_setaffinity(%d): %s", cpu, strerror(errno));
}

static void emit(const char *metric, const char *unit, double value)
{
	/* A run without UMCG is reported apart: it is compared across kernels. */
	printf("bench %s%s %s %.1f\n", base_only ? "noumcg/" : "", metric, unit, value);
	fflush(stdout);
}

static int wanted(const char *metric)
{
	return !strncmp(metric, only, strlen(only));
}

#define load(x)		__atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define store(x, v)	__atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

static long futex(uint32_t *word, int op, uint32_t val)
{
	return syscall(SYS_futex, word, op, val, NULL, NULL, 0);
}

static void futex_wait(uint32_t *word, uint32_t val)
{
	futex(word, FUTEX_WAIT_PRIVATE, val);
}

static void futex_wake(uint32_t *word)
{
	futex(word, FUTEX_WAKE_PRIVATE, 1);
}

static pthread_t spawn(void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	pthread_t t;
	int err;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	err = pthread_create(&t, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	if (err)
		die("pthread_create: %s", strerror(err));
	return t;
}

/* ---- baselines -------------------------------------------------------- */

/*
 * Two threads on one CPU, strictly alternating with sched_yield(): each
 * turn is one context switch and nothing else, the floor.
 */
struct yield_pair {
	pthread_barrier_t bar;
	uint32_t turn;
	uint64_t start, end;
};

struct yield_arg {
	struct yield_pair *p;
	uint32_t me;
};

static void *yield_thread(void *arg)
{
	struct yield_arg *a = arg;
	struct yield_pair *p = a->p;
	long i;

	pin_to(0);
	pthread_barrier_wait(&p->bar);
	if (a->me == 0)
		p->start = now();
	for (i = 0; i < iters; i++) {
		while (load(p->turn) != a->me)
			sched_yield();
		store(p->turn, !a->me);
	}
	sched_yield();
	if (a->me == 1)
		p->end = now();
	return NULL;
}

static void bench_yield(void)
{
	struct yield_pair p = { .turn = 0 };
	struct yield_arg a[2] = { { &p, 0 }, { &p, 1 } };
	pthread_t t[2];

	pthread_barrier_init(&p.bar, NULL, 2);
	t[0] = spawn(yield_thread, &a[0]);
	t[1] = spawn(yield_thread, &a[1]);
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	pthread_barrier_destroy(&p.bar);
	emit("switch/yield_pinned", "ns_per_switch", (double)(p.end - p.start) / (2 * iters));
}

/* FUTEX_WAKE + FUTEX_WAIT ping-pong on one word. */
struct futex_pair {
	uint32_t word;
	int pinned;
	pthread_barrier_t bar;
};

static void *futex_pong(void *arg)
{
	struct futex_pair *p = arg;
	long i;

	if (p->pinned)
		pin_to(0);
	pthread_barrier_wait(&p->bar);
	for (i = 0; i < iters; i++) {
		while (load(p->word) == 0)
			futex_wait(&p->word, 0);
		store(p->word, 0);
		futex_wake(&p->word);
	}
	return NULL;
}

static void bench_futex(int pinned)
{
	const char *metric = pinned ? "switch/futex_pinned" : "switch/futex_free";
	struct futex_pair p = { .word = 0, .pinned = pinned };
	uint64_t t0;
	pthread_t t;
	long i;

	if (!wanted(metric))
		return;
	pthread_barrier_init(&p.bar, NULL, 2);
	t = spawn(futex_pong, &p);
	if (pinned)
		pin_to(0);
	pthread_barrier_wait(&p.bar);
	t0 = now();
	for (i = 0; i < iters; i++) {
		store(p.word, 1);
		futex_wake(&p.word);
		while (load(p.word) == 1)
			futex_wait(&p.word, 1);
	}
	emit(metric, "ns_per_switch", (double)(now() - t0) / (2 * iters));
	pthread_join(t, NULL);
	pthread_barrier_destroy(&p.bar);
}

/* One byte back and forth through two pipes: `perf bench sched pipe`. */
struct pipe_pair {
	int ab[2], ba[2];
	int pinned;
};

static void *pipe_pong(void *arg)
{
	struct pipe_pair *p = arg;
	char c;
	long i;

	if (p->pinned)
		pin_to(0);
	for (i = 0; i < iters; i++) {
		if (read(p->ab[0], &c, 1) != 1 || write(p->ba[1], &c, 1) != 1)
			die("pipe: %s", strerror(errno));
	}
	return NULL;
}

static void bench_pipe(int pinned)
{
	const char *metric = pinned ? "switch/pipe_pinned" : "switch/pipe_free";
	struct pipe_pair p = { .pinned = pinned };
	uint64_t t0;
	pthread_t t;
	char c = 0;
	long i;

	if (!wanted(metric))
		return;
	if (pipe(p.ab) || pipe(p.ba))
		die("pipe: %s", strerror(errno));
	t = spawn(pipe_pong, &p);
	if (pinned)
		pin_to(0);
	t0 = now();
	for (i = 0; i < iters; i++) {
		if (write(p.ab[1], &c, 1) != 1 || read(p.ba[0], &c, 1) != 1)
			die("pipe: %s", strerror(errno));
	}
	emit(metric, "ns_per_switch", (double)(now() - t0) / (2 * iters));
	pthread_join(t, NULL);
	close(p.ab[0]), close(p.ab[1]), close(p.ba[0]), close(p.ba[1]);
}

/*
 * fork() + _exit() + waitpid(): the cost of a short-lived process. Forking
 * copies the address space, which the other benchmarks grow (thread stacks
 * stay cached), differently on a kernel without UMCG: a child forked at
 * start-up, before any benchmark, does the forking, each round on request.
 */
static int fork_req[2] = { -1, -1 }, fork_res[2] = { -1, -1 };

static double fork_exit_loop(void)
{
	long i, n = iters / 10 ? iters / 10 : 1;
	uint64_t t0 = now();

	for (i = 0; i < n; i++) {
		pid_t pid = fork();
		int status;

		if (pid < 0)
			die("fork: %s", strerror(errno));
		if (pid == 0)
			_exit(0);
		if (waitpid(pid, &status, 0) != pid)
			die("waitpid: %s", strerror(errno));
	}
	return (double)(now() - t0) / n;
}

static void start_fork_server(void)
{
	pid_t pid;
	char c;

	if (!wanted("base/fork_exit"))
		return;
	if (pipe(fork_req) || pipe(fork_res))
		die("pipe: %s", strerror(errno));
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		close(fork_req[1]);
		close(fork_res[0]);
		while (read(fork_req[0], &c, 1) == 1) {
			double ns = fork_exit_loop();

			if (write(fork_res[1], &ns, sizeof(ns)) != sizeof(ns))
				_exit(1);
		}
		_exit(0);
	}
	close(fork_req[0]);
	close(fork_res[1]);
}

static void bench_fork_exit(void)
{
	double ns;
	char c = 0;

	if (fork_req[1] < 0)
		return;
	if (write(fork_req[1], &c, 1) != 1 || read(fork_res[0], &ns, sizeof(ns)) != sizeof(ns))
		die("fork server: %s", strerror(errno));
	emit("base/fork_exit", "ns_per_fork", ns);
}

/*
 * A wake-up storm: STORM_THREADS threads wait on one futex, all are woken
 * at once, each checks in and waits again; per woken thread.
 */
#define STORM_THREADS	32

struct storm {
	uint32_t gen, arrived;
	long rounds;
};

static void *storm_thread(void *arg)
{
	struct storm *st = arg;
	uint32_t seen = 0;
	long r;

	for (r = 0; r < st->rounds; r++) {
		while (load(st->gen) == seen)
			futex_wait(&st->gen, seen);
		seen = load(st->gen);
		if (__atomic_add_fetch(&st->arrived, 1, __ATOMIC_ACQ_REL) == STORM_THREADS)
			futex_wake(&st->arrived);
	}
	return NULL;
}

static void bench_wakeup_storm(void)
{
	const char *metric = "base/wakeup_storm";
	struct storm st = { .rounds = iters / 20 ? iters / 20 : 1 };
	pthread_t t[STORM_THREADS];
	uint64_t t0;
	long r;
	int i;

	if (!wanted(metric))
		return;
	for (i = 0; i < STORM_THREADS; i++)
		t[i] = spawn(storm_thread, &st);
	t0 = now();
	for (r = 0; r < st.rounds; r++) {
		uint32_t arrived;

		store(st.arrived, 0);
		__atomic_add_fetch(&st.gen, 1, __ATOMIC_RELEASE);
		futex(&st.gen, FUTEX_WAKE_PRIVATE, INT32_MAX);
		while ((arrived = load(st.arrived)) != STORM_THREADS)
			futex(&st.arrived, FUTEX_WAIT_PRIVATE, arrived);
	}
	emit(metric, "ns_per_wakeup", (double)(now() - t0) / (st.rounds * STORM_THREADS));
	for (i = 0; i < STORM_THREADS; i++)
		pthread_join(t[i], NULL);
}

/* ---- UMCG: servers ---------------------------------------------------- */

static long umcg_ctl(uint32_t flags, struct umcg_task *self)
{
	return syscall(__NR_umcg_ctl, flags, self);
}

static long umcg_wait(uint32_t flags, uint64_t abs_timeout)
{
	return syscall(__NR_umcg_wait, flags, abs_timeout);
}

static int cas(uint32_t *word, uint32_t old, uint32_t new)
{
	return __atomic_compare_exchange_n(word, &old, new, 0, __ATOMIC_SEQ_CST,
					   __ATOMIC_SEQ_CST);
}

static void must_cas(const char *what, uint32_t *word, uint32_t old, uint32_t new)
{
	if (!cas(word, old, new))
		die("%s: state %#x, expected %#x", what, load(*word), old);
}

struct server {
	struct umcg_task ut;
	pid_t tid;
	int pinned;
	struct server *peer;
	uint64_t start, end;
	uint32_t ready;
};

/*
 * The switches wait without a timeout, as the futex, pipe and sched_yield()
 * baselines do; "switch/umcg_server_server_timed" measures the cost of one
 * (an hrtimer armed and cancelled per switch).
 */
static int switch_timed;

static uint64_t switch_timeout(void)
{
	return switch_timed ? realtime_in(DEADLINE_NS) : 0;
}

/* Server-only context switch: the caller sleeps, @to runs. */
static void server_switch(struct server *me, struct server *to)
{
	must_cas("switch: self", &me->ut.state, UMCG_TASK_RUNNING, UMCG_TASK_IDLE);
	must_cas("switch: peer", &to->ut.state, UMCG_TASK_IDLE, UMCG_TASK_RUNNING);
	me->ut.next_tid = to->tid;
	if (umcg_wait(0, switch_timeout()))
		die("server umcg_wait (switch): %s", strerror(errno));
	me->ut.next_tid = 0;
}

static void server_register(struct server *s)
{
	s->tid = gettid_();
	s->ut.state = UMCG_TASK_RUNNING;
	if (umcg_ctl(UMCG_CTL_REGISTER, &s->ut))
		die("umcg_ctl(REGISTER): %s", strerror(errno));
}

static void *server_pong(void *arg)
{
	struct server *s = arg;
	long i;

	if (s->pinned)
		pin_to(0);
	server_register(s);
	/* Wait, IDLE, for the first switch. */
	must_cas("pong: self", &s->ut.state, UMCG_TASK_RUNNING, UMCG_TASK_IDLE);
	store(s->ready, 1);
	if (umcg_wait(0, realtime_in(DEADLINE_NS)))
		die("server umcg_wait (first): %s", strerror(errno));
	for (i = 0; i < iters; i++)
		server_switch(s, s->peer);
	umcg_ctl(UMCG_CTL_UNREGISTER, NULL);
	return NULL;
}

static void bench_server_server(int pinned, int timed)
{
	const char *metric = timed ? "switch/umcg_server_server_timed" :
			     pinned ? "switch/umcg_server_server_pinned" :
				      "switch/umcg_server_server";
	static struct server a, b;
	uint64_t t0;
	pthread_t t;
	long i;

	if (!wanted(metric))
		return;
	switch_timed = timed;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.peer = &b;
	b.peer = &a;
	b.pinned = pinned;
	if (pinned)
		pin_to(0);
	server_register(&a);
	t = spawn(server_pong, &b);
	while (!load(b.ready))
		usleep(100);
	t0 = now();
	for (i = 0; i < iters; i++)
		server_switch(&a, &b);
	emit(metric, "ns_per_switch", (double)(now() - t0) / (2 * iters));
	/* b sleeps after its last switch: let it go. */
	must_cas("release", &b.ut.state, UMCG_TASK_IDLE, UMCG_TASK_RUNNING);
	a.ut.next_tid = b.tid;
	if (umcg_wait(UMCG_WAIT_WAKE_ONLY, 0))
		die("umcg_wait(WAKE_ONLY): %s", strerror(errno));
	a.ut.next_tid = 0;
	pthread_join(t, NULL);
	umcg_ctl(UMCG_CTL_UNREGISTER, NULL);
	switch_timed = 0;
}

/* ---- UMCG: a server and its workers ----------------------------------- */

enum cmd { CMD_YIELD, CMD_CHAIN, CMD_BLOCK, CMD_EXIT };

struct sched;

struct worker {
	struct umcg_task ut;	/* first: idle-list nodes point into it */
	struct sched *s;
	pthread_t thread;
	pid_t tid;
	uint32_t cmd;
	struct worker *peer;
	uint64_t t_block;	/* when it entered the blocking syscall */
};

struct sched {
	struct umcg_task ut;
	uint64_t idle_head;
	uint32_t idle_server_tid;
	pid_t tid;
	struct worker **queue;
	int nqueued, cap;
	/* worker -> worker chain */
	long chain_left, chain_total;
	uint64_t chain_start, chain_end;
	/* block/wake: the blocking word and the waker thread's handshake */
	uint32_t blk_word, wake_req, waker_exit;
	uint64_t t_wake;
};

static void server_pop_idle(struct sched *s)
{
	uint64_t node = __atomic_exchange_n(&s->idle_head, 0, __ATOMIC_SEQ_CST);

	while (node) {
		struct umcg_task *ut = (struct umcg_task *)(uintptr_t)
			(node - offsetof(struct umcg_task, idle_workers_ptr));
		uint64_t next;

		/* The kernel may still be linking it in. */
		while ((next = load(ut->idle_workers_ptr)) == UMCG_IDLE_NODE_PENDING)
			sched_yield();
		store(ut->idle_workers_ptr, (uint64_t)(uintptr_t)&s->idle_head);
		if (s->nqueued == s->cap)
			die("idle list: more workers than started");
		s->queue[s->nqueued++] = (struct worker *)ut;
		node = next;
	}
}

/* Waits as an idle server until at least @n workers are queued. */
static void server_wait_idle(struct sched *s, int n)
{
	for (;;) {
		server_pop_idle(s);
		if (s->nqueued >= n)
			return;
		must_cas("wait idle", &s->ut.state, UMCG_TASK_RUNNING, UMCG_TASK_IDLE);
		store(s->idle_server_tid, s->tid);
		/* A push that came before the slot was set woke nobody. */
		if (!load(s->idle_head) && umcg_wait(0, realtime_in(DEADLINE_NS)))
			die("idle server umcg_wait: %s (%d of %d workers queued)",
			    strerror(errno), s->nqueued, n);
		store(s->idle_server_tid, 0);
		/* RUNNING when the kernel took the slot, still IDLE otherwise. */
		cas(&s->ut.state, UMCG_TASK_IDLE, UMCG_TASK_RUNNING);
	}
}

static struct worker *server_take(struct sched *s, struct worker *w)
{
	int i;

	for (i = 0; i < s->nqueued; i++) {
		if (s->queue[i] == w) {
			s->queue[i] = s->queue[--s->nqueued];
			return w;
		}
	}
	die("worker %d is not queued", w->tid);
	return NULL;
}

/*
 * A worker that yielded or switched away is IDLE|LOCKED until the kernel,
 * in its umcg_wait(), unlocks it; on another CPU, whoever it handed over
 * to may already run and want to run it again.
 */
static void lock_idle_worker(const char *what, struct worker *w)
{
	while (!cas(&w->ut.state, UMCG_TASK_IDLE, UMCG_TASK_RUNNING | UMCG_TF_LOCKED)) {
		if (load(w->ut.state) != (UMCG_TASK_IDLE | UMCG_TF_LOCKED))
			die("%s: state %#x, expected IDLE", what, load(w->ut.state));
		sched_yield();
	}
}

/* "Server runs worker": returns once the server is RUNNING again. */
static void server_run(struct sched *s, struct worker *w)
{
	must_cas("run: server", &s->ut.state, UMCG_TASK_RUNNING, UMCG_TASK_IDLE);
	lock_idle_worker("run: worker", w);
	w->ut.next_tid = s->tid;
	s->ut.next_tid = w->tid;
	must_cas("run: unlock", &w->ut.state, UMCG_TASK_RUNNING | UMCG_TF_LOCKED,
		 UMCG_TASK_RUNNING);
	if (umcg_wait(0, switch_timeout()))
		die("server umcg_wait (run worker %d): %s", w->tid, strerror(errno));
	s->ut.next_tid = 0;
}

/* In a worker: give the CPU back to the server. */
static void worker_yield(struct worker *w)
{
	must_cas("yield: worker", &w->ut.state, UMCG_TASK_RUNNING,
		 UMCG_TASK_IDLE | UMCG_TF_LOCKED);
	must_cas("yield: server", &w->s->ut.state, UMCG_TASK_IDLE, UMCG_TASK_RUNNING);
	if (umcg_wait(0, 0))
		die("worker umcg_wait (yield): %s", strerror(errno));
}

/* In a worker: "worker to worker", the server stays IDLE. */
static void worker_switch(struct worker *w, struct worker *to)
{
	lock_idle_worker("w2w: peer", to);
	must_cas("w2w: self", &w->ut.state, UMCG_TASK_RUNNING, UMCG_TASK_IDLE | UMCG_TF_LOCKED);
	to->ut.next_tid = w->ut.next_tid;
	w->s->ut.next_tid = to->tid;
	w->ut.next_tid = to->tid;
	must_cas("w2w: unlock", &to->ut.state, UMCG_TASK_RUNNING | UMCG_TF_LOCKED,
		 UMCG_TASK_RUNNING);
	if (umcg_wait(0, 0))
		die("worker umcg_wait (switch): %s", strerror(errno));
}

/* In a worker: wake the server and unregister. */
static void worker_leave(struct worker *w)
{
	must_cas("leave: worker", &w->ut.state, UMCG_TASK_RUNNING, UMCG_TASK_IDLE | UMCG_TF_LOCKED);
	must_cas("leave: server", &w->s->ut.state, UMCG_TASK_IDLE, UMCG_TASK_RUNNING);
	if (umcg_wait(UMCG_WAIT_WAKE_ONLY, 0))
		die("worker umcg_wait (leave): %s", strerror(errno));
	if (umcg_ctl(UMCG_CTL_UNREGISTER, NULL))
		die("worker umcg_ctl(UNREGISTER): %s", strerror(errno));
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct sched *s = w->s;

	w->tid = gettid_();
	w->ut.state = UMCG_TASK_BLOCKED;
	w->ut.idle_workers_ptr = (uintptr_t)&s->idle_head;
	w->ut.idle_server_tid_ptr = (uintptr_t)&s->idle_server_tid;
	/* Returns once the server runs it. */
	if (umcg_ctl(UMCG_CTL_REGISTER | UMCG_CTL_WORKER, &w->ut))
		die("umcg_ctl(REGISTER | WORKER): %s", strerror(errno));
	for (;;) {
		switch (load(w->cmd)) {
		case CMD_YIELD:
			worker_yield(w);
			break;
		case CMD_CHAIN:
			if (s->chain_left == s->chain_total)
				s->chain_start = now();
			if (s->chain_left == 0) {
				s->chain_end = now();
				worker_yield(w);
				break;
			}
			s->chain_left--;
			worker_switch(w, w->peer);
			break;
		case CMD_BLOCK:
			store(s->blk_word, 0);
			w->t_block = now();
			while (!load(s->blk_word))
				futex_wait(&s->blk_word, 0);
			break;
		case CMD_EXIT:
			worker_leave(w);
			return NULL;
		}
	}
}

static void sched_start(struct sched *s, struct worker *w, int n)
{
	int i;

	memset(s, 0, sizeof(*s));
	s->cap = n;
	s->queue = calloc(n, sizeof(*s->queue));
	if (!s->queue)
		die("out of memory");
	s->tid = gettid_();
	s->ut.state = UMCG_TASK_RUNNING;
	if (umcg_ctl(UMCG_CTL_REGISTER, &s->ut))
		die("umcg_ctl(REGISTER): %s", strerror(errno));
	memset(w, 0, n * sizeof(*w));
	for (i = 0; i < n; i++) {
		w[i].s = s;
		w[i].cmd = CMD_YIELD;
		w[i].thread = spawn(worker_main, &w[i]);
	}
	server_wait_idle(s, n);
}

static void sched_stop(struct sched *s, struct worker *w, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		store(w[i].cmd, CMD_EXIT);
		server_take(s, &w[i]);
		server_run(s, &w[i]);
		pthread_join(w[i].thread, NULL);
	}
	umcg_ctl(UMCG_CTL_UNREGISTER, NULL);
	free(s->queue);
}

static struct worker *workers_alloc(int n)
{
	struct worker *w = aligned_alloc(64, ((n * sizeof(*w)) + 63) & ~63ul);

	if (!w)
		die("out of memory");
	return w;
}

/* Server -> worker -> server, with @n workers registered. */
static void bench_server_worker(const char *metric, int n)
{
	static struct sched s;
	struct worker *w;
	uint64_t t0, t1;
	long i;

	if (!wanted(metric))
		return;
	w = workers_alloc(n);
	sched_start(&s, w, n);
	/* Every worker is IDLE now; each ran once already (its registration). */
	server_take(&s, &w[0]);
	t0 = now();
	for (i = 0; i < iters; i++)
		server_run(&s, &w[0]);
	t1 = now();
	emit(metric, "ns_per_switch", (double)(t1 - t0) / (2 * iters));
	/* w[0] yielded: IDLE, not on the list. */
	s.queue[s.nqueued++] = &w[0];
	sched_stop(&s, w, n);
	free(w);
}

static void bench_worker_worker(void)
{
	const char *metric = "switch/umcg_worker_worker";
	static struct sched s;
	struct worker *w;

	if (!wanted(metric))
		return;
	w = workers_alloc(2);
	sched_start(&s, w, 2);
	server_take(&s, &w[0]);
	server_take(&s, &w[1]);
	w[0].peer = &w[1];
	w[1].peer = &w[0];
	s.chain_total = s.chain_left = 2 * iters;
	store(w[0].cmd, CMD_CHAIN);
	store(w[1].cmd, CMD_CHAIN);
	server_run(&s, &w[0]);
	if (s.chain_left)
		die("worker chain stopped with %ld switches left", s.chain_left);
	emit(metric, "ns_per_switch", (double)(s.chain_end - s.chain_start) / s.chain_total);
	/* Both are IDLE and off the list: one yielded, one switched away. */
	store(w[0].cmd, CMD_YIELD);
	store(w[1].cmd, CMD_YIELD);
	s.queue[s.nqueued++] = &w[0];
	s.queue[s.nqueued++] = &w[1];
	sched_stop(&s, w, 2);
	free(w);
}

/* Wakes the blocked worker once the server sleeps as an idle server. */
static void *waker_main(void *arg)
{
	struct sched *s = arg;
	struct timespec settle = { .tv_nsec = 200 * 1000 };

	for (;;) {
		while (!load(s->wake_req))
			futex_wait(&s->wake_req, 0);
		if (load(s->waker_exit))
			return NULL;
		store(s->wake_req, 0);
		while (load(s->idle_server_tid) != (uint32_t)s->tid)
			nanosleep(&settle, NULL);
		/* Let it get to sleep. */
		nanosleep(&settle, NULL);
		s->t_wake = now();
		store(s->blk_word, 1);
		futex_wake(&s->blk_word);
	}
}

/*
 * Block detection: from the worker entering a blocking futex wait to its
 * server running again. Wake detection: from the FUTEX_WAKE of the worker
 * (by a thread that is not a UMCG task) to the worker being on the idle
 * list and the idle server running.
 */
static void bench_block_wake(void)
{
	static struct sched s;
	struct worker *w;
	uint64_t block = 0, wake = 0, t;
	pthread_t waker;
	long i;

	if (!wanted("block/") && !wanted("wake/"))
		return;
	w = workers_alloc(1);
	sched_start(&s, w, 1);
	waker = spawn(waker_main, &s);
	store(w[0].cmd, CMD_BLOCK);
	for (i = 0; i < block_iters; i++) {
		server_take(&s, &w[0]);
		server_run(&s, &w[0]);
		t = now();
		if ((load(w[0].ut.state) & UMCG_TASK_STATE_MASK) != UMCG_TASK_BLOCKED)
			die("block: worker state %#x, expected BLOCKED", load(w[0].ut.state));
		block += t - w[0].t_block;
		store(s.wake_req, 1);
		futex_wake(&s.wake_req);
		server_wait_idle(&s, 1);
		wake += now() - s.t_wake;
	}
	store(s.waker_exit, 1);
	store(s.wake_req, 1);
	futex_wake(&s.wake_req);
	pthread_join(waker, NULL);
	if (wanted("block/"))
		emit("block/umcg_block_detection", "ns", (double)block / block_iters);
	if (wanted("wake/"))
		emit("wake/umcg_wake_detection", "ns", (double)wake / block_iters);
	store(w[0].cmd, CMD_YIELD);
	sched_stop(&s, w, 1);
	free(w);
}

static void bench_scaling(void)
{
	static const int counts[] = { 2, 10, 100, 1000, 10000 };
	char metric[64];
	size_t i;

	for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		if (counts[i] > max_workers)
			break;
		snprintf(metric, sizeof(metric), "scaling/umcg_server_worker/%d", counts[i]);
		bench_server_worker(metric, counts[i]);
	}
}

/* ---- main ------------------------------------------------------------- */

static void run_round(void)
{
	cpu_set_t all;

	/* Benchmarks that pin the main thread must not leave it pinned. */
	sched_getaffinity(0, sizeof(all), &all);
	if (wanted("switch/yield_pinned"))
		bench_yield();
	bench_futex(0);
	bench_futex(1);
	sched_setaffinity(0, sizeof(all), &all);
	bench_pipe(0);
	bench_pipe(1);
	sched_setaffinity(0, sizeof(all), &all);
	bench_fork_exit();
	bench_wakeup_storm();
	if (base_only)
		return;
	bench_server_server(0, 0);
	bench_server_server(1, 0);
	bench_server_server(0, 1);
	sched_setaffinity(0, sizeof(all), &all);
	bench_server_worker("switch/umcg_server_worker_server", 1);
	bench_worker_worker();
	bench_block_wake();
	bench_scaling();
}

int main(int argc, char **argv)
{
	struct utsname u;
	int opt, r;

	while ((opt = getopt(argc, argv, "Br:n:b:w:o:")) != -1) {
		switch (opt) {
		case 'B': base_only = 1; break;
		case 'r': rounds = atoi(optarg); break;
		case 'n': iters = atol(optarg); break;
		case 'b': block_iters = atol(optarg); break;
		case 'w': max_workers = atoi(optarg); break;
		case 'o': only = optarg; break;
		default:
			fprintf(stderr, "usage: %s [-B] [-r ROUNDS] [-n ITERATIONS] [-b BLOCK_ITERATIONS] "
				"[-w MAX_WORKERS] [-o METRIC_PREFIX]\n", argv[0]);
			return 2;
		}
	}
	if (rounds < 1 || iters < 1 || block_iters < 1)
		die("bad arguments");
	/* Syscall 463 must be umcg_ctl: unregistering when not registered is EINVAL. */
	if (!base_only && (umcg_ctl(UMCG_CTL_UNREGISTER, NULL) != -1 || errno != EINVAL))
		die("this kernel does not implement UMCG");
	uname(&u);
	printf("# umcg-bench: kernel %s %s, %ld CPUs, %d rounds, %ld iterations, "
	       "%ld block iterations\n", u.release, u.version, sysconf(_SC_NPROCESSORS_ONLN),
	       rounds, iters, block_iters);
	printf("# the guest is emulated (TCG): only ratios between figures of one run carry over\n");
	start_fork_server();
	for (r = 0; r < rounds; r++) {
		printf("# round %d\n", r + 1);
		run_round();
	}
	printf("# umcg-bench: done\n");
	return 0;
}
