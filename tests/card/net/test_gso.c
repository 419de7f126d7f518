/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests: software TCP and UDP segmentation (src/card/net/gso.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gso.h"
#include "pkt.h"

#define SEQ0  0xfffff000u /* wraps inside the frame */
#define ID0   0xfffe
#define TCPHL 32 /* 20 + 12 bytes of options (NOP, NOP, timestamps) */

struct gframe {
    uint8_t buf[GSO_MAX_FRAME];
    uint32_t len;
    struct gso_hdr h;
};

/* A TCP frame A -> B with `payload` bytes (byte i = i * 7 + 3), TCP flags `tflags`, an
 * optional 802.1Q tag, and the virtio header a driver would send with it. */
static void build(struct gframe *g, bool v6, bool tagged, uint32_t payload, uint8_t tflags,
                  uint16_t mss)
{
    static const uint8_t a[6] = {0x52, 0x54, 0, 0, 0, 1}, b[6] = {0x52, 0x54, 0, 0, 0, 2};
    uint8_t *p = g->buf;
    uint32_t l3, l4;

    memset(g, 0, sizeof(*g));
    memcpy(p, b, 6);
    memcpy(p + 6, a, 6);
    l3 = 12;
    if (tagged) {
        pkt_put_be16(p + 12, PKT_ETHERTYPE_VLAN);
        pkt_put_be16(p + 14, 0x2000 | 42);
        l3 += 4;
    }
    pkt_put_be16(p + l3, v6 ? PKT_ETHERTYPE_IPV6 : PKT_ETHERTYPE_IPV4);
    l3 += 2;
    if (!v6) {
        uint8_t *ip = p + l3;
        ip[0] = 0x45;
        ip[1] = 0x02; /* ECT(0) */
        pkt_put_be16(ip + 2, (uint16_t)(20 + TCPHL + payload));
        pkt_put_be16(ip + 4, ID0);
        pkt_put_be16(ip + 6, 0x4000); /* DF */
        ip[8] = 64;
        ip[9] = PKT_IPPROTO_TCP;
        ip[12] = 10, ip[15] = 1;
        ip[16] = 10, ip[19] = 2;
        l4 = l3 + 20;
    } else {
        uint8_t *ip = p + l3;
        ip[0] = 0x60;
        pkt_put_be16(ip + 4, (uint16_t)(TCPHL + payload));
        ip[6] = PKT_IPPROTO_TCP;
        ip[7] = 64;
        ip[8] = 0x20, ip[9] = 0x01, ip[23] = 1;
        ip[24] = 0x20, ip[25] = 0x01, ip[39] = 2;
        l4 = l3 + 40;
    }
    pkt_put_be16(p + l4, 40000);
    pkt_put_be16(p + l4 + 2, 5201);
    pkt_put_be32(p + l4 + 4, SEQ0);
    pkt_put_be32(p + l4 + 8, 0x12345678);
    p[l4 + 12] = (TCPHL / 4) << 4;
    p[l4 + 13] = (uint8_t)(0x10 | tflags); /* ACK + */
    pkt_put_be16(p + l4 + 14, 65535);
    p[l4 + 20] = 1, p[l4 + 21] = 1, p[l4 + 22] = 8, p[l4 + 23] = 10;
    pkt_put_be32(p + l4 + 24, 1000);
    pkt_put_be32(p + l4 + 28, 2000);
    for (uint32_t i = 0; i < payload; i++)
        p[l4 + TCPHL + i] = (uint8_t)(i * 7 + 3);
    g->len = l4 + TCPHL + payload;
    g->h.gso_type = v6 ? GSO_TYPE_TCPV6 : GSO_TYPE_TCPV4;
    g->h.needs_csum = true;
    g->h.hdr_len = (uint16_t)(l4 + TCPHL);
    g->h.gso_size = mss;
    g->h.csum_start = (uint16_t)l4;
    g->h.csum_offset = 16;
}

/* The IP header of a frame from build()/build_udp(): behind a tag or not. */
static uint32_t l3_of(const struct gframe *f)
{
    return pkt_get_be16(f->buf + 12) == PKT_ETHERTYPE_VLAN ? 18 : 14;
}

/* Put n bytes between the fixed IP header and the L4 header of a frame from build() or
 * build_udp(), fixing lengths, csum_start and hdr_len: IPv4 options (n a multiple of 4),
 * or IPv6 extension headers (the caller chains their next headers; ip[6] names the
 * first). */
static void insert_ip_opts(struct gframe *f, bool v6, const uint8_t *opts, uint32_t n)
{
    uint32_t l3 = l3_of(f), at = l3 + (v6 ? 40 : 20);
    uint8_t *ip = f->buf + l3;

    memmove(f->buf + at + n, f->buf + at, f->len - at);
    memcpy(f->buf + at, opts, n);
    f->len += n;
    if (!v6) {
        ip[0] = (uint8_t)(0x40 | ((20 + n) / 4));
        pkt_put_be16(ip + 2, (uint16_t)(pkt_get_be16(ip + 2) + n));
    } else {
        pkt_put_be16(ip + 4, (uint16_t)(pkt_get_be16(ip + 4) + n));
    }
    f->h.csum_start = (uint16_t)(f->h.csum_start + n);
    f->h.hdr_len = (uint16_t)(f->h.hdr_len + n);
}

/* Checksum verification written independently of gso.c: a pseudo header laid out in
 * a buffer, then the RFC 1071 sum over it and the L4 segment (TCP or UDP) must be 0. */
static bool l4_csum_ok(const uint8_t *f, uint32_t l3, uint32_t l4, uint32_t len, bool v6,
                       uint8_t proto)
{
    static uint8_t buf[40 + 65536];
    uint32_t tl = len - l4, n;
    memset(buf, 0, 40);
    if (!v6) {
        memcpy(buf, f + l3 + 12, 8);
        buf[9] = proto;
        pkt_put_be16(buf + 10, (uint16_t)tl);
        n = 12;
    } else {
        memcpy(buf, f + l3 + 8, 32);
        pkt_put_be32(buf + 32, tl);
        buf[39] = proto;
        n = 40;
    }
    memcpy(buf + n, f + l4, tl);
    return pkt_csum(buf, n + tl) == 0;
}

static bool tcp_csum_ok(const uint8_t *f, uint32_t l3, uint32_t l4, uint32_t len, bool v6)
{
    return l4_csum_ok(f, l3, l4, len, v6, PKT_IPPROTO_TCP);
}

/* The IP header of segment i (n bytes) of frame f: lengths, the IPv4 ID and header
 * checksum (options included), and the IPv4 options / IPv6 extension headers between l3
 * and l4 repeated unchanged. */
static void check_seg_ip(const uint8_t *seg, uint32_t n, const struct gframe *f, uint32_t l3,
                         uint32_t l4, bool v6, unsigned i)
{
    uint32_t fixed = v6 ? 40 : 20;

    if (!v6) {
        assert_int_equal(pkt_get_be16(seg + l3 + 2), n - l3);
        assert_int_equal(pkt_get_be16(seg + l3 + 4), (uint16_t)(ID0 + i));
        assert_int_equal(pkt_csum(seg + l3, l4 - l3), 0);
    } else {
        assert_int_equal(pkt_get_be16(seg + l3 + 4), n - l3 - 40);
    }
    assert_memory_equal(seg + l3 + fixed, f->buf + l3 + fixed, l4 - l3 - fixed);
}

/* Segment g and check every segment; returns the segment count. */
static unsigned check_segments(const struct gframe *g, bool v6, bool partial)
{
    static uint8_t seg[PKT_MAX_FRAME], joined[65536];
    struct gso_info gi;
    uint32_t joined_len = 0, l3, l4, hl, payload;
    uint8_t oflags;

    assert_int_equal(
        gso_validate(g->buf, g->len, &g->h, GSO_ALLOW_TCPV4 | GSO_ALLOW_TCPV6 | GSO_ALLOW_ECN, &gi),
        0);
    l4 = g->h.csum_start;
    l3 = l3_of(g);
    hl = l4 + TCPHL;
    payload = g->len - hl;
    oflags = g->buf[l4 + 13];
    assert_int_equal(gi.l3_ofs, l3);
    assert_int_equal(gi.l4_ofs, l4);
    assert_int_equal(gi.hdr_len, hl);
    assert_int_equal(gi.payload, payload);
    assert_int_equal(gi.n_segs, payload ? (payload + g->h.gso_size - 1) / g->h.gso_size : 1);
    assert_int_equal(gi.wire_len, gi.n_segs * hl + payload);
    for (unsigned i = 0; i < gi.n_segs; i++) {
        int n = gso_segment(g->buf, &gi, i, partial, seg, sizeof(seg));
        struct pkt_meta m;
        uint32_t plen;
        uint8_t fl;

        assert_true(n > (int)hl || (n == (int)hl && !payload));
        assert_int_equal((uint32_t)n, gso_segment_len(&gi, i));
        plen = (uint32_t)n - hl;
        assert_true(plen <= g->h.gso_size);
        if (i + 1 < gi.n_segs)
            assert_int_equal(plen, g->h.gso_size);
        /* The segment is an ordinary frame for the parser. */
        assert_int_equal(pkt_parse(seg, (size_t)n, &m), 0);
        assert_int_equal(m.l4_proto, PKT_IPPROTO_TCP);
        assert_int_equal(m.l3_len, (uint32_t)n - l3);
        assert_int_equal(m.n_vlans, l3 == 18 ? 1 : 0);
        assert_memory_equal(seg, g->buf, 12); /* MACs */
        check_seg_ip(seg, (uint32_t)n, g, l3, l4, v6, i);
        if (!v6)
            assert_int_equal(seg[l3 + 1], 0x02); /* TOS/ECN kept */
        assert_int_equal(m.l4_ofs, l4);
        /* Sequence continuity: each segment starts where the previous ended. */
        assert_int_equal(pkt_get_be32(seg + l4 + 4), (uint32_t)(SEQ0 + joined_len));
        assert_int_equal(pkt_get_be32(seg + l4 + 8), 0x12345678);
        assert_memory_equal(seg + l4 + 20, g->buf + l4 + 20, TCPHL - 20); /* options */
        fl = seg[l4 + 13];
        assert_int_equal(fl & 0x10, 0x10);                                     /* ACK everywhere */
        assert_int_equal(fl & 0x01, i + 1 == gi.n_segs ? (oflags & 0x01) : 0); /* FIN */
        assert_int_equal(fl & 0x08, i + 1 == gi.n_segs ? (oflags & 0x08) : 0); /* PSH */
        assert_int_equal(fl & 0x80, i == 0 ? (oflags & 0x80) : 0);             /* CWR */
        if (partial) {
            /* Complete it as a receiver would: sum from csum_start, store at +16. */
            assert_false(tcp_csum_ok(seg, l3, l4, (uint32_t)n, v6));
            pkt_put_be16(seg + l4 + 16, pkt_csum(seg + l4, (uint32_t)n - l4));
        }
        assert_true(tcp_csum_ok(seg, l3, l4, (uint32_t)n, v6));
        memcpy(joined + joined_len, seg + hl, plen);
        joined_len += plen;
    }
    assert_int_equal(joined_len, payload);
    assert_memory_equal(joined, g->buf + hl, payload);
    return gi.n_segs;
}

static struct gframe g;

static void test_ipv4(void **state)
{
    (void)state;
    build(&g, false, false, 30000, 0x08 | 0x01 | 0x80, 1448); /* PSH FIN CWR */
    assert_int_equal(check_segments(&g, false, false), 21);   /* 30000 / 1448: 20 + 1 */
    build(&g, false, false, 1448 * 4, 0x08, 1448);            /* exact multiple */
    assert_int_equal(check_segments(&g, false, false), 4);
    build(&g, false, false, 65535 - 20 - TCPHL, 0x08, 1000); /* the largest IPv4 frame */
    assert_int_equal(check_segments(&g, false, false), 66);
    build(&g, false, false, 100, 0x08 | 0x01, 1448); /* smaller than one MSS: one segment */
    assert_int_equal(check_segments(&g, false, false), 1);
    build(&g, false, false, 0, 0x01 | 0x80, 1448); /* no payload (a FIN): one segment */
    assert_int_equal(check_segments(&g, false, false), 1);
}

static void test_ipv6(void **state)
{
    (void)state;
    build(&g, true, false, 30001, 0x08 | 0x80, 1428);
    assert_int_equal(check_segments(&g, true, false), 22);
    build(&g, true, false, 65535 - TCPHL, 0x01, 8000); /* jumbo segments */
    assert_int_equal(check_segments(&g, true, false), 9);
}

static void test_vlan_tagged(void **state)
{
    (void)state;
    build(&g, false, true, 10000, 0x08 | 0x01 | 0x80, 1448);
    assert_int_equal(check_segments(&g, false, false), 7);
    build(&g, true, true, 10000, 0x08, 1448);
    assert_int_equal(check_segments(&g, true, false), 7);
}

static void test_partial_csum(void **state)
{
    (void)state;
    build(&g, false, true, 5000, 0x08, 1448);
    assert_int_equal(check_segments(&g, false, true), 4);
    build(&g, true, false, 5000, 0x08 | 0x80, 1448);
    assert_int_equal(check_segments(&g, true, true), 4);
}

static void test_segment_bounds(void **state)
{
    static uint8_t out[PKT_MAX_FRAME];
    struct gso_info gi;
    (void)state;
    build(&g, false, false, 3000, 0, 1448);
    assert_int_equal(gso_validate(g.buf, g.len, &g.h, GSO_ALLOW_TCPV4, &gi), 0);
    assert_int_equal(gso_segment(g.buf, &gi, 3, false, out, sizeof(out)), -EINVAL);
    assert_int_equal(gso_segment(g.buf, &gi, 0, false, out, 100), -ENOSPC);
    assert_int_equal(gso_segment_len(&gi, 2), 66 + 104);
}

/* Expect gso_validate to refuse with reason `bad`. */
static void refuse(const struct gframe *f, unsigned allow, enum gso_bad bad)
{
    struct gso_info gi;
    assert_int_equal(gso_validate(f->buf, f->len, &f->h, allow, &gi), -EINVAL);
    assert_string_equal(gso_bad_name(gi.bad), gso_bad_name(bad));
}

#define ALL (GSO_ALLOW_TCPV4 | GSO_ALLOW_TCPV6 | GSO_ALLOW_ECN)

static void test_malformed(void **state)
{
    (void)state;
    /* Reference: the unmodified frames are accepted. */
    build(&g, false, false, 5000, 0, 1448);
    {
        struct gso_info gi;
        assert_int_equal(gso_validate(g.buf, g.len, &g.h, ALL, &gi), 0);
    }
    build(&g, false, false, 5000, 0, 1448);
    g.h.hdr_len = (uint16_t)(g.len + 1); /* hdr_len beyond the frame */
    refuse(&g, ALL, GSO_BAD_LEN);
    build(&g, false, false, 5000, 0, 0); /* gso_size 0 */
    refuse(&g, ALL, GSO_BAD_SIZE);
    build(&g, false, false, 5000, 0, 1448);
    g.buf[14 + 9] = PKT_IPPROTO_UDP; /* not TCP */
    refuse(&g, ALL, GSO_BAD_NOT_TCP);
    build(&g, false, false, 5000, 0, 1448);
    g.len = 14 + 20 + 10; /* truncated TCP header */
    pkt_put_be16(g.buf + 16, 30);
    g.h.hdr_len = 0;
    refuse(&g, ALL, GSO_BAD_TCP);
    build(&g, false, false, 5000, 0, 1448);
    g.buf[14 + 20 + 12] = 0x40; /* data offset 16 bytes */
    refuse(&g, ALL, GSO_BAD_TCP);
    build(&g, false, false, 5000, 0, 1448);
    pkt_put_be16(g.buf + 14 + 6, 0x2000); /* more fragments */
    refuse(&g, ALL, GSO_BAD_IP);
    build(&g, false, false, 5000, 0, 1448);
    pkt_put_be16(g.buf + 14 + 2, 5000); /* total length does not match the frame */
    refuse(&g, ALL, GSO_BAD_IP);
    build(&g, false, false, 5000, 0, 1448);
    g.h.needs_csum = false;
    refuse(&g, ALL, GSO_BAD_NO_CSUM);
    build(&g, false, false, 5000, 0, 1448);
    g.h.csum_offset = 6; /* the UDP checksum's place */
    refuse(&g, ALL, GSO_BAD_CSUM);
    build(&g, false, false, 5000, 0, 1448);
    g.h.csum_start = 14;
    refuse(&g, ALL, GSO_BAD_CSUM);
    build(&g, false, false, 5000, 0, 1448);
    g.h.gso_type = 3; /* UDP (UFO) */
    refuse(&g, ALL, GSO_BAD_TYPE);
    build(&g, false, false, 5000, 0, 1448);
    refuse(&g, GSO_ALLOW_TCPV6, GSO_BAD_TYPE); /* TSO4 not negotiated */
    g.h.gso_type |= GSO_TYPE_ECN;
    refuse(&g, GSO_ALLOW_TCPV4, GSO_BAD_TYPE); /* ECN not negotiated */
    build(&g, false, false, 5000, 0, 1448);
    g.h.gso_type = GSO_TYPE_TCPV6; /* type says IPv6, frame is IPv4 */
    refuse(&g, ALL, GSO_BAD_L2);
    build(&g, false, false, 5000, 0, 1);
    refuse(&g, ALL, GSO_BAD_SIZE); /* 5000 segments */
    build(&g, false, false, 20000, 0, 9500);
    refuse(&g, ALL, GSO_BAD_SIZE); /* a segment over PKT_MAX_FRAME */
    build(&g, true, false, 5000, 0, 1448);
    g.buf[14 + 6] = PKT_IPPROTO_UDP;
    refuse(&g, ALL, GSO_BAD_NOT_TCP);
    build(&g, true, false, 5000, 0, 1448);
    g.len -= 1; /* payload length no longer matches */
    refuse(&g, ALL, GSO_BAD_IP);
    build(&g, false, false, 5000, 0, 1448);
    g.len = 13;
    g.h.hdr_len = 0;
    refuse(&g, ALL, GSO_BAD_L2);
}

/* ---- UDP (USO, gso_type UDP_L4) ---- */

#define USO_ALL (GSO_ALLOW_USO4 | GSO_ALLOW_USO6)

/* A UDP datagram A -> B with `payload` bytes (byte i = i * 5 + 1), built from the TCP
 * frame's Ethernet and IP headers, and the virtio header a driver would send with it. */
static void build_udp(struct gframe *u, bool v6, bool tagged, uint32_t payload, uint16_t mss)
{
    uint32_t l3, l4;
    uint8_t *p;

    build(u, v6, tagged, 0, 0, mss);
    p = u->buf;
    l3 = tagged ? 18 : 14;
    l4 = l3 + (v6 ? 40 : 20);
    if (!v6) {
        pkt_put_be16(p + l3 + 2, (uint16_t)(20 + 8 + payload));
        p[l3 + 9] = PKT_IPPROTO_UDP;
    } else {
        pkt_put_be16(p + l3 + 4, (uint16_t)(8 + payload));
        p[l3 + 6] = PKT_IPPROTO_UDP;
    }
    memset(p + l4, 0, TCPHL);
    pkt_put_be16(p + l4, 40000);
    pkt_put_be16(p + l4 + 2, 443);
    pkt_put_be16(p + l4 + 4, (uint16_t)(8 + payload));
    for (uint32_t i = 0; i < payload; i++)
        p[l4 + 8 + i] = (uint8_t)(i * 5 + 1);
    u->len = l4 + 8 + payload;
    u->h.gso_type = GSO_TYPE_UDP_L4;
    u->h.hdr_len = (uint16_t)(l4 + 8);
    u->h.csum_offset = 6;
}

/* A UDP checksum must also not be 0 (that means "none"). */
static bool udp_csum_ok(const uint8_t *f, uint32_t l3, uint32_t l4, uint32_t len, bool v6)
{
    return pkt_get_be16(f + l4 + 6) != 0 && l4_csum_ok(f, l3, l4, len, v6, PKT_IPPROTO_UDP);
}

/* Segment a UDP GSO frame: each segment a datagram of its own. Returns the count. */
static unsigned check_udp_segments(const struct gframe *u, bool v6, bool partial)
{
    static uint8_t seg[PKT_MAX_FRAME], joined[65536];
    uint32_t l4 = u->h.csum_start, l3 = l3_of(u), hl = l4 + 8, joined_len = 0;
    struct gso_info gi;

    assert_int_equal(gso_validate(u->buf, u->len, &u->h, USO_ALL, &gi), 0);
    assert_int_equal(gi.type, GSO_TYPE_UDP_L4);
    assert_int_equal(gi.v6, v6);
    assert_int_equal(gi.csum_offset, 6);
    assert_int_equal(gi.hdr_len, hl);
    assert_int_equal(gi.payload, u->len - hl);
    for (unsigned i = 0; i < gi.n_segs; i++) {
        int n = gso_segment(u->buf, &gi, i, partial, seg, sizeof(seg));
        struct pkt_meta m;
        uint32_t plen;

        assert_int_equal((uint32_t)n, gso_segment_len(&gi, i));
        plen = (uint32_t)n - hl;
        if (i + 1 < gi.n_segs)
            assert_int_equal(plen, u->h.gso_size);
        assert_int_equal(pkt_parse(seg, (size_t)n, &m), 0);
        assert_int_equal(m.l4_proto, PKT_IPPROTO_UDP);
        assert_int_equal(pkt_get_be16(seg + l4 + 4), (uint32_t)n - l4); /* UDP length */
        assert_int_equal(pkt_get_be16(seg + l4 + 2), 443);
        check_seg_ip(seg, (uint32_t)n, u, l3, l4, v6, i);
        if (partial) {
            assert_false(udp_csum_ok(seg, l3, l4, (uint32_t)n, v6));
            pkt_put_be16(seg + l4 + 6, pkt_csum(seg + l4, (uint32_t)n - l4));
        }
        assert_true(udp_csum_ok(seg, l3, l4, (uint32_t)n, v6));
        memcpy(joined + joined_len, seg + hl, plen);
        joined_len += plen;
    }
    assert_int_equal(joined_len, gi.payload);
    assert_memory_equal(joined, u->buf + hl, gi.payload);
    return gi.n_segs;
}

static void test_udp(void **state)
{
    (void)state;
    build_udp(&g, false, false, 6000, 1400);
    assert_int_equal(check_udp_segments(&g, false, false), 5);
    build_udp(&g, true, false, 6000, 1400);
    assert_int_equal(check_udp_segments(&g, true, false), 5);
    build_udp(&g, false, true, 64000, 1472);
    assert_int_equal(check_udp_segments(&g, false, true), 44);
    build_udp(&g, true, true, 1000, 1400); /* one segment */
    assert_int_equal(check_udp_segments(&g, true, true), 1);
    build_udp(&g, false, false, 0, 1400); /* an empty datagram */
    assert_int_equal(check_udp_segments(&g, false, false), 1);
}

/* IPv4 options and IPv6 hop-by-hop / destination options headers are segmented (each
 * segment repeats them); the IPv6 headers whose meaning segmentation would change, and
 * broken chains, are refused. */
static void test_ip_options(void **state)
{
    /* router alert (4 bytes), then NOP, NOP, NOP, end of list */
    static const uint8_t v4opt[8] = {0x94, 0x04, 0, 0, 1, 1, 1, 0};
    /* hop-by-hop (next: destination options), then destination options (next: set below),
     * each 8 bytes: a PadN option filling it */
    uint8_t v6opt[16] = {60, 0, 1, 4, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0};

    (void)state;
    build(&g, false, false, 5000, 0, 1448);
    insert_ip_opts(&g, false, v4opt, 8);
    assert_int_equal(check_segments(&g, false, false), 4);
    build(&g, false, true, 3000, 0x08, 1000);
    insert_ip_opts(&g, false, v4opt, 4);
    assert_int_equal(check_segments(&g, false, true), 3);
    build(&g, true, false, 5000, 0, 1448);
    g.buf[14 + 6] = 0; /* hop-by-hop first */
    v6opt[8] = PKT_IPPROTO_TCP;
    insert_ip_opts(&g, true, v6opt, 16);
    assert_int_equal(check_segments(&g, true, false), 4);
    build_udp(&g, true, true, 6000, 1400);
    g.buf[18 + 6] = 60; /* destination options only */
    v6opt[8] = PKT_IPPROTO_UDP;
    insert_ip_opts(&g, true, v6opt + 8, 8);
    assert_int_equal(check_udp_segments(&g, true, false), 5);
    build_udp(&g, false, false, 6000, 1400);
    insert_ip_opts(&g, false, v4opt, 8);
    assert_int_equal(check_udp_segments(&g, false, true), 5);

    /* refused: IHL below 5 or beyond the frame; routing and fragment headers; hop-by-hop
     * not first; an option header running past the frame; more than 4 of them */
    build(&g, false, false, 5000, 0, 1448);
    g.buf[14] = 0x44;
    refuse(&g, ALL, GSO_BAD_IP);
    build(&g, false, false, 0, 0, 1448);
    g.len = 14 + 24;
    pkt_put_be16(g.buf + 16, 24);
    g.buf[14] = 0x47; /* 28 bytes of IP header in a 24-byte packet */
    g.h.hdr_len = 0;
    refuse(&g, ALL, GSO_BAD_IP);
    for (unsigned k = 0; k < 4; k++) {
        static const uint8_t first[] = {43, 44, 0, 60};
        build(&g, true, false, 5000, 0, 1448);
        g.buf[14 + 6] = first[k];
        /* 0, 1: routing, fragment first; 2: hop-by-hop -> hop-by-hop (not first);
         * 3: destination options -> destination options -> AH */
        v6opt[0] = k == 2 ? 0 : 60;
        v6opt[8] = k == 3 ? 51 : PKT_IPPROTO_TCP;
        insert_ip_opts(&g, true, v6opt, 16);
        refuse(&g, ALL, GSO_BAD_IP);
    }
    build(&g, true, false, 5000, 0, 1448);
    g.buf[14 + 6] = 60;
    v6opt[8] = PKT_IPPROTO_TCP;
    v6opt[1] = 200; /* 1608 bytes long */
    memmove(g.buf + 54 + 8, g.buf + 54, 60);
    memcpy(g.buf + 54, v6opt, 8);
    g.len = 54 + 68;
    pkt_put_be16(g.buf + 18, 68);
    g.h.hdr_len = 0;
    refuse(&g, ALL, GSO_BAD_IP);
    v6opt[1] = 0;
    {
        uint8_t chain[40];
        for (unsigned k = 0; k < 5; k++) {
            memcpy(chain + 8 * k, v6opt + 8, 8);
            chain[8 * k] = k == 4 ? PKT_IPPROTO_TCP : 60;
        }
        build(&g, true, false, 5000, 0, 1448);
        g.buf[14 + 6] = 60;
        chain[24] = PKT_IPPROTO_TCP;
        insert_ip_opts(&g, true, chain, 32); /* four: fine */
        assert_int_equal(check_segments(&g, true, false), 4);
        chain[24] = 60;
        build(&g, true, false, 5000, 0, 1448);
        g.buf[14 + 6] = 60;
        insert_ip_opts(&g, true, chain, 40); /* five: refused */
        refuse(&g, ALL, GSO_BAD_IP);
    }
}

static void test_udp_malformed(void **state)
{
    (void)state;
    build_udp(&g, false, false, 6000, 1400);
    refuse(&g, ALL, GSO_BAD_TYPE);            /* TSO only: USO not negotiated */
    refuse(&g, GSO_ALLOW_USO6, GSO_BAD_TYPE); /* an IPv4 datagram needs USO4 */
    build_udp(&g, true, false, 6000, 1400);
    refuse(&g, GSO_ALLOW_USO4, GSO_BAD_TYPE);
    build_udp(&g, false, false, 6000, 1400);
    g.h.gso_type |= GSO_TYPE_ECN; /* ECN is TCP's */
    refuse(&g, USO_ALL | GSO_ALLOW_ECN, GSO_BAD_TYPE);
    build_udp(&g, false, false, 6000, 1400);
    g.h.csum_offset = 16; /* TCP's checksum place */
    refuse(&g, USO_ALL, GSO_BAD_CSUM);
    build_udp(&g, false, false, 6000, 1400);
    pkt_put_be16(g.buf + 14 + 20 + 4, 6000); /* UDP length short of the datagram */
    refuse(&g, USO_ALL, GSO_BAD_TCP);
    build_udp(&g, true, false, 6000, 1400);
    g.buf[14 + 6] = PKT_IPPROTO_TCP; /* UDP_L4 over TCP */
    refuse(&g, USO_ALL, GSO_BAD_NOT_TCP);
    build_udp(&g, false, false, 6000, 1400);
    g.len = 14 + 20 + 4; /* truncated UDP header */
    pkt_put_be16(g.buf + 16, 24);
    g.h.hdr_len = 0;
    refuse(&g, USO_ALL, GSO_BAD_TCP);
    build_udp(&g, false, false, 6000, 0);
    refuse(&g, USO_ALL, GSO_BAD_SIZE);
    build_udp(&g, false, false, 6000, 1400);
    g.h.needs_csum = false;
    refuse(&g, USO_ALL, GSO_BAD_NO_CSUM);
}

/* Random mutations of header bytes and fields: every accepted frame segments inside
 * the buffers (run under ASan/UBSan by make check). */
static void test_mutations(void **state)
{
    static uint8_t out[PKT_MAX_FRAME];
    unsigned accepted = 0, refused = 0;
    (void)state;
    srand(12345);
    for (unsigned it = 0; it < 20000; it++) {
        struct gso_info gi;
        build(&g, it & 1, it & 2, 200 + (unsigned)rand() % 3000, (uint8_t)rand(),
              (uint16_t)(1 + rand() % 2000));
        for (unsigned k = 0; k < 1 + (unsigned)rand() % 3; k++)
            g.buf[rand() % 90] ^= (uint8_t)(1u << (rand() % 8));
        if (rand() % 4 == 0)
            g.len = (uint32_t)rand() % (g.len + 1);
        if (rand() % 8 == 0)
            g.h.hdr_len = (uint16_t)rand();
        if (it % 3 == 2) /* a third are UDP datagrams (USO) */
            build_udp(&g, it & 1, it & 2, (unsigned)rand() % 3000, (uint16_t)(1 + rand() % 2000));
        for (unsigned k = 0; it % 3 == 2 && k < 1 + (unsigned)rand() % 3; k++)
            g.buf[rand() % 90] ^= (uint8_t)(1u << (rand() % 8));
        if (gso_validate(g.buf, g.len, &g.h, ALL | USO_ALL, &gi)) {
            refused++;
            continue;
        }
        accepted++;
        for (unsigned i = 0; i < gi.n_segs; i++) {
            uint32_t sl = gso_segment_len(&gi, i);
            assert_true(sl >= gi.hdr_len && sl <= PKT_MAX_FRAME);
            assert_int_equal(gso_segment(g.buf, &gi, i, i & 1, out, sl), (int)sl);
        }
    }
    assert_true(accepted > 100);
    assert_true(refused > 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_vlan_tagged),
        cmocka_unit_test(test_partial_csum),
        cmocka_unit_test(test_segment_bounds),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_udp),
        cmocka_unit_test(test_udp_malformed),
        cmocka_unit_test(test_ip_options),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
