// SPDX-License-Identifier: GPL-2.0
/*
 * lp_threads - the e2e test's thread load (a static binary run in the guest).
 *
 *   lp_threads hold N FILE    start N threads that sleep, write "ready N" to FILE, then sleep
 *                             until killed (the task-record test: >= 10 000 tasks alive
 *                             across enable/disable/reverse);
 *   lp_threads storm SECS     for SECS seconds, 4 threads each create and join threads and
 *                             fork and reap processes in a loop; every new task reads
 *                             /proc/lp_target_tw once (a call of the patched twrun/twstep,
 *                             classified by lp_target as all-old, all-new or mixed) and exits.
 *                             Prints "storm threads T forks F errors E".
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

static void touch_patched(void)
{
	char buf[16];
	int fd = open("/proc/lp_target_tw", O_RDONLY);

	if (fd >= 0) {
		(void)!read(fd, buf, sizeof(buf));
		close(fd);
	}
}

static void *sleeper(void *arg)
{
	for (;;)
		pause();
	return NULL;
}

static void *one_shot(void *arg)
{
	touch_patched();
	return NULL;
}

static volatile int stop;
static long n_threads, n_forks, n_errors;
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;

static void *stormer(void *arg)
{
	pthread_attr_t attr;
	long t = 0, f = 0, e = 0;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	while (!stop) {
		pthread_t th;
		pid_t pid;

		if (pthread_create(&th, &attr, one_shot, NULL) == 0) {
			pthread_join(th, NULL);
			t++;
		} else {
			e++;
		}
		pid = fork();
		if (pid == 0) {
			touch_patched();
			_exit(0);
		} else if (pid > 0) {
			waitpid(pid, NULL, 0);
			f++;
		} else {
			e++;
		}
	}
	pthread_mutex_lock(&count_lock);
	n_threads += t;
	n_forks += f;
	n_errors += e;
	pthread_mutex_unlock(&count_lock);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_attr_t attr;

	if (argc == 4 && !strcmp(argv[1], "hold")) {
		long n = atol(argv[2]), i, ok = 0;
		FILE *out;

		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 16 * 1024);
		for (i = 0; i < n; i++) {
			pthread_t th;

			if (pthread_create(&th, &attr, sleeper, NULL) == 0)
				ok++;
		}
		out = fopen(argv[3], "w");
		if (out) {
			fprintf(out, "ready %ld\n", ok);
			fclose(out);
		}
		for (;;)
			pause();
	}
	if (argc == 3 && !strcmp(argv[1], "storm")) {
		pthread_t th[4];
		int i;

		for (i = 0; i < 4; i++)
			pthread_create(&th[i], NULL, stormer, NULL);
		sleep(atoi(argv[2]));
		stop = 1;
		for (i = 0; i < 4; i++)
			pthread_join(th[i], NULL);
		printf("storm threads %ld forks %ld errors %ld\n", n_threads, n_forks, n_errors);
		return 0;
	}
	fprintf(stderr, "usage: lp_threads hold N FILE | storm SECS\n");
	return 2;
}
