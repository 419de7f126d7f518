/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TCP and UDP segmentation offload in software (virtio-net GSO, virtio 1.2 5.1.6).
 *
 * A driver that negotiated VIRTIO_NET_F_HOST_TSO4/6 may hand the device one
 * TCP frame of up to 64 KiB of IP payload together with gso_type (TCPV4,
 * TCPV6, optionally the ECN bit), gso_size (the MSS: TCP payload bytes per
 * segment), csum_start/csum_offset (the TCP checksum, NEEDS_CSUM is
 * mandatory) and hdr_len (a hint: the headers' length). The device either
 * passes the frame whole to a receiver that takes GSO frames, or cuts it
 * into gso_size pieces, each a complete frame.
 *
 * UDP (VIRTIO_NET_F_HOST_USO, gso_type UDP_L4, IPv4 or IPv6 by the ethertype): a
 * UDP datagram of up to 64 KiB whose payload is cut into gso_size pieces, each
 * sent as a datagram of its own with its own UDP length and checksum (the
 * receiver sees several datagrams, as Linux's UDP_SEGMENT sender means it).
 *
 * gso_validate() checks a frame and its header fields and describes it;
 * gso_segment() writes one segment. Neither writes to the input frame nor
 * reads outside it. Pure logic: no threads, sockets or allocation.
 */
#ifndef QT_CARD_NET_GSO_H
#define QT_CARD_NET_GSO_H

#include "pkt.h"

#include <stdbool.h>
#include <stdint.h>

/* virtio-net header gso_type values and feature bits the common header lacks. */
#define GSO_TYPE_NONE               0
#define GSO_TYPE_TCPV4              1
#define GSO_TYPE_TCPV6              4
#define GSO_TYPE_UDP_L4             5
#define GSO_TYPE_ECN                0x80
#define GSO_VIRTIO_NET_F_GUEST_ECN  9
#define GSO_VIRTIO_NET_F_HOST_ECN   13
#define GSO_VIRTIO_NET_F_GUEST_USO4 54
#define GSO_VIRTIO_NET_F_GUEST_USO6 55
#define GSO_VIRTIO_NET_F_HOST_USO   56

/* Largest GSO frame: IPv6 header + 65535 bytes of payload behind Ethernet and two tags
 * (an IPv4 frame is smaller: its total length includes its header). */
#define GSO_MAX_FRAME (PKT_ETH_HLEN + PKT_MAX_VLANS * PKT_VLAN_HLEN + 40 + 65535)
/* Segments one frame may produce: 64 KiB at an MSS of 64 bytes. A smaller MSS is refused
 * (one descriptor must not become tens of thousands of frames). */
#define GSO_MAX_SEGS 1024

/* What the driver may use (the features it negotiated): GSO_ALLOW_* bits. */
#define GSO_ALLOW_TCPV4 0x1
#define GSO_ALLOW_TCPV6 0x2
#define GSO_ALLOW_ECN   0x4
#define GSO_ALLOW_USO4  0x8
#define GSO_ALLOW_USO6  0x10

/* The virtio-net header fields that describe a GSO frame (host byte order). */
struct gso_hdr {
    uint8_t gso_type; /* GSO_TYPE_TCPV4 / TCPV6 (optionally | GSO_TYPE_ECN) / UDP_L4 */
    bool needs_csum;  /* VIRTIO_NET_HDR_F_NEEDS_CSUM */
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
};

/* Why a GSO frame was refused. */
enum gso_bad {
    GSO_BAD_NONE = 0,
    GSO_BAD_TYPE,    /* gso_type not TCPV4/TCPV6/UDP_L4, or a type / ECN not negotiated */
    GSO_BAD_NO_CSUM, /* NEEDS_CSUM not set */
    GSO_BAD_SIZE,    /* gso_size 0, too many segments, or a segment over PKT_MAX_FRAME */
    GSO_BAD_LEN,     /* frame over GSO_MAX_FRAME, or hdr_len beyond the frame */
    GSO_BAD_L2,      /* truncated Ethernet / tags, or ethertype not the gso_type's IP */
    GSO_BAD_IP,      /* IP header bad, extension headers other than hop-by-hop and
                      * destination options, fragment, length */
    GSO_BAD_NOT_TCP, /* IP protocol / next header is not the gso_type's (TCP, or UDP) */
    GSO_BAD_TCP,     /* TCP header truncated or its data offset bad; UDP header or length bad */
    GSO_BAD_CSUM,    /* csum_start / csum_offset do not point at the L4 checksum */
    GSO_BAD__MAX
};

/* A validated GSO frame. Offsets are from the frame start. */
struct gso_info {
    uint8_t type;        /* GSO_TYPE_TCPV4, TCPV6 or UDP_L4 (ECN bit removed) */
    bool ecn;            /* the driver set GSO_TYPE_ECN */
    bool v6;             /* IPv6 (else IPv4) */
    uint8_t csum_offset; /* of the L4 checksum in the L4 header: 16 (TCP) or 6 (UDP) */
    uint16_t l3_ofs;     /* IP header */
    uint16_t l4_ofs;     /* TCP / UDP header */
    uint16_t hdr_len;    /* all headers: end of the TCP / UDP header */
    uint16_t mss;        /* gso_size */
    uint32_t payload;    /* TCP / UDP payload bytes */
    uint16_t n_segs;     /* ceil(payload / mss); 1 without payload */
    uint32_t wire_len;   /* bytes of all segments together: n_segs * hdr_len + payload */
    uint8_t bad;         /* enum gso_bad when gso_validate() failed */
};

/*
 * Check frame[0..len) with header h; allow is GSO_ALLOW_* (what the driver negotiated).
 * Returns 0 and fills *gi, or -EINVAL with gi->bad saying why. hdr_len is only a hint
 * (virtio 1.2 5.1.6.2): it must lie within the frame, the real header length is parsed.
 */
int gso_validate(const uint8_t *frame, uint32_t len, const struct gso_hdr *h, unsigned allow,
                 struct gso_info *gi);

/*
 * Write segment idx (0 .. gi->n_segs - 1) of the validated frame into out (room bytes):
 * the headers with IPv4 total length / identification (+idx) / header checksum or IPv6
 * payload length; for TCP the sequence number (+idx * mss), FIN and PSH only on the last
 * segment, CWR only on the first; for UDP the UDP length. Then the segment's payload.
 * With csum_partial the L4 checksum field holds the pseudo-header sum (for a receiver
 * that completes it: NEEDS_CSUM with csum_start = gi->l4_ofs, csum_offset =
 * gi->csum_offset); otherwise the complete checksum (0xffff for a UDP sum of 0).
 * Returns the segment's length, or -EINVAL (idx out of range) / -ENOSPC (room too small).
 */
int gso_segment(const uint8_t *frame, const struct gso_info *gi, unsigned idx, bool csum_partial,
                uint8_t *out, uint32_t room);

/* Length of segment idx (headers included); 0 when idx is out of range. */
uint32_t gso_segment_len(const struct gso_info *gi, unsigned idx);

/* Short name of a gso_bad reason, e.g. "not-tcp"; never NULL. */
const char *gso_bad_name(enum gso_bad bad);

#endif
