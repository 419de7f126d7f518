/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Guest-notification rate with adaptive interrupt coalescing off and on.
 * An in-process qtcard (one worker) switches 64-byte frames from a sending
 * fake virtio-net driver to a receiving one that behaves like an
 * interrupt-driven guest (event idx: it asks for a notification at every
 * new used entry, drains on each notification, then sleeps on the call
 * eventfd). Prints one line per mode:
 *   coalescing=<off|on> seconds=S packets=N pps=P notifications=M per_s=R
 * The sender queues BURST frames per kick (default 4, small like a guest's).
 * Used by bench/card-net/run.  Usage: card_notify_bench [SECONDS [BURST]]
 */
#include "card/card.h"
#include "common/log.h"
#include "fake_driver.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct run {
    struct fdrv *rx;
    volatile bool stop;
    uint64_t received;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *rx_main(void *arg)
{
    struct run *r = arg;
    while (!r->stop) {
        unsigned n = fdrv_drain(r->rx);
        r->received += n;
        if (!n) {
            struct pollfd pfd = {.fd = r->rx->vq[0].call_fd, .events = POLLIN};
            poll(&pfd, 1, 10);
            fdrv_calls(r->rx);
        }
    }
    return NULL;
}

static void *ctl_main(void *arg)
{
    card_run_control(arg);
    return NULL;
}

static int port_add(struct card *c, const char *json)
{
    json_object *j = json_tokener_parse(json);
    char err[256] = "";
    int ret = card_port_add(c, j, err, sizeof(err));
    if (ret)
        fprintf(stderr, "port: %s\n", err);
    json_object_put(j);
    return ret;
}

static int one_run(const char *dir, bool coalesce, double seconds, unsigned burst)
{
    struct card_config cfg = {.cores = 1, .idle_us = 200, .socket_dir = dir};
    static struct card c;
    static struct fdrv tx, rx;
    struct run r = {.rx = &rx};
    pthread_t ctl, rxt;
    uint8_t frame[64] = {0x02, 0, 0, 0, 0, 0xb, 0x02, 0, 0, 0, 0, 0xa, 0x88, 0xb5};
    char path[256], json[256];
    uint64_t notif = 0, delivered = 0;
    double t0, t1;
    struct port *p;

    if (card_init(&c, &cfg) || card_start_workers(&c))
        return 1;
    pthread_create(&ctl, NULL, ctl_main, &c);
    json_object *sw = json_tokener_parse("{\"name\":\"br0\"}");
    char err[128];
    card_switch_add(&c, sw, err, sizeof(err));
    json_object_put(sw);
    port_add(&c, "{\"name\":\"tx\",\"switch\":\"br0\"}");
    snprintf(json, sizeof(json), "{\"name\":\"rx\",\"switch\":\"br0\",\"coalescing\":%s}",
             coalesce ? "true" : "false");
    port_add(&c, json);
    snprintf(path, sizeof(path), "%s/tx.sock", dir);
    if (fdrv_connect(&tx, path, FDRV_F_EVENT_IDX | FDRV_F_MRG, 2048))
        return 1;
    snprintf(path, sizeof(path), "%s/rx.sock", dir);
    if (fdrv_connect(&rx, path, FDRV_F_EVENT_IDX | FDRV_F_MRG, 2048))
        return 1;
    usleep(200000);
    /* Let the switch learn rx's MAC so the frames are unicast. */
    {
        uint8_t hello[64] = {0x02, 0, 0, 0, 0, 0xa, 0x02, 0, 0, 0, 0, 0xb, 0x88, 0xb5};
        fdrv_send(&rx, hello, sizeof(hello), NULL);
        usleep(50000);
        fdrv_drain(&tx);
    }
    pthread_create(&rxt, NULL, rx_main, &r);
    t0 = now_s();
    pthread_mutex_lock(&c.lock);
    p = card_port_find(&c, "rx");
    notif = p->q[0].st.notifications;
    delivered = p->q[0].st.rx_packets;
    pthread_mutex_unlock(&c.lock);
    while ((t1 = now_s()) - t0 < seconds) {
        if (fdrv_send_burst(&tx, frame, sizeof(frame), burst) == 0)
            sched_yield();
    }
    pthread_mutex_lock(&c.lock);
    notif = p->q[0].st.notifications - notif;
    delivered = p->q[0].st.rx_packets - delivered;
    pthread_mutex_unlock(&c.lock);
    r.stop = true;
    pthread_join(rxt, NULL);
    printf(
        "burst=%u coalescing=%s seconds=%.2f packets=%llu pps=%.0f notifications=%llu per_s=%.0f\n",
        burst, coalesce ? "on" : "off", t1 - t0, (unsigned long long)delivered,
        (double)delivered / (t1 - t0), (unsigned long long)notif, (double)notif / (t1 - t0));
    fflush(stdout);
    card_stop(&c);
    pthread_join(ctl, NULL);
    fdrv_close(&tx);
    fdrv_close(&rx);
    card_destroy(&c);
    return 0;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    unsigned burst = argc > 2 ? (unsigned)atoi(argv[2]) : 4;
    char dir[] = "/tmp/qtcard-notify-XXXXXX";
    int ret;

    log_init("card_notify_bench", LOG_LVL_ERROR);
    if (!mkdtemp(dir))
        return 1;
    ret = one_run(dir, false, seconds, burst) || one_run(dir, true, seconds, burst);
    rmdir(dir);
    return ret;
}
