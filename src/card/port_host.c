/* SPDX-License-Identifier: Apache-2.0 */
#include "card/port_host.h"
#include "card/dp.h"
#include "card/port_bond.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <urcu-qsbr.h>

#define AFP_BLOCK_SIZE (1u << 18)
#define AFP_BLOCKS     64 /* with 1 ms retire: ~64 ms of slow traffic before drops */
#define AFP_FRAME_SIZE 2048

static int if_set_up(const char *ifname)
{
    struct ifreq ifr = {0};
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), ret = 0;

    if (s < 0)
        return -errno;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
        ret = -errno;
    } else if (!(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            ret = -errno;
    }
    close(s);
    return ret;
}

/*
 * A tap port. With offload on, frames in both directions carry a virtio-net header:
 * the kernel may hand us TCP frames of up to 64 KiB with their checksum left partial
 * (TSO4/6 with ECN, as TUNSETOFFLOAD allows), and takes the same from us, so TCP between
 * the host and a VM that negotiated TSO is never cut into MSS-sized frames on the way.
 */
int port_tap_open(struct port *p)
{
    struct ifreq ifr = {0};
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    int hl = TAP_VNET_HDR_LEN;

    if (fd < 0)
        return -errno;
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (p->tap_offload ? IFF_VNET_HDR : 0);
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", p->ifname);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 ||
        (p->tap_offload &&
         (ioctl(fd, TUNSETVNETHDRSZ, &hl) < 0 ||
          ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN) < 0))) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (p->tap_offload)
        p->host_gso = p->guest_gso = GSO_ALLOW_TCPV4 | GSO_ALLOW_TCPV6 | GSO_ALLOW_ECN;
    if_set_up(p->ifname);
    p->fd = fd;
    return 0;
}

int port_afpacket_open(struct port *p)
{
    struct tpacket_req3 req = {.tp_block_size = AFP_BLOCK_SIZE,
                               .tp_block_nr = AFP_BLOCKS,
                               .tp_frame_size = AFP_FRAME_SIZE,
                               .tp_frame_nr = AFP_BLOCK_SIZE / AFP_FRAME_SIZE * AFP_BLOCKS,
                               .tp_retire_blk_tov = 1};
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL)};
    struct packet_mreq mr = {0};
    int ver = TPACKET_V3, one = 1, ret;
    unsigned idx = if_nametoindex(p->ifname);
    int fd;

    if (!idx)
        return -ENODEV;
    fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &ver, sizeof(ver)) < 0 ||
        setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) < 0)
        goto fail;
    /* Frames we send must not come back into our own ring. */
    setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
    p->ring_size = (size_t)AFP_BLOCK_SIZE * AFP_BLOCKS;
    p->ring = mmap(NULL, p->ring_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED, fd, 0);
    if (p->ring == MAP_FAILED)
        p->ring = mmap(NULL, p->ring_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p->ring == MAP_FAILED) {
        p->ring = NULL;
        goto fail;
    }
    p->ring_blocks = AFP_BLOCKS;
    p->ring_block_size = AFP_BLOCK_SIZE;
    p->ring_cur = 0;
    sll.sll_ifindex = (int)idx;
    if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)
        goto fail;
    mr.mr_ifindex = (int)idx;
    mr.mr_type = PACKET_MR_PROMISC;
    if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) < 0)
        goto fail;
    if_set_up(p->ifname);
    p->fd = fd;
    return 0;
fail:
    ret = -errno;
    if (p->ring)
        munmap(p->ring, p->ring_size);
    p->ring = NULL;
    close(fd);
    return ret;
}

int port_vxlan_open(struct port *p)
{
    struct ifreq ifr = {0};
    int s, ret;

    if (pkt_mac_is_zero(p->vx_tun.local_mac)) {
        s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            return -errno;
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", p->ifname);
        ret = ioctl(s, SIOCGIFHWADDR, &ifr) < 0 ? -errno : 0;
        close(s);
        if (ret)
            return ret;
        memcpy(p->vx_tun.local_mac, ifr.ifr_hwaddr.sa_data, 6);
    }
    p->vx_scratch = malloc(DP_HEADROOM + PKT_MAX_FRAME + 64);
    if (!p->vx_scratch)
        return -ENOMEM;
    return port_afpacket_open(p);
}

void port_vxlan_output(struct port *p, struct pkt *pk, bool tagged, struct queue_stats *st)
{
    const struct vxlan_vni *v;
    uint8_t remote[4];
    uint8_t *inner = p->vx_scratch + DP_HEADROOM;
    uint32_t hash = pkt_hash(&pk->m, PKT_HASH_L4, 0);
    size_t len = 0;
    struct {
        uint8_t ip[4];
    } dests[VXLAN_MAX_FLOOD];
    unsigned nd = 0;

    /* Inner frame with the egress VLAN decision applied. */
    memcpy(inner, pk->data, 12);
    len = 12;
    if (tagged) {
        pkt_put_be16(inner + 12, PKT_ETHERTYPE_VLAN);
        pkt_put_be16(inner + 14, (uint16_t)((pk->pcp << PKT_VLAN_PCP_SHIFT) | pk->out_vid));
        len += 4;
    }
    memcpy(inner + len, pk->data + 12 + pk->tag_len, pk->len - 12 - pk->tag_len);
    len += pk->len - 12 - pk->tag_len;
    if (!pkt_mac_is_multicast(pk->m.dst_mac) &&
        vxlan_vtep_lookup(p->vx_vtep, p->vx_vni, pk->m.dst_mac, remote) == 0) {
        memcpy(dests[0].ip, remote, 4);
        nd = 1;
    } else if ((v = vxlan_vtep_get_vni(p->vx_vtep, p->vx_vni))) {
        for (uint32_t i = 0; i < v->n_flood && nd < VXLAN_MAX_FLOOD; i++)
            memcpy(dests[nd++].ip, v->flood[i], 4);
    }
    for (unsigned i = 0; i < nd; i++) {
        uint8_t *f = inner;
        size_t flen = len;
        ssize_t r;
        struct vxlan_tunnel t = p->vx_tun;
        if (p->vx_neigh && neigh_lookup(p->vx_neigh, p->vx_have_gw ? p->vx_gw_ip : dests[i].ip,
                                        t.nexthop_mac) < 0) {
            /* Next hop not resolved yet: the control thread's next tick asks for it. */
            p->vx_unresolved_drops++;
            st->rx_dropped++;
            continue;
        }
        if (vxlan_encap(&t, &f, &flen, DP_HEADROOM, dests[i].ip, p->vx_vni, hash, &p->vx_tx_st)) {
            st->rx_dropped++;
            continue;
        }
        r = send(p->fd, f, flen, 0);
        if (r == (ssize_t)flen) {
            st->rx_packets++;
            st->rx_bytes += len;
        } else {
            st->rx_dropped++;
        }
    }
}

/* ARP on the underlay of a VXLAN port that resolves its next hops: learn the sender
 * when it is a neighbour we need, answer requests for our VTEP address. */
bool port_vxlan_same_vtep(const struct port *a, const struct port *b)
{
    return a->type == PORT_VXLAN && b->type == PORT_VXLAN && !strcmp(a->ifname, b->ifname) &&
           !memcmp(a->vx_tun.local_ip, b->vx_tun.local_ip, 4) &&
           a->vx_tun.dst_port == b->vx_tun.dst_port;
}

/*
 * Tunnel ports that share an underlay and VTEP address each see every frame on it (each
 * has its own AF_PACKET socket). Frames for a sibling's VNI are the sibling's, not errors
 * here; and only the lowest-numbered sibling answers ARP for the shared address (all of
 * them learn from replies). Scans the port table: on the paths of unusual frames only.
 */
static bool vxlan_vni_has_sibling(const struct port *p, uint32_t vni)
{
    struct card *c = p->card;
    for (unsigned i = 1; i < CARD_MAX_PORTS; i++) {
        const struct port *o = rcu_dereference(c->ports[i]);
        if (o && o != p && port_vxlan_same_vtep(o, p) && o->vx_vni == vni)
            return true;
    }
    return false;
}

static bool vxlan_arp_answerer(const struct port *p)
{
    struct card *c = p->card;
    for (unsigned i = 1; i < p->id; i++) {
        const struct port *o = rcu_dereference(c->ports[i]);
        if (o && port_vxlan_same_vtep(o, p) && o->vx_neigh)
            return false;
    }
    return true;
}

static void vxlan_rx_arp(struct port *p, const struct pkt_meta *m, uint64_t now)
{
    uint8_t f[NEIGH_ARP_FRAME];

    pthread_mutex_lock(&p->tx_mutex);
    neigh_learn(p->vx_neigh, m->ip4.src, m->arp_sha, now);
    if (m->arp_op == 1 && !memcmp(m->ip4.dst, p->vx_tun.local_ip, 4) && vxlan_arp_answerer(p) &&
        !pkt_mac_is_multicast(m->arp_sha) && neigh_ip_ok(m->ip4.src)) {
        size_t n =
            neigh_arp_build(f, 2, p->vx_tun.local_mac, p->vx_tun.local_ip, m->arp_sha, m->ip4.src);
        if (send(p->fd, f, n, 0) == (ssize_t)n)
            p->vx_arp_replies++;
    }
    pthread_mutex_unlock(&p->tx_mutex);
}

void port_vxlan_tick(struct port *p, uint64_t now)
{
    uint8_t ips[NEIGH_MAX][4], f[NEIGH_ARP_FRAME];
    static const uint8_t zero[PKT_ETH_ALEN];
    unsigned n;

    if (!p->vx_neigh || p->fd < 0)
        return;
    pthread_mutex_lock(&p->tx_mutex);
    n = neigh_due(p->vx_neigh, now, ips, NEIGH_MAX);
    for (unsigned i = 0; i < n; i++) {
        size_t len = neigh_arp_build(f, 1, p->vx_tun.local_mac, p->vx_tun.local_ip, zero, ips[i]);
        if (send(p->fd, f, len, 0) == (ssize_t)len)
            p->vx_arp_requests++;
    }
    pthread_mutex_unlock(&p->tx_mutex);
}

void port_host_close(struct port *p)
{
    if (p->vx_vtep) {
        vxlan_vtep_destroy(p->vx_vtep);
        free(p->vx_vtep);
        p->vx_vtep = NULL;
    }
    free(p->vx_scratch);
    p->vx_scratch = NULL;
    if (p->ring)
        munmap(p->ring, p->ring_size);
    p->ring = NULL;
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
}

/* Frames whose checksum the sending stack left partial: complete them like a virtio
 * NEEDS_CSUM frame (the L4 checksum field already holds the pseudo-header sum). */
static void pkt_mark_partial_csum(struct pkt *pk)
{
    struct pkt_meta m;
    if (pkt_parse(pk->data, pk->len, &m) || !(m.flags & PKT_F_L4) || !m.l4_ofs)
        return;
    if (m.l4_proto != PKT_IPPROTO_TCP && m.l4_proto != PKT_IPPROTO_UDP)
        return;
    pk->vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    pk->vh.csum_start = m.l4_ofs;
    pk->vh.csum_offset = m.l4_proto == PKT_IPPROTO_TCP ? 16 : 6;
}

/* An underlay frame on a VXLAN port: keep it (true) when it is VXLAN for our VTEP and VNI,
 * with pk reduced to the inner frame and its source learned; host traffic is ignored. */
static bool vxlan_rx_frame(struct port *p, struct pkt *pk, struct port_queue *q, uint64_t now)
{
    struct vxlan_decap_result r;
    struct pkt_meta m;

    if (pkt_parse(pk->data, pk->len, &m))
        return false; /* not for this VTEP: the host stack's business */
    if (m.l3 == PKT_L3_ARP && p->vx_neigh && !m.n_vlans) {
        vxlan_rx_arp(p, &m, now);
        return false; /* the host stack sees it too */
    }
    if (m.l3 != PKT_L3_IPV4 || memcmp(m.ip4.dst, p->vx_tun.local_ip, 4) != 0 ||
        m.l4_proto != PKT_IPPROTO_UDP || !(m.flags & PKT_F_L4) || m.dport != p->vx_tun.dst_port)
        return false; /* not for this VTEP: the host stack's business */
    if (vxlan_decap(pk->data, pk->len, p->vx_tun.dst_port, &r, &p->vx_rx_st)) {
        p->drops[DROP_MALFORMED]++;
        q->st.tx_dropped++;
        return false;
    }
    if (r.vni != p->vx_vni) {
        if (vxlan_vni_has_sibling(p, r.vni))
            return false; /* another network's: its port takes it */
        p->vx_rx_st.bad[VXLAN_BAD_VNI]++;
        q->st.tx_dropped++;
        return false;
    }
    p->vx_rx_st.decap_pkts++;
    pk->data += r.inner_ofs;
    pk->len = (uint32_t)r.inner_len;
    if (pk->len >= PKT_ETH_HLEN && !pkt_mac_is_multicast(pk->data + 6))
        vxlan_vtep_learn(p->vx_vtep, p->vx_vni, pk->data + 6, r.remote_ip, now);
    return true;
}

/* Read up to a few blocks of the TPACKET_V3 ring, switching every CARD_BURST frames. */
static unsigned afp_rx(struct worker *w, struct port *p, struct port_queue *q, struct pkt **pkts,
                       uint64_t *now)
{
    /* A bond member's frames enter the switch as the bond's. */
    struct port *in = p->bond_parent ? p->bond_parent : p;
    struct port_queue *iq = p->bond_parent ? &in->q[0] : q;
    unsigned n = 0, total = 0;

    for (unsigned blocks = 0; blocks < 4; blocks++) {
        struct tpacket_block_desc *bd =
            (void *)((uint8_t *)p->ring + (size_t)p->ring_cur * p->ring_block_size);
        uint8_t *end = (uint8_t *)bd + p->ring_block_size;
        struct tpacket3_hdr *h;
        uint32_t num;

        if (!(__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
            break;
        num = bd->hdr.bh1.num_pkts;
        h = (void *)((uint8_t *)bd + bd->hdr.bh1.offset_to_first_pkt);
        for (uint32_t i = 0; i < num; i++) {
            uint32_t off_next;
            if ((uint8_t *)h + sizeof(*h) > end)
                break;
            off_next = h->tp_next_offset;
            if (h->tp_snaplen >= PKT_ETH_HLEN && h->tp_snaplen + 4 <= PKT_MAX_FRAME &&
                (uint8_t *)h + h->tp_mac + h->tp_snaplen <= end) {
                struct pkt *pk = &w->pkts[n];
                const uint8_t *f = (uint8_t *)h + h->tp_mac;
                pk->data = pk->buf + DP_HEADROOM;
                uint32_t len = h->tp_snaplen;
                memset(&pk->vh, 0, sizeof(pk->vh));
                if (h->tp_status & TP_STATUS_VLAN_VALID) {
                    /* The kernel took the tag off; put it back. */
                    memcpy(pk->data, f, 12);
                    pkt_put_be16(pk->data + 12,
                                 h->hv1.tp_vlan_tpid ? h->hv1.tp_vlan_tpid : PKT_ETHERTYPE_VLAN);
                    pkt_put_be16(pk->data + 14, (uint16_t)h->hv1.tp_vlan_tci);
                    memcpy(pk->data + 16, f + 12, len - 12);
                    len += 4;
                } else {
                    memcpy(pk->data, f, len);
                }
                pk->len = len;
                if (p->bond_parent) {
                    if (!port_bond_rx_filter(p, pk->data, pk->len, *now ? *now : card_now_ns()))
                        goto next;
                } else if (p->type == PORT_VXLAN) {
                    if (!vxlan_rx_frame(p, pk, q, *now ? *now : card_now_ns()))
                        goto next;
                } else if (h->tp_status & TP_STATUS_CSUMNOTREADY) {
                    pkt_mark_partial_csum(pk);
                }
                pkts[n++] = pk;
                iq->st.tx_packets++;
                iq->st.tx_bytes += len;
                if (iq != q) { /* bond member: its own counters too */
                    q->st.tx_packets++;
                    q->st.tx_bytes += len;
                }
                if (n == CARD_BURST) {
                    *now = card_now_ns();
                    dp_switch_burst(w, in, iq, pkts, n, *now);
                    total += n;
                    n = 0;
                }
            } else {
                p->drops[DROP_MALFORMED]++;
                q->st.tx_dropped++;
            }
        next:
            if (!off_next)
                break;
            h = (void *)((uint8_t *)h + off_next);
        }
        __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
        p->ring_cur = (p->ring_cur + 1) % p->ring_blocks;
    }
    if (n) {
        *now = card_now_ns();
        dp_switch_burst(w, in, iq, pkts, n, *now);
        total += n;
    }
    return total;
}

/*
 * Read from a tap with offload on: the header, then the frame into the packet's buffer,
 * and what does not fit there (a GSO frame) into a 64 KiB buffer at the place that
 * continues it, so only a big frame's first PKT_MAX_FRAME bytes are copied again.
 * Returns whether the burst goes on.
 */
static bool tap_rx_offload(struct worker *w, struct port *p, struct port_queue *q, struct pkt *pk,
                           bool *got)
{
    struct virtio_net_hdr_v1 h = {0};
    uint8_t *big = dp_gso_buf(w);
    struct iovec iov[3] = {{&h, TAP_VNET_HDR_LEN}, {pk->data, PKT_MAX_FRAME}, {NULL, 0}};
    ssize_t r;
    uint32_t len;

    *got = false;
    if (!big)
        return false; /* this burst's big buffers are taken: the next one reads on */
    iov[2].iov_base = big + DP_HEADROOM + PKT_MAX_FRAME;
    iov[2].iov_len = GSO_MAX_FRAME - PKT_MAX_FRAME;
    r = readv(p->fd, iov, 3);
    if (r < 0)
        return false;
    if (r < TAP_VNET_HDR_LEN + PKT_ETH_HLEN) {
        p->drops[DROP_MALFORMED]++;
        q->st.tx_dropped++;
        return true;
    }
    len = (uint32_t)r - TAP_VNET_HDR_LEN;
    memset(&pk->vh, 0, sizeof(pk->vh));
    memcpy(&pk->vh, &h, TAP_VNET_HDR_LEN);
    pk->vh.flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID;
    if (len > PKT_MAX_FRAME) {
        if (pk->vh.gso_type == GSO_TYPE_NONE) {
            p->drops[DROP_MALFORMED]++; /* oversize without GSO */
            q->st.tx_dropped++;
            return true;
        }
        memcpy(big + DP_HEADROOM, pk->data, PKT_MAX_FRAME);
        pk->data = big + DP_HEADROOM;
    }
    if (pk->vh.gso_type != GSO_TYPE_NONE) {
        if (dp_gso_ingress(w, p, q, pk, len))
            return true;
        if (pk->data == big + DP_HEADROOM)
            w->gso_bufs_used++;
    }
    pk->len = len;
    q->st.tx_packets++;
    q->st.tx_bytes += len;
    *got = true;
    return true;
}

static unsigned tap_rx_burst(struct worker *w, struct port *p, struct port_queue *q,
                             struct pkt **pkts)
{
    unsigned n = 0;

    if (p->tap_offload) {
        w->gso_bufs_used = 0;
        while (n < CARD_BURST) {
            bool got;
            w->pkts[n].data = w->pkts[n].buf + DP_HEADROOM;
            if (!tap_rx_offload(w, p, q, &w->pkts[n], &got))
                break;
            if (got) {
                pkts[n] = &w->pkts[n];
                n++;
            }
        }
        return n;
    }
    while (n < CARD_BURST) {
        struct pkt *pk = &w->pkts[n];
        ssize_t r;
        pk->data = pk->buf + DP_HEADROOM;
        r = read(p->fd, pk->data, PKT_MAX_FRAME);
        if (r < 0)
            break;
        if (r < PKT_ETH_HLEN) {
            p->drops[DROP_MALFORMED]++;
            q->st.tx_dropped++;
            continue;
        }
        memset(&pk->vh, 0, sizeof(pk->vh));
        pk->len = (uint32_t)r;
        q->st.tx_packets++;
        q->st.tx_bytes += (uint64_t)r;
        pkts[n++] = pk;
    }
    return n;
}

unsigned dp_host_rx_burst(struct worker *w, struct port *p, struct port_queue *q, uint64_t *now)
{
    struct pkt **pkts = w->pkt_ptrs;
    unsigned n;

    if (!__atomic_load_n(&q->rx_running, __ATOMIC_ACQUIRE) || p->fd < 0)
        return 0;
    if (p->type == PORT_AFPACKET || p->type == PORT_VXLAN)
        return afp_rx(w, p, q, pkts, now);
    n = tap_rx_burst(w, p, q, pkts);
    if (n) {
        *now = card_now_ns();
        dp_switch_burst(w, p, q, pkts, n, *now);
    }
    return n;
}
