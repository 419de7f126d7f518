/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Zero-copy packet parsing: Ethernet, 802.1Q/802.1ad tags, IPv4, IPv6 (with
 * extension headers), ARP, UDP, TCP, ICMPv6 neighbour discovery.
 *
 * pkt_parse() reads a frame given as (const uint8_t *, len) and fills a small
 * metadata struct with offsets and the fields the switch needs (MACs, VLAN,
 * ethertype, L3/L4 addresses and ports). It never reads past len and never
 * writes to the frame. Every length field in the frame is checked against the
 * bytes really present.
 *
 * All multi-byte fields in struct pkt_meta are in HOST byte order except the
 * IPv4/IPv6 addresses, which are kept as they appear on the wire (network
 * order, as in struct in_addr / in6_addr) so they can be compared with
 * inet_pton() results directly.
 */
#ifndef QT_CARD_NET_PKT_H
#define QT_CARD_NET_PKT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PKT_ETH_ALEN  6
#define PKT_ETH_HLEN  14
#define PKT_VLAN_HLEN 4
#define PKT_MAX_FRAME 9238 /* 9216-byte jumbo MTU + Ethernet + two tags */
#define PKT_MAX_VLANS 2

#define PKT_ETHERTYPE_IPV4 0x0800
#define PKT_ETHERTYPE_ARP  0x0806
#define PKT_ETHERTYPE_VLAN 0x8100 /* 802.1Q C-tag */
#define PKT_ETHERTYPE_QINQ 0x88a8 /* 802.1ad S-tag */
#define PKT_ETHERTYPE_IPV6 0x86dd
#define PKT_ETHERTYPE_SLOW 0x8809 /* slow protocols: LACP, marker */

#define PKT_IPPROTO_ICMP   1
#define PKT_IPPROTO_TCP    6
#define PKT_IPPROTO_UDP    17
#define PKT_IPPROTO_ICMPV6 58

#define PKT_VLAN_VID_MASK  0x0fff
#define PKT_VLAN_PCP_SHIFT 13

/* Which layer 3 the frame carries. */
enum pkt_l3 {
    PKT_L3_NONE = 0, /* unknown ethertype: L2 only */
    PKT_L3_IPV4,
    PKT_L3_IPV6,
    PKT_L3_ARP,
};

/* Why pkt_parse() rejected a frame; index into per-reason drop counters. */
enum pkt_bad {
    PKT_BAD_NONE = 0,
    PKT_BAD_TRUNC_ETH,     /* shorter than an Ethernet header */
    PKT_BAD_OVERSIZE,      /* longer than PKT_MAX_FRAME */
    PKT_BAD_TRUNC_VLAN,    /* VLAN TPID without a complete tag */
    PKT_BAD_TOO_MANY_TAGS, /* more than PKT_MAX_VLANS tags */
    PKT_BAD_IPV4_HDR,      /* version != 4, IHL < 5, header truncated */
    PKT_BAD_IPV4_LEN,      /* total length < IHL or > bytes present */
    PKT_BAD_IPV6_HDR,      /* version != 6 or header truncated */
    PKT_BAD_IPV6_LEN,      /* payload length > bytes present */
    PKT_BAD_IPV6_EXT,      /* extension header truncated or chain too long */
    PKT_BAD_ARP,           /* not Ethernet/IPv4 ARP or truncated */
    PKT_BAD_L4_TRUNC,      /* TCP/UDP/ICMPv6 header truncated or bad length */
    PKT_BAD__MAX
};

/* Flags in pkt_meta.flags. */
#define PKT_F_IP_FRAG       0x01 /* IPv4/IPv6 fragment (L4 parsed only for the first) */
#define PKT_F_IP_LATER_FRAG 0x02 /* non-first fragment: no L4 header present */
#define PKT_F_L4            0x04 /* sport/dport valid (TCP or UDP) */
#define PKT_F_ND            0x08 /* ICMPv6 neighbour solicitation/advertisement parsed */
#define PKT_F_BCAST         0x10 /* destination MAC is ff:ff:ff:ff:ff:ff */
#define PKT_F_MCAST         0x20 /* destination MAC has the group bit (includes BCAST) */

struct pkt_meta {
    uint8_t dst_mac[PKT_ETH_ALEN];
    uint8_t src_mac[PKT_ETH_ALEN];
    uint16_t ethertype;                /* after all VLAN tags */
    uint8_t n_vlans;                   /* tags found, 0..PKT_MAX_VLANS */
    uint8_t flags;                     /* PKT_F_* */
    uint16_t vlan_tpid[PKT_MAX_VLANS]; /* outermost first */
    uint16_t vlan_tci[PKT_MAX_VLANS];  /* outermost first; VID = tci & PKT_VLAN_VID_MASK */
    uint16_t l3_ofs;                   /* offset of the L3 header (== L2 header length) */
    uint16_t l4_ofs;                   /* offset of the L4 header, 0 if none */
    uint16_t l3_len;                   /* L3 length from the IP header (excludes L2 padding) */
    uint8_t l3;                        /* enum pkt_l3 */
    uint8_t l4_proto;                  /* IP protocol / last IPv6 next header, 0 if none */
    uint8_t bad;                       /* enum pkt_bad, PKT_BAD_NONE when pkt_parse() returned 0 */
    uint8_t ip_ttl;                    /* IPv4 TTL / IPv6 hop limit */
    uint8_t ip_tos;                    /* IPv4 TOS / IPv6 traffic class */
    uint16_t sport, dport;             /* TCP/UDP ports (PKT_F_L4) */
    union {
        struct {
            uint8_t src[4], dst[4]; /* IPv4 addresses, ARP SPA/TPA */
        } ip4;
        struct {
            uint8_t src[16], dst[16];
        } ip6;
    };
    /* ARP (l3 == PKT_L3_ARP): op, sender/target hardware address. */
    uint16_t arp_op;
    uint8_t arp_sha[PKT_ETH_ALEN];
    uint8_t arp_tha[PKT_ETH_ALEN];
    /* ICMPv6 (l4_proto == PKT_IPPROTO_ICMPV6): type; for NS/NA (PKT_F_ND) the
     * target address and, when present, the source/target link-layer address
     * option (nd_lla_present). */
    uint8_t icmp6_type;
    bool nd_lla_present;
    uint8_t nd_target[16];
    uint8_t nd_lla[PKT_ETH_ALEN];
};

/*
 * Parse frame[0..len). Returns 0 and fills *m, or a negative errno:
 *   -EMSGSIZE  len > PKT_MAX_FRAME (m->bad = PKT_BAD_OVERSIZE)
 *   -EINVAL    malformed at some layer; m->bad says why. Fields of the layers
 *              parsed before the error (e.g. the MACs and VLAN tags when the
 *              IPv4 header is bad) are still valid, so L2 switching may
 *              proceed if the caller chooses; L3/L4 policy must not.
 * A non-first IP fragment is not an error (PKT_F_IP_LATER_FRAG, no ports).
 * Unknown ethertypes are not an error (l3 = PKT_L3_NONE).
 */
int pkt_parse(const uint8_t *frame, size_t len, struct pkt_meta *m);

/* Short name of a pkt_bad reason, e.g. "ipv4-len"; never NULL. */
const char *pkt_bad_name(enum pkt_bad bad);

static inline uint16_t pkt_meta_vid(const struct pkt_meta *m)
{
    return m->n_vlans ? (uint16_t)(m->vlan_tci[0] & PKT_VLAN_VID_MASK) : 0;
}

static inline bool pkt_mac_is_multicast(const uint8_t *mac)
{
    return mac[0] & 1;
}

static inline bool pkt_mac_is_zero(const uint8_t *mac)
{
    return !(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]);
}

/*
 * Insert an 802.1Q tag (TPID tpid, TCI tci) after the MAC addresses.
 * *frame points into a buffer with at least `headroom` writable bytes before
 * it; only the 12 MAC bytes move (4 bytes towards the front), the payload is
 * not copied. On success *frame and *len are updated.
 * -ENOSPC headroom < 4; -EINVAL *len < PKT_ETH_HLEN; -EMSGSIZE result > PKT_MAX_FRAME.
 */
int pkt_vlan_push(uint8_t **frame, size_t *len, size_t headroom, uint16_t tpid, uint16_t tci);

/*
 * Remove the outermost 802.1Q/802.1ad tag: the 12 MAC bytes move 4 bytes
 * towards the payload, *frame advances by 4 and *len shrinks by 4. The removed
 * TCI is stored in *tci when tci is not NULL.
 * -ENOENT the frame carries no tag; -EINVAL truncated.
 */
int pkt_vlan_pop(uint8_t **frame, size_t *len, uint16_t *tci);

/* Read/write big-endian fields from an unaligned byte pointer. */
static inline uint16_t pkt_get_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t pkt_get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void pkt_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void pkt_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Which fields pkt_hash() mixes. Each level falls back to the one below when
 * the frame lacks its fields (L4 on a non-TCP/UDP frame hashes like L3, L3 on
 * a non-IP frame like L2), so every frame gets a hash. */
enum pkt_hash_fields {
    PKT_HASH_L2 = 0, /* source and destination MAC (and VLAN ID) */
    PKT_HASH_L3,     /* IPv4/IPv6 source and destination */
    PKT_HASH_L4,     /* L3 + protocol + TCP/UDP ports */
};

/* Symmetric flow hash (swapping source and destination gives the same value),
 * so both directions of a flow use the same bond member. seed varies it. */
uint32_t pkt_hash(const struct pkt_meta *m, enum pkt_hash_fields fields, uint32_t seed);

/* RFC 1071 Internet checksum of buf[0..len) (folded, complemented). */
uint16_t pkt_csum(const uint8_t *buf, size_t len);

#endif
