/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests: underlay neighbour table and ARP frames (src/card/net/neigh.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frames.h"
#include "neigh.h"

#define SEC 1000000000ull

static const uint8_t IP1[4] = {192, 168, 1, 2}, IP2[4] = {192, 168, 1, 3};

static void test_lookup_resolve_expire(void **state)
{
    struct neigh_table t = {0};
    uint8_t mac[6], ips[8][4];
    (void)state;

    /* Unknown: -EAGAIN, and now wanted: the first tick asks for it. */
    assert_int_equal(neigh_lookup(&t, IP1, mac), -EAGAIN);
    assert_int_equal(t.unresolved, 1);
    assert_int_equal(neigh_due(&t, 10 * SEC, ips, 8), 1);
    assert_memory_equal(ips[0], IP1, 4);
    /* Not again before the retry interval, again after it. */
    assert_int_equal(neigh_due(&t, 10 * SEC + SEC / 2, ips, 8), 0);
    assert_int_equal(neigh_due(&t, 11 * SEC, ips, 8), 1);
    /* A reply fills it; lookups succeed and nothing is asked while reachable. */
    assert_true(neigh_learn(&t, IP1, MAC_B, 11 * SEC));
    assert_int_equal(neigh_lookup(&t, IP1, mac), 0);
    assert_memory_equal(mac, MAC_B, 6);
    assert_int_equal(neigh_due(&t, 12 * SEC, ips, 8), 0);
    /* The same reply again changes nothing; a new MAC is taken. */
    assert_false(neigh_learn(&t, IP1, MAC_B, 12 * SEC));
    assert_true(neigh_learn(&t, IP1, MAC_C, 12 * SEC));
    assert_int_equal(t.learned, 2);
    /* Past the reachable time: still used, but confirmed by a new request. */
    assert_int_equal(neigh_due(&t, 12 * SEC + NEIGH_REACHABLE_NS, ips, 8), 1);
    assert_int_equal(neigh_lookup(&t, IP1, mac), 0);
    assert_memory_equal(mac, MAC_C, 6);
    /* Never confirmed again: unresolved after the expiry time, and asked for. */
    assert_int_equal(neigh_due(&t, 12 * SEC + NEIGH_EXPIRE_NS, ips, 8), 1);
    assert_int_equal(neigh_lookup(&t, IP1, mac), -EAGAIN);
}

static void test_learn_only_known_and_bad_input(void **state)
{
    struct neigh_table t = {0};
    uint8_t mac[6], ips[2][4];
    static const uint8_t zero_mac[6], mcast_ip[4] = {224, 0, 0, 1}, zero_ip[4],
                                      bcast_ip[4] = {255, 255, 255, 255}, lo_ip[4] = {127, 0, 0, 1};
    (void)state;

    /* What others announce does not grow the table. */
    assert_false(neigh_learn(&t, IP2, MAC_B, SEC));
    assert_int_equal(t.n, 0);
    /* Invalid addresses are refused. */
    assert_int_equal(neigh_want(&t, mcast_ip), -EINVAL);
    assert_int_equal(neigh_want(&t, zero_ip), -EINVAL);
    assert_int_equal(neigh_want(&t, bcast_ip), -EINVAL);
    assert_int_equal(neigh_want(&t, lo_ip), -EINVAL);
    assert_int_equal(neigh_lookup(&t, mcast_ip, mac), -EINVAL);
    /* A reply with a multicast or zero MAC is ignored. */
    assert_int_equal(neigh_want(&t, IP1), 0);
    assert_false(neigh_learn(&t, IP1, MAC_BCAST, SEC));
    assert_false(neigh_learn(&t, IP1, zero_mac, SEC));
    assert_int_equal(neigh_lookup(&t, IP1, mac), -EAGAIN);
    /* neigh_due honours max. */
    assert_int_equal(neigh_want(&t, IP2), 0);
    assert_int_equal(neigh_due(&t, SEC, ips, 1), 1);
    assert_int_equal(neigh_due(&t, SEC, ips, 2), 1); /* the other one */
    assert_int_equal(neigh_due(&t, SEC, ips, 2), 0);
}

static void test_table_full(void **state)
{
    struct neigh_table t = {0};
    uint8_t ip[4] = {10, 0, 0, 0}, mac[6];
    (void)state;

    for (unsigned i = 0; i < NEIGH_MAX; i++) {
        ip[2] = (uint8_t)(i / 200);
        ip[3] = (uint8_t)(1 + i % 200);
        assert_int_equal(neigh_want(&t, ip), 0);
    }
    ip[1] = 9;
    assert_int_equal(neigh_lookup(&t, ip, mac), -ENOSPC);
    assert_int_equal(t.full, 1);
}

static void test_arp_frames_parse(void **state)
{
    uint8_t f[NEIGH_ARP_FRAME + 4];
    struct pkt_meta m;
    static const uint8_t zero_mac[6];
    (void)state;

    assert_int_equal(neigh_arp_build(f, 1, MAC_A, IP1, NULL, IP2), NEIGH_ARP_FRAME);
    assert_int_equal(pkt_parse(f, NEIGH_ARP_FRAME, &m), 0);
    assert_int_equal(m.l3, PKT_L3_ARP);
    assert_int_equal(m.arp_op, 1);
    assert_memory_equal(m.dst_mac, MAC_BCAST, 6);
    assert_memory_equal(m.src_mac, MAC_A, 6);
    assert_memory_equal(m.arp_sha, MAC_A, 6);
    assert_memory_equal(m.arp_tha, zero_mac, 6);
    assert_memory_equal(m.ip4.src, IP1, 4);
    assert_memory_equal(m.ip4.dst, IP2, 4);

    assert_int_equal(neigh_arp_build(f, 2, MAC_A, IP1, MAC_B, IP2), NEIGH_ARP_FRAME);
    assert_int_equal(pkt_parse(f, NEIGH_ARP_FRAME, &m), 0);
    assert_int_equal(m.arp_op, 2);
    assert_memory_equal(m.dst_mac, MAC_B, 6);
    assert_memory_equal(m.arp_tha, MAC_B, 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_resolve_expire),
        cmocka_unit_test(test_learn_only_known_and_bad_input),
        cmocka_unit_test(test_table_full),
        cmocka_unit_test(test_arp_frames_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
