// SPDX-License-Identifier: GPL-2.0
/*
 * umcg-demo: what `make run` shows first in the guest.
 *
 * Registers the calling thread as a UMCG server, shows each system call
 * with what the kernel answered, and unregisters. It grows with the
 * kernel side: calls that the kernel does not support yet print the errno
 * they fail with, never a pretended success.
 */
#define _GNU_SOURCE
#include <errno.h>
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

static int failures;

static uint64_t realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static long show(const char *what, long ret, int expect_errno)
{
	int err = ret ? errno : 0;
	int ok = err == expect_errno;

	if (!ok)
		failures++;
	printf("  %-44s = %ld%s%s%s\n", what, ret, err ? " (" : "",
	       err ? strerrorname_np(err) : "", err ? ")" : "");
	if (!ok)
		printf("    unexpected: wanted %s\n",
		       expect_errno ? strerrorname_np(expect_errno) : "success");
	return ret;
}

int main(void)
{
	static struct umcg_task server = { .state = UMCG_TASK_RUNNING };
	static struct umcg_task worker = { .state = UMCG_TASK_BLOCKED };
	static uint64_t idle_head;
	static uint32_t idle_server;
	struct utsname u;

	uname(&u);
	printf("umcg-demo: %s %s, pid %d\n", u.sysname, u.release, getpid());

	/*
	 * An unregistered task that unregisters gets EINVAL from UMCG; any
	 * other answer means syscall 463 is not umcg_ctl on this kernel
	 * (ENOSYS with CONFIG_UMCG=n; newer mainline kernels use the number
	 * for another call).
	 */
	if (syscall(__NR_umcg_ctl, UMCG_CTL_UNREGISTER, NULL) != -1 || errno != EINVAL) {
		printf("umcg-demo: this kernel does not implement UMCG (syscall %d: %s)\n",
		       __NR_umcg_ctl, strerrorname_np(errno));
		return 1;
	}

	printf("Server registration:\n");
	show("umcg_ctl(REGISTER, &server)",
	     syscall(__NR_umcg_ctl, UMCG_CTL_REGISTER, &server), 0);
	show("umcg_ctl(REGISTER, &server) again",
	     syscall(__NR_umcg_ctl, UMCG_CTL_REGISTER, &server), EINVAL);
	show("umcg_wait(0, 0) while RUNNING", syscall(__NR_umcg_wait, 0, 0), 0);
	server.state = UMCG_TASK_IDLE;
	show("umcg_wait(0, now + 10ms) while IDLE",
	     syscall(__NR_umcg_wait, 0, realtime_ns() + 10 * 1000 * 1000), ETIMEDOUT);
	server.next_tid = gettid();
	show("umcg_wait(WAKE_ONLY, 0) to itself",
	     syscall(__NR_umcg_wait, UMCG_WAIT_WAKE_ONLY, 0), 0);
	server.next_tid = 0;
	server.state = UMCG_TASK_RUNNING;
	show("umcg_ctl(UNREGISTER, NULL)",
	     syscall(__NR_umcg_ctl, UMCG_CTL_UNREGISTER, NULL), 0);
	show("umcg_ctl(UNREGISTER, NULL) again",
	     syscall(__NR_umcg_ctl, UMCG_CTL_UNREGISTER, NULL), EINVAL);

	printf("Worker registration (not implemented yet):\n");
	worker.idle_workers_ptr = (uintptr_t)&idle_head;
	worker.idle_server_tid_ptr = (uintptr_t)&idle_server;
	show("umcg_ctl(REGISTER | WORKER, &worker)",
	     syscall(__NR_umcg_ctl, UMCG_CTL_REGISTER | UMCG_CTL_WORKER, &worker), EOPNOTSUPP);

	printf("umcg-demo: %s\n", failures ? "UNEXPECTED RESULTS" : "all calls answered as expected");
	return failures ? 1 : 0;
}
