/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests: policer, shaper, storm control with simulated time
 * (src/card/net/policer.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "frames.h"
#include "policer.h"

#define SEC  1000000000ull
#define MSEC 1000000ull

/* Deterministic packet sizes between 64 and 1514. */
static uint32_t next_len(uint32_t *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return 64 + (*seed >> 8) % 1451;
}

static void assert_within(double got, double want, double tol)
{
    double err = (got - want) / want;
    if (err < -tol || err > tol)
        fail_msg("got %.0f, want %.0f +- %.1f%% (off by %.2f%%)", got, want, tol * 100, err * 100);
}

static void test_invalid(void **state)
{
    struct policer p;
    assert_int_equal(policer_init(&p, TB_UNIT_BITS, TB_MAX_RATE + 1, 1000, 0), -EINVAL);
    assert_int_equal(policer_init(&p, TB_UNIT_BITS, 1000, TB_MAX_BURST + 1, 0), -EINVAL);
    assert_int_equal(policer_init(&p, TB_UNIT_BITS, 1000, 0, 0), -EINVAL);
    assert_int_equal(policer_init(&p, (enum tb_unit)7, 1000, 1000, 0), -EINVAL);
    /* rate 0: unlimited */
    assert_int_equal(policer_init(&p, TB_UNIT_BITS, 0, 0, 0), 0);
    for (int i = 0; i < 1000; i++)
        assert_true(policer_admit(&p, 1500, 0));
}

/* Offer twice the rate with mixed sizes for 10 s: what passes is the rate
 * (plus the initial burst) to well within 10%. */
static void test_policer_bits_rate(void **state)
{
    const uint64_t rate = 10000000; /* 10 Mbit/s */
    const uint64_t burst = 8 * 16000;
    struct policer p;
    assert_int_equal(policer_init(&p, TB_UNIT_BITS, rate, burst, 0), 0);
    uint32_t seed = 1;
    uint64_t now = 0, offered = 0;
    while (now < 10 * SEC) {
        uint32_t len = next_len(&seed);
        policer_admit(&p, len, now);
        offered += len;
        now += (uint64_t)len * 8 * SEC / (2 * rate); /* arrivals at 2x rate */
    }
    double passed_bits = (double)p.passed_bytes * 8;
    assert_within(passed_bits, (double)(rate * 10 + burst), 0.01);
    assert_true(p.dropped_pkts > 0);
    assert_int_equal(p.passed_bytes + p.dropped_bytes, offered);
}

static void test_policer_under_rate_no_drops(void **state)
{
    struct policer p;
    assert_int_equal(policer_init(&p, TB_UNIT_BITS, 1000000, 8 * 3000, 5 * SEC), 0);
    uint64_t now = 5 * SEC;
    for (int i = 0; i < 10000; i++) {
        assert_true(policer_admit(&p, 1000, now));
        now += 8000 * SEC / 1000000 * 2; /* 1000-byte packets at half the rate */
    }
    assert_int_equal(p.dropped_pkts, 0);
}

static void test_policer_burst(void **state)
{
    struct policer p;
    /* 1 kbit/s: negligible refill; a 10-packet burst of 1000 bytes */
    assert_int_equal(policer_init(&p, TB_UNIT_BITS, 1000, 8 * 10000, 0), 0);
    for (int i = 0; i < 10; i++)
        assert_true(policer_admit(&p, 1000, 0));
    assert_false(policer_admit(&p, 1000, 0));
    /* after 8 s exactly one more 1000-byte packet has been earned */
    assert_true(policer_admit(&p, 1000, 8 * SEC));
    assert_false(policer_admit(&p, 1000, 8 * SEC));
    /* a long idle refills to the burst, no more */
    int n = 0;
    while (policer_admit(&p, 1000, 1000000 * SEC))
        n++;
    assert_int_equal(n, 10);
}

static void test_policer_pps(void **state)
{
    struct policer p;
    assert_int_equal(policer_init(&p, TB_UNIT_PACKETS, 1000, 10, 0), 0);
    uint64_t now = 0;
    /* 5000 pps offered for 4 s */
    for (int i = 0; i < 20000; i++, now += SEC / 5000)
        policer_admit(&p, 64, now);
    assert_within((double)p.passed_pkts, 4000 + 10, 0.01);
}

static void test_policer_time_jumps(void **state)
{
    struct policer p;
    assert_int_equal(policer_init(&p, TB_UNIT_BITS, TB_MAX_RATE, TB_MAX_BURST, 0), 0);
    assert_true(policer_admit(&p, 9000, UINT64_MAX / 2));
    /* time going backwards earns nothing and does not underflow */
    assert_int_equal(policer_init(&p, TB_UNIT_BITS, 8000, 8000, 10 * SEC), 0);
    assert_true(policer_admit(&p, 1000, 10 * SEC));
    assert_false(policer_admit(&p, 1000, 1 * SEC));
    assert_false(policer_admit(&p, 1000, 10 * SEC));
    assert_true(policer_admit(&p, 1000, 11 * SEC));
}

/* Shaper: offered at 3x the rate in bursts; departures follow the rate, in
 * order, each at or after its arrival, and waits are bounded by max_delay. */
static void test_shaper_rate(void **state)
{
    const uint64_t rate = 50000000; /* 50 Mbit/s */
    struct shaper s;
    assert_int_equal(shaper_init(&s, TB_UNIT_BITS, rate, 8 * 3000, 20 * MSEC, 0), 0);
    uint32_t seed = 7;
    uint64_t now = 0, last_at = 0, first_at = UINT64_MAX, sent_bits = 0;
    while (now < 5 * SEC) {
        for (int k = 0; k < 8; k++) { /* bursts of 8 */
            uint32_t len = next_len(&seed);
            uint64_t at;
            int rc = shaper_reserve(&s, len, now, &at);
            if (rc == -ENOBUFS)
                continue;
            assert_int_equal(rc, 0);
            assert_true(at >= now);
            assert_true(at >= last_at);
            assert_true(at - now <= 20 * MSEC);
            if (first_at == UINT64_MAX)
                first_at = at;
            last_at = at;
            sent_bits += (uint64_t)len * 8;
        }
        now += 8 * 789 * 8 * SEC / (3 * rate); /* mean size ~789: 3x the rate */
    }
    assert_true(s.refused_pkts > 0);
    assert_true(s.delayed_pkts > 0);
    /* bits sent over the departure span, minus the initial burst */
    double achieved = (double)(sent_bits - 8 * 3000) * SEC / (double)(last_at - first_at);
    assert_within(achieved, (double)rate, 0.02);
}

static void test_shaper_conforming_not_delayed(void **state)
{
    struct shaper s;
    assert_int_equal(shaper_init(&s, TB_UNIT_PACKETS, 100, 1, 0, 0), 0);
    uint64_t at;
    for (uint64_t t = 0; t < 10 * SEC; t += SEC / 50) {
        assert_int_equal(shaper_reserve(&s, 64, t, &at), 0);
        assert_int_equal(at, t);
    }
    assert_int_equal(s.delayed_pkts, 0);
    /* max_delay 0: a packet that would wait is refused, nothing charged */
    assert_int_equal(shaper_reserve(&s, 64, 10 * SEC, &at), 0);
    assert_int_equal(shaper_reserve(&s, 64, 10 * SEC, &at), -ENOBUFS);
    assert_int_equal(shaper_reserve(&s, 64, 10 * SEC + SEC / 100, &at), 0);
}

static void test_storm_control(void **state)
{
    struct storm_control sc = {0};
    struct frame f;
    struct pkt_meta bc, mc, uc;
    fr_udp4_frame(&f, MAC_BCAST, MAC_A, "1.1.1.1", "255.255.255.255", 1, 2, 0);
    assert_int_equal(pkt_parse(f.p, f.len, &bc), 0);
    fr_udp4_frame(&f, MAC_MCAST, MAC_A, "1.1.1.1", "224.0.0.1", 1, 2, 0);
    assert_int_equal(pkt_parse(f.p, f.len, &mc), 0);
    fr_udp4_frame(&f, MAC_B, MAC_A, "1.1.1.1", "2.2.2.2", 1, 2, 0);
    assert_int_equal(pkt_parse(f.p, f.len, &uc), 0);

    assert_int_equal(storm_control_classify(&bc, false), STORM_BROADCAST);
    assert_int_equal(storm_control_classify(&mc, true), STORM_MULTICAST);
    assert_int_equal(storm_control_classify(&uc, false), STORM_UNKNOWN_UNICAST);
    assert_int_equal(storm_control_classify(&uc, true), STORM__MAX);

    assert_int_equal(storm_control_set(&sc, STORM_BROADCAST, TB_UNIT_PACKETS, 1000, 50, 0), 0);
    assert_int_equal(
        storm_control_set(&sc, STORM_UNKNOWN_UNICAST, TB_UNIT_BITS, 1000000, 8 * 1600, 0), 0);
    assert_int_equal(storm_control_set(&sc, STORM__MAX, TB_UNIT_PACKETS, 1, 1, 0), -EINVAL);

    unsigned bc_ok = 0, mc_ok = 0, kn_ok = 0;
    uint64_t uu_bytes = 0;
    for (uint64_t i = 0, now = 0; i < 20000; i++, now += SEC / 10000) { /* 2 s */
        bc_ok += storm_control_admit(&sc, STORM_BROADCAST, 64, now);
        mc_ok += storm_control_admit(&sc, STORM_MULTICAST, 64, now);
        if (storm_control_admit(&sc, STORM_UNKNOWN_UNICAST, 500, now))
            uu_bytes += 500;
        kn_ok += storm_control_admit(&sc, STORM__MAX, 1500, now);
    }
    assert_within(bc_ok, 2000 + 50, 0.02); /* limited to 1000 pps */
    assert_int_equal(mc_ok, 20000);        /* no multicast limit set */
    assert_int_equal(kn_ok, 20000);        /* known unicast is never limited */
    assert_within((double)uu_bytes * 8, 2000000 + 8 * 1600, 0.02);
    assert_int_equal(sc.pol[STORM_BROADCAST].dropped_pkts, 20000 - bc_ok);

    /* clearing a limit */
    assert_int_equal(storm_control_set(&sc, STORM_BROADCAST, TB_UNIT_PACKETS, 0, 0, 0), 0);
    assert_true(storm_control_admit(&sc, STORM_BROADCAST, 64, 3 * SEC));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_policer_bits_rate),
        cmocka_unit_test(test_policer_under_rate_no_drops),
        cmocka_unit_test(test_policer_burst),
        cmocka_unit_test(test_policer_pps),
        cmocka_unit_test(test_policer_time_jumps),
        cmocka_unit_test(test_shaper_rate),
        cmocka_unit_test(test_shaper_conforming_not_delayed),
        cmocka_unit_test(test_storm_control),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
