/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user-net device glue: features and config space of a VM port, and
 * handing its rings to (and taking them back from) the poll-mode workers.
 */
#include "card/card.h"
#include "card/dp.h"
#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <urcu-qsbr.h>

static int vhost_net_get_config(void *opaque, uint32_t offset, uint8_t *buf, uint32_t size)
{
    struct port *p = opaque;
    struct virtio_net_config cfg = {
        .status = VIRTIO_NET_S_LINK_UP, .max_virtqueue_pairs = (uint16_t)p->n_qpairs, .mtu = 9000};

    memcpy(cfg.mac, p->mac, 6);
    if (offset > sizeof(cfg) || size > sizeof(cfg) - offset)
        return -EINVAL;
    memcpy(buf, (uint8_t *)&cfg + offset, size);
    return 0;
}

static int vhost_net_set_config(void *opaque, uint32_t offset, const uint8_t *buf, uint32_t size)
{
    struct port *p = opaque;
    (void)buf;
    log_warn("port '%s': frontend wrote %u config bytes at %u; virtio-net config is read-only",
             p->name, size, offset);
    return 0;
}

void port_vhost_sync_features(struct port *p)
{
    uint64_t f = p->dev.features;
    p->guest_csum = f & (1ull << VIRTIO_NET_F_GUEST_CSUM);
    p->mrg_rxbuf = f & (1ull << VIRTIO_NET_F_MRG_RXBUF);
    /* TSO needs the checksum offload of the same direction (virtio 1.2 5.1.3.1). */
    p->host_gso = 0;
    if (f & (1ull << VIRTIO_NET_F_CSUM)) {
        if (f & (1ull << VIRTIO_NET_F_HOST_TSO4))
            p->host_gso |= GSO_ALLOW_TCPV4;
        if (f & (1ull << VIRTIO_NET_F_HOST_TSO6))
            p->host_gso |= GSO_ALLOW_TCPV6;
        if (p->host_gso && (f & (1ull << GSO_VIRTIO_NET_F_HOST_ECN)))
            p->host_gso |= GSO_ALLOW_ECN;
        if (f & (1ull << GSO_VIRTIO_NET_F_HOST_USO))
            p->host_gso |= GSO_ALLOW_USO4 | GSO_ALLOW_USO6;
    }
    p->guest_gso = 0;
    if (p->guest_csum) {
        if (f & (1ull << VIRTIO_NET_F_GUEST_TSO4))
            p->guest_gso |= GSO_ALLOW_TCPV4;
        if (f & (1ull << VIRTIO_NET_F_GUEST_TSO6))
            p->guest_gso |= GSO_ALLOW_TCPV6;
        if (p->guest_gso && (f & (1ull << GSO_VIRTIO_NET_F_GUEST_ECN)))
            p->guest_gso |= GSO_ALLOW_ECN;
        if (f & (1ull << GSO_VIRTIO_NET_F_GUEST_USO4))
            p->guest_gso |= GSO_ALLOW_USO4;
        if (f & (1ull << GSO_VIRTIO_NET_F_GUEST_USO6))
            p->guest_gso |= GSO_ALLOW_USO6;
    }
    p->vnet_hdr_len = ((f & (1ull << VIRTIO_F_VERSION_1)) || p->mrg_rxbuf)
                          ? VIRTIO_NET_HDR_LEN
                          : VIRTIO_NET_HDR_LEN_LEGACY;
}

static void vhost_net_features_set(void *opaque, struct vu_dev *dev, uint64_t features)
{
    struct port *p = opaque;
    (void)dev;
    port_vhost_sync_features(p);
    log_info("port '%s': driver features 0x%llx (%s rings, checksum %s/%s, mergeable rx %s, "
             "TSO from the VM %s, to the VM %s)",
             p->name, (unsigned long long)features,
             (features & (1ull << VIRTIO_F_RING_PACKED)) ? "packed" : "split",
             (features & (1ull << VIRTIO_NET_F_CSUM)) ? "tx" : "-", p->guest_csum ? "rx" : "-",
             p->mrg_rxbuf ? "on" : "off",
             (p->host_gso & (GSO_ALLOW_TCPV4 | GSO_ALLOW_TCPV6)) ? "on" : "off",
             (p->guest_gso & (GSO_ALLOW_TCPV4 | GSO_ALLOW_TCPV6)) ? "on" : "off");
}

static unsigned worker_pick(struct card *c)
{
    unsigned best = 0, best_n = ~0u;
    for (unsigned i = 0; i < c->n_workers; i++) {
        struct poll_list *pl = c->workers[i].polls;
        unsigned n = pl ? pl->n : 0;
        if (n < best_n) {
            best = i;
            best_n = n;
        }
    }
    return best;
}

/* Replace worker w's poll list with one that adds (add) or removes the entry. Caller holds
 * card->lock; old lists are freed after a grace period. */
int worker_poll_update(struct worker *w, struct port *p, unsigned qpair, bool add)
{
    struct poll_list *old = w->polls, *nl;
    unsigned n = old ? old->n : 0, k = 0;

    nl = calloc(1, sizeof(*nl) + (n + 1) * sizeof(nl->e[0]));
    if (!nl)
        return -ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        if (!add && old->e[i].port == p && old->e[i].qpair == qpair)
            continue;
        nl->e[k++] = old->e[i];
    }
    if (add) {
        nl->e[k].port = p;
        nl->e[k].qpair = qpair;
        k++;
    }
    nl->n = k;
    rcu_assign_pointer(w->polls, nl);
    synchronize_rcu();
    free(old);
    return 0;
}

static void vhost_net_queue_start(void *opaque, struct vu_dev *dev, unsigned qidx)
{
    struct port *p = opaque;
    struct card *c = p->card;
    struct port_queue *q = &p->q[qidx / 2];
    struct port_policy *pol = p->policy;

    if (qidx / 2 >= p->n_qpairs)
        return;
    dev->vr[qidx].vq.mem = dev->mem;
    if (qidx % 2 == 0) {
        pthread_spin_lock(&q->rx_lock);
        coalesce_init(&q->co, &pol->coalesce_cfg);
        q->co_pending = false;
        /* We deliver on our own schedule: the driver never needs to kick a receive queue. */
        virtq_disable_kicks(&dev->vr[qidx].vq);
        __atomic_store_n(&q->rx_running, true, __ATOMIC_RELEASE);
        pthread_spin_unlock(&q->rx_lock);
        log_info("port '%s': receive queue %u running (size %u)", p->name, qidx / 2,
                 dev->vr[qidx].num);
        return;
    }
    if (c->n_workers == 0)
        return;
    q->worker = (int)worker_pick(c);
    {
        struct worker *w = &c->workers[q->worker];
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = 0};
        if (dev->vr[qidx].kick_fd >= 0 &&
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, dev->vr[qidx].kick_fd, &ev) < 0)
            log_warn("port '%s': queue %u kick fd not pollable (%s); the worker busy-polls it",
                     p->name, qidx / 2, strerror(errno));
        __atomic_store_n(&q->tx_running, true, __ATOMIC_RELEASE);
        worker_poll_update(w, p, qidx / 2, true);
        worker_wake(w);
    }
    log_info("port '%s': transmit queue %u running on worker %d (size %u)", p->name, qidx / 2,
             q->worker, dev->vr[qidx].num);
}

static void vhost_net_queue_stop(void *opaque, struct vu_dev *dev, unsigned qidx)
{
    struct port *p = opaque;
    struct card *c = p->card;
    struct port_queue *q = &p->q[qidx / 2];

    if (qidx / 2 >= p->n_qpairs)
        return;
    if (qidx % 2 == 0) {
        pthread_spin_lock(&q->rx_lock);
        __atomic_store_n(&q->rx_running, false, __ATOMIC_RELEASE);
        q->co_pending = false;
        pthread_spin_unlock(&q->rx_lock);
        return;
    }
    __atomic_store_n(&q->tx_running, false, __ATOMIC_RELEASE);
    if (q->worker >= 0) {
        struct worker *w = &c->workers[q->worker];
        if (dev->vr[qidx].kick_fd >= 0)
            epoll_ctl(w->epfd, EPOLL_CTL_DEL, dev->vr[qidx].kick_fd, NULL);
        worker_poll_update(w, p, qidx / 2, false); /* includes a grace period */
        q->worker = -1;
    } else {
        synchronize_rcu();
    }
}

void vhost_net_ops_init(struct vu_dev_ops *ops, unsigned n_qpairs)
{
    memset(ops, 0, sizeof(*ops));
    ops->features = (1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_GUEST_CSUM) |
                    (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_MRG_RXBUF) |
                    (1ull << VIRTIO_NET_F_STATUS) | (1ull << VIRTIO_NET_F_MTU) |
                    (1ull << VIRTIO_RING_F_EVENT_IDX) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) |
                    (1ull << VIRTIO_F_IN_ORDER) | (1ull << VIRTIO_F_RING_PACKED);
    /* TSO and USO both ways: GSO frames are validated on ingress and either delivered whole
     * to a VM that takes them or segmented in software for every other destination (dp.c). */
    ops->features |= (1ull << VIRTIO_NET_F_HOST_TSO4) | (1ull << VIRTIO_NET_F_HOST_TSO6) |
                     (1ull << GSO_VIRTIO_NET_F_HOST_ECN) | (1ull << VIRTIO_NET_F_GUEST_TSO4) |
                     (1ull << VIRTIO_NET_F_GUEST_TSO6) | (1ull << GSO_VIRTIO_NET_F_GUEST_ECN) |
                     (1ull << GSO_VIRTIO_NET_F_HOST_USO) | (1ull << GSO_VIRTIO_NET_F_GUEST_USO4) |
                     (1ull << GSO_VIRTIO_NET_F_GUEST_USO6);
    if (n_qpairs > 1)
        ops->features |= 1ull << VIRTIO_NET_F_MQ;
    ops->protocol_features = 1ull << VHOST_USER_PROTOCOL_F_MQ;
    ops->num_queues = (uint16_t)(2 * n_qpairs);
    ops->queue_num_reply = n_qpairs;
    ops->get_config = vhost_net_get_config;
    ops->set_config = vhost_net_set_config;
    ops->queue_start = vhost_net_queue_start;
    ops->queue_stop = vhost_net_queue_stop;
    ops->features_set = vhost_net_features_set;
}
