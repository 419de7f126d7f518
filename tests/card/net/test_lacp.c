/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests: LACPDU codec and LACP machines, two simulated systems wired
 * back to back (src/card/net/lacp.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "frames.h"
#include "lacp.h"

#define SEC  1000000000ull
#define MSEC 1000000ull

static const uint8_t SYS_A[6] = {0x02, 0xaa, 0, 0, 0, 1};
static const uint8_t SYS_B[6] = {0x02, 0xbb, 0, 0, 0, 1};
static const uint8_t SYS_C[6] = {0x02, 0xcc, 0, 0, 0, 1};

/* ---- codec ---- */

/* Field by field: struct lacp_info has a padding byte, which memcmp would compare. */
static void assert_info_equal(const struct lacp_info *a, const struct lacp_info *b)
{
    assert_int_equal(a->sys_prio, b->sys_prio);
    assert_memory_equal(a->sys_mac, b->sys_mac, sizeof(a->sys_mac));
    assert_int_equal(a->key, b->key);
    assert_int_equal(a->port_prio, b->port_prio);
    assert_int_equal(a->port, b->port);
    assert_int_equal(a->state, b->state);
}

static void test_encode_layout(void **state)
{
    struct lacp_pdu pdu = {
        .actor = {.sys_prio = 0x1234,
                  .sys_mac = {1 * 2, 2, 3, 4, 5, 6},
                  .key = 0xabcd,
                  .port_prio = 0x00ff,
                  .port = 0x0102,
                  .state = 0x3d},
        .partner = {.sys_prio = 0x8000,
                    .sys_mac = {2, 0, 0, 0, 0, 9},
                    .key = 7,
                    .port_prio = 1,
                    .port = 9,
                    .state = 0x05},
        .collector_max_delay = 0x55aa,
    };
    uint8_t buf[LACP_PDU_LEN + 10];
    memset(buf, 0xee, sizeof(buf));
    assert_int_equal(lacp_pdu_encode(&pdu, buf, LACP_PDU_LEN - 1), -ENOSPC);
    assert_int_equal(lacp_pdu_encode(&pdu, buf, sizeof(buf)), LACP_PDU_LEN);
    /* 802.1AX LACPDU structure, byte by byte */
    const uint8_t want_head[] = {
        0x01, 0x01,                                  /* subtype LACP, version 1 */
        0x01, 0x14,                                  /* actor TLV, length 20 */
        0x12, 0x34, 2,    2,    3,    4,    5,    6, /* system priority, system */
        0xab, 0xcd, 0x00, 0xff, 0x01, 0x02,          /* key, port priority, port */
        0x3d, 0,    0,    0,                         /* state, reserved */
        0x02, 0x14,                                  /* partner TLV */
        0x80, 0x00, 2,    0,    0,    0,    0,    9,    0x00, 0x07, 0x00, 0x01,
        0x00, 0x09, 0x05, 0,    0,    0,    0x03, 0x10, 0x55, 0xaa, /* collector TLV, max delay */
        0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0, /* reserved 12 */
        0x00, 0x00,                                                          /* terminator */
    };
    assert_int_equal(sizeof(want_head), 60);
    assert_memory_equal(buf, want_head, sizeof(want_head));
    for (int i = 60; i < LACP_PDU_LEN; i++)
        assert_int_equal(buf[i], 0);           /* 50 reserved bytes */
    assert_int_equal(buf[LACP_PDU_LEN], 0xee); /* nothing written past the PDU */

    struct lacp_pdu back;
    enum lacp_bad bad;
    assert_int_equal(lacp_pdu_decode(buf, LACP_PDU_LEN, &back, &bad), 0);
    assert_info_equal(&back.actor, &pdu.actor);
    assert_info_equal(&back.partner, &pdu.partner);
    assert_int_equal(back.collector_max_delay, 0x55aa);
}

static void good_pdu(uint8_t *buf)
{
    struct lacp_pdu pdu = {
        .actor = {.sys_prio = 1,
                  .sys_mac = {2, 0, 0, 0, 0, 1},
                  .key = 1,
                  .port_prio = 1,
                  .port = 1,
                  .state = 0x3f},
    };
    lacp_pdu_encode(&pdu, buf, LACP_PDU_LEN);
}

static void test_decode_bogus(void **state)
{
    uint8_t buf[LACP_PDU_LEN + 4];
    struct lacp_pdu pdu;
    enum lacp_bad bad;
    struct {
        int ofs;
        uint8_t val;
        enum lacp_bad want;
    } cases[] = {
        {0, 3, LACP_BAD_SUBTYPE},         {1, 0, LACP_BAD_VERSION},
        {2, 2, LACP_BAD_ACTOR_TLV},       {3, 19, LACP_BAD_ACTOR_TLV},
        {3, 21, LACP_BAD_ACTOR_TLV},      {22, 1, LACP_BAD_PARTNER_TLV},
        {23, 0, LACP_BAD_PARTNER_TLV},    {42, 4, LACP_BAD_COLLECTOR_TLV},
        {43, 15, LACP_BAD_COLLECTOR_TLV}, {58, 1, LACP_BAD_TERMINATOR},
        {59, 2, LACP_BAD_TERMINATOR},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        good_pdu(buf);
        buf[cases[i].ofs] = cases[i].val;
        assert_int_equal(lacp_pdu_decode(buf, LACP_PDU_LEN, &pdu, &bad), -EBADMSG);
        assert_int_equal(bad, cases[i].want);
    }
    good_pdu(buf);
    for (size_t n = 0; n < LACP_PDU_LEN; n++) {
        assert_int_equal(lacp_pdu_decode(buf, n, &pdu, &bad), -EBADMSG);
        assert_int_equal(bad, LACP_BAD_TRUNC);
    }
    /* padding after the PDU and a future version are accepted */
    assert_int_equal(lacp_pdu_decode(buf, LACP_PDU_LEN + 4, &pdu, &bad), 0);
    buf[1] = 2;
    assert_int_equal(lacp_pdu_decode(buf, LACP_PDU_LEN, &pdu, &bad), 0);
    /* actor with a multicast system ID or port 0 */
    good_pdu(buf);
    buf[6] = 0x01;
    assert_int_equal(lacp_pdu_decode(buf, LACP_PDU_LEN, &pdu, &bad), -EBADMSG);
    assert_int_equal(bad, LACP_BAD_ACTOR_INFO);
    good_pdu(buf);
    buf[16] = buf[17] = 0;
    assert_int_equal(lacp_pdu_decode(buf, LACP_PDU_LEN, &pdu, &bad), -EBADMSG);
    assert_int_equal(bad, LACP_BAD_ACTOR_INFO);
}

/* ---- two systems wired back to back ---- */

#define NLINKS 3

struct sim {
    struct lacp a, b;
    int ia[NLINKS], ib[NLINKS];
    bool wire_ab[NLINKS]; /* deliver a's PDUs to b on link i */
    bool wire_ba[NLINKS];
    unsigned tx_a[NLINKS], tx_b[NLINKS];
    uint64_t now;
};

static void sim_init(struct sim *s, bool a_active, bool a_fast, bool b_active, bool b_fast,
                     int nlinks)
{
    memset(s, 0, sizeof(*s));
    struct lacp_config ca = {.sys_prio = 100, .key = 5, .active = a_active, .fast = a_fast};
    struct lacp_config cb = {.sys_prio = 200, .key = 9, .active = b_active, .fast = b_fast};
    memcpy(ca.sys_mac, SYS_A, 6);
    memcpy(cb.sys_mac, SYS_B, 6);
    assert_int_equal(lacp_init(&s->a, &ca), 0);
    assert_int_equal(lacp_init(&s->b, &cb), 0);
    for (int i = 0; i < nlinks; i++) {
        uint8_t ma[6] = {0x02, 0xaa, 0, 0, 1, (uint8_t)i};
        uint8_t mb[6] = {0x02, 0xbb, 0, 0, 1, (uint8_t)i};
        s->ia[i] = lacp_member_add(&s->a, (uint16_t)(i + 1), 32768, ma, 0);
        s->ib[i] = lacp_member_add(&s->b, (uint16_t)(i + 11), 32768, mb, 0);
        assert_true(s->ia[i] >= 0 && s->ib[i] >= 0);
        assert_int_equal(lacp_member_set_link(&s->a, (unsigned)s->ia[i], true, 0), 0);
        assert_int_equal(lacp_member_set_link(&s->b, (unsigned)s->ib[i], true, 0), 0);
        s->wire_ab[i] = s->wire_ba[i] = true;
    }
}

/* Exchange whatever is due, then advance time by dt. */
static void sim_step(struct sim *s, int nlinks, uint64_t dt)
{
    uint8_t f[LACP_FRAME_LEN];
    lacp_run(&s->a, s->now);
    lacp_run(&s->b, s->now);
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < nlinks; i++) {
            int n = lacp_member_tx(&s->a, (unsigned)s->ia[i], s->now, f, sizeof(f));
            assert_true(n == 0 || n == LACP_FRAME_LEN);
            if (n) {
                s->tx_a[i]++;
                if (s->wire_ab[i])
                    assert_int_equal(lacp_rx(&s->b, (unsigned)s->ib[i], f, (size_t)n, s->now), 0);
            }
            n = lacp_member_tx(&s->b, (unsigned)s->ib[i], s->now, f, sizeof(f));
            if (n) {
                s->tx_b[i]++;
                if (s->wire_ba[i])
                    assert_int_equal(lacp_rx(&s->a, (unsigned)s->ia[i], f, (size_t)n, s->now), 0);
            }
        }
    }
    s->now += dt;
}

static void sim_run(struct sim *s, int nlinks, uint64_t until, uint64_t dt)
{
    while (s->now < until)
        sim_step(s, nlinks, dt);
}

static bool dist_a(struct sim *s, int i)
{
    return lacp_member_is_distributing(&s->a, (unsigned)s->ia[i]);
}

static bool dist_b(struct sim *s, int i)
{
    return lacp_member_is_distributing(&s->b, (unsigned)s->ib[i]);
}

static void test_bond_comes_up(void **state)
{
    struct sim s;
    sim_init(&s, true, true, true, true, 2);
    sim_run(&s, 2, 2 * SEC, 10 * MSEC);
    for (int i = 0; i < 2; i++) {
        assert_true(dist_a(&s, i));
        assert_true(dist_b(&s, i));
        const struct lacp_member *ma = &s.a.members[s.ia[i]];
        assert_int_equal(ma->rx, LACP_RX_CURRENT);
        assert_int_equal(ma->mux, LACP_MUX_COLLECTING_DISTRIBUTING);
        /* a learned b's identity */
        assert_memory_equal(ma->partner.sys_mac, SYS_B, 6);
        assert_int_equal(ma->partner.key, 9);
        assert_int_equal(ma->partner.port, i + 11);
        assert_true(ma->partner.state & LACP_STATE_DISTRIBUTING);
    }
    struct lacp_info ai;
    lacp_member_actor_info(&s.a, (unsigned)s.ia[0], &ai);
    assert_int_equal(ai.state, LACP_STATE_ACTIVITY | LACP_STATE_TIMEOUT | LACP_STATE_AGGREGATION |
                                   LACP_STATE_SYNC | LACP_STATE_COLLECTING |
                                   LACP_STATE_DISTRIBUTING);

    /* fast periodic: about one PDU per second per link in steady state */
    unsigned before = s.tx_a[0];
    sim_run(&s, 2, 12 * SEC, 10 * MSEC);
    assert_in_range(s.tx_a[0] - before, 9, 11);
}

static void test_failover_pdus_stop(void **state)
{
    struct sim s;
    sim_init(&s, true, true, true, true, 2);
    sim_run(&s, 2, 3 * SEC, 10 * MSEC);
    assert_true(dist_a(&s, 0) && dist_a(&s, 1));

    /* b's PDUs on link 1 stop reaching a (one-way failure, link stays up) */
    s.wire_ba[1] = false;
    uint64_t cut = s.now;
    while (dist_a(&s, 1)) {
        sim_step(&s, 2, 10 * MSEC);
        assert_true(s.now - cut <= 3 * SEC + 20 * MSEC);
    }
    /* at least 2 s: the last PDU may have arrived just before the cut */
    assert_true(s.now - cut >= 2 * SEC);
    assert_true(dist_a(&s, 0));
    assert_int_equal(s.a.members[s.ia[1]].rx, LACP_RX_EXPIRED);
    assert_int_equal(s.a.members[s.ia[1]].stats.expired, 1);
    /* a tells b it is out of sync, so b stops distributing on it too */
    sim_run(&s, 2, s.now + 100 * MSEC, 10 * MSEC);
    assert_false(dist_b(&s, 1));
    assert_true(dist_b(&s, 0));

    /* another 3 s of silence: defaulted, partner forgotten */
    sim_run(&s, 2, s.now + 3 * SEC + 20 * MSEC, 10 * MSEC);
    assert_int_equal(s.a.members[s.ia[1]].rx, LACP_RX_DEFAULTED);
    assert_true(pkt_mac_is_zero(s.a.members[s.ia[1]].partner.sys_mac));

    /* repaired: back within a couple of seconds */
    s.wire_ba[1] = true;
    sim_run(&s, 2, s.now + 2 * SEC, 10 * MSEC);
    assert_true(dist_a(&s, 1));
    assert_true(dist_b(&s, 1));
}

/* a's PDUs stop reaching b on link 1 while b's still reach a: b expires
 * the link, says so in its PDUs, and a stops distributing on it right away
 * instead of waiting for b to default. */
static void test_one_way_link(void **state)
{
    struct sim s;
    sim_init(&s, true, true, true, true, 2);
    sim_run(&s, 2, 3 * SEC, 10 * MSEC);
    assert_true(dist_a(&s, 1) && dist_b(&s, 1));
    s.wire_ab[1] = false;
    uint64_t cut = s.now;
    while (dist_a(&s, 1) || dist_b(&s, 1)) {
        sim_step(&s, 2, 10 * MSEC);
        assert_true(s.now - cut <= 3 * SEC + 50 * MSEC);
    }
    assert_int_equal(s.b.members[s.ib[1]].rx, LACP_RX_EXPIRED);
    assert_int_equal(s.a.members[s.ia[1]].rx, LACP_RX_CURRENT); /* a still hears b */
    assert_true(dist_a(&s, 0) && dist_b(&s, 0));
    s.wire_ab[1] = true;
    sim_run(&s, 2, s.now + 2 * SEC, 10 * MSEC);
    assert_true(dist_a(&s, 1) && dist_b(&s, 1));
}

static void test_failover_link_down(void **state)
{
    struct sim s;
    sim_init(&s, true, true, true, true, 2);
    sim_run(&s, 2, 3 * SEC, 10 * MSEC);
    assert_int_equal(lacp_member_set_link(&s.a, (unsigned)s.ia[0], false, s.now), 0);
    assert_false(dist_a(&s, 0)); /* at once */
    assert_true(dist_a(&s, 1));
    uint8_t f[LACP_FRAME_LEN];
    assert_int_equal(lacp_member_tx(&s.a, (unsigned)s.ia[0], s.now, f, sizeof(f)), 0);
    assert_int_equal(lacp_member_set_link(&s.a, (unsigned)s.ia[0], true, s.now), 0);
    sim_run(&s, 2, s.now + 2 * SEC, 10 * MSEC);
    assert_true(dist_a(&s, 0));
}

static void test_passive(void **state)
{
    struct sim s;
    /* passive + passive: silence, nothing comes up */
    sim_init(&s, false, true, false, true, 1);
    sim_run(&s, 1, 10 * SEC, 10 * MSEC);
    assert_int_equal(s.tx_a[0], 0);
    assert_int_equal(s.tx_b[0], 0);
    assert_false(dist_a(&s, 0));
    /* active + passive: comes up, the passive side answers */
    sim_init(&s, true, true, false, true, 1);
    sim_run(&s, 1, 3 * SEC, 10 * MSEC);
    assert_true(dist_a(&s, 0));
    assert_true(dist_b(&s, 0));
    assert_true(s.tx_b[0] > 0);
}

static void test_slow_rate(void **state)
{
    struct sim s;
    sim_init(&s, true, false, true, false, 1);
    sim_run(&s, 1, 5 * SEC, 50 * MSEC);
    assert_true(dist_a(&s, 0) && dist_b(&s, 0));
    unsigned before = s.tx_a[0];
    sim_run(&s, 1, 5 * SEC + 300 * SEC, 50 * MSEC);
    assert_in_range(s.tx_a[0] - before, 9, 11); /* every 30 s */

    /* long timeout: 60 s of silence is fine, 90 s is not */
    s.wire_ba[0] = false;
    uint64_t cut = s.now;
    sim_run(&s, 1, cut + 60 * SEC, 50 * MSEC);
    assert_true(dist_a(&s, 0));
    sim_run(&s, 1, cut + 91 * SEC, 50 * MSEC);
    assert_false(dist_a(&s, 0));
}

static void test_fast_asked_by_partner(void **state)
{
    /* a is slow, b asks for fast: a must send every second */
    struct sim s;
    sim_init(&s, true, false, true, true, 1);
    sim_run(&s, 1, 5 * SEC, 10 * MSEC);
    unsigned before = s.tx_a[0];
    sim_run(&s, 1, 15 * SEC, 10 * MSEC);
    assert_in_range(s.tx_a[0] - before, 9, 11);
}

/* The actor's activity and rate change in place (lacp_set_actor): the aggregation never
 * stops, the new state goes out at once, and the partner follows the new rate. */
static void test_set_actor(void **state)
{
    struct sim s;
    uint8_t stale[LACP_FRAME_LEN];
    unsigned before;

    sim_init(&s, true, true, true, true, 2);
    sim_run(&s, 2, 3 * SEC, 10 * MSEC);
    assert_true(dist_a(&s, 0) && dist_a(&s, 1) && dist_b(&s, 0) && dist_b(&s, 1));

    /* a LACPDU from a still showing b as fast, in flight while b turns slow */
    s.a.members[s.ia[0]].ntt = true;
    assert_int_equal(lacp_member_tx(&s.a, (unsigned)s.ia[0], s.now, stale, sizeof(stale)),
                     LACP_FRAME_LEN);
    before = s.b.members[s.ib[0]].stats.tx_pdus;
    lacp_set_actor(&s.b, true, false, s.now);
    assert_true(s.b.members[s.ib[0]].ntt && s.b.members[s.ib[1]].ntt); /* sent at once */
    assert_int_equal(lacp_rx(&s.b, (unsigned)s.ib[0], stale, sizeof(stale), s.now), 0);
    lacp_run(&s.b, s.now);
    assert_true(dist_b(&s, 0)); /* a stale view of b's rate does not unsync b (802.1AX) */
    sim_step(&s, 2, 10 * MSEC);
    assert_int_equal(s.b.members[s.ib[0]].stats.tx_pdus, before + 1);
    struct lacp_info bi;
    lacp_member_actor_info(&s.b, (unsigned)s.ib[0], &bi);
    assert_false(bi.state & LACP_STATE_TIMEOUT);
    assert_false(s.a.members[s.ia[0]].partner.state & LACP_STATE_TIMEOUT);

    /* a now sends every 30 s; b, with the long timeout, keeps the links for 300 s */
    sim_run(&s, 2, s.now + 2 * SEC, 50 * MSEC);
    before = s.tx_a[0];
    for (uint64_t end = s.now + 300 * SEC; s.now < end;) {
        sim_step(&s, 2, 50 * MSEC);
        assert_true(dist_a(&s, 0) && dist_a(&s, 1) && dist_b(&s, 0) && dist_b(&s, 1));
    }
    assert_in_range(s.tx_a[0] - before, 9, 11);

    /* back to fast: a follows within a step and sends every second again */
    lacp_set_actor(&s.b, true, true, s.now);
    sim_run(&s, 2, s.now + 100 * MSEC, 10 * MSEC);
    before = s.tx_a[0];
    sim_run(&s, 2, s.now + 10 * SEC, 10 * MSEC);
    assert_in_range(s.tx_a[0] - before, 9, 11);
    assert_true(dist_a(&s, 0) && dist_b(&s, 0));

    /* b passive: a is active, the aggregation stays; both passive: silence, it ends */
    lacp_set_actor(&s.b, false, true, s.now);
    sim_run(&s, 2, s.now + 10 * SEC, 10 * MSEC);
    assert_true(dist_a(&s, 0) && dist_b(&s, 0));
    lacp_member_actor_info(&s.b, (unsigned)s.ib[0], &bi);
    assert_false(bi.state & LACP_STATE_ACTIVITY);
    lacp_set_actor(&s.a, false, true, s.now);
    /* No LACPDU may go out between two passive ends (802.1AX NO_PERIODIC), not even a's
     * news: b, still seeing a as active, sends until a expires and defaults (3 + 3 s). */
    sim_run(&s, 2, s.now + 7 * SEC, 10 * MSEC);
    before = s.tx_a[0] + s.tx_b[0];
    sim_run(&s, 2, s.now + 10 * SEC, 10 * MSEC);
    assert_int_equal(s.tx_a[0] + s.tx_b[0], before);
    assert_false(dist_a(&s, 0) || dist_b(&s, 0));
}

static void test_other_partner_not_selected(void **state)
{
    /* member 1 of a is wired to a third system c: it must not aggregate
     * with the members that go to b */
    struct sim s;
    sim_init(&s, true, true, true, true, 1);
    struct lacp c;
    struct lacp_config cc = {.sys_prio = 50, .key = 3, .active = true, .fast = true};
    memcpy(cc.sys_mac, SYS_C, 6);
    assert_int_equal(lacp_init(&c, &cc), 0);
    const uint8_t mc[6] = {0x02, 0xcc, 0, 0, 1, 1};
    const uint8_t ma[6] = {0x02, 0xaa, 0, 0, 1, 9};
    int ic = lacp_member_add(&c, 1, 32768, mc, 0);
    int ia1 = lacp_member_add(&s.a, 2, 32768, ma, 0);
    assert_true(ic >= 0 && ia1 >= 0);
    lacp_member_set_link(&c, (unsigned)ic, true, 0);
    lacp_member_set_link(&s.a, (unsigned)ia1, true, 0);
    uint8_t f[LACP_FRAME_LEN];
    /* c's system priority (50) beats b's (200): the member facing c leads
     * and the member facing b is left unselected */
    while (s.now < 3 * SEC) {
        lacp_run(&c, s.now);
        for (int r = 0; r < 3; r++) {
            int n = lacp_member_tx(&s.a, (unsigned)ia1, s.now, f, sizeof(f));
            if (n > 0)
                lacp_rx(&c, (unsigned)ic, f, (size_t)n, s.now);
            n = lacp_member_tx(&c, (unsigned)ic, s.now, f, sizeof(f));
            if (n > 0)
                lacp_rx(&s.a, (unsigned)ia1, f, (size_t)n, s.now);
        }
        sim_step(&s, 1, 10 * MSEC);
    }
    assert_true(lacp_member_is_distributing(&s.a, (unsigned)ia1));
    assert_true(s.a.members[ia1].selected);
    assert_false(s.a.members[s.ia[0]].selected);
    assert_false(dist_a(&s, 0));
    assert_false(dist_b(&s, 0)); /* b sees a out of sync */
}

static void test_bogus_counted_state_kept(void **state)
{
    struct sim s;
    sim_init(&s, true, true, true, true, 1);
    sim_run(&s, 1, 3 * SEC, 10 * MSEC);
    assert_true(dist_a(&s, 0));
    struct lacp_member *m = &s.a.members[s.ia[0]];
    struct lacp_info partner_before = m->partner;

    uint8_t f[LACP_FRAME_LEN + 8];
    unsigned idx = (unsigned)s.ia[0];
    /* truncated */
    assert_int_equal(lacp_rx(&s.a, idx, f, 10, s.now), -EBADMSG);
    /* wrong ethertype / destination */
    memcpy(f, lacp_slow_mac, 6);
    memcpy(f + 6, MAC_C, 6);
    pkt_put_be16(f + 12, 0x0800);
    good_pdu(f + 14);
    assert_int_equal(lacp_rx(&s.a, idx, f, LACP_FRAME_LEN, s.now), -EBADMSG);
    pkt_put_be16(f + 12, PKT_ETHERTYPE_SLOW);
    f[5] = 3;
    assert_int_equal(lacp_rx(&s.a, idx, f, LACP_FRAME_LEN, s.now), -EBADMSG);
    f[5] = 2;
    /* TLV errors */
    f[14 + 3] = 18;
    assert_int_equal(lacp_rx(&s.a, idx, f, LACP_FRAME_LEN, s.now), -EBADMSG);
    good_pdu(f + 14);
    f[14 + 58] = 9;
    assert_int_equal(lacp_rx(&s.a, idx, f, LACP_FRAME_LEN, s.now), -EBADMSG);
    good_pdu(f + 14);
    assert_int_equal(lacp_rx(&s.a, idx, f, LACP_FRAME_LEN - 1, s.now), -EBADMSG);
    /* marker PDU: counted, ignored */
    f[14] = LACP_MARKER_SUBTYPE;
    assert_int_equal(lacp_rx(&s.a, idx, f, LACP_FRAME_LEN, s.now), 0);

    assert_int_equal(m->stats.rx_bad[LACP_BAD_TRUNC], 2);
    assert_int_equal(m->stats.rx_bad[LACP_BAD_ETHERTYPE], 1);
    assert_int_equal(m->stats.rx_bad[LACP_BAD_DST], 1);
    assert_int_equal(m->stats.rx_bad[LACP_BAD_ACTOR_TLV], 1);
    assert_int_equal(m->stats.rx_bad[LACP_BAD_TERMINATOR], 1);
    assert_int_equal(m->stats.rx_markers, 1);
    assert_info_equal(&m->partner, &partner_before);
    assert_true(dist_a(&s, 0));
    /* bogus frames do not keep the partner alive */
    s.wire_ba[0] = false;
    uint64_t cut = s.now;
    while (s.now < cut + 4 * SEC) {
        good_pdu(f + 14);
        f[14 + 1] = 0; /* version 0 */
        assert_int_equal(lacp_rx(&s.a, idx, f, LACP_FRAME_LEN, s.now), -EBADMSG);
        sim_step(&s, 1, 100 * MSEC);
    }
    assert_false(dist_a(&s, 0));
}

static void test_tx_rate_limit(void **state)
{
    struct lacp l;
    struct lacp_config c = {.sys_prio = 1, .key = 1, .active = true, .fast = true};
    memcpy(c.sys_mac, SYS_A, 6);
    assert_int_equal(lacp_init(&l, &c), 0);
    int i = lacp_member_add(&l, 1, 1, MAC_A, 0);
    lacp_member_set_link(&l, (unsigned)i, true, 0);
    uint8_t f[LACP_FRAME_LEN];
    unsigned sent = 0;
    /* force a state change (need-to-transmit) 10 times within one second */
    for (int k = 0; k < 10; k++) {
        l.members[i].ntt = true;
        sent += lacp_member_tx(&l, (unsigned)i, (uint64_t)k * 10 * MSEC, f, sizeof(f)) > 0;
    }
    assert_int_equal(sent, 3);
    /* the rest goes out once the second is over, and next_wakeup says so */
    assert_int_equal(lacp_next_wakeup(&l), SEC);
    assert_int_equal(lacp_member_tx(&l, (unsigned)i, SEC, f, sizeof(f)), LACP_FRAME_LEN);
    /* built frame: slow-protocols destination, our MAC, ethertype */
    assert_memory_equal(f, lacp_slow_mac, 6);
    assert_memory_equal(f + 6, MAC_A, 6);
    assert_int_equal(pkt_get_be16(f + 12), PKT_ETHERTYPE_SLOW);
    assert_int_equal(lacp_member_tx(&l, (unsigned)i, SEC, f, 20), 0); /* nothing due */
    l.members[i].ntt = true;
    assert_int_equal(lacp_member_tx(&l, (unsigned)i, SEC, f, 20), -ENOSPC);
}

static void test_member_admin(void **state)
{
    struct lacp l;
    struct lacp_config c = {.sys_prio = 1, .key = 1, .active = true};
    assert_int_equal(lacp_init(&l, &c), -EINVAL); /* zero system ID */
    memcpy(c.sys_mac, SYS_A, 6);
    c.key = 0;
    assert_int_equal(lacp_init(&l, &c), -EINVAL);
    c.key = 1;
    assert_int_equal(lacp_init(&l, &c), 0);
    assert_int_equal(lacp_member_add(&l, 0, 1, MAC_A, 0), -EINVAL);
    for (int i = 0; i < LACP_MAX_MEMBERS; i++)
        assert_int_equal(lacp_member_add(&l, (uint16_t)(i + 1), 1, MAC_A, 0), i);
    assert_int_equal(lacp_member_add(&l, 100, 1, MAC_A, 0), -ENOSPC);
    assert_int_equal(lacp_member_remove(&l, 3), 0);
    assert_int_equal(lacp_member_add(&l, 1, 1, MAC_A, 0), -EEXIST);
    assert_int_equal(lacp_member_add(&l, 100, 1, MAC_A, 0), 3);
    assert_int_equal(lacp_member_remove(&l, 99), -EINVAL);
    assert_int_equal(lacp_rx(&l, 99, NULL, 0, 0), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_layout),
        cmocka_unit_test(test_decode_bogus),
        cmocka_unit_test(test_bond_comes_up),
        cmocka_unit_test(test_failover_pdus_stop),
        cmocka_unit_test(test_one_way_link),
        cmocka_unit_test(test_failover_link_down),
        cmocka_unit_test(test_passive),
        cmocka_unit_test(test_slow_rate),
        cmocka_unit_test(test_fast_asked_by_partner),
        cmocka_unit_test(test_set_actor),
        cmocka_unit_test(test_other_partner_not_selected),
        cmocka_unit_test(test_bogus_counted_state_kept),
        cmocka_unit_test(test_tx_rate_limit),
        cmocka_unit_test(test_member_admin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
