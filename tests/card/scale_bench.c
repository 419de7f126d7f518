/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Does adding worker cores add switching throughput? Runs an in-process
 * qtcard with 1 worker, then with N, and prints the packets/s of each:
 *   workers=K seconds=S packets=P pps=R
 *
 * Worker i serves its own pair of VM ports, a<i> -> b<i>, with 64-byte
 * frames, and every pair sits in ONE switch: one MAC table, learned and
 * looked up by all workers, the same RCU-published port and policy objects.
 * The fake virtio-net drivers of a pair run in the worker's own thread
 * between its polls (queue a burst on a<i>, poll the switch once, hand b<i>'s
 * used buffers back), so each thread is self-contained and needs exactly one
 * CPU; on a machine with N CPUs the N-worker run shows whether the data path
 * scales or whether shared state (a lock, a counter or table line written by
 * several workers) holds it back. Threads are pinned to CPUs 0..N-1.
 *
 * It also checks that every lane's frames reached its own b port and no other
 * (exit 1 otherwise), which makes it the test 'card-multiworker' with a short run.
 * Used by bench/card-net/run.  Usage: card_scale_bench [SECONDS [N]]
 */
#include "card/card.h"
#include "card/dp.h"
#include "common/log.h"
#include "fake_driver.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <urcu-qsbr.h>

#define MAX_WORKERS 8

struct lane {
    struct card *card;
    struct worker *w;
    struct fdrv a, b;
    unsigned idx;
    int cpu;
    pthread_barrier_t *ready;
    volatile bool *stop;
    uint64_t received;  /* written by the lane, read by main (atomic) */
    uint64_t misrouted; /* frames that reached a<i>: only the n hellos may */
    int err;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *ctl_main(void *arg)
{
    card_run_control(arg);
    return NULL;
}

static int add(struct card *c, int (*fn)(struct card *, json_object *, char *, size_t),
               const char *json)
{
    json_object *j = json_tokener_parse(json);
    char err[256] = "";
    int ret = fn(c, j, err, sizeof(err));
    if (ret)
        fprintf(stderr, "card_scale_bench: %s: %s\n", json, err);
    json_object_put(j);
    return ret;
}

static void mac(uint8_t *f, uint8_t kind, unsigned i)
{
    const uint8_t m[6] = {0x02, 0, 0, 0, kind, (uint8_t)i};
    memcpy(f, m, 6);
}

static void *lane_main(void *arg)
{
    struct lane *l = arg;
    uint8_t frame[64] = {0}, hello[64] = {0};
    unsigned loops = 0;
    cpu_set_t set;

    CPU_ZERO(&set);
    CPU_SET(l->cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
        l->err = 1;
    if (dp_worker_init(l->w)) {
        l->err = 1;
        pthread_barrier_wait(l->ready);
        return NULL;
    }
    rcu_register_thread();
    /* b<i> says hello (broadcast) so that the switch knows where B<i> is. */
    memset(hello, 0xff, 6);
    mac(hello + 6, 0xb, l->idx);
    hello[12] = 0x88;
    hello[13] = 0xb5;
    mac(frame, 0xb, l->idx);
    mac(frame + 6, 0xa, l->idx);
    frame[12] = 0x88;
    frame[13] = 0xb5;
    if (fdrv_queue_burst(&l->b, hello, sizeof(hello), 1) != 1)
        l->err = 1;
    for (unsigned k = 0; k < 1000 && fdrv_tx_reclaim(&l->b) == 0; k++) {
        uint64_t now = 0;
        dp_worker_poll(l->w, &now);
        rcu_quiescent_state();
    }
    pthread_barrier_wait(l->ready);
    while (!*l->stop) {
        uint64_t now = 0;
        unsigned got;
        fdrv_queue_burst(&l->a, frame, sizeof(frame), CARD_BURST);
        dp_worker_poll(l->w, &now);
        got = fdrv_rx_recycle(&l->b);
        l->misrouted += fdrv_rx_recycle(&l->a); /* the lanes' hellos, nothing else */
        __atomic_store_n(&l->received, l->received + got, __ATOMIC_RELAXED);
        if (!(++loops & 15))
            rcu_quiescent_state();
    }
    rcu_unregister_thread();
    dp_worker_fini(l->w);
    return NULL;
}

static uint64_t total(struct lane *lanes, unsigned n)
{
    uint64_t t = 0;
    for (unsigned i = 0; i < n; i++)
        t += __atomic_load_n(&lanes[i].received, __ATOMIC_RELAXED);
    return t;
}

static int one_run(const char *dir, unsigned n, double seconds)
{
    struct card_config cfg = {.cores = n, .idle_us = 200, .socket_dir = dir};
    static struct card c;
    static struct lane lanes[MAX_WORKERS];
    pthread_t ctl, th[MAX_WORKERS];
    pthread_barrier_t ready;
    volatile bool stop = false;
    char json[256], path[300];
    uint64_t p0, p1;
    double t0, t1;
    int err = 0;

    memset(lanes, 0, sizeof(lanes));
    /* Workers are not started: each lane thread drives its worker itself. */
    if (card_init(&c, &cfg))
        return 1;
    pthread_create(&ctl, NULL, ctl_main, &c);
    if (add(&c, card_switch_add, "{\"name\":\"br0\"}"))
        return 1;
    /* All a ports first: worker i gets a<i>'s transmit queue, then b<i>'s. */
    for (unsigned k = 0; k < 2; k++) {
        for (unsigned i = 0; i < n; i++) {
            struct fdrv *d = k ? &lanes[i].b : &lanes[i].a;
            snprintf(json, sizeof(json), "{\"name\":\"%c%u\",\"switch\":\"br0\"}", "ab"[k], i);
            if (add(&c, card_port_add, json))
                return 1;
            snprintf(path, sizeof(path), "%s/%c%u.sock", dir, "ab"[k], i);
            if (fdrv_connect(d, path, FDRV_F_IN_ORDER, 2048)) {
                fprintf(stderr, "card_scale_bench: cannot connect %s\n", path);
                return 1;
            }
        }
    }
    usleep(200000);
    pthread_mutex_lock(&c.lock);
    for (unsigned i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof(name), "a%u", i);
        struct port *p = card_port_find(&c, name);
        if (!p || p->q[0].worker != (int)i) {
            fprintf(stderr, "card_scale_bench: port %s is not on worker %u\n", name, i);
            err = 1;
        }
    }
    pthread_mutex_unlock(&c.lock);
    if (err)
        return 1;
    pthread_barrier_init(&ready, NULL, n + 1);
    for (unsigned i = 0; i < n; i++) {
        lanes[i] = (struct lane){.card = &c,
                                 .w = &c.workers[i],
                                 .a = lanes[i].a,
                                 .b = lanes[i].b,
                                 .idx = i,
                                 .cpu = (int)i,
                                 .ready = &ready,
                                 .stop = &stop};
        pthread_create(&th[i], NULL, lane_main, &lanes[i]);
    }
    pthread_barrier_wait(&ready);
    usleep(500000); /* warm-up */
    p0 = total(lanes, n);
    t0 = now_s();
    usleep((useconds_t)(seconds * 1e6));
    p1 = total(lanes, n);
    t1 = now_s();
    stop = true;
    for (unsigned i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        err |= lanes[i].err;
        /* Each lane's frames go to its own b port only; a ports see the n broadcasts. */
        if (lanes[i].misrouted > n || lanes[i].received == 0) {
            fprintf(stderr, "card_scale_bench: lane %u: %llu frames received, %llu at a%u\n", i,
                    (unsigned long long)lanes[i].received, (unsigned long long)lanes[i].misrouted,
                    i);
            err = 1;
        }
    }
    pthread_barrier_destroy(&ready);
    if (err) {
        fprintf(stderr, "card_scale_bench: a lane failed\n");
        return 1;
    }
    printf("workers=%u seconds=%.2f packets=%llu pps=%.0f\n", n, t1 - t0,
           (unsigned long long)(p1 - p0), (double)(p1 - p0) / (t1 - t0));
    fflush(stdout);
    card_stop(&c);
    pthread_join(ctl, NULL);
    for (unsigned i = 0; i < n; i++) {
        fdrv_close(&lanes[i].a);
        fdrv_close(&lanes[i].b);
    }
    card_destroy(&c);
    return 0;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned n = argc > 2 ? (unsigned)atoi(argv[2]) : (unsigned)(ncpu < 1 ? 1 : ncpu);

    if (n >= 1 && n <= MAX_WORKERS && (long)n > ncpu) {
        fprintf(stderr, "card_scale_bench: %u workers need %u CPUs, this machine has %ld\n", n, n,
                ncpu);
        return 77; /* skipped, as a test */
    }
    if (seconds <= 0 || n < 1 || n > MAX_WORKERS) {
        fprintf(stderr, "usage: card_scale_bench [SECONDS [N (1..%d, at most the CPUs)]]\n",
                MAX_WORKERS);
        return 2;
    }
    log_init("card_scale_bench", LOG_LVL_WARN);
    for (unsigned k = 1; k <= n; k = k == 1 ? n : n + 1) {
        char dir[] = "/tmp/qtcard-scale-XXXXXX", cmd[64];
        int ret;
        if (!mkdtemp(dir))
            return 1;
        ret = one_run(dir, k, seconds);
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "card_scale_bench: could not remove %s\n", dir);
        if (ret)
            return 1;
    }
    return 0;
}
