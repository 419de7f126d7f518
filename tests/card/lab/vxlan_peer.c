/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qt-vxlan-peer: a tiny VTEP built from the card's VXLAN module
 * (src/card/net/vxlan.c, pkt.c, mac_table.c) on an AF_PACKET socket, to test
 * it against the Linux kernel's vxlan device without the qtcard daemon.
 *
 *   qt-vxlan-peer --if IF --local-ip A --remote B --nexthop-mac M --vni N
 *                 --inner-mac M2 --inner-ip C --target D [--count K] [--duration S]
 *
 * It owns one "VM" (inner-mac / inner-ip) on VNI N: answers ARP and ICMP
 * echo for it, resolves `target` with an ARP request flooded to the VNI's
 * flood list (head-end replication to B), then pings it K times. Every
 * received frame goes through vxlan_decap(); inner source MACs are learned
 * into the VTEP table. At the end one JSON object is printed:
 *   {"target_mac": "..", "learned_vtep": "B", "echo_sent": K, "echo_replies": K,
 *    "echo_answered": n, "decap": n, "bad": {"flags": 0, ...}, "not_vxlan": n}
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "vxlan.h"

#define HEADROOM 128
#define BUFSZ    2048

struct peer {
    int fd;
    int ifindex;
    struct vxlan_tunnel tun;
    struct vxlan_vtep_table vt;
    struct vxlan_stats st;
    uint32_t vni;
    uint8_t inner_mac[6];
    uint8_t inner_ip[4];
    uint8_t target_ip[4];
    uint8_t target_mac[6];
    bool target_known;
    uint16_t echo_id;
    unsigned echo_sent, echo_replies, echo_answered, not_vxlan;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
    unsigned v[6];
    if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
        return -EINVAL;
    for (int i = 0; i < 6; i++) {
        if (v[i] > 255)
            return -EINVAL;
        mac[i] = (uint8_t)v[i];
    }
    return 0;
}

/* Encapsulate the inner frame at buf+HEADROOM (len bytes) towards the known
 * VTEP of its destination MAC, or replicate it to the VNI's flood list. */
static void peer_send_inner(struct peer *p, uint8_t *buf, size_t len)
{
    struct pkt_meta m;
    uint8_t remote[4];
    if (pkt_parse(buf + HEADROOM, len, &m) < 0 && m.bad == PKT_BAD_TRUNC_ETH)
        return;
    uint32_t h = pkt_hash(&m, PKT_HASH_L4, 0);
    const struct vxlan_vni *v = vxlan_vtep_get_vni(&p->vt, p->vni);
    uint32_t n = 0;
    uint8_t dests[VXLAN_MAX_FLOOD][4];

    if (!pkt_mac_is_multicast(m.dst_mac) &&
        vxlan_vtep_lookup(&p->vt, p->vni, m.dst_mac, remote) == 0) {
        memcpy(dests[n++], remote, 4);
    } else if (v) {
        for (uint32_t i = 0; i < v->n_flood; i++)
            memcpy(dests[n++], v->flood[i], 4);
    }
    for (uint32_t i = 0; i < n; i++) {
        uint8_t out[BUFSZ + HEADROOM];
        memcpy(out + HEADROOM, buf + HEADROOM, len);
        uint8_t *f = out + HEADROOM;
        size_t flen = len;
        int rc = vxlan_encap(&p->tun, &f, &flen, HEADROOM, dests[i], p->vni, h, &p->st);
        if (rc) {
            fprintf(stderr, "qt-vxlan-peer: encap: %s\n", strerror(-rc));
            continue;
        }
        if (send(p->fd, f, flen, 0) < 0)
            perror("qt-vxlan-peer: send");
    }
}

static size_t build_arp(uint8_t *f, uint16_t op, const uint8_t *dst, const uint8_t *sha,
                        const uint8_t *spa, const uint8_t *tha, const uint8_t *tpa)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, sha, 6);
    pkt_put_be16(f + 12, PKT_ETHERTYPE_ARP);
    uint8_t *a = f + 14;
    pkt_put_be16(a, 1);
    pkt_put_be16(a + 2, PKT_ETHERTYPE_IPV4);
    a[4] = 6;
    a[5] = 4;
    pkt_put_be16(a + 6, op);
    memcpy(a + 8, sha, 6);
    memcpy(a + 14, spa, 4);
    memcpy(a + 18, tha, 6);
    memcpy(a + 24, tpa, 4);
    return 14 + 28;
}

static void peer_send_echo(struct peer *p, uint16_t seq)
{
    uint8_t buf[BUFSZ + HEADROOM];
    uint8_t *f = buf + HEADROOM;
    memcpy(f, p->target_mac, 6);
    memcpy(f + 6, p->inner_mac, 6);
    pkt_put_be16(f + 12, PKT_ETHERTYPE_IPV4);
    uint8_t *ip = f + 14;
    memset(ip, 0, 20);
    ip[0] = 0x45;
    pkt_put_be16(ip + 2, 20 + 8 + 32);
    pkt_put_be16(ip + 6, 0x4000);
    ip[8] = 64;
    ip[9] = PKT_IPPROTO_ICMP;
    memcpy(ip + 12, p->inner_ip, 4);
    memcpy(ip + 16, p->target_ip, 4);
    pkt_put_be16(ip + 10, pkt_csum(ip, 20));
    uint8_t *ic = ip + 20;
    memset(ic, 0, 8 + 32);
    ic[0] = 8; /* echo request */
    pkt_put_be16(ic + 4, p->echo_id);
    pkt_put_be16(ic + 6, seq);
    for (int i = 0; i < 32; i++)
        ic[8 + i] = (uint8_t)i;
    pkt_put_be16(ic + 2, pkt_csum(ic, 8 + 32));
    peer_send_inner(p, buf, 14 + 20 + 8 + 32);
    p->echo_sent++;
}

/* Handle one decapsulated inner frame addressed to our VM. */
static void peer_inner(struct peer *p, const uint8_t *in, size_t len)
{
    struct pkt_meta m;
    uint8_t buf[BUFSZ + HEADROOM];
    uint8_t *f = buf + HEADROOM;

    if (pkt_parse(in, len, &m) != 0 || len > BUFSZ)
        return;
    if (m.l3 == PKT_L3_ARP) {
        if (m.arp_op == 1 && !memcmp(m.ip4.dst, p->inner_ip, 4)) {
            peer_send_inner(
                p, buf,
                build_arp(f, 2, m.src_mac, p->inner_mac, p->inner_ip, m.arp_sha, m.ip4.src));
        } else if (m.arp_op == 2 && !memcmp(m.ip4.src, p->target_ip, 4)) {
            memcpy(p->target_mac, m.arp_sha, 6);
            p->target_known = true;
        }
        return;
    }
    if (m.l3 != PKT_L3_IPV4 || m.l4_proto != PKT_IPPROTO_ICMP || memcmp(m.ip4.dst, p->inner_ip, 4))
        return;
    const uint8_t *ic = in + m.l3_ofs + (size_t)(in[m.l3_ofs] & 0x0f) * 4;
    size_t iclen = (size_t)(in + m.l3_ofs + m.l3_len - ic);
    if (iclen < 8)
        return;
    if (ic[0] == 0 && pkt_get_be16(ic + 4) == p->echo_id) {
        p->echo_replies++;
    } else if (ic[0] == 8) { /* echo request: answer it */
        memcpy(f, in, len);
        memcpy(f, m.src_mac, 6);
        memcpy(f + 6, p->inner_mac, 6);
        uint8_t *ip = f + m.l3_ofs;
        memcpy(ip + 12, p->inner_ip, 4);
        memcpy(ip + 16, m.ip4.src, 4);
        uint8_t *ric = f + (ic - in);
        ric[0] = 0;
        pkt_put_be16(ric + 2, 0);
        pkt_put_be16(ric + 2, pkt_csum(ric, iclen));
        pkt_put_be16(ip + 10, 0);
        pkt_put_be16(ip + 10, pkt_csum(ip, (size_t)(in[m.l3_ofs] & 0x0f) * 4));
        peer_send_inner(p, buf, len);
        p->echo_answered++;
    }
}

static void peer_rx(struct peer *p, const uint8_t *f, size_t len)
{
    struct vxlan_decap_result r;
    struct pkt_meta m;

    /* only IPv4/UDP to the VXLAN port is ours; the rest is other traffic */
    if (pkt_parse(f, len, &m) == 0 &&
        (m.l3 != PKT_L3_IPV4 || m.l4_proto != PKT_IPPROTO_UDP || m.dport != VXLAN_PORT)) {
        p->not_vxlan++;
        return;
    }
    if (vxlan_decap(f, len, VXLAN_PORT, &r, &p->st) != 0)
        return;
    if (!vxlan_vtep_has_vni(&p->vt, r.vni)) {
        p->st.bad[VXLAN_BAD_VNI]++;
        return;
    }
    p->st.decap_pkts++;
    const uint8_t *in = f + r.inner_ofs;
    vxlan_vtep_learn(&p->vt, r.vni, in + 6, r.remote_ip, now_ns());
    if (!memcmp(in, p->inner_mac, 6) || pkt_mac_is_multicast(in))
        peer_inner(p, in, r.inner_len);
}

static void peer_poll(struct peer *p, uint64_t until)
{
    uint8_t buf[BUFSZ];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= until)
            return;
        struct pollfd pf = {.fd = p->fd, .events = POLLIN};
        int tmo = (int)((until - now) / 1000000ull) + 1;
        if (poll(&pf, 1, tmo) <= 0)
            continue;
        ssize_t n;
        while ((n = recv(p->fd, buf, sizeof(buf), 0)) > 0)
            peer_rx(p, buf, (size_t)n);
    }
}

static int peer_open(struct peer *p, const char *ifname)
{
    char path[128], line[32];
    snprintf(path, sizeof(path), "/sys/class/net/%s/address", ifname);
    FILE *fa = fopen(path, "r");
    if (!fa || !fgets(line, sizeof(line), fa) || parse_mac(line, p->tun.local_mac)) {
        fprintf(stderr, "qt-vxlan-peer: interface '%s': cannot read its MAC\n", ifname);
        if (fa)
            fclose(fa);
        return -ENODEV;
    }
    fclose(fa);
    p->ifindex = (int)if_nametoindex(ifname);
    p->fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
    if (!p->ifindex || p->fd < 0) {
        fprintf(stderr, "qt-vxlan-peer: '%s': %s\n", ifname, strerror(errno));
        return -errno;
    }
    struct sockaddr_ll sll = {
        .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = p->ifindex};
    if (bind(p->fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
        fprintf(stderr, "qt-vxlan-peer: bind '%s': %s\n", ifname, strerror(errno));
        return -errno;
    }
    int one = 1; /* do not see our own transmissions */
    setsockopt(p->fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"if", required_argument, NULL, 'i'},
                                         {"local-ip", required_argument, NULL, 'l'},
                                         {"remote", required_argument, NULL, 'r'},
                                         {"nexthop-mac", required_argument, NULL, 'n'},
                                         {"vni", required_argument, NULL, 'v'},
                                         {"inner-mac", required_argument, NULL, 'm'},
                                         {"inner-ip", required_argument, NULL, 'a'},
                                         {"target", required_argument, NULL, 't'},
                                         {"count", required_argument, NULL, 'c'},
                                         {"duration", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    struct peer *p = calloc(1, sizeof(*p));
    const char *ifname = NULL;
    uint8_t remote[4] = {0};
    unsigned count = 5;
    double duration = 5;
    int opt, ok = 0;

    if (!p)
        return 1;
    p->vni = 42;
    p->echo_id = (uint16_t)getpid();
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'i':
            ifname = optarg;
            ok |= 1;
            break;
        case 'l':
            ok |= (inet_pton(AF_INET, optarg, p->tun.local_ip) == 1) << 1;
            break;
        case 'r':
            ok |= (inet_pton(AF_INET, optarg, remote) == 1) << 2;
            break;
        case 'n':
            ok |= (parse_mac(optarg, p->tun.nexthop_mac) == 0) << 3;
            break;
        case 'v':
            p->vni = (uint32_t)strtoul(optarg, NULL, 0);
            break;
        case 'm':
            ok |= (parse_mac(optarg, p->inner_mac) == 0) << 4;
            break;
        case 'a':
            ok |= (inet_pton(AF_INET, optarg, p->inner_ip) == 1) << 5;
            break;
        case 't':
            ok |= (inet_pton(AF_INET, optarg, p->target_ip) == 1) << 6;
            break;
        case 'c':
            count = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 'd':
            duration = atof(optarg);
            break;
        default:
            return 2;
        }
    }
    if (ok != 0x7f) {
        fprintf(stderr, "usage: qt-vxlan-peer --if IF --local-ip A --remote B --nexthop-mac M "
                        "--vni N --inner-mac M2 --inner-ip C --target D [--count K] "
                        "[--duration S]\n");
        return 2;
    }
    int rc = vxlan_vtep_init(&p->vt, 1024, 300ull * 1000000000ull, 1);
    if (!rc)
        rc = vxlan_vtep_add_vni(&p->vt, p->vni);
    if (!rc)
        rc = vxlan_vtep_add_flood(&p->vt, p->vni, remote);
    if (rc) {
        fprintf(stderr, "qt-vxlan-peer: VTEP table: %s\n", strerror(-rc));
        return 1;
    }
    if (peer_open(p, ifname))
        return 1;

    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(duration * 1e9);
    static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t zero[6] = {0};
    uint8_t buf[BUFSZ + HEADROOM];
    /* resolve the target: ARP request flooded to the VNI (head-end replication) */
    for (int tries = 0; tries < 10 && !p->target_known && now_ns() < end; tries++) {
        peer_send_inner(
            p, buf,
            build_arp(buf + HEADROOM, 1, bcast, p->inner_mac, p->inner_ip, zero, p->target_ip));
        peer_poll(p, now_ns() + 200000000ull);
    }
    for (unsigned i = 0; p->target_known && i < count && now_ns() < end; i++) {
        peer_send_echo(p, (uint16_t)(i + 1));
        peer_poll(p, now_ns() + 100000000ull);
    }
    peer_poll(p, end); /* keep answering (the kernel side may ping us) */

    uint8_t vtep[4] = {0};
    char vs[INET_ADDRSTRLEN] = "";
    if (p->target_known && vxlan_vtep_lookup(&p->vt, p->vni, p->target_mac, vtep) == 0)
        inet_ntop(AF_INET, vtep, vs, sizeof(vs));
    printf("{\"target_mac\": \"%02x:%02x:%02x:%02x:%02x:%02x\", \"learned_vtep\": \"%s\", "
           "\"echo_sent\": %u, \"echo_replies\": %u, \"echo_answered\": %u, "
           "\"encap\": %llu, \"decap\": %llu, \"not_vxlan\": %u, \"bad\": {",
           p->target_mac[0], p->target_mac[1], p->target_mac[2], p->target_mac[3], p->target_mac[4],
           p->target_mac[5], vs, p->echo_sent, p->echo_replies, p->echo_answered,
           (unsigned long long)p->st.encap_pkts, (unsigned long long)p->st.decap_pkts,
           p->not_vxlan);
    for (int i = 0; i < VXLAN_BAD__MAX; i++)
        printf("%s\"%s\": %llu", i ? ", " : "", vxlan_bad_name((enum vxlan_bad)i),
               (unsigned long long)p->st.bad[i]);
    printf("}}\n");
    vxlan_vtep_destroy(&p->vt);
    close(p->fd);
    free(p);
    return 0;
}
