/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests: adaptive notification coalescing with simulated traffic
 * (src/card/net/coalesce.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "coalesce.h"

#define USEC 1000ull
#define MSEC 1000000ull
#define SEC  1000000000ull

/* Drives a controller like the data plane does: completions at given times,
 * a timer that fires at coalesce_deadline(). Tracks the worst delay between
 * a completion and the notification that covers it. */
struct drive {
    struct coalesce c;
    uint64_t oldest; /* completion time of the oldest unsignalled packet */
    bool have_pending;
    uint64_t worst_delay;
    uint64_t signals;
};

static void drive_signal(struct drive *d, uint64_t now)
{
    if (d->have_pending && now - d->oldest > d->worst_delay)
        d->worst_delay = now - d->oldest;
    d->have_pending = false;
    d->signals++;
}

/* Fire the timer if it is due before `now`. */
static void drive_timer(struct drive *d, uint64_t now)
{
    uint64_t dl = coalesce_deadline(&d->c);
    if (dl <= now) {
        assert_true(coalesce_poll(&d->c, dl));
        drive_signal(d, dl);
    }
}

static bool drive_complete(struct drive *d, uint32_t n, uint64_t now)
{
    drive_timer(d, now);
    if (!d->have_pending) {
        d->oldest = now;
        d->have_pending = true;
    }
    bool sig = coalesce_complete(&d->c, n, now);
    if (sig)
        drive_signal(d, now);
    return sig;
}

static void drive_init(struct drive *d, const struct coalesce_config *cfg)
{
    memset(d, 0, sizeof(*d));
    assert_int_equal(coalesce_init(&d->c, cfg), 0);
}

static void test_config(void **state)
{
    struct coalesce c;
    struct coalesce_config cfg;
    coalesce_config_default(&cfg);
    assert_int_equal(coalesce_init(&c, &cfg), 0);
    cfg.max_pkts = 0;
    assert_int_equal(coalesce_init(&c, &cfg), -EINVAL);
    coalesce_config_default(&cfg);
    cfg.low_pps = cfg.high_pps;
    assert_int_equal(coalesce_init(&c, &cfg), -EINVAL);
    coalesce_config_default(&cfg);
    cfg.window_ns = 0;
    assert_int_equal(coalesce_init(&c, &cfg), -EINVAL);
    assert_int_equal(coalesce_deadline(&c), UINT64_MAX);
}

/* A ping a second (or ten per second) is signalled at once, every time. */
static void test_lone_packets_immediate(void **state)
{
    struct coalesce_config cfg;
    struct drive d;
    coalesce_config_default(&cfg);
    drive_init(&d, &cfg);
    for (uint64_t t = 0; t < 10 * SEC; t += 100 * MSEC)
        assert_true(drive_complete(&d, 1, t));
    assert_int_equal(d.c.stats.notified, 100);
    assert_int_equal(d.c.stats.suppressed, 0);
    assert_int_equal(d.worst_delay, 0);
}

/* A flood of 64-byte packets at ~10 Mpps in bursts of 4: far fewer
 * notifications than packets or bursts, and no packet waits more than max_ns. */
static void test_flood_batched(void **state)
{
    struct coalesce_config cfg;
    struct drive d;
    coalesce_config_default(&cfg);
    drive_init(&d, &cfg);
    uint64_t t = 0;
    for (int i = 0; i < 800000; i++, t += 400) /* 4 packets every 400 ns */
        drive_complete(&d, 4, t);
    drive_timer(&d, UINT64_MAX - 1);
    assert_int_equal(d.c.stats.completed, 3200000);
    /* at full coalescing: one signal per max_pkts (32) packets at most, and
     * the rate estimator needs a window to get there */
    assert_true(d.c.stats.notified < 3200000 / 16);
    assert_true(d.c.stats.notified < 800000 / 4); /* fewer than the bursts too */
    assert_true(d.c.stats.suppressed > 3200000 / 2);
    assert_true(d.worst_delay <= cfg.max_ns);
    assert_int_equal(d.c.cur_max_pkts, cfg.max_pkts);

    /* single-packet completions at 2 Mpps: batched too */
    drive_init(&d, &cfg);
    for (int i = 0; i < 200000; i++)
        drive_complete(&d, 1, (uint64_t)i * 500);
    assert_true(d.c.stats.notified < 200000 / 8);
    assert_true(d.worst_delay <= cfg.max_ns);
}

/* After a flood stops, the next packet (a ping) is not held. */
static void test_ping_after_flood(void **state)
{
    struct coalesce_config cfg;
    struct drive d;
    coalesce_config_default(&cfg);
    drive_init(&d, &cfg);
    uint64_t t = 0;
    for (int i = 0; i < 10000; i++, t += 3200)
        drive_complete(&d, 32, t);
    drive_timer(&d, t + 100 * USEC);
    assert_true(drive_complete(&d, 1, t + 1 * MSEC));
    assert_true(drive_complete(&d, 1, t + 2 * MSEC));
}

/* In between: thresholds scale with the rate; the delay bound still holds. */
static void test_medium_rate(void **state)
{
    struct coalesce_config cfg;
    struct drive d;
    coalesce_config_default(&cfg);

    /* ~333 kpps, evenly spaced 3 us apart */
    drive_init(&d, &cfg);
    for (int i = 0; i < 50000; i++)
        drive_complete(&d, 1, (uint64_t)i * 3 * USEC);
    assert_true(d.c.cur_max_pkts > 2 && d.c.cur_max_pkts < cfg.max_pkts);
    assert_true(d.c.cur_max_ns > 0 && d.c.cur_max_ns < cfg.max_ns);
    assert_true(d.c.stats.notified < 50000 / 4);
    assert_true(d.c.stats.notified > 50000 / cfg.max_pkts);
    assert_true(d.worst_delay <= cfg.max_ns);

    /* 100 kpps, 10 us apart: fewer than 2 packets expected in the hold time
     * it would get, so nothing is held */
    drive_init(&d, &cfg);
    for (int i = 0; i < 50000; i++)
        drive_complete(&d, 1, (uint64_t)i * 10 * USEC);
    assert_int_equal(d.c.stats.suppressed, 0);
    assert_int_equal(d.worst_delay, 0);

    /* 20 kpps and below: no coalescing */
    drive_init(&d, &cfg);
    for (int i = 0; i < 5000; i++)
        drive_complete(&d, 1, (uint64_t)i * 49 * USEC + (uint64_t)(i % 2) * USEC);
    assert_int_equal(d.c.stats.suppressed, 0);
}

static void test_fixed_and_disabled(void **state)
{
    struct coalesce_config cfg = {.adaptive = false, .max_pkts = 8, .max_ns = 100 * USEC};
    struct drive d;
    drive_init(&d, &cfg);
    unsigned sig = 0;
    for (int i = 0; i < 64; i++)
        sig += drive_complete(&d, 1, (uint64_t)i * USEC);
    assert_int_equal(sig, 8); /* every 8th */
    /* a single packet waits for the deadline, not forever */
    assert_false(drive_complete(&d, 1, 1 * MSEC));
    assert_int_equal(coalesce_deadline(&d.c), 1 * MSEC + 100 * USEC);
    assert_false(coalesce_poll(&d.c, 1 * MSEC + 99 * USEC));
    assert_true(coalesce_poll(&d.c, 1 * MSEC + 100 * USEC));
    assert_int_equal(d.c.stats.timer_flush, 1);
    assert_false(coalesce_poll(&d.c, 2 * MSEC)); /* nothing pending */

    struct coalesce_config off = {.adaptive = false, .max_pkts = 1};
    drive_init(&d, &off);
    for (int i = 0; i < 100; i++)
        assert_true(drive_complete(&d, 1, (uint64_t)i));
    assert_false(coalesce_complete(&d.c, 0, 200)); /* zero packets: no signal */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),        cmocka_unit_test(test_lone_packets_immediate),
        cmocka_unit_test(test_flood_batched), cmocka_unit_test(test_ping_after_flood),
        cmocka_unit_test(test_medium_rate),   cmocka_unit_test(test_fixed_and_disabled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
