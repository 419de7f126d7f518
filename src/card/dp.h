/* SPDX-License-Identifier: Apache-2.0 */
/* Data-plane internals shared by dp.c and the host-port code (port_host.c). */
#ifndef QT_CARD_DP_H
#define QT_CARD_DP_H

#include "card/card.h"

#define DP_HEADROOM  64
#define DP_MAX_DESTS 16
#define DP_MAX_OUT   CARD_BURST
#define DP_RX_ELEMS  64
#define DP_EV_WAKE   (~0ull)

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
    struct gso_info gi; /* valid when vh.gso_type != GSO_TYPE_NONE (validated on ingress) */
    uint8_t buf[DP_HEADROOM + PKT_MAX_FRAME + 64];
};

void dp_switch_burst(struct worker *w, struct port *in, struct port_queue *q, struct pkt **pkts,
                     unsigned n, uint64_t now);
/* Host ports (tap, AF_PACKET): receive a burst. Returns packets read. */
unsigned dp_host_rx_burst(struct worker *w, struct port *p, struct port_queue *q, uint64_t *now);

#endif
