/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cross-CPU cache-line round trip: two threads pinned to CPUs A and B pass one
 * cache line back and forth; prints the median round trip in nanoseconds of
 * 5 rounds:  rtt_ns=<value>
 *
 * A virtual switch and its VMs exchange every packet through cache lines that
 * move between CPUs, so this is what decides how fast a packet loop between
 * two CPUs can go. On a VM whose vCPUs the host places anywhere (AMD parts
 * with several L3 complexes), it changes from run to run by a factor of 3 or
 * more; bench/card-net/run records it next to each run.
 * Usage: xcpu_rtt [CPU_A CPU_B]   (default 0 1)
 */
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define TRIPS 200000u

static _Alignas(128) volatile uint64_t line;
static int cpu_b;

static int pin(int cpu)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    return pthread_setaffinity_np(pthread_self(), sizeof(s), &s);
}

static void *responder(void *arg)
{
    uint64_t base = *(const uint64_t *)arg;
    /* Unpinned, the figure means nothing, but the main thread must not wait forever:
     * answer anyway and report the failure at the end. */
    bool pinned = pin(cpu_b) == 0;
    for (uint64_t i = 1; i <= TRIPS; i++) {
        while (line != base + 2 * i - 1)
            ;
        line = base + 2 * i;
    }
    return pinned ? NULL : (void *)1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int cpu_a = argc > 2 ? atoi(argv[1]) : 0;
    double rtt[5];

    cpu_set_t allowed;

    cpu_b = argc > 2 ? atoi(argv[2]) : 1;
    if (sched_getaffinity(0, sizeof(allowed), &allowed))
        return 1;
    for (int k = 0; k < 2; k++) {
        int c = k ? cpu_b : cpu_a;
        if (c < 0 || c >= CPU_SETSIZE || !CPU_ISSET(c, &allowed)) {
            fprintf(stderr, "xcpu_rtt: CPU %d is not available\n", c);
            return 1;
        }
    }
    if (cpu_a == cpu_b || pin(cpu_a)) {
        fprintf(stderr, "xcpu_rtt: needs two different CPUs\n");
        return 1;
    }
    for (unsigned r = 0; r < 5; r++) {
        uint64_t base = (uint64_t)r * 4 * TRIPS;
        struct timespec t0, t1;
        pthread_t th;
        void *ret;

        line = base;
        if (pthread_create(&th, NULL, responder, &base))
            return 1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (uint64_t i = 1; i <= TRIPS; i++) {
            line = base + 2 * i - 1;
            while (line != base + 2 * i)
                ;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        pthread_join(th, &ret);
        if (ret) {
            fprintf(stderr, "xcpu_rtt: cannot run on CPU %d\n", cpu_b);
            return 1;
        }
        rtt[r] =
            ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / TRIPS;
    }
    qsort(rtt, 5, sizeof(rtt[0]), cmp_double);
    printf("rtt_ns=%.1f\n", rtt[2]);
    return 0;
}
