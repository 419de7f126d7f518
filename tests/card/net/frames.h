/* SPDX-License-Identifier: Apache-2.0 */
/* Frame builders shared by the card-net unit tests (header-only). */
#ifndef QT_TESTS_CARD_NET_FRAMES_H
#define QT_TESTS_CARD_NET_FRAMES_H

#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pkt.h"

#define FR_MAX 2048

struct frame {
    uint8_t buf[FR_MAX + 128];
    uint8_t *p; /* start of the frame; 128 bytes of headroom before it */
    size_t len;
};

static inline void fr_init(struct frame *f)
{
    memset(f->buf, 0, sizeof(f->buf));
    f->p = f->buf + 128;
    f->len = 0;
}

static inline void fr_put(struct frame *f, const void *d, size_t n)
{
    memcpy(f->p + f->len, d, n);
    f->len += n;
}

static inline void fr_u8(struct frame *f, uint8_t v)
{
    fr_put(f, &v, 1);
}

static inline void fr_be16(struct frame *f, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    fr_put(f, b, 2);
}

static inline void fr_be32(struct frame *f, uint32_t v)
{
    uint8_t b[4];
    pkt_put_be32(b, v);
    fr_put(f, b, 4);
}

static inline void fr_zero(struct frame *f, size_t n)
{
    memset(f->p + f->len, 0, n);
    f->len += n;
}

static inline void fr_eth(struct frame *f, const uint8_t *dst, const uint8_t *src, uint16_t type)
{
    fr_put(f, dst, 6);
    fr_put(f, src, 6);
    fr_be16(f, type);
}

/* Ethernet with one 802.1Q tag. */
static inline void fr_eth_vlan(struct frame *f, const uint8_t *dst, const uint8_t *src,
                               uint16_t tci, uint16_t type)
{
    fr_put(f, dst, 6);
    fr_put(f, src, 6);
    fr_be16(f, PKT_ETHERTYPE_VLAN);
    fr_be16(f, tci);
    fr_be16(f, type);
}

static inline void fr_ip4addr(uint8_t out[4], const char *s)
{
    inet_pton(AF_INET, s, out);
}

static inline void fr_ip6addr(uint8_t out[16], const char *s)
{
    inet_pton(AF_INET6, s, out);
}

/* IPv4 header (no options) with total length = 20 + payload_len. */
static inline void fr_ipv4(struct frame *f, const char *src, const char *dst, uint8_t proto,
                           size_t payload_len)
{
    uint8_t a[4], b[4];
    size_t start = f->len;
    fr_ip4addr(a, src);
    fr_ip4addr(b, dst);
    fr_u8(f, 0x45);
    fr_u8(f, 0);
    fr_be16(f, (uint16_t)(20 + payload_len));
    fr_be16(f, 1);
    fr_be16(f, 0x4000);
    fr_u8(f, 64);
    fr_u8(f, proto);
    fr_be16(f, 0);
    fr_put(f, a, 4);
    fr_put(f, b, 4);
    pkt_put_be16(f->p + start + 10, pkt_csum(f->p + start, 20));
}

static inline void fr_udp(struct frame *f, uint16_t sport, uint16_t dport, size_t payload_len)
{
    fr_be16(f, sport);
    fr_be16(f, dport);
    fr_be16(f, (uint16_t)(8 + payload_len));
    fr_be16(f, 0);
}

static inline void fr_tcp(struct frame *f, uint16_t sport, uint16_t dport)
{
    fr_be16(f, sport);
    fr_be16(f, dport);
    fr_be32(f, 1);
    fr_be32(f, 0);
    fr_u8(f, 5 << 4);
    fr_u8(f, 0x02);
    fr_be16(f, 65535);
    fr_be16(f, 0);
    fr_be16(f, 0);
}

/* Complete UDP/IPv4 frame with `payload` zero bytes. */
static inline void fr_udp4_frame(struct frame *f, const uint8_t *dst, const uint8_t *src,
                                 const char *sip, const char *dip, uint16_t sport, uint16_t dport,
                                 size_t payload)
{
    fr_init(f);
    fr_eth(f, dst, src, PKT_ETHERTYPE_IPV4);
    fr_ipv4(f, sip, dip, PKT_IPPROTO_UDP, 8 + payload);
    fr_udp(f, sport, dport, payload);
    fr_zero(f, payload);
}

static inline void fr_arp(struct frame *f, uint16_t op, const uint8_t *sha, const char *spa,
                          const uint8_t *tha, const char *tpa)
{
    uint8_t a[4], b[4];
    fr_ip4addr(a, spa);
    fr_ip4addr(b, tpa);
    fr_be16(f, 1);
    fr_be16(f, PKT_ETHERTYPE_IPV4);
    fr_u8(f, 6);
    fr_u8(f, 4);
    fr_be16(f, op);
    fr_put(f, sha, 6);
    fr_put(f, a, 4);
    fr_put(f, tha, 6);
    fr_put(f, b, 4);
}

static inline void fr_ipv6(struct frame *f, const char *src, const char *dst, uint8_t nh,
                           size_t payload_len)
{
    uint8_t a[16], b[16];
    fr_ip6addr(a, src);
    fr_ip6addr(b, dst);
    fr_be32(f, 0x60000000);
    fr_be16(f, (uint16_t)payload_len);
    fr_u8(f, nh);
    fr_u8(f, 255);
    fr_put(f, a, 16);
    fr_put(f, b, 16);
}

/* ICMPv6 NS/NA with target and an optional link-layer address option. */
static inline void fr_nd(struct frame *f, uint8_t type, const char *target, const uint8_t *lla)
{
    uint8_t t[16];
    fr_ip6addr(t, target);
    fr_u8(f, type);
    fr_u8(f, 0);
    fr_be16(f, 0);
    fr_be32(f, type == 136 ? 0x60000000 : 0);
    fr_put(f, t, 16);
    if (lla) {
        fr_u8(f, type == 135 ? 1 : 2);
        fr_u8(f, 1);
        fr_put(f, lla, 6);
    }
}

static const uint8_t MAC_A[6] = {0x52, 0x54, 0x00, 0x00, 0x00, 0x0a};
static const uint8_t MAC_B[6] = {0x52, 0x54, 0x00, 0x00, 0x00, 0x0b};
static const uint8_t MAC_C[6] = {0x52, 0x54, 0x00, 0x00, 0x00, 0x0c};
static const uint8_t MAC_BCAST[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static const uint8_t MAC_MCAST[6] = {0x01, 0x00, 0x5e, 0x00, 0x00, 0x01};

#endif
