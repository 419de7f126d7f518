/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests: 802.1Q port VLAN policy (src/card/net/vlan.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "frames.h"
#include "vlan.h"

/* Parse an untagged (tci < 0) or tagged frame. */
static void meta_for(struct pkt_meta *m, int tci, uint16_t tpid)
{
    struct frame f;
    fr_init(&f);
    if (tci < 0) {
        fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV4);
    } else {
        fr_put(&f, MAC_B, 6);
        fr_put(&f, MAC_A, 6);
        fr_be16(&f, tpid);
        fr_be16(&f, (uint16_t)tci);
        fr_be16(&f, PKT_ETHERTYPE_IPV4);
    }
    fr_ipv4(&f, "1.1.1.1", "2.2.2.2", PKT_IPPROTO_UDP, 8);
    fr_udp(&f, 1, 2, 0);
    assert_int_equal(pkt_parse(f.p, f.len, m), 0);
}

static void test_access(void **state)
{
    struct vlan_port p;
    struct vlan_stats st = {0};
    struct vlan_ingress in;
    struct pkt_meta m;
    enum vlan_egress eg;

    assert_int_equal(vlan_port_set_access(&p, 0), -EINVAL);
    assert_int_equal(vlan_port_set_access(&p, 4095), -EINVAL);
    assert_int_equal(vlan_port_set_access(&p, 20), 0);

    meta_for(&m, -1, 0);
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), 0);
    assert_int_equal(in.vid, 20);
    assert_false(in.tagged);

    /* priority-tagged frame (VID 0) is accepted with its PCP */
    meta_for(&m, 3 << 13, PKT_ETHERTYPE_VLAN);
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), 0);
    assert_int_equal(in.vid, 20);
    assert_int_equal(in.pcp, 3);

    /* a tagged frame is dropped, even with the port's own VID */
    meta_for(&m, 20, PKT_ETHERTYPE_VLAN);
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), -EACCES);
    meta_for(&m, 30, PKT_ETHERTYPE_VLAN);
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), -EACCES);
    assert_int_equal(st.drops[VLAN_DROP_TAGGED_ON_ACCESS], 2);
    /* S-tag on an access port */
    meta_for(&m, 20, PKT_ETHERTYPE_QINQ);
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), -EACCES);
    assert_int_equal(st.drops[VLAN_DROP_BAD_TPID], 1);

    assert_int_equal(vlan_port_egress(&p, 20, &st, &eg), 0);
    assert_int_equal(eg, VLAN_EGRESS_UNTAGGED);
    assert_int_equal(vlan_port_egress(&p, 21, &st, &eg), -EACCES);
    assert_int_equal(st.egress_filtered, 1);
}

static void test_trunk(void **state)
{
    struct vlan_port p;
    struct vlan_stats st = {0};
    struct vlan_ingress in;
    struct pkt_meta m;
    enum vlan_egress eg;
    const uint16_t allowed[] = {10, 20};
    const uint16_t bad[] = {10, 4095};

    assert_int_equal(vlan_port_set_trunk(&p, 0, bad, 2), -EINVAL);
    assert_int_equal(vlan_port_set_trunk(&p, 5000, allowed, 2), -EINVAL);
    assert_int_equal(vlan_port_set_trunk(&p, 0, allowed, 2), 0);

    meta_for(&m, 10, PKT_ETHERTYPE_VLAN);
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), 0);
    assert_int_equal(in.vid, 10);
    assert_true(in.tagged);
    meta_for(&m, 11, PKT_ETHERTYPE_VLAN);
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), -EACCES);
    assert_int_equal(st.drops[VLAN_DROP_NOT_ALLOWED], 1);
    meta_for(&m, -1, 0);
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), -EACCES);
    assert_int_equal(st.drops[VLAN_DROP_UNTAGGED_NO_NATIVE], 1);
    meta_for(&m, 0xfff, PKT_ETHERTYPE_VLAN);
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), -EACCES);
    assert_int_equal(st.drops[VLAN_DROP_RESERVED_VID], 1);
    meta_for(&m, 10, PKT_ETHERTYPE_QINQ);
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), -EACCES);
    assert_int_equal(st.drops[VLAN_DROP_BAD_TPID], 1);
    p.accept_qinq = true;
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), 0);

    assert_int_equal(vlan_port_egress(&p, 20, &st, &eg), 0);
    assert_int_equal(eg, VLAN_EGRESS_TAGGED);
    assert_int_equal(vlan_port_egress(&p, 30, &st, &eg), -EACCES);

    /* native VLAN */
    assert_int_equal(vlan_port_set_trunk(&p, 99, allowed, 2), 0);
    meta_for(&m, -1, 0);
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), 0);
    assert_int_equal(in.vid, 99);
    assert_int_equal(vlan_port_egress(&p, 99, &st, &eg), 0);
    assert_int_equal(eg, VLAN_EGRESS_UNTAGGED);
    /* a frame tagged with the native VID is accepted unless strict */
    meta_for(&m, 99, PKT_ETHERTYPE_VLAN);
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), 0);
    p.strict_native = true;
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), -EACCES);
    assert_int_equal(st.drops[VLAN_DROP_NATIVE_TAGGED], 1);
    p.native_tagged = true;
    assert_int_equal(vlan_port_ingress(&p, &m, &st, &in), 0);
    assert_int_equal(vlan_port_egress(&p, 99, &st, &eg), 0);
    assert_int_equal(eg, VLAN_EGRESS_TAGGED);

    /* allow/disallow */
    assert_int_equal(vlan_port_allow(&p, 30, true), 0);
    assert_true(vlan_port_is_member(&p, 30));
    assert_int_equal(vlan_port_allow(&p, 30, false), 0);
    assert_false(vlan_port_is_member(&p, 30));
    assert_int_equal(vlan_port_allow(&p, 0, true), -EINVAL);
    struct vlan_port acc;
    vlan_port_set_access(&acc, 5);
    assert_int_equal(vlan_port_allow(&acc, 6, true), -EINVAL);
}

static void test_allow_list(void **state)
{
    struct vlan_port p;
    vlan_port_set_trunk(&p, 0, NULL, 0);
    assert_int_equal(vlan_port_allow_list(&p, "10,20-25,4094"), 0);
    for (uint16_t v = 1; v <= 4094; v++) {
        bool want = v == 10 || (v >= 20 && v <= 25) || v == 4094;
        assert_int_equal(vlan_port_is_member(&p, v), want);
    }
    /* malformed lists change nothing */
    const char *bad[] = {"", "0", "4095", "5-3", "1,,2", "1,", "a", "1-", "-1", "10 ", "99999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(vlan_port_allow_list(&p, bad[i]), bad[i][0] ? -EINVAL : 0);
        assert_false(vlan_port_is_member(&p, 5));
        assert_false(vlan_port_is_member(&p, 1));
        assert_true(vlan_port_is_member(&p, 10));
    }
}

/* Isolation: a port set sees only its VLAN. Two access ports in different
 * VLANs and a trunk carrying only one of them. */
static void test_isolation(void **state)
{
    struct vlan_port a10, a20, trunk;
    struct vlan_stats st = {0};
    struct vlan_ingress in;
    struct pkt_meta m;
    enum vlan_egress eg;
    const uint16_t t[] = {10};
    vlan_port_set_access(&a10, 10);
    vlan_port_set_access(&a20, 20);
    vlan_port_set_trunk(&trunk, 0, t, 1);

    meta_for(&m, -1, 0);
    assert_int_equal(vlan_port_ingress(&a20, &m, &st, &in), 0);
    /* a VLAN-20 frame may leave neither the VLAN-10 port nor the trunk */
    assert_int_equal(vlan_port_egress(&a10, in.vid, &st, &eg), -EACCES);
    assert_int_equal(vlan_port_egress(&trunk, in.vid, &st, &eg), -EACCES);
    assert_int_equal(vlan_port_egress(&a20, in.vid, &st, &eg), 0);
    assert_int_equal(st.egress_filtered, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_access),
        cmocka_unit_test(test_trunk),
        cmocka_unit_test(test_allow_list),
        cmocka_unit_test(test_isolation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
