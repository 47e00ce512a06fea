// SPDX-License-Identifier: GPL-2.0
/*
 * umcg-demo: what `make run` shows first in the guest.
 *
 * The main thread registers as a UMCG server and runs one worker thread on
 * its CPU, narrating each step of the protocol: the worker's registration
 * queues it on the idle list and wakes the server, the server hands it the
 * CPU, the worker blocks in nanosleep() and the kernel gives the CPU back
 * to the server, the worker wakes and is queued again, the server runs it
 * to the end. Every state the server sees is checked; the demo exits 1 on
 * any surprise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <linux/umcg.h>

#ifndef __NR_umcg_ctl
#define __NR_umcg_ctl	463
#define __NR_umcg_wait	464
#endif

static struct umcg_task server = { .state = UMCG_TASK_RUNNING };
static struct umcg_task worker = { .state = UMCG_TASK_BLOCKED };
static uint64_t idle_head;
static uint32_t idle_server;
static pid_t server_tid, worker_tid;
static int failures;

static const char *state_name(uint32_t state)
{
	static const char * const names[] = { "NONE", "RUNNING", "IDLE", "BLOCKED" };
	static char buf[64];
	uint32_t s = state & UMCG_TASK_STATE_MASK;

	snprintf(buf, sizeof(buf), "%s%s%s", s < 4 ? names[s] : "?",
		 state & UMCG_TF_LOCKED ? "|LOCKED" : "",
		 state & UMCG_TF_PREEMPTED ? "|PREEMPTED" : "");
	return buf;
}

static uint32_t load(uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static int cas(uint32_t *p, uint32_t old, uint32_t new)
{
	return __atomic_compare_exchange_n(p, &old, new, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static void expect(const char *what, uint32_t state, uint32_t want)
{
	printf("  server: %-38s worker is %s\n", what, state_name(state));
	if (state != want) {
		printf("  server: UNEXPECTED, wanted %s\n", state_name(want));
		failures++;
	}
}

static uint64_t realtime_in(uint64_t ns)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1000000000ull + ts.tv_nsec + ns;
}

/* Waits, as an idle server, until the kernel queues the worker. */
static void wait_for_idle_worker(void)
{
	uint64_t node;

	while (!(node = __atomic_exchange_n(&idle_head, 0, __ATOMIC_SEQ_CST))) {
		cas(&server.state, UMCG_TASK_RUNNING, UMCG_TASK_IDLE);
		__atomic_store_n(&idle_server, server_tid, __ATOMIC_RELEASE);
		if (!__atomic_load_n(&idle_head, __ATOMIC_ACQUIRE))
			syscall(__NR_umcg_wait, 0, realtime_in(5000000000ull));
		__atomic_store_n(&idle_server, 0, __ATOMIC_RELEASE);
		cas(&server.state, UMCG_TASK_IDLE, UMCG_TASK_RUNNING);
	}
	/* One worker: the node is its idle_workers_ptr; wait out PENDING, re-point it. */
	while (__atomic_load_n(&worker.idle_workers_ptr, __ATOMIC_ACQUIRE) ==
	       UMCG_IDLE_NODE_PENDING)
		;
	worker.idle_workers_ptr = (uintptr_t)&idle_head;
}

/* "Server runs worker": returns when the server is RUNNING again. */
static void run_worker(void)
{
	cas(&server.state, UMCG_TASK_RUNNING, UMCG_TASK_IDLE);
	cas(&worker.state, UMCG_TASK_IDLE, UMCG_TASK_RUNNING | UMCG_TF_LOCKED);
	worker.next_tid = server_tid;
	server.next_tid = worker_tid;
	cas(&worker.state, UMCG_TASK_RUNNING | UMCG_TF_LOCKED, UMCG_TASK_RUNNING);
	if (syscall(__NR_umcg_wait, 0, realtime_in(5000000000ull)))
		printf("  server: umcg_wait: %s\n", strerror(errno)), failures++;
	server.next_tid = 0;
}

static void *worker_main(void *arg)
{
	struct timespec ts = { .tv_nsec = 50 * 1000 * 1000 };

	worker_tid = syscall(SYS_gettid);
	worker.idle_workers_ptr = (uintptr_t)&idle_head;
	worker.idle_server_tid_ptr = (uintptr_t)&idle_server;
	if (syscall(__NR_umcg_ctl, UMCG_CTL_REGISTER | UMCG_CTL_WORKER, &worker)) {
		printf("  worker: umcg_ctl(REGISTER | WORKER): %s\n", strerror(errno));
		failures++;
		return NULL;
	}
	printf("  worker %d: running on server %d; now blocking in nanosleep(50ms)\n",
	       worker_tid, worker.next_tid);
	nanosleep(&ts, NULL);
	printf("  worker %d: back from nanosleep, on server %d; leaving\n",
	       worker_tid, worker.next_tid);
	/* Leave: IDLE|LOCKED, hand the CPU back to the server, unregister. */
	cas(&worker.state, UMCG_TASK_RUNNING, UMCG_TASK_IDLE | UMCG_TF_LOCKED);
	cas(&server.state, UMCG_TASK_IDLE, UMCG_TASK_RUNNING);
	syscall(__NR_umcg_wait, UMCG_WAIT_WAKE_ONLY, 0);
	syscall(__NR_umcg_ctl, UMCG_CTL_UNREGISTER, NULL);
	return NULL;
}

int main(void)
{
	struct utsname u;
	pthread_t thread;

	uname(&u);
	printf("umcg-demo: %s %s\n", u.sysname, u.release);
	/*
	 * An unregistered task that unregisters gets EINVAL from UMCG; any
	 * other answer means syscall 463 is not umcg_ctl on this kernel.
	 */
	if (syscall(__NR_umcg_ctl, UMCG_CTL_UNREGISTER, NULL) != -1 || errno != EINVAL) {
		printf("umcg-demo: this kernel does not implement UMCG (syscall %d: %s)\n",
		       __NR_umcg_ctl, strerrorname_np(errno));
		return 1;
	}

	server_tid = syscall(SYS_gettid);
	if (syscall(__NR_umcg_ctl, UMCG_CTL_REGISTER, &server)) {
		printf("umcg-demo: umcg_ctl(REGISTER): %s\n", strerror(errno));
		return 1;
	}
	printf("  server %d: registered; starting a worker thread\n", server_tid);
	pthread_create(&thread, NULL, worker_main, NULL);

	wait_for_idle_worker();
	expect("the new worker is on the idle list:", load(&worker.state), UMCG_TASK_IDLE);
	run_worker();
	expect("the worker blocked, CPU is back:", load(&worker.state), UMCG_TASK_BLOCKED);
	wait_for_idle_worker();
	expect("it woke up and was queued again:", load(&worker.state), UMCG_TASK_IDLE);
	run_worker();
	expect("it left:", load(&worker.state), UMCG_TASK_IDLE | UMCG_TF_LOCKED);
	pthread_join(thread, NULL);
	syscall(__NR_umcg_ctl, UMCG_CTL_UNREGISTER, NULL);

	printf("umcg-demo: %s\n", failures ? "UNEXPECTED RESULTS" : "the worker ran, blocked, "
	       "woke and finished on one server");
	return failures ? 1 : 0;
}
