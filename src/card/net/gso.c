/* SPDX-License-Identifier: Apache-2.0 */
/* TCP segmentation offload in software: validation and segment construction (gso.h). */
#include "gso.h"

#include <errno.h>
#include <string.h>

#define TCP_F_FIN 0x01
#define TCP_F_PSH 0x08
#define TCP_F_CWR 0x80

#define IPV6_HLEN 40
#define TCP_HLEN  20

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

/* Is next header nh an IPv6 extension header (which a GSO frame must not carry)? */
static bool ipv6_is_ext(uint8_t nh)
{
    return nh == 0 || nh == 43 || nh == 44 || nh == 50 || nh == 51 || nh == 60 || nh == 135 ||
           nh == 139 || nh == 140;
}

int gso_validate(const uint8_t *frame, uint32_t len, const struct gso_hdr *h, unsigned allow,
                 struct gso_info *gi)
{
    uint8_t type = h->gso_type & (uint8_t)~GSO_TYPE_ECN;
    uint32_t ofs = 12, l3, l4, hl, first;
    uint16_t ethertype;
    unsigned tags = 0;

    memset(gi, 0, sizeof(*gi));
    if (type == GSO_TYPE_TCPV4   ? !(allow & GSO_ALLOW_TCPV4)
        : type == GSO_TYPE_TCPV6 ? !(allow & GSO_ALLOW_TCPV6)
                                 : true)
        return gso_refuse(gi, GSO_BAD_TYPE);
    if ((h->gso_type & GSO_TYPE_ECN) && !(allow & GSO_ALLOW_ECN))
        return gso_refuse(gi, GSO_BAD_TYPE);
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
    if (type == GSO_TYPE_TCPV4) {
        const uint8_t *ip = frame + l3;
        if (ethertype != PKT_ETHERTYPE_IPV4)
            return gso_refuse(gi, GSO_BAD_L2);
        if (len < l3 + 20 || ip[0] != 0x45) /* version 4, no options */
            return gso_refuse(gi, GSO_BAD_IP);
        if (pkt_get_be16(ip + 2) != len - l3 || (pkt_get_be16(ip + 6) & 0x3fff))
            return gso_refuse(gi, GSO_BAD_IP); /* length must be exact; no fragments */
        if (ip[9] != PKT_IPPROTO_TCP)
            return gso_refuse(gi, GSO_BAD_NOT_TCP);
        l4 = l3 + 20;
    } else {
        const uint8_t *ip = frame + l3;
        if (ethertype != PKT_ETHERTYPE_IPV6)
            return gso_refuse(gi, GSO_BAD_L2);
        if (len < l3 + IPV6_HLEN || (ip[0] >> 4) != 6)
            return gso_refuse(gi, GSO_BAD_IP);
        if (pkt_get_be16(ip + 4) != len - l3 - IPV6_HLEN)
            return gso_refuse(gi, GSO_BAD_IP);
        if (ip[6] != PKT_IPPROTO_TCP)
            return gso_refuse(gi, ipv6_is_ext(ip[6]) ? GSO_BAD_IP : GSO_BAD_NOT_TCP);
        l4 = l3 + IPV6_HLEN;
    }
    if (len < l4 + TCP_HLEN)
        return gso_refuse(gi, GSO_BAD_TCP);
    hl = l4 + (uint32_t)(frame[l4 + 12] >> 4) * 4;
    if (hl < l4 + TCP_HLEN || hl > len)
        return gso_refuse(gi, GSO_BAD_TCP);
    if (h->csum_start != l4 || h->csum_offset != 16)
        return gso_refuse(gi, GSO_BAD_CSUM);
    gi->type = type;
    gi->ecn = h->gso_type & GSO_TYPE_ECN;
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
    uint32_t plen = seg_len - hl, tcp_len = seg_len - l4;
    uint8_t *tcp = out + l4;
    uint64_t sum;

    if (!seg_len)
        return -EINVAL;
    if (room < seg_len)
        return -ENOSPC;
    memcpy(out, frame, hl);
    memcpy(out + hl, frame + hl + (size_t)idx * gi->mss, plen);
    if (gi->type == GSO_TYPE_TCPV4) {
        uint8_t *ip = out + l3;
        pkt_put_be16(ip + 2, (uint16_t)(seg_len - l3));
        pkt_put_be16(ip + 4, (uint16_t)(pkt_get_be16(ip + 4) + idx));
        pkt_put_be16(ip + 10, 0);
        pkt_put_be16(ip + 10, pkt_csum(ip, 20));
        sum = csum_add(0, ip + 12, 8); /* pseudo header: addresses, protocol, TCP length */
        sum += PKT_IPPROTO_TCP + tcp_len;
    } else {
        uint8_t *ip = out + l3;
        pkt_put_be16(ip + 4, (uint16_t)(seg_len - l3 - IPV6_HLEN));
        sum = csum_add(0, ip + 8, 32);
        sum += PKT_IPPROTO_TCP + tcp_len;
    }
    pkt_put_be32(tcp + 4, pkt_get_be32(tcp + 4) + (uint32_t)idx * gi->mss);
    if (idx + 1u != gi->n_segs)
        tcp[13] &= (uint8_t) ~(TCP_F_FIN | TCP_F_PSH);
    if (idx != 0)
        tcp[13] &= (uint8_t)~TCP_F_CWR;
    pkt_put_be16(tcp + 16, 0);
    if (csum_partial)
        pkt_put_be16(tcp + 16, csum_fold(sum));
    else
        pkt_put_be16(tcp + 16, (uint16_t)~csum_fold(csum_add(sum, tcp, tcp_len)));
    return (int)seg_len;
}
