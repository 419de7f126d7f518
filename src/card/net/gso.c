/* SPDX-License-Identifier: Apache-2.0 */
/* TCP and UDP segmentation offload in software: validation and segment construction
 * (gso.h). */
#include "gso.h"

#include <errno.h>
#include <string.h>

#define TCP_F_FIN 0x01
#define TCP_F_PSH 0x08
#define TCP_F_CWR 0x80

#define IPV6_HLEN 40
#define TCP_HLEN  20
#define UDP_HLEN  8

static const char *const gso_bad_names[GSO_BAD__MAX] = {
    [GSO_BAD_NONE] = "none",       [GSO_BAD_TYPE] = "type",
    [GSO_BAD_NO_CSUM] = "no-csum", [GSO_BAD_SIZE] = "size",
    [GSO_BAD_LEN] = "len",         [GSO_BAD_L2] = "l2",
    [GSO_BAD_IP] = "ip",           [GSO_BAD_NOT_TCP] = "not-tcp",
    [GSO_BAD_TCP] = "tcp",         [GSO_BAD_CSUM] = "csum-offset",
};

const char *gso_bad_name(enum gso_bad bad)
{
    return (unsigned)bad < GSO_BAD__MAX ? gso_bad_names[bad] : "unknown";
}

static int gso_refuse(struct gso_info *gi, enum gso_bad bad)
{
    gi->bad = (uint8_t)bad;
    return -EINVAL;
}

/* Is next header nh an IPv6 extension header? */
static bool ipv6_is_ext(uint8_t nh)
{
    return nh == 0 || nh == 43 || nh == 44 || nh == 50 || nh == 51 || nh == 60 || nh == 135 ||
           nh == 139 || nh == 140;
}

#define IPV6_NH_HOPOPTS  0
#define IPV6_NH_DSTOPTS  60
#define IPV6_MAX_OPT_HDR 4 /* option headers walked in a GSO frame */

/* The IPv6 extension headers a GSO frame may carry: hop-by-hop options (first only) and
 * destination options, which every segment repeats unchanged, as Linux's segmentation
 * does. Routing (the pseudo header would need the final destination), fragment, AH, ESP
 * and the rest are refused. Returns the offset of the upper-layer header with *nh its
 * protocol, or 0 for a truncated or refused header chain. */
static uint32_t ipv6_skip_opts(const uint8_t *frame, uint32_t len, uint32_t l3, uint8_t *nh)
{
    uint32_t ofs = l3 + IPV6_HLEN;

    *nh = frame[l3 + 6];
    for (unsigned i = 0; *nh == IPV6_NH_DSTOPTS || (*nh == IPV6_NH_HOPOPTS && i == 0); i++) {
        if (i == IPV6_MAX_OPT_HDR || len < ofs + 8)
            return 0;
        *nh = frame[ofs];
        ofs += ((uint32_t)frame[ofs + 1] + 1) * 8;
        if (ofs > len)
            return 0;
    }
    return ipv6_is_ext(*nh) ? 0 : ofs;
}

int gso_validate(const uint8_t *frame, uint32_t len, const struct gso_hdr *h, unsigned allow,
                 struct gso_info *gi)
{
    uint8_t type = h->gso_type & (uint8_t)~GSO_TYPE_ECN;
    uint32_t ofs = 12, l3, l4, hl, first, ihl;
    uint16_t ethertype;
    unsigned tags = 0;
    bool udp = type == GSO_TYPE_UDP_L4, v6;
    uint8_t proto = udp ? PKT_IPPROTO_UDP : PKT_IPPROTO_TCP;

    memset(gi, 0, sizeof(*gi));
    if (type == GSO_TYPE_TCPV4    ? !(allow & GSO_ALLOW_TCPV4)
        : type == GSO_TYPE_TCPV6  ? !(allow & GSO_ALLOW_TCPV6)
        : type == GSO_TYPE_UDP_L4 ? !(allow & (GSO_ALLOW_USO4 | GSO_ALLOW_USO6))
                                  : true)
        return gso_refuse(gi, GSO_BAD_TYPE);
    if ((h->gso_type & GSO_TYPE_ECN) && (udp || !(allow & GSO_ALLOW_ECN)))
        return gso_refuse(gi, GSO_BAD_TYPE); /* ECN is TCP's (CWR) */
    if (!h->needs_csum)
        return gso_refuse(gi, GSO_BAD_NO_CSUM);
    if (h->gso_size == 0)
        return gso_refuse(gi, GSO_BAD_SIZE);
    if (len > GSO_MAX_FRAME || h->hdr_len > len)
        return gso_refuse(gi, GSO_BAD_LEN);
    /* Ethernet and up to two tags. */
    for (;;) {
        if (len < ofs + 2)
            return gso_refuse(gi, GSO_BAD_L2);
        ethertype = pkt_get_be16(frame + ofs);
        if (ethertype != PKT_ETHERTYPE_VLAN && ethertype != PKT_ETHERTYPE_QINQ)
            break;
        if (++tags > PKT_MAX_VLANS)
            return gso_refuse(gi, GSO_BAD_L2);
        ofs += PKT_VLAN_HLEN;
    }
    l3 = ofs + 2;
    /* UDP_L4 covers both IP versions: the ethertype says which, the driver must have
     * negotiated that one. */
    v6 = udp ? ethertype == PKT_ETHERTYPE_IPV6 : type == GSO_TYPE_TCPV6;
    if (udp && !(allow & (v6 ? GSO_ALLOW_USO6 : GSO_ALLOW_USO4)))
        return gso_refuse(gi, GSO_BAD_TYPE);
    if (!v6) {
        const uint8_t *ip = frame + l3;
        if (ethertype != PKT_ETHERTYPE_IPV4)
            return gso_refuse(gi, GSO_BAD_L2);
        if (len < l3 + 20 || (ip[0] >> 4) != 4)
            return gso_refuse(gi, GSO_BAD_IP);
        /* Options are part of the headers every segment repeats (as in Linux's TSO). */
        ihl = (uint32_t)(ip[0] & 0x0f) * 4;
        if (ihl < 20 || len < l3 + ihl)
            return gso_refuse(gi, GSO_BAD_IP);
        if (pkt_get_be16(ip + 2) != len - l3 || (pkt_get_be16(ip + 6) & 0x3fff))
            return gso_refuse(gi, GSO_BAD_IP); /* length must be exact; no fragments */
        if (ip[9] != proto)
            return gso_refuse(gi, GSO_BAD_NOT_TCP);
        l4 = l3 + ihl;
    } else {
        const uint8_t *ip = frame + l3;
        if (ethertype != PKT_ETHERTYPE_IPV6)
            return gso_refuse(gi, GSO_BAD_L2);
        if (len < l3 + IPV6_HLEN || (ip[0] >> 4) != 6)
            return gso_refuse(gi, GSO_BAD_IP);
        uint8_t nh;
        if (pkt_get_be16(ip + 4) != len - l3 - IPV6_HLEN)
            return gso_refuse(gi, GSO_BAD_IP);
        l4 = ipv6_skip_opts(frame, len, l3, &nh);
        if (!l4)
            return gso_refuse(gi, GSO_BAD_IP);
        if (nh != proto)
            return gso_refuse(gi, GSO_BAD_NOT_TCP);
    }
    if (udp) {
        /* The UDP length must cover exactly what the IP header says. */
        if (len < l4 + UDP_HLEN || pkt_get_be16(frame + l4 + 4) != len - l4)
            return gso_refuse(gi, GSO_BAD_TCP);
        hl = l4 + UDP_HLEN;
    } else {
        if (len < l4 + TCP_HLEN)
            return gso_refuse(gi, GSO_BAD_TCP);
        hl = l4 + (uint32_t)(frame[l4 + 12] >> 4) * 4;
        if (hl < l4 + TCP_HLEN || hl > len)
            return gso_refuse(gi, GSO_BAD_TCP);
    }
    if (h->csum_start != l4 || h->csum_offset != (udp ? 6 : 16))
        return gso_refuse(gi, GSO_BAD_CSUM);
    gi->type = type;
    gi->ecn = h->gso_type & GSO_TYPE_ECN;
    gi->v6 = v6;
    gi->csum_offset = udp ? 6 : 16;
    gi->l3_ofs = (uint16_t)l3;
    gi->l4_ofs = (uint16_t)l4;
    gi->hdr_len = (uint16_t)hl;
    gi->mss = h->gso_size;
    gi->payload = len - hl;
    first = gi->payload < gi->mss ? gi->payload : gi->mss;
    if (hl + first > PKT_MAX_FRAME || (gi->payload + gi->mss - 1) / gi->mss > GSO_MAX_SEGS)
        return gso_refuse(gi, GSO_BAD_SIZE);
    /* A frame without payload (a DPDK application may mark every TCP frame for TSO)
     * is one segment, as Linux's own segmentation treats it. */
    gi->n_segs = gi->payload ? (uint16_t)((gi->payload + gi->mss - 1) / gi->mss) : 1;
    gi->wire_len = (uint32_t)gi->n_segs * hl + gi->payload;
    return 0;
}

uint32_t gso_segment_len(const struct gso_info *gi, unsigned idx)
{
    uint32_t done = (uint32_t)idx * gi->mss;
    if (idx >= gi->n_segs)
        return 0;
    if (!gi->payload)
        return gi->hdr_len;
    return gi->hdr_len + (gi->payload - done < gi->mss ? gi->payload - done : gi->mss);
}

/* One's-complement sum of buf[0..len) as big-endian 16-bit words, added to sum (unfolded). */
static uint64_t csum_add(uint64_t sum, const uint8_t *buf, uint32_t len)
{
    uint32_t i = 0;
    for (; i + 1 < len; i += 2)
        sum += (uint32_t)(buf[i] << 8 | buf[i + 1]);
    if (i < len)
        sum += (uint32_t)buf[i] << 8;
    return sum;
}

static uint16_t csum_fold(uint64_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

int gso_segment(const uint8_t *frame, const struct gso_info *gi, unsigned idx, bool csum_partial,
                uint8_t *out, uint32_t room)
{
    uint32_t seg_len = gso_segment_len(gi, idx);
    uint32_t hl = gi->hdr_len, l3 = gi->l3_ofs, l4 = gi->l4_ofs;
    uint32_t plen = seg_len - hl, l4_len = seg_len - l4;
    uint8_t *l4h = out + l4;
    uint8_t proto = gi->type == GSO_TYPE_UDP_L4 ? PKT_IPPROTO_UDP : PKT_IPPROTO_TCP;
    uint64_t sum;
    uint16_t c;

    if (!seg_len)
        return -EINVAL;
    if (room < seg_len)
        return -ENOSPC;
    memcpy(out, frame, hl);
    memcpy(out + hl, frame + hl + (size_t)idx * gi->mss, plen);
    if (!gi->v6) {
        uint8_t *ip = out + l3;
        pkt_put_be16(ip + 2, (uint16_t)(seg_len - l3));
        pkt_put_be16(ip + 4, (uint16_t)(pkt_get_be16(ip + 4) + idx));
        pkt_put_be16(ip + 10, 0);
        pkt_put_be16(ip + 10, pkt_csum(ip, l4 - l3)); /* header and options */
        sum = csum_add(0, ip + 12, 8); /* pseudo header: addresses, protocol, L4 length */
    } else {
        uint8_t *ip = out + l3;
        pkt_put_be16(ip + 4, (uint16_t)(seg_len - l3 - IPV6_HLEN));
        sum = csum_add(0, ip + 8, 32);
    }
    sum += proto + l4_len;
    if (proto == PKT_IPPROTO_TCP) {
        pkt_put_be32(l4h + 4, pkt_get_be32(l4h + 4) + (uint32_t)idx * gi->mss);
        if (idx + 1u != gi->n_segs)
            l4h[13] &= (uint8_t) ~(TCP_F_FIN | TCP_F_PSH);
        if (idx != 0)
            l4h[13] &= (uint8_t)~TCP_F_CWR;
    } else {
        pkt_put_be16(l4h + 4, (uint16_t)l4_len);
    }
    pkt_put_be16(l4h + gi->csum_offset, 0);
    if (csum_partial) {
        c = csum_fold(sum);
    } else {
        c = (uint16_t)~csum_fold(csum_add(sum, l4h, l4_len));
        if (proto == PKT_IPPROTO_UDP && c == 0)
            c = 0xffff; /* 0 means "no checksum" in UDP (RFC 768) */
    }
    pkt_put_be16(l4h + gi->csum_offset, c);
    return (int)seg_len;
}
