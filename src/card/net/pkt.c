/* SPDX-License-Identifier: Apache-2.0 */
/* Zero-copy packet parsing and VLAN tag push/pop. See pkt.h. */
#include "pkt.h"

#include <errno.h>
#include <string.h>

#define IPV6_HLEN        40
#define IPV4_MIN_HLEN    20
#define ARP_ETH_IPV4_LEN 28
#define UDP_HLEN         8
#define TCP_MIN_HLEN     20
#define ICMP6_HLEN       4
#define ND_HLEN          24 /* type, code, csum, reserved/flags, target */
#define IPV6_MAX_EXT     8  /* extension headers walked before giving up */

#define ICMP6_ND_NS 135
#define ICMP6_ND_NA 136
#define ND_OPT_SLLA 1
#define ND_OPT_TLLA 2

static const char *const pkt_bad_names[PKT_BAD__MAX] = {
    [PKT_BAD_NONE] = "none",
    [PKT_BAD_TRUNC_ETH] = "eth-truncated",
    [PKT_BAD_OVERSIZE] = "oversize",
    [PKT_BAD_TRUNC_VLAN] = "vlan-truncated",
    [PKT_BAD_TOO_MANY_TAGS] = "too-many-tags",
    [PKT_BAD_IPV4_HDR] = "ipv4-header",
    [PKT_BAD_IPV4_LEN] = "ipv4-length",
    [PKT_BAD_IPV6_HDR] = "ipv6-header",
    [PKT_BAD_IPV6_LEN] = "ipv6-length",
    [PKT_BAD_IPV6_EXT] = "ipv6-ext-header",
    [PKT_BAD_ARP] = "arp",
    [PKT_BAD_L4_TRUNC] = "l4-truncated",
};

const char *pkt_bad_name(enum pkt_bad bad)
{
    if ((unsigned)bad >= PKT_BAD__MAX)
        return "unknown";
    return pkt_bad_names[bad];
}

static int pkt_fail(struct pkt_meta *m, enum pkt_bad bad)
{
    m->bad = (uint8_t)bad;
    return bad == PKT_BAD_OVERSIZE ? -EMSGSIZE : -EINVAL;
}

static bool pkt_is_vlan_tpid(uint16_t t)
{
    return t == PKT_ETHERTYPE_VLAN || t == PKT_ETHERTYPE_QINQ;
}

/* TCP/UDP ports at l4 (l4_len bytes of L4 available). */
static int pkt_parse_l4(const uint8_t *l4, size_t l4_len, struct pkt_meta *m)
{
    switch (m->l4_proto) {
    case PKT_IPPROTO_UDP: {
        if (l4_len < UDP_HLEN)
            return pkt_fail(m, PKT_BAD_L4_TRUNC);
        uint16_t ulen = pkt_get_be16(l4 + 4);
        /* UDP length covers header + data and must fit the IP payload; 0 is
         * legal only for IPv6 jumbograms, which we do not accept. */
        if (ulen < UDP_HLEN || ulen > l4_len)
            return pkt_fail(m, PKT_BAD_L4_TRUNC);
        break;
    }
    case PKT_IPPROTO_TCP: {
        if (l4_len < TCP_MIN_HLEN)
            return pkt_fail(m, PKT_BAD_L4_TRUNC);
        size_t doff = (size_t)(l4[12] >> 4) * 4;
        if (doff < TCP_MIN_HLEN || doff > l4_len)
            return pkt_fail(m, PKT_BAD_L4_TRUNC);
        break;
    }
    default:
        return 0;
    }
    m->sport = pkt_get_be16(l4);
    m->dport = pkt_get_be16(l4 + 2);
    m->flags |= PKT_F_L4;
    return 0;
}

static int pkt_parse_icmp6(const uint8_t *l4, size_t l4_len, struct pkt_meta *m)
{
    if (l4_len < ICMP6_HLEN)
        return pkt_fail(m, PKT_BAD_L4_TRUNC);
    m->icmp6_type = l4[0];
    if (m->icmp6_type != ICMP6_ND_NS && m->icmp6_type != ICMP6_ND_NA)
        return 0;
    if (l4_len < ND_HLEN)
        return pkt_fail(m, PKT_BAD_L4_TRUNC);
    memcpy(m->nd_target, l4 + 8, 16);
    m->flags |= PKT_F_ND;
    /* Options: type, length in units of 8 bytes (0 is invalid, RFC 4861 4.6). */
    size_t off = ND_HLEN;
    uint8_t want = m->icmp6_type == ICMP6_ND_NS ? ND_OPT_SLLA : ND_OPT_TLLA;
    while (off < l4_len) {
        if (l4_len - off < 2)
            return pkt_fail(m, PKT_BAD_L4_TRUNC);
        size_t olen = (size_t)l4[off + 1] * 8;
        if (olen == 0 || olen > l4_len - off)
            return pkt_fail(m, PKT_BAD_L4_TRUNC);
        if (l4[off] == want && olen >= 8) {
            memcpy(m->nd_lla, l4 + off + 2, PKT_ETH_ALEN);
            m->nd_lla_present = true;
        }
        off += olen;
    }
    return 0;
}

static int pkt_parse_ipv4(const uint8_t *frame, size_t len, struct pkt_meta *m)
{
    const uint8_t *ip = frame + m->l3_ofs;
    size_t avail = len - m->l3_ofs;

    if (avail < IPV4_MIN_HLEN || (ip[0] >> 4) != 4)
        return pkt_fail(m, PKT_BAD_IPV4_HDR);
    size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
    if (ihl < IPV4_MIN_HLEN || ihl > avail)
        return pkt_fail(m, PKT_BAD_IPV4_HDR);
    size_t tot = pkt_get_be16(ip + 2);
    if (tot < ihl || tot > avail)
        return pkt_fail(m, PKT_BAD_IPV4_LEN);

    m->l3 = PKT_L3_IPV4;
    m->l3_len = (uint16_t)tot;
    m->ip_tos = ip[1];
    m->ip_ttl = ip[8];
    m->l4_proto = ip[9];
    memcpy(m->ip4.src, ip + 12, 4);
    memcpy(m->ip4.dst, ip + 16, 4);

    uint16_t frag = pkt_get_be16(ip + 6);
    if (frag & 0x3fff) { /* MF set or offset != 0 */
        m->flags |= PKT_F_IP_FRAG;
        if (frag & 0x1fff) {
            m->flags |= PKT_F_IP_LATER_FRAG;
            return 0;
        }
    }
    m->l4_ofs = (uint16_t)(m->l3_ofs + ihl);
    return pkt_parse_l4(ip + ihl, tot - ihl, m);
}

static bool pkt_ipv6_is_ext(uint8_t nh)
{
    return nh == 0 || nh == 43 || nh == 44 || nh == 60;
}

static int pkt_parse_ipv6(const uint8_t *frame, size_t len, struct pkt_meta *m)
{
    const uint8_t *ip = frame + m->l3_ofs;
    size_t avail = len - m->l3_ofs;

    if (avail < IPV6_HLEN || (ip[0] >> 4) != 6)
        return pkt_fail(m, PKT_BAD_IPV6_HDR);
    size_t plen = pkt_get_be16(ip + 4);
    if (plen > avail - IPV6_HLEN)
        return pkt_fail(m, PKT_BAD_IPV6_LEN);

    m->l3 = PKT_L3_IPV6;
    m->l3_len = (uint16_t)(IPV6_HLEN + plen);
    m->ip_tos = (uint8_t)(((ip[0] & 0x0f) << 4) | (ip[1] >> 4));
    m->ip_ttl = ip[7];
    memcpy(m->ip6.src, ip + 8, 16);
    memcpy(m->ip6.dst, ip + 24, 16);

    uint8_t nh = ip[6];
    size_t off = IPV6_HLEN; /* from the start of the IPv6 header */
    size_t end = IPV6_HLEN + plen;
    for (int i = 0; pkt_ipv6_is_ext(nh); i++) {
        if (i == IPV6_MAX_EXT || end - off < 8)
            return pkt_fail(m, PKT_BAD_IPV6_EXT);
        const uint8_t *ext = ip + off;
        size_t elen;
        if (nh == 44) { /* fragment header: fixed 8 bytes */
            uint16_t fo = pkt_get_be16(ext + 2);
            m->flags |= PKT_F_IP_FRAG;
            if (fo & 0xfff8) {
                m->flags |= PKT_F_IP_LATER_FRAG;
                m->l4_proto = ext[0];
                return 0;
            }
            elen = 8;
        } else {
            elen = ((size_t)ext[1] + 1) * 8;
        }
        if (elen > end - off)
            return pkt_fail(m, PKT_BAD_IPV6_EXT);
        nh = ext[0];
        off += elen;
    }
    m->l4_proto = nh;
    m->l4_ofs = (uint16_t)(m->l3_ofs + off);
    if (nh == PKT_IPPROTO_ICMPV6)
        return pkt_parse_icmp6(ip + off, end - off, m);
    return pkt_parse_l4(ip + off, end - off, m);
}

static int pkt_parse_arp(const uint8_t *frame, size_t len, struct pkt_meta *m)
{
    const uint8_t *a = frame + m->l3_ofs;
    size_t avail = len - m->l3_ofs;

    /* Only Ethernet (htype 1) / IPv4 (ptype 0x0800), hlen 6, plen 4. */
    if (avail < ARP_ETH_IPV4_LEN || pkt_get_be16(a) != 1 ||
        pkt_get_be16(a + 2) != PKT_ETHERTYPE_IPV4 || a[4] != 6 || a[5] != 4)
        return pkt_fail(m, PKT_BAD_ARP);
    m->l3 = PKT_L3_ARP;
    m->l3_len = ARP_ETH_IPV4_LEN;
    m->arp_op = pkt_get_be16(a + 6);
    memcpy(m->arp_sha, a + 8, 6);
    memcpy(m->ip4.src, a + 14, 4);
    memcpy(m->arp_tha, a + 18, 6);
    memcpy(m->ip4.dst, a + 24, 4);
    return 0;
}

int pkt_parse(const uint8_t *frame, size_t len, struct pkt_meta *m)
{
    memset(m, 0, sizeof(*m));
    if (len > PKT_MAX_FRAME)
        return pkt_fail(m, PKT_BAD_OVERSIZE);
    if (len < PKT_ETH_HLEN)
        return pkt_fail(m, PKT_BAD_TRUNC_ETH);

    memcpy(m->dst_mac, frame, PKT_ETH_ALEN);
    memcpy(m->src_mac, frame + PKT_ETH_ALEN, PKT_ETH_ALEN);
    if (pkt_mac_is_multicast(m->dst_mac)) {
        m->flags |= PKT_F_MCAST;
        static const uint8_t bcast[PKT_ETH_ALEN] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        if (!memcmp(m->dst_mac, bcast, PKT_ETH_ALEN))
            m->flags |= PKT_F_BCAST;
    }

    size_t off = 12;
    uint16_t type = pkt_get_be16(frame + off);
    while (pkt_is_vlan_tpid(type)) {
        if (m->n_vlans == PKT_MAX_VLANS)
            return pkt_fail(m, PKT_BAD_TOO_MANY_TAGS);
        if (len - off < 2 + PKT_VLAN_HLEN)
            return pkt_fail(m, PKT_BAD_TRUNC_VLAN);
        m->vlan_tpid[m->n_vlans] = type;
        m->vlan_tci[m->n_vlans] = pkt_get_be16(frame + off + 2);
        m->n_vlans++;
        off += PKT_VLAN_HLEN;
        type = pkt_get_be16(frame + off);
    }
    m->ethertype = type;
    m->l3_ofs = (uint16_t)(off + 2);

    switch (type) {
    case PKT_ETHERTYPE_IPV4:
        return pkt_parse_ipv4(frame, len, m);
    case PKT_ETHERTYPE_IPV6:
        return pkt_parse_ipv6(frame, len, m);
    case PKT_ETHERTYPE_ARP:
        return pkt_parse_arp(frame, len, m);
    default:
        return 0;
    }
}

int pkt_vlan_push(uint8_t **frame, size_t *len, size_t headroom, uint16_t tpid, uint16_t tci)
{
    if (headroom < PKT_VLAN_HLEN)
        return -ENOSPC;
    if (*len < PKT_ETH_HLEN)
        return -EINVAL;
    if (*len + PKT_VLAN_HLEN > PKT_MAX_FRAME)
        return -EMSGSIZE;
    uint8_t *nf = *frame - PKT_VLAN_HLEN;
    memmove(nf, *frame, 2 * PKT_ETH_ALEN);
    pkt_put_be16(nf + 12, tpid);
    pkt_put_be16(nf + 14, tci);
    *frame = nf;
    *len += PKT_VLAN_HLEN;
    return 0;
}

int pkt_vlan_pop(uint8_t **frame, size_t *len, uint16_t *tci)
{
    uint8_t *f = *frame;
    if (*len < PKT_ETH_HLEN)
        return -EINVAL;
    if (!pkt_is_vlan_tpid(pkt_get_be16(f + 12)))
        return -ENOENT;
    if (*len < PKT_ETH_HLEN + PKT_VLAN_HLEN)
        return -EINVAL;
    if (tci)
        *tci = pkt_get_be16(f + 14);
    memmove(f + PKT_VLAN_HLEN, f, 2 * PKT_ETH_ALEN);
    *frame = f + PKT_VLAN_HLEN;
    *len -= PKT_VLAN_HLEN;
    return 0;
}

/* 32-bit mixing (murmur3 finaliser). */
static uint32_t pkt_mix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

/* Hash n bytes (n a multiple of 2) into one word, 4 bytes at a time. */
static uint32_t pkt_hash_bytes(const uint8_t *p, size_t n, uint32_t h)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        h = pkt_mix32(h ^ pkt_get_be32(p + i)) + 0x9e3779b9u;
    if (i < n)
        h = pkt_mix32(h ^ pkt_get_be16(p + i)) + 0x9e3779b9u;
    return h;
}

uint32_t pkt_hash(const struct pkt_meta *m, enum pkt_hash_fields fields, uint32_t seed)
{
    /* Symmetric: hash each endpoint separately and combine with a commutative
     * operation, so A->B and B->A land on the same value. */
    uint32_t a, b, h = seed ^ 0x9e3779b9u;

    bool ip = m->bad == PKT_BAD_NONE && (m->l3 == PKT_L3_IPV4 || m->l3 == PKT_L3_IPV6);
    if (fields >= PKT_HASH_L3 && ip) {
        size_t alen = m->l3 == PKT_L3_IPV4 ? 4 : 16;
        const uint8_t *s = m->l3 == PKT_L3_IPV4 ? m->ip4.src : m->ip6.src;
        const uint8_t *d = m->l3 == PKT_L3_IPV4 ? m->ip4.dst : m->ip6.dst;
        a = pkt_hash_bytes(s, alen, h);
        b = pkt_hash_bytes(d, alen, h);
        if (fields == PKT_HASH_L4 && (m->flags & PKT_F_L4)) {
            a = pkt_mix32(a ^ m->sport);
            b = pkt_mix32(b ^ m->dport);
        }
        h = pkt_mix32((a ^ b) + (fields == PKT_HASH_L4 ? m->l4_proto : 0));
    } else {
        a = pkt_hash_bytes(m->src_mac, PKT_ETH_ALEN, h);
        b = pkt_hash_bytes(m->dst_mac, PKT_ETH_ALEN, h);
        h = pkt_mix32((a ^ b) + pkt_meta_vid(m));
    }
    return h;
}

uint16_t pkt_csum(const uint8_t *buf, size_t len)
{
    uint64_t sum = 0;
    size_t i;
    for (i = 0; i + 1 < len; i += 2)
        sum += (uint32_t)((buf[i] << 8) | buf[i + 1]);
    if (i < len)
        sum += (uint32_t)buf[i] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}
