/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests: packet parsing, VLAN push/pop, hashing (src/card/net/pkt.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "frames.h"
#include "pkt.h"

static void test_udp4(void **state)
{
    struct frame f;
    struct pkt_meta m;
    fr_udp4_frame(&f, MAC_B, MAC_A, "10.0.0.1", "10.0.0.2", 1234, 4321, 10);
    assert_int_equal(pkt_parse(f.p, f.len, &m), 0);
    assert_memory_equal(m.dst_mac, MAC_B, 6);
    assert_memory_equal(m.src_mac, MAC_A, 6);
    assert_int_equal(m.ethertype, PKT_ETHERTYPE_IPV4);
    assert_int_equal(m.n_vlans, 0);
    assert_int_equal(m.l3, PKT_L3_IPV4);
    assert_int_equal(m.l3_ofs, 14);
    assert_int_equal(m.l4_ofs, 34);
    assert_int_equal(m.l4_proto, PKT_IPPROTO_UDP);
    assert_int_equal(m.sport, 1234);
    assert_int_equal(m.dport, 4321);
    assert_true(m.flags & PKT_F_L4);
    assert_false(m.flags & PKT_F_MCAST);
    uint8_t ip[4];
    fr_ip4addr(ip, "10.0.0.1");
    assert_memory_equal(m.ip4.src, ip, 4);
    fr_ip4addr(ip, "10.0.0.2");
    assert_memory_equal(m.ip4.dst, ip, 4);
}

static void test_vlan_tcp4_and_padding(void **state)
{
    struct frame f;
    struct pkt_meta m;
    fr_init(&f);
    fr_eth_vlan(&f, MAC_BCAST, MAC_A, (5 << 13) | 100, PKT_ETHERTYPE_IPV4);
    fr_ipv4(&f, "1.2.3.4", "5.6.7.8", PKT_IPPROTO_TCP, 20);
    fr_tcp(&f, 80, 8080);
    fr_zero(&f, 6); /* Ethernet padding beyond the IP length */
    assert_int_equal(pkt_parse(f.p, f.len, &m), 0);
    assert_int_equal(m.n_vlans, 1);
    assert_int_equal(pkt_meta_vid(&m), 100);
    assert_int_equal(m.vlan_tci[0] >> 13, 5);
    assert_int_equal(m.l3_ofs, 18);
    assert_int_equal(m.l3_len, 40);
    assert_int_equal(m.sport, 80);
    assert_int_equal(m.dport, 8080);
    assert_true(m.flags & PKT_F_BCAST);
    assert_true(m.flags & PKT_F_MCAST);
}

static void test_qinq(void **state)
{
    struct frame f;
    struct pkt_meta m;
    fr_init(&f);
    fr_put(&f, MAC_B, 6);
    fr_put(&f, MAC_A, 6);
    fr_be16(&f, PKT_ETHERTYPE_QINQ);
    fr_be16(&f, 200);
    fr_be16(&f, PKT_ETHERTYPE_VLAN);
    fr_be16(&f, 10);
    fr_be16(&f, PKT_ETHERTYPE_ARP);
    fr_arp(&f, 1, MAC_A, "10.0.0.1", MAC_B, "10.0.0.2");
    assert_int_equal(pkt_parse(f.p, f.len, &m), 0);
    assert_int_equal(m.n_vlans, 2);
    assert_int_equal(m.vlan_tpid[0], PKT_ETHERTYPE_QINQ);
    assert_int_equal(m.vlan_tci[0], 200);
    assert_int_equal(m.vlan_tci[1], 10);
    assert_int_equal(m.l3, PKT_L3_ARP);
    assert_int_equal(m.arp_op, 1);
    assert_memory_equal(m.arp_sha, MAC_A, 6);

    /* a third tag is refused */
    fr_init(&f);
    fr_put(&f, MAC_B, 6);
    fr_put(&f, MAC_A, 6);
    for (int i = 0; i < 3; i++) {
        fr_be16(&f, PKT_ETHERTYPE_VLAN);
        fr_be16(&f, 10);
    }
    fr_be16(&f, PKT_ETHERTYPE_IPV4);
    fr_zero(&f, 40);
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_TOO_MANY_TAGS);
}

static void test_truncated_everywhere(void **state)
{
    /* Every prefix of a valid frame either parses or fails cleanly; none
     * reads out of bounds (ASan run) and the short ones report the right
     * layer. */
    struct frame f;
    struct pkt_meta m;
    fr_init(&f);
    fr_eth_vlan(&f, MAC_B, MAC_A, 7, PKT_ETHERTYPE_IPV4);
    fr_ipv4(&f, "1.1.1.1", "2.2.2.2", PKT_IPPROTO_UDP, 8 + 4);
    fr_udp(&f, 1, 2, 4);
    fr_zero(&f, 4);
    for (size_t n = 0; n < f.len; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact-size buffer for ASan */
        memcpy(copy, f.p, n);
        int rc = pkt_parse(copy, n, &m);
        assert_int_equal(rc, -EINVAL);
        if (n < 14)
            assert_int_equal(m.bad, PKT_BAD_TRUNC_ETH);
        else if (n < 18)
            assert_int_equal(m.bad, PKT_BAD_TRUNC_VLAN);
        else if (n < 18 + 20)
            assert_int_equal(m.bad, PKT_BAD_IPV4_HDR);
        else
            assert_int_equal(m.bad, PKT_BAD_IPV4_LEN);
        free(copy);
    }
    assert_int_equal(pkt_parse(f.p, f.len, &m), 0);
}

static void test_oversize(void **state)
{
    uint8_t *big = calloc(1, PKT_MAX_FRAME + 1);
    struct pkt_meta m;
    memcpy(big, MAC_B, 6);
    assert_int_equal(pkt_parse(big, PKT_MAX_FRAME + 1, &m), -EMSGSIZE);
    assert_int_equal(m.bad, PKT_BAD_OVERSIZE);
    assert_int_equal(pkt_parse(big, PKT_MAX_FRAME, &m), 0); /* ethertype 0: L2 only */
    assert_int_equal(m.l3, PKT_L3_NONE);
    free(big);
}

static void test_bad_ipv4(void **state)
{
    struct frame f;
    struct pkt_meta m;

    /* IHL 4 */
    fr_udp4_frame(&f, MAC_B, MAC_A, "1.1.1.1", "2.2.2.2", 1, 2, 0);
    f.p[14] = 0x44;
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_IPV4_HDR);
    /* L2 fields are still valid after an L3 error */
    assert_memory_equal(m.src_mac, MAC_A, 6);

    /* IHL larger than the frame */
    fr_udp4_frame(&f, MAC_B, MAC_A, "1.1.1.1", "2.2.2.2", 1, 2, 0);
    f.p[14] = 0x4f;
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_IPV4_HDR);

    /* total length beyond the frame */
    fr_udp4_frame(&f, MAC_B, MAC_A, "1.1.1.1", "2.2.2.2", 1, 2, 0);
    pkt_put_be16(f.p + 16, 200);
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_IPV4_LEN);

    /* total length below IHL */
    pkt_put_be16(f.p + 16, 10);
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_IPV4_LEN);

    /* version 6 in an IPv4 ethertype */
    fr_udp4_frame(&f, MAC_B, MAC_A, "1.1.1.1", "2.2.2.2", 1, 2, 0);
    f.p[14] = 0x65;
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_IPV4_HDR);

    /* UDP length larger than the IP payload */
    fr_udp4_frame(&f, MAC_B, MAC_A, "1.1.1.1", "2.2.2.2", 1, 2, 4);
    pkt_put_be16(f.p + 34 + 4, 100);
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_L4_TRUNC);
    /* UDP length below its header */
    pkt_put_be16(f.p + 34 + 4, 7);
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);

    /* TCP data offset beyond the segment */
    fr_init(&f);
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV4);
    fr_ipv4(&f, "1.1.1.1", "2.2.2.2", PKT_IPPROTO_TCP, 20);
    fr_tcp(&f, 1, 2);
    f.p[34 + 12] = 0xf0;
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_L4_TRUNC);
}

static void test_fragments(void **state)
{
    struct frame f;
    struct pkt_meta m;
    fr_udp4_frame(&f, MAC_B, MAC_A, "1.1.1.1", "2.2.2.2", 1, 2, 16);
    pkt_put_be16(f.p + 20, 0x2000); /* MF, offset 0: first fragment */
    assert_int_equal(pkt_parse(f.p, f.len, &m), 0);
    assert_true(m.flags & PKT_F_IP_FRAG);
    assert_true(m.flags & PKT_F_L4);
    pkt_put_be16(f.p + 20, 0x0003); /* offset 24: later fragment, bytes are data */
    assert_int_equal(pkt_parse(f.p, f.len, &m), 0);
    assert_true(m.flags & PKT_F_IP_LATER_FRAG);
    assert_false(m.flags & PKT_F_L4);
}

static void test_ipv6_nd_and_ext(void **state)
{
    struct frame f;
    struct pkt_meta m;

    fr_init(&f);
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "fe80::1", "ff02::1:ff00:2", PKT_IPPROTO_ICMPV6, 32);
    fr_nd(&f, 135, "2001:db8::2", MAC_A);
    assert_int_equal(pkt_parse(f.p, f.len, &m), 0);
    assert_int_equal(m.l3, PKT_L3_IPV6);
    assert_int_equal(m.l4_proto, PKT_IPPROTO_ICMPV6);
    assert_true(m.flags & PKT_F_ND);
    assert_true(m.nd_lla_present);
    assert_memory_equal(m.nd_lla, MAC_A, 6);
    uint8_t t[16];
    fr_ip6addr(t, "2001:db8::2");
    assert_memory_equal(m.nd_target, t, 16);

    /* ND option with length 0 is malformed (RFC 4861) */
    f.p[14 + 40 + 24 + 1] = 0;
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_L4_TRUNC);

    /* hop-by-hop + UDP */
    fr_init(&f);
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "2001:db8::1", "2001:db8::2", 0, 8 + 8);
    fr_u8(&f, PKT_IPPROTO_UDP);
    fr_u8(&f, 0);
    fr_zero(&f, 6);
    fr_udp(&f, 546, 547, 0);
    assert_int_equal(pkt_parse(f.p, f.len, &m), 0);
    assert_int_equal(m.l4_proto, PKT_IPPROTO_UDP);
    assert_int_equal(m.l4_ofs, 14 + 40 + 8);
    assert_int_equal(m.dport, 547);

    /* extension header length pointing past the payload */
    f.p[14 + 40 + 1] = 5;
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_IPV6_EXT);

    /* payload length beyond the frame */
    fr_init(&f);
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "2001:db8::1", "2001:db8::2", PKT_IPPROTO_UDP, 100);
    fr_udp(&f, 1, 2, 0);
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_IPV6_LEN);

    /* an endless chain of extension headers */
    fr_init(&f);
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "2001:db8::1", "2001:db8::2", 60, 8 * 20);
    for (int i = 0; i < 20; i++) {
        fr_u8(&f, 60);
        fr_zero(&f, 7);
    }
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_IPV6_EXT);
}

static void test_bad_arp(void **state)
{
    struct frame f;
    struct pkt_meta m;
    fr_init(&f);
    fr_eth(&f, MAC_BCAST, MAC_A, PKT_ETHERTYPE_ARP);
    fr_arp(&f, 1, MAC_A, "10.0.0.1", MAC_B, "10.0.0.2");
    assert_int_equal(pkt_parse(f.p, f.len, &m), 0);
    f.p[14 + 4] = 8; /* hlen 8 */
    assert_int_equal(pkt_parse(f.p, f.len, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_ARP);
    f.p[14 + 4] = 6;
    assert_int_equal(pkt_parse(f.p, f.len - 1, &m), -EINVAL);
    assert_int_equal(m.bad, PKT_BAD_ARP);
}

static void test_vlan_push_pop(void **state)
{
    struct frame f;
    struct pkt_meta m;
    fr_udp4_frame(&f, MAC_B, MAC_A, "1.1.1.1", "2.2.2.2", 1, 2, 10);
    uint8_t orig[128];
    size_t olen = f.len;
    memcpy(orig, f.p, olen);

    uint8_t *p = f.p;
    size_t len = f.len;
    assert_int_equal(pkt_vlan_push(&p, &len, (size_t)(p - f.buf), PKT_ETHERTYPE_VLAN, 42), 0);
    assert_int_equal(len, olen + 4);
    assert_ptr_equal(p, f.p - 4);
    assert_int_equal(pkt_parse(p, len, &m), 0);
    assert_int_equal(pkt_meta_vid(&m), 42);
    assert_memory_equal(m.dst_mac, MAC_B, 6);
    assert_int_equal(m.sport, 1);

    uint16_t tci = 0;
    assert_int_equal(pkt_vlan_pop(&p, &len, &tci), 0);
    assert_int_equal(tci, 42);
    assert_int_equal(len, olen);
    assert_memory_equal(p, orig, olen);
    assert_int_equal(pkt_vlan_pop(&p, &len, &tci), -ENOENT);

    /* no headroom */
    assert_int_equal(pkt_vlan_push(&p, &len, 3, PKT_ETHERTYPE_VLAN, 1), -ENOSPC);
    /* a tag would make the frame too big */
    size_t big = PKT_MAX_FRAME - 2;
    assert_int_equal(pkt_vlan_push(&p, &big, 4, PKT_ETHERTYPE_VLAN, 1), -EMSGSIZE);
    size_t tiny = 13;
    assert_int_equal(pkt_vlan_push(&p, &tiny, 4, PKT_ETHERTYPE_VLAN, 1), -EINVAL);
    /* truncated tag */
    size_t l2 = 15;
    uint8_t tagged[15];
    memcpy(tagged, orig, 12);
    pkt_put_be16(tagged + 12, PKT_ETHERTYPE_VLAN);
    uint8_t *tp = tagged;
    assert_int_equal(pkt_vlan_pop(&tp, &l2, NULL), -EINVAL);
}

static void test_hash(void **state)
{
    struct frame f, r;
    struct pkt_meta m, mr;
    fr_udp4_frame(&f, MAC_B, MAC_A, "10.0.0.1", "10.0.0.2", 1000, 2000, 0);
    fr_udp4_frame(&r, MAC_A, MAC_B, "10.0.0.2", "10.0.0.1", 2000, 1000, 0);
    assert_int_equal(pkt_parse(f.p, f.len, &m), 0);
    assert_int_equal(pkt_parse(r.p, r.len, &mr), 0);
    for (int lvl = PKT_HASH_L2; lvl <= PKT_HASH_L4; lvl++)
        assert_int_equal(pkt_hash(&m, lvl, 7), pkt_hash(&mr, lvl, 7)); /* symmetric */

    /* L4 distinguishes ports, L3 does not, L2 ignores IPs */
    struct frame g;
    struct pkt_meta mg;
    fr_udp4_frame(&g, MAC_B, MAC_A, "10.0.0.1", "10.0.0.2", 1001, 2000, 0);
    assert_int_equal(pkt_parse(g.p, g.len, &mg), 0);
    assert_int_equal(pkt_hash(&m, PKT_HASH_L3, 7), pkt_hash(&mg, PKT_HASH_L3, 7));
    assert_int_not_equal(pkt_hash(&m, PKT_HASH_L4, 7), pkt_hash(&mg, PKT_HASH_L4, 7));
    fr_udp4_frame(&g, MAC_B, MAC_A, "10.0.0.9", "10.0.0.2", 1000, 2000, 0);
    assert_int_equal(pkt_parse(g.p, g.len, &mg), 0);
    assert_int_equal(pkt_hash(&m, PKT_HASH_L2, 7), pkt_hash(&mg, PKT_HASH_L2, 7));
    assert_int_not_equal(pkt_hash(&m, PKT_HASH_L3, 7), pkt_hash(&mg, PKT_HASH_L3, 7));

    /* many flows spread over 4 buckets roughly evenly */
    unsigned cnt[4] = {0};
    for (int i = 0; i < 4000; i++) {
        fr_udp4_frame(&g, MAC_B, MAC_A, "10.0.0.1", "10.0.0.2", (uint16_t)(1000 + i), 80, 0);
        assert_int_equal(pkt_parse(g.p, g.len, &mg), 0);
        cnt[pkt_hash(&mg, PKT_HASH_L4, 1) % 4]++;
    }
    for (int i = 0; i < 4; i++)
        assert_in_range(cnt[i], 800, 1200);
}

static void test_csum(void **state)
{
    /* RFC 1071 example bytes: 00 01 f2 03 f4 f5 f6 f7 -> sum 0xddf2, csum 0x220d */
    const uint8_t b[8] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
    assert_int_equal(pkt_csum(b, 8), 0x220d);
    /* a header with its checksum filled in sums to zero */
    struct frame f;
    fr_udp4_frame(&f, MAC_B, MAC_A, "192.168.1.1", "192.168.1.2", 1, 2, 0);
    assert_int_equal(pkt_csum(f.p + 14, 20), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_udp4),      cmocka_unit_test(test_vlan_tcp4_and_padding),
        cmocka_unit_test(test_qinq),      cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_oversize),  cmocka_unit_test(test_bad_ipv4),
        cmocka_unit_test(test_fragments), cmocka_unit_test(test_ipv6_nd_and_ext),
        cmocka_unit_test(test_bad_arp),   cmocka_unit_test(test_vlan_push_pop),
        cmocka_unit_test(test_hash),      cmocka_unit_test(test_csum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
