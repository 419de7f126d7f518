/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests: bonds, static and LACP, hash distribution and failover
 * (src/card/net/bond.c). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bond.h"
#include "frames.h"

#define SEC    1000000000ull
#define MSEC   1000000ull
#define NFLOWS 1024

static void flow_meta(struct pkt_meta *m, int i)
{
    struct frame f;
    fr_udp4_frame(&f, MAC_B, MAC_A, "10.0.0.1", "10.0.0.2", (uint16_t)(1024 + i), 80, 0);
    assert_int_equal(pkt_parse(f.p, f.len, m), 0);
}

static void static_bond(struct bond *b, int n)
{
    struct bond_config cfg = {.mode = BOND_MODE_STATIC, .hash = PKT_HASH_L4, .hash_seed = 3};
    assert_int_equal(bond_init(b, &cfg, 0), 0);
    for (int i = 0; i < n; i++) {
        uint8_t mac[6] = {2, 0, 0, 0, 0, (uint8_t)(i + 1)};
        assert_int_equal(bond_member_add(b, (uint32_t)(100 + i), mac, 0), i);
    }
}

static void test_config(void **state)
{
    struct bond b;
    struct bond_config cfg = {.mode = BOND_MODE_STATIC, .hash = (enum pkt_hash_fields)9};
    assert_int_equal(bond_init(&b, &cfg, 0), -EINVAL);
    cfg.hash = PKT_HASH_L2;
    cfg.mode = BOND_MODE_LACP; /* LACP without a system ID */
    assert_int_equal(bond_init(&b, &cfg, 0), -EINVAL);
    static_bond(&b, 2);
    assert_int_equal(bond_member_add(&b, 100, MAC_A, 0), -EEXIST);
    assert_int_equal(bond_member_add(&b, BOND_NO_PORT, MAC_A, 0), -EINVAL);
    assert_int_equal(bond_member_set_link(&b, 555, true, 0), -ENOENT);
    assert_int_equal(bond_rx_lacp(&b, 100, NULL, 0, 0), -EOPNOTSUPP);
    for (int i = 2; i < BOND_MAX_MEMBERS; i++)
        assert_int_equal(bond_member_add(&b, (uint32_t)(200 + i), MAC_A, 0), i);
    assert_int_equal(bond_member_add(&b, 999, MAC_A, 0), -ENOSPC);
}

static void test_static_distribution_and_failover(void **state)
{
    struct bond b;
    struct pkt_meta m;
    uint32_t port, before[NFLOWS];
    static_bond(&b, 3);

    flow_meta(&m, 0);
    assert_int_equal(bond_select_tx(&b, &m, &port), -ENETDOWN);
    for (int i = 0; i < 3; i++)
        assert_int_equal(bond_member_set_link(&b, (uint32_t)(100 + i), true, 0), 0);
    assert_int_equal(bond_n_enabled(&b), 3);

    unsigned cnt[3] = {0};
    for (int i = 0; i < NFLOWS; i++) {
        flow_meta(&m, i);
        assert_int_equal(bond_select_tx(&b, &m, &port), 0);
        assert_in_range(port, 100, 102);
        cnt[port - 100]++;
        before[i] = port;
        /* same flow, same member */
        uint32_t again;
        bond_select_tx(&b, &m, &again);
        assert_int_equal(again, port);
    }
    for (int i = 0; i < 3; i++)
        assert_in_range(cnt[i], NFLOWS / 3 - NFLOWS / 10, NFLOWS / 3 + NFLOWS / 10);

    /* member 101 fails: only its flows move, and never to 101 */
    assert_int_equal(bond_member_set_link(&b, 101, false, SEC), 0);
    assert_false(bond_rx_allowed(&b, 101));
    assert_true(bond_rx_allowed(&b, 100));
    assert_false(bond_rx_allowed(&b, 555));
    unsigned moved = 0;
    for (int i = 0; i < NFLOWS; i++) {
        flow_meta(&m, i);
        assert_int_equal(bond_select_tx(&b, &m, &port), 0);
        assert_int_not_equal(port, 101);
        if (before[i] != 101)
            assert_int_equal(port, before[i]);
        else
            moved++;
    }
    assert_int_equal(moved, cnt[1]);
    assert_int_equal(b.stats.failovers, 1);

    /* everything down */
    bond_member_set_link(&b, 100, false, SEC);
    bond_member_set_link(&b, 102, false, SEC);
    assert_int_equal(bond_select_tx(&b, &m, &port), -ENETDOWN);
    /* removal while up */
    bond_member_set_link(&b, 100, true, SEC);
    assert_int_equal(bond_member_remove(&b, 100, SEC), 0);
    assert_int_equal(bond_select_tx(&b, &m, &port), -ENETDOWN);
    assert_int_equal(bond_member_remove(&b, 100, SEC), -ENOENT);
}

static void test_hash_modes(void **state)
{
    /* L2 hashing puts all flows between two MACs on one member */
    struct bond b;
    struct bond_config cfg = {.mode = BOND_MODE_STATIC, .hash = PKT_HASH_L2};
    assert_int_equal(bond_init(&b, &cfg, 0), 0);
    for (int i = 0; i < 4; i++) {
        bond_member_add(&b, (uint32_t)i, MAC_A, 0);
        bond_member_set_link(&b, (uint32_t)i, true, 0);
    }
    struct pkt_meta m;
    uint32_t first, port;
    flow_meta(&m, 0);
    bond_select_tx(&b, &m, &first);
    for (int i = 1; i < 200; i++) {
        flow_meta(&m, i);
        bond_select_tx(&b, &m, &port);
        assert_int_equal(port, first);
    }
    /* In place: L4 spreads the same flows over the members; L2 again puts them on one */
    assert_int_equal(bond_set_hash(&b, (enum pkt_hash_fields)9), -EINVAL);
    assert_int_equal(bond_set_lacp(&b, true, false, 0), -EOPNOTSUPP); /* static mode */
    assert_int_equal(bond_set_hash(&b, PKT_HASH_L4), 0);
    unsigned used = 0;
    for (int i = 0; i < 200; i++) {
        flow_meta(&m, i);
        assert_int_equal(bond_select_tx(&b, &m, &port), 0);
        used |= 1u << port;
    }
    assert_int_equal(used, 0xf);
    assert_int_equal(bond_set_hash(&b, PKT_HASH_L2), 0);
    for (int i = 0; i < 200; i++) {
        flow_meta(&m, i);
        bond_select_tx(&b, &m, &port);
        assert_int_equal(port, first);
    }
}

/* LACP bond pair wired back to back through bond_member_lacp_tx/bond_rx_lacp. */
struct pair {
    struct bond x, y;
    bool cut[2]; /* y's PDUs on member i stop reaching x */
    uint64_t now;
};

static void pair_init(struct pair *p)
{
    struct bond_config cx = {.mode = BOND_MODE_LACP, .hash = PKT_HASH_L4};
    cx.lacp = (struct lacp_config){.sys_prio = 1, .key = 1, .active = true, .fast = true};
    struct bond_config cy = cx;
    memcpy(cx.lacp.sys_mac, MAC_A, 6);
    memcpy(cy.lacp.sys_mac, MAC_B, 6);
    memset(p, 0, sizeof(*p));
    assert_int_equal(bond_init(&p->x, &cx, 0), 0);
    assert_int_equal(bond_init(&p->y, &cy, 0), 0);
    for (uint32_t i = 0; i < 2; i++) {
        assert_int_equal(bond_member_add(&p->x, 10 + i, MAC_A, 0), (int)i);
        assert_int_equal(bond_member_add(&p->y, 20 + i, MAC_B, 0), (int)i);
        bond_member_set_link(&p->x, 10 + i, true, 0);
        bond_member_set_link(&p->y, 20 + i, true, 0);
    }
}

static void pair_step(struct pair *p, uint64_t dt)
{
    uint8_t f[LACP_FRAME_LEN];
    bond_run(&p->x, p->now);
    bond_run(&p->y, p->now);
    for (int r = 0; r < 3; r++) {
        for (uint32_t i = 0; i < 2; i++) {
            int n = bond_member_lacp_tx(&p->x, 10 + i, p->now, f, sizeof(f));
            if (n > 0)
                assert_int_equal(bond_rx_lacp(&p->y, 20 + i, f, (size_t)n, p->now), 0);
            n = bond_member_lacp_tx(&p->y, 20 + i, p->now, f, sizeof(f));
            if (n > 0 && !p->cut[i]) {
                int rc = bond_rx_lacp(&p->x, 10 + i, f, (size_t)n, p->now);
                /* a static x takes no LACPDUs */
                assert_int_equal(rc, p->x.cfg.mode == BOND_MODE_STATIC ? -EOPNOTSUPP : 0);
            }
        }
    }
    p->now += dt;
}

static void test_lacp_bond(void **state)
{
    struct pair p;
    struct pkt_meta m;
    uint32_t port;
    pair_init(&p);
    /* links up but no LACP agreement yet: nothing enabled */
    assert_int_equal(bond_n_enabled(&p.x), 0);
    flow_meta(&m, 1);
    assert_int_equal(bond_select_tx(&p.x, &m, &port), -ENETDOWN);
    while (p.now < 3 * SEC)
        pair_step(&p, 10 * MSEC);
    assert_int_equal(bond_n_enabled(&p.x), 2);
    assert_int_equal(bond_n_enabled(&p.y), 2);
    assert_true(bond_next_wakeup(&p.x) <= p.now + SEC);

    /* PDUs from y on member 1 stop: x drops member 11 within 3 s, and y
     * drops its side too once x says it is out of sync */
    p.cut[1] = true;
    uint64_t cut = p.now;
    while (bond_n_enabled(&p.x) == 2) {
        pair_step(&p, 10 * MSEC);
        assert_true(p.now - cut <= 3 * SEC + 20 * MSEC);
    }
    assert_false(bond_rx_allowed(&p.x, 11));
    for (int i = 0; i < 100; i++) {
        flow_meta(&m, i);
        assert_int_equal(bond_select_tx(&p.x, &m, &port), 0);
        assert_int_equal(port, 10);
    }
    pair_step(&p, 10 * MSEC);
    pair_step(&p, 10 * MSEC);
    assert_int_equal(bond_n_enabled(&p.y), 1);
    assert_false(bond_rx_allowed(&p.y, 21));

    p.cut[1] = false;
    cut = p.now;
    while (bond_n_enabled(&p.x) < 2) {
        pair_step(&p, 10 * MSEC);
        assert_true(p.now - cut <= 2 * SEC);
    }
}

/* The mode changes in place: to static, members with link carry traffic at once and no
 * LACPDU goes out (the partner gives up); to LACP, nobody carries traffic until the
 * partner agrees again, member by member as their links allow. */
static void test_mode_change(void **state)
{
    struct pair p;
    struct lacp_config bad = {0}, lc;
    uint8_t f[LACP_FRAME_LEN];
    uint64_t t0;
    (void)state;

    pair_init(&p);
    while (p.now < 3 * SEC)
        pair_step(&p, 10 * MSEC);
    assert_int_equal(bond_n_enabled(&p.x), 2);
    lc = p.x.cfg.lacp;

    assert_int_equal(bond_set_mode(&p.x, BOND_MODE_STATIC, NULL, p.now), 0);
    assert_int_equal(p.x.cfg.mode, BOND_MODE_STATIC);
    assert_int_equal(bond_n_enabled(&p.x), 2); /* at once */
    assert_int_equal(bond_member_lacp_tx(&p.x, 10, p.now + 5 * SEC, f, sizeof(f)), 0);
    t0 = p.now;
    while (bond_n_enabled(&p.y) > 0) { /* y's partner went silent: fast timeout */
        pair_step(&p, 10 * MSEC);
        assert_true(p.now - t0 <= 3 * SEC + 20 * MSEC);
        assert_int_equal(bond_n_enabled(&p.x), 2);
    }
    /* Static failover follows the link. */
    assert_int_equal(bond_member_set_link(&p.x, 11, false, p.now), 0);
    assert_int_equal(bond_n_enabled(&p.x), 1);
    assert_false(bond_rx_allowed(&p.x, 11));

    /* Refused changes leave it as it was. */
    assert_int_equal(bond_set_mode(&p.x, (enum bond_mode)7, &lc, p.now), -EINVAL);
    assert_int_equal(bond_set_mode(&p.x, BOND_MODE_LACP, &bad, p.now), -EINVAL);
    assert_int_equal(p.x.cfg.mode, BOND_MODE_STATIC);
    assert_int_equal(bond_n_enabled(&p.x), 1);
    assert_int_equal(bond_set_mode(&p.x, BOND_MODE_STATIC, NULL, p.now), 0); /* no change */

    /* Back to LACP, slow rate this time: nothing carries traffic until y agrees on the
     * member whose link is up; the other one joins when its link comes back. */
    lc.fast = false;
    assert_int_equal(bond_set_mode(&p.x, BOND_MODE_LACP, &lc, p.now), 0);
    assert_int_equal(bond_n_enabled(&p.x), 0);
    assert_false(p.x.cfg.lacp.fast);
    t0 = p.now;
    while (bond_n_enabled(&p.x) < 1 || bond_n_enabled(&p.y) < 1) {
        pair_step(&p, 10 * MSEC);
        assert_true(p.now - t0 <= 3 * SEC);
    }
    assert_true(bond_rx_allowed(&p.x, 10));
    assert_false(bond_rx_allowed(&p.x, 11));
    assert_int_equal(bond_member_set_link(&p.x, 11, true, p.now), 0);
    t0 = p.now;
    while (bond_n_enabled(&p.x) < 2 || bond_n_enabled(&p.y) < 2) {
        pair_step(&p, 10 * MSEC);
        assert_true(p.now - t0 <= 3 * SEC);
    }
}

/* Data-plane threads select members while the control side flaps links.
 * Member 0 stays up, so a selection must always succeed and name a member. */
struct flap {
    struct bond *b;
    atomic_bool stop;
    atomic_ulong bad, n;
};

static void *flap_reader(void *arg)
{
    struct flap *f = arg;
    struct pkt_meta m[64];
    for (int i = 0; i < 64; i++)
        flow_meta(&m[i], i);
    for (unsigned long k = 0; !atomic_load(&f->stop); k++) {
        uint32_t port;
        if (bond_select_tx(f->b, &m[k % 64], &port) != 0 || port < 100 || port > 103)
            atomic_fetch_add(&f->bad, 1);
        atomic_fetch_add(&f->n, 1);
    }
    return NULL;
}

static void test_concurrent_select(void **state)
{
    struct bond b;
    static_bond(&b, 4);
    for (uint32_t i = 0; i < 4; i++)
        bond_member_set_link(&b, 100 + i, true, 0);
    struct flap f = {.b = &b};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, flap_reader, &f), 0);
    for (int k = 0; k < 20000; k++)
        bond_member_set_link(&b, 101 + (uint32_t)(k % 3), k % 2, (uint64_t)k);
    atomic_store(&f.stop, true);
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&f.bad), 0);
    assert_true(atomic_load(&f.n) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),      cmocka_unit_test(test_static_distribution_and_failover),
        cmocka_unit_test(test_hash_modes),  cmocka_unit_test(test_lacp_bond),
        cmocka_unit_test(test_mode_change), cmocka_unit_test(test_concurrent_select),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
