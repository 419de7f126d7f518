/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net: virtio-net against a real peer. The guest ARPs for net.peer (the
 * kernel of the network namespace behind the tap answers), then sends ICMP
 * echo requests and checks each reply's id, sequence, payload and checksums.
 * It answers ARP requests for its own address meanwhile.
 */
#include "rt/rt.h"
#include "rt/io.h"
#include "rt/virtio.h"

const char guest_name[] = "net";

#define VIRTIO_NET_F_MAC       5
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS    16
#define VIRTIO_NET_S_LINK_UP   1
#define NET_HDR_LEN            12 /* struct virtio_net_hdr with num_buffers (VERSION_1) */
#define FRAME_MAX              1514
#define BUF_LEN                (NET_HDR_LEN + FRAME_MAX)
#define RXQ                    0
#define TXQ                    1
#define RX_BUFS                32
#define QSIZE                  64
#define PINGS                  32
#define PING_PAYLOAD_MAX       1472 /* 1500-byte MTU */
#define ETH_ARP                0x0806
#define ETH_IP                 0x0800

struct net {
    struct virtio_dev vd;
    uint8_t mac[6];
    uint8_t peer_mac[6];
    uint8_t ip[4];
    uint8_t peer_ip[4];
    uint8_t *rx_buf[VIRTQ_MAX_SIZE]; /* by head */
    uint8_t *tx_buf;
    bool have_peer_mac;
    uint16_t ping_id;
    unsigned replies;
    bool reply_seen[PINGS];
};

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static uint16_t inet_csum(const uint8_t *p, size_t len)
{
    uint32_t sum = 0;

    for (size_t i = 0; i + 1 < len; i += 2)
        sum += be16(p + i);
    if (len & 1)
        sum += (uint32_t)p[len - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static int parse_ip(const char *s, uint8_t out[4])
{
    for (int i = 0; i < 4; i++) {
        unsigned v = 0, digits = 0;

        while (*s >= '0' && *s <= '9' && digits < 4) {
            v = v * 10 + (unsigned)(*s++ - '0');
            digits++;
        }
        if (!digits || v > 255 || (i < 3 && *s++ != '.'))
            return -EINVAL;
        out[i] = (uint8_t)v;
    }
    return *s ? -EINVAL : 0;
}

static int parse_mac(const char *s, uint8_t out[6])
{
    for (int i = 0; i < 6; i++) {
        unsigned v = 0;

        for (int j = 0; j < 2; j++, s++) {
            char c = *s;

            if (c >= '0' && c <= '9')
                v = v * 16 + (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v = v * 16 + (unsigned)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                v = v * 16 + (unsigned)(c - 'A' + 10);
            else
                return -EINVAL;
        }
        if (i < 5 && *s++ != ':')
            return -EINVAL;
        out[i] = (uint8_t)v;
    }
    return *s ? -EINVAL : 0;
}

static void net_rx_post(struct net *n, uint8_t *buf)
{
    struct virtq_buf b = {(uint64_t)buf, BUF_LEN, true};
    int head = virtq_add(&n->vd.vq[RXQ], &b, 1);

    if (head < 0)
        panic("net: rx queue full");
    n->rx_buf[head] = buf;
}

static int net_tx(struct net *n, const uint8_t *frame, size_t len)
{
    struct virtq *vq = &n->vd.vq[TXQ];
    struct virtq_buf b;
    int head;

    memset(n->tx_buf, 0, NET_HDR_LEN);
    memcpy(n->tx_buf + NET_HDR_LEN, frame, len);
    b = (struct virtq_buf){(uint64_t)n->tx_buf, (uint32_t)(NET_HDR_LEN + len), false};
    head = virtq_add(vq, &b, 1);
    if (head < 0)
        return head;
    virtq_kick(&n->vd, vq);
    return virtq_wait(&n->vd, vq, head, NULL, 2000);
}

/* Echo payload sizes from 16 to 1472 bytes, varying with the sequence number. */
static uint16_t ping_payload_len(uint16_t seq)
{
    return (uint16_t)(16 + (seq * 97u) % (PING_PAYLOAD_MAX - 15));
}

static size_t eth_header(uint8_t *f, const uint8_t *dst, const uint8_t *src, uint16_t type)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    put_be16(f + 12, type);
    return 14;
}

static int net_send_arp(struct net *n, uint16_t op, const uint8_t *tha, const uint8_t *tpa)
{
    static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    uint8_t f[60] = {0};
    size_t o = eth_header(f, op == 1 ? bcast : tha, n->mac, ETH_ARP);

    put_be16(f + o, 1);          /* Ethernet */
    put_be16(f + o + 2, ETH_IP); /* IPv4 */
    f[o + 4] = 6;
    f[o + 5] = 4;
    put_be16(f + o + 6, op);
    memcpy(f + o + 8, n->mac, 6);
    memcpy(f + o + 14, n->ip, 4);
    memcpy(f + o + 18, op == 1 ? (const uint8_t[6]){0} : tha, 6);
    memcpy(f + o + 24, tpa, 4);
    return net_tx(n, f, sizeof(f));
}

static int net_send_ping(struct net *n, uint16_t seq)
{
    uint16_t plen = ping_payload_len(seq);
    uint8_t f[14 + 20 + 8 + PING_PAYLOAD_MAX];
    size_t o = eth_header(f, n->peer_mac, n->mac, ETH_IP);
    uint8_t *ip = f + o, *icmp = ip + 20;

    memset(ip, 0, 20);
    ip[0] = 0x45;
    put_be16(ip + 2, (uint16_t)(20 + 8 + plen));
    put_be16(ip + 4, seq);
    ip[8] = 64;
    ip[9] = 1; /* ICMP */
    memcpy(ip + 12, n->ip, 4);
    memcpy(ip + 16, n->peer_ip, 4);
    put_be16(ip + 10, inet_csum(ip, 20));
    memset(icmp, 0, 8);
    icmp[0] = 8; /* echo request */
    put_be16(icmp + 4, n->ping_id);
    put_be16(icmp + 6, seq);
    for (int i = 0; i < plen; i++)
        icmp[8 + i] = (uint8_t)(seq * 7 + i);
    put_be16(icmp + 2, inet_csum(icmp, 8u + plen));
    return net_tx(n, f, 14u + 20 + 8 + plen);
}

static void net_handle_arp(struct net *n, const uint8_t *a, size_t len)
{
    if (len < 28 || be16(a) != 1 || be16(a + 2) != ETH_IP || a[4] != 6 || a[5] != 4)
        return;
    if (be16(a + 6) == 2 && !memcmp(a + 14, n->peer_ip, 4) && !memcmp(a + 24, n->ip, 4)) {
        if (!n->have_peer_mac)
            printf("net: ARP reply: %d.%d.%d.%d is at %02x:%02x:%02x:%02x:%02x:%02x\n", a[14],
                   a[15], a[16], a[17], a[8], a[9], a[10], a[11], a[12], a[13]);
        memcpy(n->peer_mac, a + 8, 6);
        n->have_peer_mac = true;
    } else if (be16(a + 6) == 1 && !memcmp(a + 24, n->ip, 4)) {
        net_send_arp(n, 2, a + 8, a + 14);
    }
}

static void net_handle_ip(struct net *n, const uint8_t *ip, size_t len)
{
    size_t ihl, tot;
    const uint8_t *icmp;
    uint16_t seq;

    if (len < 20 || (ip[0] >> 4) != 4)
        return;
    ihl = (size_t)(ip[0] & 0xf) * 4;
    tot = be16(ip + 2);
    if (ihl < 20 || tot > len || tot < ihl + 8 || ip[9] != 1 || memcmp(ip + 16, n->ip, 4))
        return;
    if (inet_csum(ip, ihl) != 0) {
        printf("net: IPv4 header checksum error in a reply\n");
        return;
    }
    icmp = ip + ihl;
    if (icmp[0] != 0 || be16(icmp + 4) != n->ping_id)
        return;
    if (inet_csum(icmp, tot - ihl) != 0) {
        printf("net: ICMP checksum error in a reply\n");
        return;
    }
    seq = be16(icmp + 6);
    if (seq >= PINGS || tot - ihl != 8u + ping_payload_len(seq))
        return;
    for (int i = 0; i < ping_payload_len(seq); i++) {
        if (icmp[8 + i] != (uint8_t)(seq * 7 + i)) {
            printf("net: echo reply %u: payload byte %d differs\n", seq, i);
            return;
        }
    }
    if (!n->reply_seen[seq]) {
        n->reply_seen[seq] = true;
        n->replies++;
        printf("net: echo reply seq %u (%u bytes) from %d.%d.%d.%d ttl %u\n", seq,
               ping_payload_len(seq), ip[12], ip[13], ip[14], ip[15], ip[8]);
    }
}

/* Process received frames for up to ms milliseconds or until done() holds. */
static void net_poll(struct net *n, uint64_t ms, bool (*done)(const struct net *))
{
    uint64_t end = rdtsc() + ms * tsc_khz();
    struct virtq *vq = &n->vd.vq[RXQ];

    while (rdtsc() < end && !done(n)) {
        uint32_t len;
        int head = virtq_poll(vq, &len);
        uint8_t *buf, *f;

        if (head < 0) {
            cpu_relax();
            continue;
        }
        buf = n->rx_buf[head];
        /* With MRG_RXBUF a frame that fits one buffer must say num_buffers 1. */
        if (virtio_has(&n->vd, VIRTIO_NET_F_MRG_RXBUF) && len >= NET_HDR_LEN &&
            (buf[10] | buf[11] << 8) != 1)
            panic("net: received header has num_buffers %u for a %u-byte frame",
                  buf[10] | buf[11] << 8, len);
        if (len > NET_HDR_LEN + 14 && len <= BUF_LEN) {
            f = buf + NET_HDR_LEN;
            if (!memcmp(f, n->mac, 6) || f[0] == 0xff) {
                if (be16(f + 12) == ETH_ARP)
                    net_handle_arp(n, f + 14, len - NET_HDR_LEN - 14);
                else if (be16(f + 12) == ETH_IP)
                    net_handle_ip(n, f + 14, len - NET_HDR_LEN - 14);
            }
        } else if (len > BUF_LEN) {
            panic("net: device wrote %u bytes into a %u-byte buffer", len, BUF_LEN);
        }
        net_rx_post(n, buf);
        virtq_kick(&n->vd, vq);
    }
}

static bool net_have_mac(const struct net *n)
{
    return n->have_peer_mac;
}

static bool net_all_replies(const struct net *n)
{
    return n->replies == PINGS;
}

int guest_main(void)
{
    static struct net net;
    struct net *n = &net;
    char s[32];
    int ret;

    if (!cmdline_get("net.ip", s, sizeof(s)) || parse_ip(s, n->ip) ||
        !cmdline_get("net.peer", s, sizeof(s)) || parse_ip(s, n->peer_ip)) {
        printf("net: need net.ip= and net.peer= on the command line\n");
        return -EINVAL;
    }
    ret = virtio_find(VIRTIO_ID_NET, 0, &n->vd);
    if (ret == -ENODEV)
        printf("NODEV virtio-net\n");
    if (ret < 0)
        return ret;
    ret = virtio_init(&n->vd, (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_STATUS) |
                                  (1ull << VIRTIO_NET_F_MRG_RXBUF));
    if (ret < 0)
        return ret;
    if (virtq_setup(&n->vd, RXQ, QSIZE) < 0 || virtq_setup(&n->vd, TXQ, QSIZE) < 0) {
        printf("net: queue setup failed\n");
        return -EIO;
    }
    if (virtio_has(&n->vd, VIRTIO_NET_F_MAC)) {
        for (int i = 0; i < 6; i++)
            n->mac[i] = virtio_cfg_read8(&n->vd, (uint32_t)i);
    } else if (!cmdline_get("net.mac", s, sizeof(s)) || parse_mac(s, n->mac)) {
        printf("net: device has no MAC and net.mac= is missing\n");
        return -EINVAL;
    }
    if (cmdline_get("net.mac", s, sizeof(s))) {
        uint8_t want[6];

        if (parse_mac(s, want) || memcmp(want, n->mac, 6)) {
            printf("net: device MAC differs from net.mac=%s\n", s);
            return -EINVAL;
        }
    }
    n->tx_buf = rt_alloc(BUF_LEN, 64);
    for (int i = 0; i < RX_BUFS; i++)
        net_rx_post(n, rt_alloc(BUF_LEN, 64));
    virtio_driver_ok(&n->vd);
    virtq_kick(&n->vd, &n->vd.vq[RXQ]);
    if (virtio_has(&n->vd, VIRTIO_NET_F_STATUS) &&
        !(virtio_cfg_read16(&n->vd, 6) & VIRTIO_NET_S_LINK_UP)) {
        printf("net: link is down (status 0x%x)\n", virtio_cfg_read16(&n->vd, 6));
        return -ENODEV;
    }
    printf("net: MAC %02x:%02x:%02x:%02x:%02x:%02x, features 0x%lx\n", n->mac[0], n->mac[1],
           n->mac[2], n->mac[3], n->mac[4], n->mac[5], n->vd.features);

    for (int try = 0; try < 10 && !n->have_peer_mac; try++) {
        ret = net_send_arp(n, 1, NULL, n->peer_ip);
        if (ret < 0) {
            printf("net: transmit failed (%d)\n", ret);
            return ret;
        }
        net_poll(n, 500, net_have_mac);
    }
    if (!n->have_peer_mac) {
        printf("net: no ARP reply from the peer\n");
        return -ETIMEDOUT;
    }
    n->ping_id = (uint16_t)rdtsc();
    for (int try = 0; try < 3 && n->replies < PINGS; try++) {
        for (uint16_t seq = 0; seq < PINGS; seq++) {
            if (n->reply_seen[seq])
                continue;
            ret = net_send_ping(n, seq);
            if (ret < 0) {
                printf("net: transmit failed (%d)\n", ret);
                return ret;
            }
        }
        net_poll(n, 1000, net_all_replies);
    }
    printf("net: %u of %d echo replies\n", n->replies, PINGS);
    return n->replies == PINGS ? 0 : -ETIMEDOUT;
}
