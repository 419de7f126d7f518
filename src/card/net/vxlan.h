/* SPDX-License-Identifier: Apache-2.0 */
/*
 * VXLAN (RFC 7348) over IPv4: encapsulation, validated decapsulation, and the
 * VTEP table (per VNI: remote MAC -> remote VTEP learned on decap, and the
 * flood list of remote VTEPs for head-end replication of broadcast, multicast
 * and unknown unicast).
 *
 * Encapsulation adds 50 bytes in front of the inner frame: outer Ethernet
 * (untagged), IPv4 (DF set, no options, header checksum computed), UDP
 * (destination 4789 or the configured port, source port from the inner flow
 * hash in the range 49152..65535 as RFC 7348 recommends, checksum 0 which
 * IPv4 allows), VXLAN header (flags 0x08, VNI).
 *
 * Decapsulation is strict, like the Linux vxlan driver: flags must be exactly
 * the I bit (0x08) and every reserved bit zero; anything else is dropped and
 * counted by reason.
 */
#ifndef QT_CARD_NET_VXLAN_H
#define QT_CARD_NET_VXLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mac_table.h"
#include "pkt.h"

#define VXLAN_PORT      4789
#define VXLAN_HLEN      8
#define VXLAN_FLAG_I    0x08
#define VXLAN_ENCAP_LEN (PKT_ETH_HLEN + 20 + 8 + VXLAN_HLEN) /* 50 */
#define VXLAN_VNI_MAX   0xffffffu
#define VXLAN_MAX_FLOOD 64 /* remote VTEPs per VNI */
#define VXLAN_MAX_VNIS  256

/* Outer header parameters of one local VTEP. */
struct vxlan_tunnel {
    uint8_t local_mac[PKT_ETH_ALEN];   /* outer source MAC */
    uint8_t nexthop_mac[PKT_ETH_ALEN]; /* outer destination MAC (gateway / peer) */
    uint8_t local_ip[4];               /* outer source IPv4, network order */
    uint16_t dst_port;                 /* UDP destination, normally 4789 */
    uint8_t ttl;                       /* 0 means 64 */
    uint8_t tos;
};

enum vxlan_bad {
    VXLAN_BAD_TRUNC = 0, /* too short for outer headers + VXLAN + inner Ethernet */
    VXLAN_BAD_NOT_IPV4,  /* outer frame not IPv4 (or IPv4 header invalid) */
    VXLAN_BAD_NOT_UDP,   /* not UDP, or a fragment */
    VXLAN_BAD_PORT,      /* UDP destination is not the VXLAN port */
    VXLAN_BAD_UDP_LEN,   /* UDP length inconsistent with the IP length */
    VXLAN_BAD_FLAGS,     /* I flag clear or other flag bits set */
    VXLAN_BAD_RESERVED,  /* reserved header bits non-zero */
    VXLAN_BAD_INNER,     /* inner frame shorter than an Ethernet header */
    VXLAN_BAD_VNI,       /* VNI not configured on this VTEP */
    VXLAN_BAD__MAX
};

struct vxlan_decap_result {
    uint32_t vni;
    uint8_t remote_ip[4]; /* outer source IPv4 */
    uint16_t src_port;    /* outer UDP source */
    size_t inner_ofs;     /* inner Ethernet frame at frame + inner_ofs */
    size_t inner_len;
};

struct vxlan_stats {
    uint64_t encap_pkts, decap_pkts;
    uint64_t bad[VXLAN_BAD__MAX];
};

/* Prepend the VXLAN encapsulation to the inner frame at *frame (*len bytes,
 * headroom writable bytes before it; needs VXLAN_ENCAP_LEN). remote_ip is the
 * outer destination (network order), inner_hash any flow hash of the inner
 * frame (pkt_hash()). On success *frame moves back 50 bytes and *len grows
 * by 50. -ENOSPC no headroom, -EINVAL bad VNI or an inner frame shorter than
 * an Ethernet header, -EMSGSIZE outer IPv4 length would exceed 65535. */
int vxlan_encap(const struct vxlan_tunnel *t, uint8_t **frame, size_t *len, size_t headroom,
                const uint8_t remote_ip[4], uint32_t vni, uint32_t inner_hash,
                struct vxlan_stats *st);

/* Validate the outer headers of frame[0..len) and locate the inner frame.
 * dst_port 0 means 4789. Checks: outer Ethernet (one optional VLAN tag),
 * IPv4 header and lengths (via pkt_parse), not a fragment, UDP to dst_port,
 * UDP length == IP payload length, VXLAN flags and reserved bits, inner frame
 * at least an Ethernet header. Does not check the VNI against a table.
 * Returns 0, or -EBADMSG after counting the reason in st (may be NULL). A
 * valid frame is not counted here: the caller adds it to decap_pkts once the
 * VNI is known to be its own (or to bad[VXLAN_BAD_VNI] when it is nobody's). */
int vxlan_decap(const uint8_t *frame, size_t len, uint16_t dst_port, struct vxlan_decap_result *r,
                struct vxlan_stats *st);

/* ---- VTEP table ---- */

/* Flood list of one VNI (configuration). */
struct vxlan_vni {
    uint32_t vni;
    uint32_t n_flood;
    uint8_t flood[VXLAN_MAX_FLOOD][4]; /* remote VTEP IPv4s, network order */
};

/*
 * The VNI list and flood lists are configuration (control thread; publish a
 * new table or quiesce the data plane to change them). The remote-MAC
 * learning part is a mac_table (domain = VNI, value = remote IPv4 as a
 * big-endian uint32) and follows its concurrency contract: lookups are
 * lock-free, learning is safe from data-plane threads.
 */
struct vxlan_vtep_table {
    struct mac_table *macs;
    uint32_t n_vnis;
    struct vxlan_vni vnis[VXLAN_MAX_VNIS];
};

int vxlan_vtep_init(struct vxlan_vtep_table *vt, uint32_t max_macs, uint64_t aging_ns,
                    uint64_t seed);
void vxlan_vtep_destroy(struct vxlan_vtep_table *vt);

/* Add a VNI (1..0xffffff). -EEXIST, -ENOSPC, -EINVAL. */
int vxlan_vtep_add_vni(struct vxlan_vtep_table *vt, uint32_t vni);
/* Remove a VNI and flush its learned MACs. -ENOENT. */
int vxlan_vtep_del_vni(struct vxlan_vtep_table *vt, uint32_t vni);
bool vxlan_vtep_has_vni(const struct vxlan_vtep_table *vt, uint32_t vni);

/* Add/remove a remote VTEP in the flood list of vni. -ENOENT (no such VNI),
 * -EEXIST, -ENOSPC, -EINVAL (zero/multicast/broadcast IPv4). */
int vxlan_vtep_add_flood(struct vxlan_vtep_table *vt, uint32_t vni, const uint8_t ip[4]);
int vxlan_vtep_del_flood(struct vxlan_vtep_table *vt, uint32_t vni, const uint8_t ip[4]);

/* Flood list for head-end replication (NULL if the VNI is unknown). */
const struct vxlan_vni *vxlan_vtep_get_vni(const struct vxlan_vtep_table *vt, uint32_t vni);

/* Learn from a decapsulated frame: inner source MAC is behind remote_ip.
 * Returns the mac_table_learn() result, or -ENOENT for an unknown VNI. */
int vxlan_vtep_learn(struct vxlan_vtep_table *vt, uint32_t vni, const uint8_t mac[PKT_ETH_ALEN],
                     const uint8_t remote_ip[4], uint64_t now);

/* Where to send a frame for mac in vni: 0 and *remote_ip, or -ENOENT
 * (unknown: flood to the VNI's flood list). */
int vxlan_vtep_lookup(const struct vxlan_vtep_table *vt, uint32_t vni,
                      const uint8_t mac[PKT_ETH_ALEN], uint8_t remote_ip[4]);

const char *vxlan_bad_name(enum vxlan_bad b);

#endif
