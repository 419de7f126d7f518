/* SPDX-License-Identifier: Apache-2.0 */
/* Data-plane internals shared by dp.c and the host-port code (port_host.c). */
#ifndef QT_CARD_DP_H
#define QT_CARD_DP_H

#include "card/card.h"

#include <stddef.h>

#define DP_HEADROOM  64
#define DP_MAX_DESTS 16
#define DP_MAX_OUT   CARD_BURST
#define DP_RX_ELEMS  64
#define DP_EV_WAKE   (~0ull)

/* A tap with offload on: every frame read or written starts with a struct virtio_net_hdr
 * (no num_buffers). */
#define TAP_VNET_HDR_LEN 10

/* A packet copied out of its source, with what the switch decided about it. */
struct pkt {
    uint8_t *data; /* frame start (inside buf, after the headroom) */
    uint32_t len;
    uint16_t vid;     /* VLAN the frame belongs to */
    uint16_t out_vid; /* VLAN to tag with on egress */
    uint8_t pcp;
    uint8_t tag_len; /* 4 when data carries an outer tag that egress strips/rewrites */
    struct virtio_net_hdr_v1 vh;
    struct pkt_meta m;
    uint8_t buf[DP_HEADROOM + PKT_MAX_FRAME + 64];
};

/* A GSO frame (vh.gso_type != GSO_TYPE_NONE, validated on ingress) keeps its description
 * in the headroom of its struct pkt, which nothing else uses (the frame is after the
 * headroom or in a worker's 64 KiB buffer): struct pkt, and with it the memory layout of
 * the ordinary path, stays as it was. */
static inline struct gso_info *pkt_gso_info(struct pkt *pk)
{
    return (struct gso_info *)(void *)pk->buf;
}
_Static_assert(sizeof(struct gso_info) <= DP_HEADROOM, "gso_info fits the headroom");
_Static_assert(offsetof(struct pkt, buf) % _Alignof(struct gso_info) == 0, "gso_info aligned");

void dp_switch_burst(struct worker *w, struct port *in, struct port_queue *q, struct pkt **pkts,
                     unsigned n, uint64_t now);
/* A worker's scratch memory: dp_worker_init() before its first poll (-ENOMEM), and
 * dp_worker_fini() after its last. worker_main() does both around its loop. */
int dp_worker_init(struct worker *w);
void dp_worker_fini(struct worker *w);
/* One round over the worker's queues (the body of worker_main's loop, without the idle
 * sleep, the coalescing timers or the quiescent states: the caller is a registered RCU
 * reader and announces those). Returns the work done; *now is the clock read, or 0. */
unsigned dp_worker_poll(struct worker *w, uint64_t *now);
/* Host ports (tap, AF_PACKET): receive a burst. Returns packets read. */
unsigned dp_host_rx_burst(struct worker *w, struct port *p, struct port_queue *q, uint64_t *now);

/* The worker's next free 64 KiB GSO frame buffer (DP_HEADROOM + GSO_MAX_FRAME bytes),
 * allocated on first use; NULL when the burst has used them all (or out of memory). The
 * caller that keeps it increments w->gso_bufs_used; a receive burst starts at 0. */
uint8_t *dp_gso_buf(struct worker *w);
/* A received frame with a GSO header in pk->vh (len bytes at pk->data): validate it
 * against p->host_gso, describe it and take the switch's metadata from its first
 * segment. 0, or -EINVAL (dropped and counted on p and q). */
int dp_gso_ingress(struct worker *w, struct port *p, struct port_queue *q, struct pkt *pk,
                   uint32_t len);

#endif
