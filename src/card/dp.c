/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The switch data plane: poll-mode workers, ingress (VM transmit queues and
 * host ports), L2 forwarding (VLAN classification, anti-spoofing, policing,
 * storm control, MAC learning, flooding with split horizon) and egress (VM
 * receive queues with mergeable buffers, host ports).
 */
#include "card/card.h"
#include "card/dp.h"
#include "card/port_bond.h"
#include "card/port_host.h"
#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <urcu-qsbr.h>

uint64_t card_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void worker_wake(struct worker *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->wake_fd, &one, sizeof(one));
    (void)r;
}

/* ---- checksum completion for destinations that cannot take a partial checksum ---- */

static void pkt_finish_csum(struct pkt *pk)
{
    uint32_t start = pk->vh.csum_start, off = pk->vh.csum_offset;
    uint8_t *f = pk->data;
    uint16_t sum;

    if (!(pk->vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM))
        return;
    /* Offsets are relative to the frame as the sender built it (tag included). */
    if (start + off + 2 > pk->len || off > 0xffff) {
        pk->vh.flags = 0;
        return;
    }
    /* The field holds the pseudo-header sum the sender seeded; fold in the rest. */
    sum = pkt_csum(f + start, pk->len - start);
    if (sum == 0 && off == 6)
        sum = 0xffff; /* UDP: 0 means "no checksum" */
    pkt_put_be16(f + start + off, sum);
    pk->vh.flags = VIRTIO_NET_HDR_F_DATA_VALID;
    pk->vh.csum_start = pk->vh.csum_offset = 0;
}

/* ---- scatter writer over the writable segments of popped chains ---- */

struct sg_out {
    struct virtq_elem *e;
    unsigned seg;
    uint32_t off;
    uint32_t written; /* in the current chain */
};

static uint32_t sg_copy(struct sg_out *s, const uint8_t *src, uint32_t len)
{
    uint32_t done = 0;
    while (done < len) {
        struct virtq_iov *v;
        uint32_t room, n;
        if (s->seg >= (unsigned)(s->e->n_out + s->e->n_in))
            break;
        v = &s->e->iov[s->seg];
        room = v->len - s->off;
        n = len - done < room ? len - done : room;
        memcpy(v->base + s->off, src + done, n);
        done += n;
        s->off += n;
        s->written += n;
        if (s->off == v->len) {
            s->seg++;
            s->off = 0;
        }
    }
    return done;
}

/* Frame as it leaves: MACs, optional new tag, rest after the original outer tag. */
struct frame_out {
    const uint8_t *seg[3];
    uint32_t len[3];
    uint8_t tag[4];
    uint32_t total;
};

static void frame_out_build(struct frame_out *fo, const struct pkt *pk, bool tagged, uint16_t vid)
{
    uint32_t strip = pk->tag_len;
    fo->seg[0] = pk->data;
    fo->len[0] = 12;
    if (tagged) {
        uint16_t tci = (uint16_t)((pk->pcp << PKT_VLAN_PCP_SHIFT) | vid);
        pkt_put_be16(fo->tag, PKT_ETHERTYPE_VLAN);
        pkt_put_be16(fo->tag + 2, tci);
        fo->seg[1] = fo->tag;
        fo->len[1] = 4;
    } else {
        fo->seg[1] = fo->tag;
        fo->len[1] = 0;
    }
    fo->seg[2] = pk->data + 12 + strip;
    fo->len[2] = pk->len - 12 - strip;
    fo->total = fo->len[0] + fo->len[1] + fo->len[2];
}

/* ---- VM receive: deliver into a vhost-user-net port ---- */

static struct port_queue *vhost_pick_rxq(struct port *p, unsigned wid)
{
    unsigned nq = p->n_qpairs;
    for (unsigned i = 0; i < nq; i++) {
        struct port_queue *q = &p->q[(wid + i) % nq];
        if (__atomic_load_n(&q->rx_running, __ATOMIC_ACQUIRE))
            return q;
    }
    return NULL;
}

static void vhost_rx_notify(struct worker *w, struct port_queue *q, struct virtq *vq,
                            unsigned npkts, uint64_t now, const struct port_policy *pol)
{
    if (!pol->coalesce) {
        if (virtq_notify(vq))
            q->st.notifications++;
        return;
    }
    if (coalesce_complete(&q->co, npkts, now)) {
        q->co_pending = false;
        if (virtq_notify(vq))
            q->st.notifications++;
    } else if (!q->co_pending) {
        if (w->n_pending < CARD_MAX_PORTS) {
            q->co_pending = true;
            w->pending[w->n_pending].port_id = q->port->id;
            w->pending[w->n_pending].qpair = q->qpair;
            w->pending[w->n_pending].serial = q->port->serial;
            w->n_pending++;
        } else if (virtq_notify(vq)) {
            q->st.notifications++;
        }
    }
}

/*
 * Write the virtio-net header of a received packet (10 or 12 bytes) unless the buffer
 * already holds exactly that header. Drivers recycle receive buffers and the header is
 * nearly always the same (no offload flags, one buffer), so the usual case only reads a
 * line the driver has read too: it stays shared in both CPUs' caches instead of moving to
 * this CPU for the write and back to the driver's for its read, two cross-CPU transfers
 * per packet. The buffer belongs to the device until it is published in the used ring;
 * a driver that writes into it meanwhile only garbles its own packet.
 */
static inline void vnet_hdr_store(uint8_t *dst, const struct virtio_net_hdr_v1 *h, unsigned len)
{
    uint64_t a, b;
    uint32_t c = 0, d = 0;

    memcpy(&a, h, 8);
    memcpy(&b, dst, 8);
    memcpy(&c, (const uint8_t *)h + 8, len - 8);
    memcpy(&d, dst + 8, len - 8);
    if (a != b || c != d)
        memcpy(dst, h, len);
}

/* A partial checksum (and a whole GSO frame) described for the receiver: csum_start and
 * hdr_len move with the tag the frame gains or loses on the way out (fo). */
static void vnet_hdr_partial(struct pkt *pk, const struct frame_out *fo,
                             struct virtio_net_hdr_v1 *h)
{
    h->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h->csum_start = (uint16_t)(pk->vh.csum_start - pk->tag_len + fo->len[1]);
    h->csum_offset = pk->vh.csum_offset;
    if (pk->vh.gso_type != GSO_TYPE_NONE) {
        /* Only ports that take this GSO type get it whole (dp_gso_flush). */
        h->gso_type = pk->vh.gso_type;
        h->gso_size = pk->vh.gso_size;
        h->hdr_len = (uint16_t)(pkt_gso_info(pk)->hdr_len - pk->tag_len + fo->len[1]);
    }
}

/* Deliver one packet into vq (locked). Returns 0, -ENOBUFS (ring full, nothing consumed),
 * -EMSGSIZE (buffer too small, dropped) or -EINVAL (malformed ring). */
static int vhost_rx_one(struct port *p, struct virtq *vq, struct pkt *pk,
                        const struct frame_out *fo, struct virtq_elem *elems, unsigned max_elems)
{
    struct virtio_net_hdr_v1 h = {0};
    uint32_t need = p->vnet_hdr_len + fo->total;
    unsigned nbuf = 0;
    uint32_t have = 0;
    struct sg_out s;
    int ret;

    if (pk->vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
        if (p->guest_csum) {
            vnet_hdr_partial(pk, fo, &h);
        } else {
            pkt_finish_csum(pk);
            h.flags = VIRTIO_NET_HDR_F_DATA_VALID;
        }
    } else if (pk->vh.flags & VIRTIO_NET_HDR_F_DATA_VALID && p->guest_csum) {
        h.flags = VIRTIO_NET_HDR_F_DATA_VALID;
    }
    /* Common case first: the first buffer takes the header and the whole frame. */
    ret = virtq_pop(vq, &elems[0]);
    if (ret <= 0)
        return ret < 0 ? ret : -ENOBUFS;
    if (elems[0].n_out) {
        log_err("%s: receive chain %u has device-readable buffers", vq->name, elems[0].head);
        return -EINVAL;
    }
    if (elems[0].n_in && elems[0].iov[0].len >= need) {
        uint8_t *dst = elems[0].iov[0].base;
        h.num_buffers = 1;
        vnet_hdr_store(dst, &h, p->vnet_hdr_len);
        dst += p->vnet_hdr_len;
        if (fo->seg[2] == fo->seg[0] + fo->len[0] && !fo->len[1]) {
            memcpy(dst, fo->seg[0], fo->total); /* untouched frame: one copy */
        } else {
            memcpy(dst, fo->seg[0], fo->len[0]);
            memcpy(dst + fo->len[0], fo->seg[1], fo->len[1]);
            memcpy(dst + fo->len[0] + fo->len[1], fo->seg[2], fo->len[2]);
        }
        virtq_log_elem_write(vq, &elems[0], need);
        virtq_push(vq, &elems[0], need);
        return 0;
    }
    have = elems[0].in_len;
    nbuf = 1;
    while (have < need) {
        if (nbuf >= max_elems || (!p->mrg_rxbuf && nbuf == 1))
            break;
        ret = virtq_pop(vq, &elems[nbuf]);
        if (ret < 0)
            return ret;
        if (ret == 0) {
            virtq_unpop(vq, elems, (uint16_t)nbuf);
            return -ENOBUFS;
        }
        if (elems[nbuf].n_out) {
            log_err("%s: receive chain %u has device-readable buffers", vq->name, elems[nbuf].head);
            return -EINVAL;
        }
        have += elems[nbuf].in_len;
        nbuf++;
    }
    if (have < need) {
        /* Return the buffers empty: the packet does not fit what the driver gave us. */
        for (unsigned i = 0; i < nbuf; i++)
            virtq_push(vq, &elems[i], 0);
        return -EMSGSIZE;
    }
    h.num_buffers = (uint16_t)nbuf;
    memset(&s, 0, sizeof(s));
    s.e = &elems[0];
    {
        const uint8_t *segs[4] = {(const uint8_t *)&h, fo->seg[0], fo->seg[1], fo->seg[2]};
        uint32_t lens[4] = {p->vnet_hdr_len, fo->len[0], fo->len[1], fo->len[2]};
        unsigned cur = 0;
        for (unsigned k = 0; k < 4; k++) {
            uint32_t done = 0;
            while (done < lens[k]) {
                done += sg_copy(&s, segs[k] + done, lens[k] - done);
                if (done < lens[k]) {
                    /* chain full: complete it, continue in the next */
                    virtq_log_elem_write(vq, s.e, s.written);
                    virtq_push(vq, s.e, s.written);
                    cur++;
                    s.e = &elems[cur];
                    s.seg = s.e->n_out;
                    s.off = 0;
                    s.written = 0;
                }
            }
        }
        virtq_log_elem_write(vq, s.e, s.written);
        virtq_push(vq, s.e, s.written);
        /* Buffers popped but unused (can only happen when lengths shrank): give back empty. */
        for (unsigned i = cur + 1; i < nbuf; i++)
            virtq_push(vq, &elems[i], 0);
    }
    return 0;
}

static void port_mark_broken(struct card *c, struct port *p)
{
    if (!__atomic_exchange_n(&p->broken, true, __ATOMIC_ACQ_REL)) {
        uint64_t one = 1;
        ssize_t r = write(c->ctl_wake_fd, &one, sizeof(one));
        (void)r;
    }
}

static void vhost_output(struct worker *w, struct port *p, struct pkt **pk, const bool *tagged,
                         unsigned n, uint64_t now)
{
    struct port_policy *pol = rcu_dereference(p->policy);
    struct port_queue *q = vhost_pick_rxq(p, w->id);
    struct virtq *vq;
    unsigned done = 0;
    uint16_t used0;
    bool wrap0;

    if (!q) {
        p->q[0].st.rx_dropped += 0; /* no queue running: silently not delivered */
        return;
    }
    pthread_spin_lock(&q->rx_lock);
    if (!q->rx_running || p->broken) {
        pthread_spin_unlock(&q->rx_lock);
        return;
    }
    vq = &p->dev.vr[2 * q->qpair].vq;
    used0 = vq->used_idx;
    wrap0 = vq->used_wrap;
    virtq_prefetch_ahead(vq, n);
    if (virtq_avail_refresh(vq))
        virtq_prefetch(vq, n, true, p->vnet_hdr_len);
    for (unsigned i = 0; i < n; i++) {
        struct frame_out fo;
        int ret;
        frame_out_build(&fo, pk[i], tagged[i], pk[i]->out_vid);
        ret = vhost_rx_one(p, vq, pk[i], &fo, w->rx_elems, DP_RX_ELEMS);
        if (ret == 0) {
            q->st.rx_packets++;
            q->st.rx_bytes += fo.total;
            done++;
        } else if (ret == -EINVAL) {
            port_mark_broken(w->card, p);
            break;
        } else {
            q->st.rx_dropped++;
        }
    }
    if (done || vq->used_idx != used0 || vq->used_wrap != wrap0) { /* buffers returned */
        virtq_flush(vq);
        vhost_rx_notify(w, q, vq, done, now, pol);
    }
    pthread_spin_unlock(&q->rx_lock);
}

/* The virtio-net header of a frame written to a tap with offload on: a partial checksum
 * (and a GSO frame, which only comes here whole when the tap takes its type) stays
 * partial for the kernel to finish; anything else goes with no flags, and the kernel
 * checks its checksums itself (DATA_VALID from a VM is not passed on to the host). */
static void tap_vnet_hdr(struct pkt *pk, const struct frame_out *fo, struct virtio_net_hdr_v1 *h)
{
    if (!(pk->vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM))
        return;
    if (pk->vh.gso_type == GSO_TYPE_NONE &&
        (uint32_t)pk->vh.csum_start + pk->vh.csum_offset + 2 > pk->len) {
        pk->vh.flags = 0; /* not a checksum inside the frame: leave the frame as it is */
        return;
    }
    vnet_hdr_partial(pk, fo, h);
}

static void host_output(struct worker *w, struct port *p, struct pkt **pk, const bool *tagged,
                        unsigned n)
{
    struct port_queue *q = &p->q[0];
    (void)w;
    if (p->type == PORT_BOND) {
        for (unsigned i = 0; i < n; i++)
            pkt_finish_csum(pk[i]);
        port_bond_output(p, pk, tagged, n, &q->st);
        return;
    }
    pthread_mutex_lock(&p->tx_mutex);
    if (p->type == PORT_VXLAN) {
        for (unsigned i = 0; i < n; i++) {
            pkt_finish_csum(pk[i]);
            port_vxlan_output(p, pk[i], tagged[i], &q->st);
        }
        pthread_mutex_unlock(&p->tx_mutex);
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        struct virtio_net_hdr_v1 h = {0};
        struct frame_out fo;
        struct iovec iov[4];
        unsigned hl = p->tap_offload ? TAP_VNET_HDR_LEN : 0;
        ssize_t r;
        if (!p->tap_offload)
            pkt_finish_csum(pk[i]);
        frame_out_build(&fo, pk[i], tagged[i], pk[i]->out_vid);
        if (p->tap_offload)
            tap_vnet_hdr(pk[i], &fo, &h);
        iov[0].iov_base = &h;
        iov[0].iov_len = hl;
        for (unsigned k = 0; k < 3; k++) {
            iov[k + 1].iov_base = (void *)fo.seg[k];
            iov[k + 1].iov_len = fo.len[k];
        }
        r = writev(p->fd, iov, 4);
        if (r == (ssize_t)(hl + fo.total)) {
            q->st.rx_packets++;
            q->st.rx_bytes += fo.total;
        } else {
            q->st.rx_dropped++;
        }
    }
    pthread_mutex_unlock(&p->tx_mutex);
}

/* ---- forwarding ---- */

struct dest_batch {
    struct port *port;
    unsigned n;
    bool has_gso; /* a GSO frame is in the batch: dp_gso_flush decides whole or segments */
    struct pkt *pk[DP_MAX_OUT];
    bool tagged[DP_MAX_OUT];
};

static void port_output_now(struct worker *w, struct port *p, struct pkt **pk, const bool *tagged,
                            unsigned n, uint64_t now)
{
    if (p->type == PORT_VHOST)
        vhost_output(w, p, pk, tagged, n, now);
    else
        host_output(w, p, pk, tagged, n);
}

/* Egress shaping: frames within the rate go out now, the others wait in the port's FIFO
 * (as copies) until their send time; frames that would wait longer than the bound, or
 * find the FIFO full, are dropped and counted. */
static void shaped_output(struct worker *w, struct port *p, const struct port_policy *pol,
                          struct pkt **pk, const bool *tagged, unsigned n, uint64_t now)
{
    struct port_shaper *sh = &p->shaper;
    uint64_t gen = __atomic_load_n(&p->policy_gen, __ATOMIC_ACQUIRE) + 1;
    struct pkt *imm[DP_MAX_OUT];
    bool imm_tag[DP_MAX_OUT];
    unsigned nimm = 0;

    pthread_mutex_lock(&sh->lock);
    if (sh->gen != gen) {
        shaper_init(&sh->sh, TB_UNIT_BITS, pol->egress_rate_bps, pol->egress_burst_bits,
                    pol->egress_max_delay_ns, now);
        sh->gen = gen;
    }
    for (unsigned i = 0; i < n; i++) {
        uint32_t len = pk[i]->len - pk[i]->tag_len + (tagged[i] ? 4 : 0);
        uint64_t at;
        struct pkt *c;
        unsigned idx;

        if (shaper_reserve(&sh->sh, len, now, &at)) {
            sh->dropped++;
            continue;
        }
        if (at <= now && sh->count == 0) {
            imm[nimm] = pk[i];
            imm_tag[nimm++] = tagged[i];
            continue;
        }
        idx = (sh->head + sh->count) % SHAPER_SLOTS;
        if (sh->count == SHAPER_SLOTS ||
            (!sh->slot[idx].pk && !(sh->slot[idx].pk = malloc(sizeof(struct pkt))))) {
            sh->dropped++;
            continue;
        }
        c = sh->slot[idx].pk;
        c->data = c->buf + DP_HEADROOM;
        memcpy(c->data, pk[i]->data, pk[i]->len);
        c->len = pk[i]->len;
        c->vid = pk[i]->vid;
        c->out_vid = pk[i]->out_vid;
        c->pcp = pk[i]->pcp;
        c->tag_len = pk[i]->tag_len;
        c->vh = pk[i]->vh;
        c->m = pk[i]->m;
        sh->slot[idx].send_at = at;
        sh->slot[idx].tagged = tagged[i];
        sh->count++;
        sh->delayed++;
        __atomic_add_fetch(&w->card->n_delayed, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&sh->lock);
    if (nimm)
        port_output_now(w, p, imm, imm_tag, nimm, now);
}

/* Send what is due from every shaper (any worker may; one at a time per port). */
static unsigned worker_service_shapers(struct worker *w, uint64_t now)
{
    struct card *c = w->card;
    unsigned total = 0;

    if (!__atomic_load_n(&c->n_delayed, __ATOMIC_RELAXED))
        return 0;
    for (unsigned id = 1; id < CARD_MAX_PORTS; id++) {
        struct port *p = rcu_dereference(c->ports[id]);
        struct port_shaper *sh;
        struct pkt *batch[CARD_BURST];
        bool tags[CARD_BURST];
        unsigned n = 0;

        if (!p || !__atomic_load_n(&p->shaper.count, __ATOMIC_RELAXED))
            continue;
        sh = &p->shaper;
        if (pthread_mutex_trylock(&sh->lock))
            continue;
        while (sh->count && n < CARD_BURST && sh->slot[sh->head].send_at <= now) {
            batch[n] = sh->slot[sh->head].pk;
            tags[n++] = sh->slot[sh->head].tagged;
            sh->head = (sh->head + 1) % SHAPER_SLOTS;
            sh->count--;
        }
        /* Sent under the lock: the slots are reused once it is released. */
        if (n)
            port_output_now(w, p, batch, tags, n, now);
        pthread_mutex_unlock(&sh->lock);
        __atomic_sub_fetch(&c->n_delayed, n, __ATOMIC_RELAXED);
        total += n;
    }
    return total;
}

/* ---- GSO frames towards a port: whole, or segmented in software ---- */

static void dp_output(struct worker *w, struct port *p, const struct port_policy *pol,
                      struct pkt **pk, const bool *tagged, unsigned n, uint64_t now)
{
    if (pol->egress_rate_bps)
        shaped_output(w, p, pol, pk, tagged, n, now);
    else
        port_output_now(w, p, pk, tagged, n, now);
}

/* Does p take this GSO frame as one? A VM that negotiated the type (and ECN when the frame
 * carries it) with GUEST_CSUM, or a tap with offload on (guest_gso: what its kernel takes),
 * and is not shaped (the shaper's FIFO holds struct pkt copies, too small for a GSO frame). */
static bool dp_port_takes_gso(const struct port *p, const struct port_policy *pol, struct pkt *pk)
{
    const struct gso_info *gi = pkt_gso_info(pk);
    unsigned need = gi->type == GSO_TYPE_UDP_L4  ? (gi->v6 ? GSO_ALLOW_USO6 : GSO_ALLOW_USO4)
                    : gi->type == GSO_TYPE_TCPV4 ? GSO_ALLOW_TCPV4
                                                 : GSO_ALLOW_TCPV6;
    if (gi->ecn)
        need |= GSO_ALLOW_ECN;
    return (p->type == PORT_VHOST || p->type == PORT_TAP) && !pol->egress_rate_bps &&
           (p->guest_gso & need) == need;
}

/* Cut pk into segments and send them, CARD_BURST at a time. A VM that negotiated
 * GUEST_CSUM gets them with the TCP / UDP checksum partial (NEEDS_CSUM), everyone else
 * complete. */
__attribute__((noinline, cold)) static void dp_gso_segment_out(struct worker *w, struct port *p,
                                                               const struct port_policy *pol,
                                                               struct pkt *pk, bool tagged,
                                                               uint64_t now)
{
    bool partial = (p->type == PORT_VHOST && p->guest_csum) || p->tap_offload;
    struct pkt *ptrs[CARD_BURST];
    bool tags[CARD_BURST];
    struct gso_info *gi = pkt_gso_info(pk);
    unsigned nseg = gi->n_segs, done = 0;

    while (done < nseg) {
        unsigned k;
        for (k = 0; k < CARD_BURST && done + k < nseg; k++) {
            struct pkt *s = &w->gso_segs[k];
            int len;
            s->data = s->buf + DP_HEADROOM;
            len =
                gso_segment(pk->data, pkt_gso_info(pk), done + k, partial, s->data, PKT_MAX_FRAME);
            if (len < 0) /* validated on ingress: cannot happen */
                break;
            s->len = (uint32_t)len;
            s->vid = pk->vid;
            s->out_vid = pk->out_vid;
            s->pcp = pk->pcp;
            s->tag_len = pk->tag_len;
            s->m = pk->m;
            memset(&s->vh, 0, sizeof(s->vh));
            if (partial) {
                s->vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
                s->vh.csum_start = gi->l4_ofs;
                s->vh.csum_offset = gi->csum_offset;
            } else {
                s->vh.flags = VIRTIO_NET_HDR_F_DATA_VALID;
            }
            ptrs[k] = s;
            tags[k] = tagged;
        }
        if (!k)
            break;
        dp_output(w, p, pol, ptrs, tags, k, now);
        done += k;
    }
    __atomic_add_fetch(&p->gso_segmented, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&p->gso_segments, done, __ATOMIC_RELAXED);
}

/* A batch with GSO frames: frames the port takes go out together in order; each GSO
 * frame it does not take goes out as its segments at its place in the batch. */
__attribute__((noinline, cold)) static void
dp_gso_flush(struct worker *w, struct dest_batch *d, const struct port_policy *pol, uint64_t now)
{
    struct port *p = d->port;
    unsigned start = 0;

    for (unsigned i = 0; i < d->n; i++) {
        struct pkt *pk = d->pk[i];
        if (pk->vh.gso_type == GSO_TYPE_NONE)
            continue;
        if (dp_port_takes_gso(p, pol, pk)) {
            __atomic_add_fetch(&p->gso_whole, 1, __ATOMIC_RELAXED);
            continue;
        }
        if (i > start)
            dp_output(w, p, pol, d->pk + start, d->tagged + start, i - start, now);
        start = i + 1;
        dp_gso_segment_out(w, p, pol, pk, d->tagged[i], now);
    }
    if (d->n > start)
        dp_output(w, p, pol, d->pk + start, d->tagged + start, d->n - start, now);
}

static void dest_flush(struct worker *w, struct dest_batch *d, uint64_t now)
{
    struct port_policy *pol;

    if (!d->n)
        return;
    pol = rcu_dereference(d->port->policy);
    if (d->has_gso) {
        dp_gso_flush(w, d, pol, now);
        d->has_gso = false;
    } else if (pol->egress_rate_bps) {
        shaped_output(w, d->port, pol, d->pk, d->tagged, d->n, now);
    } else {
        port_output_now(w, d->port, d->pk, d->tagged, d->n, now);
    }
    d->n = 0;
}

static void dest_add(struct worker *w, struct dest_batch *dests, unsigned *ndests, struct port *dp,
                     struct pkt *pk, bool tagged, uint64_t now)
{
    unsigned i;
    for (i = 0; i < *ndests; i++)
        if (dests[i].port == dp)
            break;
    if (i == *ndests) {
        if (*ndests == DP_MAX_DESTS) {
            for (unsigned k = 0; k < *ndests; k++)
                dest_flush(w, &dests[k], now);
            *ndests = 0;
            i = 0;
        }
        dests[i].port = dp;
        dests[i].n = 0;
        dests[i].has_gso = false;
        (*ndests)++;
    }
    if (dests[i].n == DP_MAX_OUT)
        dest_flush(w, &dests[i], now);
    dests[i].pk[dests[i].n] = pk;
    dests[i].tagged[dests[i].n] = tagged;
    dests[i].n++;
    if (pk->vh.gso_type != GSO_TYPE_NONE)
        dests[i].has_gso = true;
}

static bool egress_ok(struct port *dp, struct pkt *pk, bool *tagged)
{
    struct port_policy *pol = rcu_dereference(dp->policy);
    enum vlan_egress act;

    if (vlan_port_egress(&pol->vlan, pk->vid, NULL, &act))
        return false;
    if (pol->sec_enabled && !pol->sec.promiscuous &&
        !port_security_egress_allowed(&pol->sec, pk->m.dst_mac, NULL))
        return false;
    *tagged = act == VLAN_EGRESS_TAGGED;
    return true;
}

static void policy_refresh(struct port *p, struct port_queue *q, const struct port_policy *pol,
                           uint64_t now)
{
    uint64_t gen = __atomic_load_n(&p->policy_gen, __ATOMIC_ACQUIRE);
    if (q->policy_gen == gen)
        return;
    q->policy_gen = gen;
    memset(&q->policer, 0, sizeof(q->policer));
    if (pol->ingress_rate_bps)
        policer_init(&q->policer, TB_UNIT_BITS, pol->ingress_rate_bps, pol->ingress_burst_bits,
                     now);
    memset(&q->storm, 0, sizeof(q->storm));
    storm_control_set(&q->storm, STORM_BROADCAST, TB_UNIT_PACKETS, pol->storm_bcast_pps,
                      pol->storm_bcast_pps ? pol->storm_bcast_pps : 1, now);
    storm_control_set(&q->storm, STORM_MULTICAST, TB_UNIT_PACKETS, pol->storm_mcast_pps,
                      pol->storm_mcast_pps ? pol->storm_mcast_pps : 1, now);
    storm_control_set(&q->storm, STORM_UNKNOWN_UNICAST, TB_UNIT_PACKETS, pol->storm_unknown_pps,
                      pol->storm_unknown_pps ? pol->storm_unknown_pps : 1, now);
}

/* Storm control counts packets: a GSO frame is gso_segs of them (one admitted already). */
__attribute__((noinline, cold)) static bool dp_gso_storm_admit(struct port_queue *q, struct pkt *pk,
                                                               bool known, uint64_t now)
{
    enum storm_class cls = storm_control_classify(&pk->m, known);
    for (unsigned i = 1; i < pkt_gso_info(pk)->n_segs; i++)
        if (!storm_control_admit(&q->storm, cls, pk->len, now))
            return false;
    return true;
}

void dp_switch_burst(struct worker *w, struct port *in, struct port_queue *q, struct pkt **pkts,
                     unsigned n, uint64_t now)
{
    struct card *c = w->card;
    struct port_policy *pol = rcu_dereference(in->policy);
    struct vswitch *sw = rcu_dereference(c->switches[in->sw]);
    struct dest_batch *dests = w->dests;
    unsigned ndests = 0;
    /* Bursts usually carry one conversation: the last source learned and the
     * last destination looked up are remembered for the rest of the burst
     * (a learn that touches the table forgets the lookup). */
    const uint8_t *learned_src = NULL, *looked_dst = NULL;
    uint16_t learned_vid = 0, looked_vid = 0;
    bool looked_known = false;
    uint32_t looked_id = 0;

    if (!sw)
        return;
    policy_refresh(in, q, pol, now);
    for (unsigned i = 0; i < n; i++) {
        struct pkt *pk = pkts[i];
        struct vlan_ingress ing;
        uint32_t dst_id;
        bool known;
        /* A GSO frame was validated and parsed (its first segment) on ingress. */
        int rc = pk->vh.gso_type == GSO_TYPE_NONE ? pkt_parse(pk->data, pk->len, &pk->m) : 0;

        if (rc && pk->m.bad <= PKT_BAD_TOO_MANY_TAGS) {
            in->drops[DROP_MALFORMED]++;
            q->st.tx_dropped++;
            continue;
        }
        if (pol->sec_enabled &&
            port_security_check_ingress(&pol->sec, &pk->m, rc, &q->sec_st) != SEC_PASS) {
            in->drops[DROP_SPOOF]++;
            q->st.tx_dropped++;
            continue;
        }
        if (vlan_port_ingress(&pol->vlan, &pk->m, &q->vlan_st, &ing)) {
            in->drops[DROP_VLAN]++;
            q->st.tx_dropped++;
            continue;
        }
        pk->vid = ing.vid;
        pk->out_vid = ing.vid;
        pk->pcp = ing.pcp;
        pk->tag_len = (pk->m.n_vlans && ing.tagged) ? 4 : 0;
        if (pol->ingress_rate_bps &&
            !policer_admit(&q->policer,
                           pk->vh.gso_type == GSO_TYPE_NONE ? pk->len : pkt_gso_info(pk)->wire_len,
                           now)) {
            in->drops[DROP_POLICER]++;
            q->st.tx_dropped++;
            continue;
        }
        if (!pkt_mac_is_multicast(pk->m.src_mac) &&
            !(learned_src && learned_vid == pk->vid && !memcmp(learned_src, pk->m.src_mac, 6))) {
            mac_table_learn(sw->fdb, pk->vid, pk->m.src_mac, in->id, now);
            learned_src = pk->m.src_mac;
            learned_vid = pk->vid;
            looked_dst = NULL;
        }
        if (pkt_mac_is_multicast(pk->m.dst_mac)) {
            known = false;
        } else if (looked_dst && looked_vid == pk->vid && !memcmp(looked_dst, pk->m.dst_mac, 6)) {
            known = looked_known;
            dst_id = looked_id;
        } else {
            known = mac_table_lookup(sw->fdb, pk->vid, pk->m.dst_mac, &dst_id) == 0;
            looked_dst = pk->m.dst_mac;
            looked_vid = pk->vid;
            looked_known = known;
            looked_id = dst_id;
        }
        if (!storm_control_admit(&q->storm, storm_control_classify(&pk->m, known), pk->len, now) ||
            (pk->vh.gso_type != GSO_TYPE_NONE && !dp_gso_storm_admit(q, pk, known, now))) {
            in->drops[DROP_STORM]++;
            q->st.tx_dropped++;
            continue;
        }
        if (known) {
            struct port *dp = dst_id < CARD_MAX_PORTS ? rcu_dereference(c->ports[dst_id]) : NULL;
            bool tagged;
            if (!dp || dp == in || dp->sw != in->sw) {
                in->drops[DROP_NO_DEST]++;
                continue;
            }
            if (egress_ok(dp, pk, &tagged))
                dest_add(w, dests, &ndests, dp, pk, tagged, now);
            continue;
        }
        /* Flood within the switch, never back to the input port (split horizon). */
        {
            struct port_list *m = rcu_dereference(sw->members);
            for (unsigned k = 0; m && k < m->n; k++) {
                struct port *dp = rcu_dereference(c->ports[m->ids[k]]);
                bool tagged;
                if (!dp || dp == in)
                    continue;
                if (egress_ok(dp, pk, &tagged))
                    dest_add(w, dests, &ndests, dp, pk, tagged, now);
            }
        }
    }
    for (unsigned k = 0; k < ndests; k++)
        dest_flush(w, &dests[k], now);
}

/* ---- VM transmit: pull packets out of a vhost-user-net port ---- */

static int dp_gso_alloc(struct worker *w)
{
    if (!w->gso_segs) {
        w->gso_segs = aligned_alloc(64, sizeof(struct pkt) * CARD_BURST);
        if (!w->gso_segs)
            return -ENOMEM;
    }
    return 0;
}

/* See dp.h. The port's host_gso says what it may send: what a VM negotiated, what a tap
 * was told (TUNSETOFFLOAD). */
__attribute__((noinline, cold)) int
dp_gso_ingress(struct worker *w, struct port *p, struct port_queue *q, struct pkt *pk, uint32_t len)
{
    struct gso_hdr gh = {.gso_type = pk->vh.gso_type,
                         .needs_csum = pk->vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM,
                         .hdr_len = pk->vh.hdr_len,
                         .gso_size = pk->vh.gso_size,
                         .csum_start = pk->vh.csum_start,
                         .csum_offset = pk->vh.csum_offset};
    int sl;

    if (dp_gso_alloc(w)) {
        log_err("worker %u: out of memory for GSO segments", w->id);
        goto drop;
    }
    if (gso_validate(pk->data, len, &gh, p->host_gso, pkt_gso_info(pk))) {
        log_debug("port '%s': GSO frame of %u bytes refused: %s", p->name, len,
                  gso_bad_name(pkt_gso_info(pk)->bad));
        goto drop;
    }
    sl = gso_segment(pk->data, pkt_gso_info(pk), 0, true, w->gso_segs[0].buf, PKT_MAX_FRAME);
    if (sl < 0 || pkt_parse(w->gso_segs[0].buf, (size_t)sl, &pk->m))
        goto drop;
    __atomic_add_fetch(&p->gso_rx, 1, __ATOMIC_RELAXED);
    return 0;
drop:
    p->drops[DROP_GSO]++;
    q->st.tx_dropped++;
    return -EINVAL;
}

/* Copy a transmitted chain out of the guest: its first hl bytes into *vh, the frame
 * after them to dst (room checked by the caller). Returns the frame's length. */
static uint32_t vhost_copy_chain(const struct virtq_elem *e, uint32_t hl,
                                 struct virtio_net_hdr_v1 *vh, uint8_t *dst)
{
    uint32_t skip = hl, got = 0;

    for (unsigned s = 0; s < e->n_out; s++) {
        const uint8_t *src = e->iov[s].base;
        uint32_t l = e->iov[s].len;
        if (skip) {
            uint32_t hcopy = l < skip ? l : skip;
            memcpy((uint8_t *)vh + (hl - skip), src, hcopy);
            skip -= hcopy;
            src += hcopy;
            l -= hcopy;
        }
        memcpy(dst + got, src, l);
        got += l;
    }
    return got;
}

uint8_t *dp_gso_buf(struct worker *w)
{
    uint8_t *buf;

    if (w->gso_bufs_used == CARD_GSO_BUFS)
        return NULL;
    buf = w->gso_bufs[w->gso_bufs_used];
    if (!buf && !(buf = w->gso_bufs[w->gso_bufs_used] = malloc(DP_HEADROOM + GSO_MAX_FRAME)))
        log_err("worker %u: out of memory for a GSO frame", w->id);
    return buf;
}

/* A chain over PKT_MAX_FRAME (or under an Ethernet header): only a GSO frame may be that
 * big; it is copied into one of the worker's 64 KiB buffers. 0 (pk ready), -EINVAL
 * (dropped and counted) or -EAGAIN (no buffer left in this burst: leave the chain). */
__attribute__((noinline, cold)) static int vhost_tx_big(struct worker *w, struct port *p,
                                                        struct port_queue *q,
                                                        const struct virtq_elem *e, struct pkt *pk)
{
    uint32_t hl = p->vnet_hdr_len, got;
    uint8_t *buf;

    if (e->out_len < hl + PKT_ETH_HLEN || e->out_len - hl > GSO_MAX_FRAME || !p->host_gso) {
        p->drops[DROP_MALFORMED]++;
        q->st.tx_dropped++;
        return -EINVAL;
    }
    if (w->gso_bufs_used == CARD_GSO_BUFS)
        return -EAGAIN;
    if (!(buf = dp_gso_buf(w))) {
        p->drops[DROP_GSO]++;
        q->st.tx_dropped++;
        return -EINVAL;
    }
    pk->data = buf + DP_HEADROOM;
    got = vhost_copy_chain(e, hl, &pk->vh, pk->data);
    if (pk->vh.gso_type == GSO_TYPE_NONE) {
        p->drops[DROP_MALFORMED]++; /* oversize without GSO */
        q->st.tx_dropped++;
        return -EINVAL;
    }
    if (dp_gso_ingress(w, p, q, pk, got))
        return -EINVAL;
    w->gso_bufs_used++;
    pk->len = got;
    q->st.tx_packets++;
    q->st.tx_bytes += got;
    return 0;
}

static unsigned vhost_tx_burst(struct worker *w, struct port *p, struct port_queue *q,
                               uint64_t *now)
{
    struct virtq *vq = &p->dev.vr[2 * q->qpair + 1].vq;
    struct pkt **pkts = w->pkt_ptrs;
    unsigned n = 0, popped = 0;

    if (q->tx_busy) /* the last poll found work: this one likely will too */
        virtq_prefetch_ahead(vq, CARD_BURST);
    q->tx_busy = virtq_avail_refresh(vq) != 0;
    if (!q->tx_busy)
        return 0;
    virtq_prefetch(vq, CARD_BURST, false, 0);
    w->gso_bufs_used = 0;
    while (popped < CARD_BURST) {
        struct virtq_elem *e = &w->tx_elem;
        struct pkt *pk = &w->pkts[n];
        uint32_t hl = p->vnet_hdr_len, got;
        int ret = virtq_pop(vq, e);

        if (ret == 0)
            break;
        if (ret < 0) {
            port_mark_broken(w->card, p);
            break;
        }
        popped++;
        pk->data = pk->buf + DP_HEADROOM;
        memset(&pk->vh, 0, sizeof(pk->vh));
        if (e->out_len < hl + PKT_ETH_HLEN || e->out_len - hl > PKT_MAX_FRAME) {
            int r = vhost_tx_big(w, p, q, e, pk);
            if (r == -EAGAIN) { /* next round */
                virtq_unpop(vq, e, 1);
                popped--;
                break;
            }
            virtq_push(vq, e, 0);
            if (r == 0)
                pkts[n++] = pk;
            continue;
        }
        if (e->n_out == 1) {
            /* One segment: header and frame side by side. */
            const uint8_t *src = e->iov[0].base;
            if (hl == sizeof(pk->vh))
                memcpy(&pk->vh, src, sizeof(pk->vh));
            else
                memcpy(&pk->vh, src, 10);
            got = e->out_len - hl;
            memcpy(pk->data, src + hl, got);
        } else {
            got = vhost_copy_chain(e, hl, &pk->vh, pk->data);
        }
        virtq_push(vq, e, 0);
        if (pk->vh.gso_type != GSO_TYPE_NONE && dp_gso_ingress(w, p, q, pk, got))
            continue;
        pk->len = got;
        q->st.tx_packets++;
        q->st.tx_bytes += got;
        pkts[n++] = pk;
    }
    if (popped) {
        virtq_flush(vq);
        if (virtq_notify(vq))
            q->st.notifications++;
    }
    if (n) {
        if (!*now) /* one clock read per poll round */
            *now = card_now_ns();
        dp_switch_burst(w, p, q, pkts, n, *now);
    }
    return popped;
}

/* ---- worker loop ---- */

static void worker_flush_pending(struct worker *w, uint64_t now, bool force)
{
    unsigned keep = 0;
    for (unsigned i = 0; i < w->n_pending; i++) {
        struct port *p = rcu_dereference(w->card->ports[w->pending[i].port_id]);
        struct port_queue *q;
        bool done = true;
        if (!p || p->serial != w->pending[i].serial)
            continue;
        q = &p->q[w->pending[i].qpair];
        pthread_spin_lock(&q->rx_lock);
        if (q->co_pending && q->rx_running) {
            if (force || coalesce_poll(&q->co, now)) {
                /* Held completions: signal if the driver still asks for it (event idx). */
                if (virtq_notify(&p->dev.vr[2 * q->qpair].vq))
                    q->st.notifications++;
                q->co_pending = false;
            } else {
                done = false;
            }
        } else {
            q->co_pending = false;
        }
        pthread_spin_unlock(&q->rx_lock);
        if (!done)
            w->pending[keep++] = w->pending[i];
    }
    w->n_pending = keep;
}

unsigned dp_worker_poll(struct worker *w, uint64_t *now)
{
    struct poll_list *pl = rcu_dereference(w->polls);
    unsigned work = 0;

    for (unsigned i = 0; pl && i < pl->n; i++) {
        struct port *p = pl->e[i].port;
        struct port_queue *q = &p->q[pl->e[i].qpair];
        if (p->broken)
            continue;
        if (p->type == PORT_VHOST) {
            if (__atomic_load_n(&q->tx_running, __ATOMIC_ACQUIRE))
                work += vhost_tx_burst(w, p, q, now);
        } else {
            work += dp_host_rx_burst(w, p, q, now);
        }
    }
    return work;
}

/* Re-arm notifications on every polled queue; false when work arrived meanwhile. */
static bool worker_prepare_sleep(struct worker *w)
{
    struct poll_list *pl = rcu_dereference(w->polls);
    bool idle = true;

    for (unsigned i = 0; pl && i < pl->n; i++) {
        struct port *p = pl->e[i].port;
        struct port_queue *q = &p->q[pl->e[i].qpair];
        if (p->type == PORT_VHOST && __atomic_load_n(&q->tx_running, __ATOMIC_ACQUIRE) &&
            !p->broken && virtq_enable_kicks(&p->dev.vr[2 * q->qpair + 1].vq))
            idle = false;
    }
    return idle;
}

static void worker_end_sleep(struct worker *w)
{
    struct poll_list *pl = rcu_dereference(w->polls);
    for (unsigned i = 0; pl && i < pl->n; i++) {
        struct port *p = pl->e[i].port;
        struct port_queue *q = &p->q[pl->e[i].qpair];
        if (p->type == PORT_VHOST && __atomic_load_n(&q->tx_running, __ATOMIC_ACQUIRE) &&
            !p->broken)
            virtq_disable_kicks(&p->dev.vr[2 * q->qpair + 1].vq);
    }
}

int dp_worker_init(struct worker *w)
{
    w->pkts = aligned_alloc(64, sizeof(struct pkt) * CARD_BURST);
    w->dests = calloc(DP_MAX_DESTS, sizeof(*w->dests));
    w->rx_elems = calloc(DP_RX_ELEMS, sizeof(struct virtq_elem));
    if (!w->pkts || !w->dests || !w->rx_elems) {
        log_err("worker %u: out of memory", w->id);
        dp_worker_fini(w);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < CARD_BURST; i++)
        w->pkts[i].data = w->pkts[i].buf + DP_HEADROOM;
    return 0;
}

void dp_worker_fini(struct worker *w)
{
    free(w->pkts);
    free(w->dests);
    free(w->rx_elems);
    free(w->gso_segs);
    w->pkts = NULL;
    w->dests = NULL;
    w->rx_elems = NULL;
    w->gso_segs = NULL;
    for (unsigned i = 0; i < CARD_GSO_BUFS; i++) {
        free(w->gso_bufs[i]);
        w->gso_bufs[i] = NULL;
    }
}

void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t idle_ns = (uint64_t)w->card->cfg.idle_us * 1000;
    uint64_t last_work = card_now_ns();

    if (dp_worker_init(w))
        return NULL;
    rcu_register_thread();
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        uint64_t now = 0;
        unsigned work = dp_worker_poll(w, &now);

        w->loops++;
        if (work) {
            w->busy_loops++;
            last_work = now ? now : card_now_ns();
        }
        if (w->n_pending)
            worker_flush_pending(w, now ? now : card_now_ns(), false);
        if (__atomic_load_n(&w->card->n_delayed, __ATOMIC_RELAXED)) {
            /* Shaped frames are waiting: keep polling (no sleep) and send the due ones. */
            now = card_now_ns();
            work += worker_service_shapers(w, now);
            last_work = now;
        }
        /* Grace periods need a quiescent state from every worker now and then, not
         * every round: one per 16 rounds keeps the announcement off the fast path. */
        if (!(w->loops & 15))
            rcu_quiescent_state();
        if (work || (w->loops & 63))
            continue;
        now = card_now_ns();
        if (now - last_work < idle_ns)
            continue;
        /* Idle: sleep on the kick eventfds. */
        worker_flush_pending(w, now, true);
        if (!worker_prepare_sleep(w)) {
            last_work = now;
            continue;
        }
        {
            struct epoll_event ev[16];
            int nev;
            rcu_thread_offline();
            nev = epoll_wait(w->epfd, ev, 16, 100);
            rcu_thread_online();
            for (int i = 0; i < nev; i++) {
                if (ev[i].data.u64 == DP_EV_WAKE) {
                    uint64_t v;
                    ssize_t r = read(w->wake_fd, &v, sizeof(v));
                    (void)r;
                }
            }
            w->sleeps++;
        }
        worker_end_sleep(w);
        last_work = card_now_ns();
    }
    rcu_unregister_thread();
    dp_worker_fini(w);
    return NULL;
}
