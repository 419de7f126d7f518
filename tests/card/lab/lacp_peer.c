/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qt-lacp-peer: runs the card's LACP bond logic (src/card/net/bond.c, lacp.c)
 * over real interfaces with AF_PACKET sockets, so the protocol module can be
 * tested against a real partner (Open vSwitch) without the qtcard daemon.
 *
 *   qt-lacp-peer --sys-mac MAC [--passive] [--slow] --duration SEC IF1 [IF2 ...]
 *
 * Prints one JSON line per state change on stdout:
 *   {"t": 1.234, "enabled": 2, "members": [{"if": "a0", "link": true,
 *    "rx": "current", "mux": "collecting-distributing", "partner": "02:..",
 *    "tx": 3, "rx_pdus": 2, "rx_bad": 0}, ...]}
 * SIGUSR1 mutes (stops transmitting on) the last interface, SIGUSR2 unmutes.
 * Link state is read from /sys/class/net/IF/carrier every 50 ms.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bond.h"

#define MAX_IFS 8

static volatile sig_atomic_t g_mute_last;

static void on_usr(int sig)
{
    g_mute_last = sig == SIGUSR1;
}

struct member {
    const char *ifname;
    int ifindex;
    int fd;
    uint8_t mac[6];
    bool link;
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

static int read_sysfs(const char *ifname, const char *attr, char *buf, size_t len)
{
    char path[128];
    snprintf(path, sizeof(path), "/sys/class/net/%s/%s", ifname, attr);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    if (!fgets(buf, (int)len, f)) {
        fclose(f);
        return -EIO;
    }
    fclose(f);
    return 0;
}

static bool carrier(const char *ifname)
{
    char b[16];
    /* carrier is unreadable (EINVAL) while the interface is down */
    return read_sysfs(ifname, "carrier", b, sizeof(b)) == 0 && b[0] == '1';
}

static int member_open(struct member *m)
{
    char b[32];
    int rc = read_sysfs(m->ifname, "address", b, sizeof(b));
    if (rc || parse_mac(b, m->mac)) {
        fprintf(stderr, "qt-lacp-peer: interface '%s': cannot read its MAC\n", m->ifname);
        return -ENODEV;
    }
    m->ifindex = (int)if_nametoindex(m->ifname);
    if (!m->ifindex) {
        fprintf(stderr, "qt-lacp-peer: interface '%s': %s\n", m->ifname, strerror(errno));
        return -ENODEV;
    }
    m->fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(PKT_ETHERTYPE_SLOW));
    if (m->fd < 0) {
        rc = -errno;
        fprintf(stderr, "qt-lacp-peer: AF_PACKET socket: %s\n", strerror(errno));
        return rc;
    }
    struct sockaddr_ll sll = {.sll_family = AF_PACKET,
                              .sll_protocol = htons(PKT_ETHERTYPE_SLOW),
                              .sll_ifindex = m->ifindex};
    if (bind(m->fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
        rc = -errno;
        fprintf(stderr, "qt-lacp-peer: bind to '%s': %s\n", m->ifname, strerror(errno));
        return rc;
    }
    struct packet_mreq mr = {
        .mr_ifindex = m->ifindex, .mr_type = PACKET_MR_MULTICAST, .mr_alen = 6};
    memcpy(mr.mr_address, lacp_slow_mac, 6);
    if (setsockopt(m->fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) < 0) {
        rc = -errno;
        fprintf(stderr, "qt-lacp-peer: multicast membership on '%s': %s\n", m->ifname,
                strerror(errno));
        return rc;
    }
    return 0;
}

static void print_state(const struct bond *b, const struct member *ms, int n, uint64_t t0)
{
    printf("{\"t\": %.3f, \"enabled\": %u, \"members\": [", (double)(now_ns() - t0) / 1e9,
           bond_n_enabled(b));
    for (int i = 0; i < n; i++) {
        const struct lacp_member *lm = &b->lacp.members[b->lacp_idx[i]];
        uint64_t bad = 0;
        for (int k = 0; k < LACP_BAD__MAX; k++)
            bad += lm->stats.rx_bad[k];
        const uint8_t *p = lm->partner.sys_mac;
        printf("%s{\"if\": \"%s\", \"link\": %s, \"rx\": \"%s\", \"mux\": \"%s\", "
               "\"distributing\": %s, \"partner\": \"%02x:%02x:%02x:%02x:%02x:%02x\", "
               "\"partner_key\": %u, \"tx\": %llu, \"rx_pdus\": %llu, \"rx_bad\": %llu}",
               i ? ", " : "", ms[i].ifname, ms[i].link ? "true" : "false",
               lacp_rx_state_name(lm->rx), lacp_mux_state_name(lm->mux),
               bond_rx_allowed(b, (uint32_t)i) ? "true" : "false", p[0], p[1], p[2], p[3], p[4],
               p[5], lm->partner.key, (unsigned long long)lm->stats.tx_pdus,
               (unsigned long long)lm->stats.rx_pdus, (unsigned long long)bad);
    }
    printf("]}\n");
    fflush(stdout);
}

/* A cheap fingerprint of what print_state shows (minus counters). */
static uint64_t state_sig(const struct bond *b, const struct member *ms, int n)
{
    uint64_t s = bond_n_enabled(b);
    for (int i = 0; i < n; i++) {
        const struct lacp_member *lm = &b->lacp.members[b->lacp_idx[i]];
        s = s * 131 + (uint64_t)lm->rx * 7 + (uint64_t)lm->mux * 3 + ms[i].link;
        s = s * 131 + lm->partner.sys_mac[5] + lm->partner.key;
    }
    return s;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"sys-mac", required_argument, NULL, 'm'},
                                         {"passive", no_argument, NULL, 'p'},
                                         {"slow", no_argument, NULL, 's'},
                                         {"duration", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    struct bond_config cfg = {.mode = BOND_MODE_LACP, .hash = PKT_HASH_L4};
    struct member ms[MAX_IFS];
    struct bond b;
    double duration = 30;
    int opt, n = 0, rc;

    cfg.lacp = (struct lacp_config){.sys_prio = 32768, .key = 1, .active = true, .fast = true};
    while ((opt = getopt_long(argc, argv, "m:psd:", opts, NULL)) != -1) {
        switch (opt) {
        case 'm':
            if (parse_mac(optarg, cfg.lacp.sys_mac)) {
                fprintf(stderr, "qt-lacp-peer: --sys-mac '%s' is not a MAC\n", optarg);
                return 2;
            }
            break;
        case 'p':
            cfg.lacp.active = false;
            break;
        case 's':
            cfg.lacp.fast = false;
            break;
        case 'd':
            duration = atof(optarg);
            break;
        default:
            return 2;
        }
    }
    for (int i = optind; i < argc && n < MAX_IFS; i++)
        ms[n++] = (struct member){.ifname = argv[i], .fd = -1};
    if (n == 0 || duration <= 0) {
        fprintf(stderr, "usage: qt-lacp-peer --sys-mac MAC [--passive] [--slow] "
                        "[--duration SEC] IF...\n");
        return 2;
    }

    uint64_t t0 = now_ns();
    rc = bond_init(&b, &cfg, t0);
    if (rc) {
        fprintf(stderr, "qt-lacp-peer: bond config: %s\n", strerror(-rc));
        return 1;
    }
    for (int i = 0; i < n; i++) {
        if (member_open(&ms[i]))
            return 1;
        rc = bond_member_add(&b, (uint32_t)i, ms[i].mac, t0);
        if (rc < 0) {
            fprintf(stderr, "qt-lacp-peer: member '%s': %s\n", ms[i].ifname, strerror(-rc));
            return 1;
        }
    }
    struct sigaction sa = {.sa_handler = on_usr};
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);

    uint64_t end = t0 + (uint64_t)(duration * 1e9), last_sig = UINT64_MAX, next_link = 0;
    uint8_t buf[2048];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= end)
            break;
        if (now >= next_link) {
            for (int i = 0; i < n; i++) {
                bool up = carrier(ms[i].ifname);
                if (up != ms[i].link) {
                    ms[i].link = up;
                    bond_member_set_link(&b, (uint32_t)i, up, now);
                }
            }
            next_link = now + 50000000ull;
        }
        bond_run(&b, now);
        for (int i = 0; i < n; i++) {
            int len = bond_member_lacp_tx(&b, (uint32_t)i, now, buf, sizeof(buf));
            if (len > 0 && !(g_mute_last && i == n - 1) && ms[i].link)
                send(ms[i].fd, buf, (size_t)len, 0);
        }
        uint64_t sig = state_sig(&b, ms, n);
        if (sig != last_sig) {
            print_state(&b, ms, n, t0);
            last_sig = sig;
        }

        struct pollfd pf[MAX_IFS];
        for (int i = 0; i < n; i++)
            pf[i] = (struct pollfd){.fd = ms[i].fd, .events = POLLIN};
        uint64_t wake = bond_next_wakeup(&b);
        if (wake > next_link)
            wake = next_link;
        int tmo = wake <= now ? 0 : (int)((wake - now) / 1000000ull) + 1;
        if (poll(pf, (nfds_t)n, tmo) < 0 && errno != EINTR) {
            perror("qt-lacp-peer: poll");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (!(pf[i].revents & POLLIN))
                continue;
            ssize_t r;
            while ((r = recv(ms[i].fd, buf, sizeof(buf), 0)) > 0) {
                /* our own transmissions are not looped back on AF_PACKET
                 * bound sockets for outgoing frames, but be safe */
                if (!memcmp(buf + 6, ms[i].mac, 6))
                    continue;
                bond_rx_lacp(&b, (uint32_t)i, buf, (size_t)r, now_ns());
            }
        }
    }
    print_state(&b, ms, n, t0);
    for (int i = 0; i < n; i++)
        close(ms[i].fd);
    return 0;
}
