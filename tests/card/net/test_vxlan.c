/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests: VXLAN encap/decap and VTEP table (src/card/net/vxlan.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "frames.h"
#include "vxlan.h"

#define SEC 1000000000ull

static void tunnel(struct vxlan_tunnel *t)
{
    memset(t, 0, sizeof(*t));
    memcpy(t->local_mac, MAC_A, 6);
    memcpy(t->nexthop_mac, MAC_B, 6);
    fr_ip4addr(t->local_ip, "192.168.0.1");
}

/* An encapsulated frame: inner UDP frame C -> A with `payload` bytes. */
static void encapped(struct frame *f, uint32_t vni, size_t payload)
{
    struct vxlan_tunnel t;
    uint8_t remote[4];
    tunnel(&t);
    fr_ip4addr(remote, "192.168.0.2");
    fr_udp4_frame(f, MAC_A, MAC_C, "10.0.0.3", "10.0.0.1", 5, 6, payload);
    assert_int_equal(
        vxlan_encap(&t, &f->p, &f->len, (size_t)(f->p - f->buf), remote, vni, 77, NULL), 0);
}

static void test_encap_layout(void **state)
{
    struct frame f;
    struct pkt_meta m;
    struct vxlan_stats st = {0};
    struct vxlan_tunnel t;
    uint8_t remote[4], inner[256];
    tunnel(&t);
    fr_ip4addr(remote, "192.168.0.2");
    fr_udp4_frame(&f, MAC_A, MAC_C, "10.0.0.3", "10.0.0.1", 5, 6, 20);
    size_t ilen = f.len;
    memcpy(inner, f.p, ilen);

    assert_int_equal(vxlan_encap(&t, &f.p, &f.len, 49, remote, 100, 5, &st), -ENOSPC);
    assert_int_equal(vxlan_encap(&t, &f.p, &f.len, 128, remote, 1u << 24, 5, &st), -EINVAL);
    uint8_t mcast[4] = {239, 1, 1, 1};
    assert_int_equal(vxlan_encap(&t, &f.p, &f.len, 128, mcast, 100, 5, &st), -EINVAL);
    size_t huge = 65535 - 20 - 8 - 8 + 1; /* outer IPv4 length would exceed 65535 */
    assert_int_equal(vxlan_encap(&t, &f.p, &huge, 128, remote, 100, 5, &st), -EMSGSIZE);
    size_t short_len = 10;
    uint8_t *sp = f.p;
    assert_int_equal(vxlan_encap(&t, &sp, &short_len, 128, remote, 100, 5, &st), -EINVAL);

    assert_int_equal(vxlan_encap(&t, &f.p, &f.len, 128, remote, 0x123456, 12345, &st), 0);
    assert_int_equal(f.len, ilen + VXLAN_ENCAP_LEN);
    assert_int_equal(st.encap_pkts, 1);
    /* the outer frame is a valid UDP/IPv4 frame */
    assert_int_equal(pkt_parse(f.p, f.len, &m), 0);
    assert_memory_equal(m.dst_mac, MAC_B, 6);
    assert_memory_equal(m.src_mac, MAC_A, 6);
    assert_memory_equal(m.ip4.src, t.local_ip, 4);
    assert_memory_equal(m.ip4.dst, remote, 4);
    assert_int_equal(m.l4_proto, PKT_IPPROTO_UDP);
    assert_int_equal(m.dport, 4789);
    assert_int_equal(m.sport, 49152 + 12345 % 16384);
    assert_int_equal(m.ip_ttl, 64);
    assert_int_equal(pkt_csum(f.p + 14, 20), 0);               /* header checksum right */
    assert_int_equal(pkt_get_be16(f.p + 20) & 0x4000, 0x4000); /* DF */
    const uint8_t vx[8] = {0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0};
    assert_memory_equal(f.p + 42, vx, 8);
    assert_memory_equal(f.p + 50, inner, ilen);

    struct vxlan_decap_result r;
    assert_int_equal(vxlan_decap(f.p, f.len, 0, &r, &st), 0);
    assert_int_equal(r.vni, 0x123456);
    assert_memory_equal(r.remote_ip, t.local_ip, 4);
    assert_int_equal(r.inner_ofs, 50);
    assert_int_equal(r.inner_len, ilen);
    assert_memory_equal(f.p + r.inner_ofs, inner, ilen);
    assert_int_equal(st.decap_pkts, 0); /* the caller counts it, knowing the VNI */
    for (int i = 0; i < VXLAN_BAD__MAX; i++)
        assert_int_equal(st.bad[i], 0);
    /* another configured port does not match */
    assert_int_equal(vxlan_decap(f.p, f.len, 8472, &r, &st), -EBADMSG);
    assert_int_equal(st.bad[VXLAN_BAD_PORT], 1);
}

static void expect_bad(struct frame *f, enum vxlan_bad want)
{
    struct vxlan_stats st = {0};
    struct vxlan_decap_result r;
    assert_int_equal(vxlan_decap(f->p, f->len, 0, &r, &st), -EBADMSG);
    for (int i = 0; i < VXLAN_BAD__MAX; i++)
        assert_int_equal(st.bad[i], i == (int)want);
}

static void test_decap_malformed(void **state)
{
    struct frame f;

    encapped(&f, 5, 10);
    f.p[42] = 0x00; /* I flag clear */
    expect_bad(&f, VXLAN_BAD_FLAGS);
    encapped(&f, 5, 10);
    f.p[42] = 0x88; /* extra flag bit */
    expect_bad(&f, VXLAN_BAD_FLAGS);
    encapped(&f, 5, 10);
    f.p[43] = 0x01; /* reserved */
    expect_bad(&f, VXLAN_BAD_RESERVED);
    encapped(&f, 5, 10);
    f.p[49] = 0xff; /* reserved after the VNI */
    expect_bad(&f, VXLAN_BAD_RESERVED);

    /* UDP length disagrees with the IP length (shorter: trailing junk) */
    encapped(&f, 5, 10);
    pkt_put_be16(f.p + 38, (uint16_t)(pkt_get_be16(f.p + 38) - 4));
    expect_bad(&f, VXLAN_BAD_UDP_LEN);
    /* longer than the IP payload */
    encapped(&f, 5, 10);
    pkt_put_be16(f.p + 38, (uint16_t)(pkt_get_be16(f.p + 38) + 4));
    expect_bad(&f, VXLAN_BAD_UDP_LEN);

    /* not UDP / fragment / not IPv4 */
    encapped(&f, 5, 10);
    f.p[23] = PKT_IPPROTO_TCP;
    expect_bad(&f, VXLAN_BAD_NOT_UDP);
    encapped(&f, 5, 10);
    pkt_put_be16(f.p + 20, 0x2000);
    expect_bad(&f, VXLAN_BAD_NOT_UDP);
    encapped(&f, 5, 10);
    pkt_put_be16(f.p + 12, PKT_ETHERTYPE_IPV6);
    expect_bad(&f, VXLAN_BAD_NOT_IPV4);
    encapped(&f, 5, 10);
    f.p[14] = 0x46; /* IHL says options that are not there: header garbage */
    pkt_put_be16(f.p + 16, 20);
    expect_bad(&f, VXLAN_BAD_NOT_IPV4);

    /* inner frame shorter than an Ethernet header */
    fr_init(&f);
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV4);
    fr_ipv4(&f, "192.168.0.2", "192.168.0.1", PKT_IPPROTO_UDP, 8 + 8 + 10);
    fr_udp(&f, 50000, 4789, 8 + 10);
    const uint8_t vx[8] = {0x08, 0, 0, 0, 0, 0, 5, 0};
    fr_put(&f, vx, 8);
    fr_zero(&f, 10);
    expect_bad(&f, VXLAN_BAD_INNER);
    /* no room for the VXLAN header at all */
    fr_init(&f);
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV4);
    fr_ipv4(&f, "192.168.0.2", "192.168.0.1", PKT_IPPROTO_UDP, 8 + 4);
    fr_udp(&f, 50000, 4789, 4);
    fr_zero(&f, 4);
    expect_bad(&f, VXLAN_BAD_TRUNC);

    /* every truncation of a good frame is rejected without reading past it */
    encapped(&f, 5, 10);
    for (size_t n = 0; n < f.len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, f.p, n);
        struct vxlan_decap_result r;
        assert_int_equal(vxlan_decap(copy, n, 0, &r, NULL), -EBADMSG);
        free(copy);
    }
}

static void test_vtep_table(void **state)
{
    struct vxlan_vtep_table vt;
    uint8_t ip1[4], ip2[4], ip3[4], out[4], zero[4] = {0};
    fr_ip4addr(ip1, "192.168.0.2");
    fr_ip4addr(ip2, "192.168.0.3");
    fr_ip4addr(ip3, "192.168.0.4");
    assert_int_equal(vxlan_vtep_init(&vt, 1000, 300 * SEC, 1), 0);

    assert_int_equal(vxlan_vtep_add_vni(&vt, 0), -EINVAL);
    assert_int_equal(vxlan_vtep_add_vni(&vt, 1u << 24), -EINVAL);
    assert_int_equal(vxlan_vtep_add_vni(&vt, 100), 0);
    assert_int_equal(vxlan_vtep_add_vni(&vt, 100), -EEXIST);
    assert_int_equal(vxlan_vtep_add_vni(&vt, 200), 0);
    assert_true(vxlan_vtep_has_vni(&vt, 100));
    assert_false(vxlan_vtep_has_vni(&vt, 300));

    assert_int_equal(vxlan_vtep_add_flood(&vt, 300, ip1), -ENOENT);
    assert_int_equal(vxlan_vtep_add_flood(&vt, 100, zero), -EINVAL);
    assert_int_equal(vxlan_vtep_add_flood(&vt, 100, ip1), 0);
    assert_int_equal(vxlan_vtep_add_flood(&vt, 100, ip2), 0);
    assert_int_equal(vxlan_vtep_add_flood(&vt, 100, ip2), -EEXIST);
    assert_int_equal(vxlan_vtep_add_flood(&vt, 200, ip3), 0);
    const struct vxlan_vni *v = vxlan_vtep_get_vni(&vt, 100);
    assert_non_null(v);
    assert_int_equal(v->n_flood, 2);
    assert_int_equal(vxlan_vtep_del_flood(&vt, 100, ip1), 0);
    assert_int_equal(vxlan_vtep_del_flood(&vt, 100, ip1), -ENOENT);
    assert_int_equal(v->n_flood, 1);
    assert_memory_equal(v->flood[0], ip2, 4);

    /* learning is per VNI */
    assert_int_equal(vxlan_vtep_learn(&vt, 300, MAC_C, ip1, 0), -ENOENT);
    assert_int_equal(vxlan_vtep_learn(&vt, 100, MAC_C, ip1, 0), MAC_LEARN_NEW);
    assert_int_equal(vxlan_vtep_lookup(&vt, 100, MAC_C, out), 0);
    assert_memory_equal(out, ip1, 4);
    assert_int_equal(vxlan_vtep_lookup(&vt, 200, MAC_C, out), -ENOENT);
    assert_int_equal(vxlan_vtep_learn(&vt, 100, MAC_C, ip2, SEC), MAC_LEARN_MOVED);
    assert_int_equal(vxlan_vtep_lookup(&vt, 100, MAC_C, out), 0);
    assert_memory_equal(out, ip2, 4);
    assert_int_equal(vxlan_vtep_learn(&vt, 200, MAC_C, ip3, SEC), MAC_LEARN_NEW);

    /* deleting a VNI forgets its MACs, not the other VNI's */
    assert_int_equal(vxlan_vtep_del_vni(&vt, 100), 0);
    assert_int_equal(vxlan_vtep_del_vni(&vt, 100), -ENOENT);
    assert_int_equal(vxlan_vtep_lookup(&vt, 100, MAC_C, out), -ENOENT);
    assert_int_equal(vxlan_vtep_lookup(&vt, 200, MAC_C, out), 0);
    assert_memory_equal(out, ip3, 4);
    assert_null(vxlan_vtep_get_vni(&vt, 100));
    vxlan_vtep_destroy(&vt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encap_layout),
        cmocka_unit_test(test_decap_malformed),
        cmocka_unit_test(test_vtep_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
