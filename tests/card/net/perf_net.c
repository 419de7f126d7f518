/* SPDX-License-Identifier: Apache-2.0 */
/*
 * perf_net: cost per call of the card's per-packet protocol code, for sizing
 * the data plane (not a test, no peer: bench/card-net compares the whole
 * switch with OVS-DPDK). Prints one line per operation: ns/op and Mops/s.
 *
 *   perf_net [--threads N]   (N lock-free MAC lookup threads, default 2)
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bond.h"
#include "frames.h"
#include "mac_table.h"
#include "pkt.h"
#include "policer.h"
#include "vlan.h"
#include "vxlan.h"

#define N_MACS 4096

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void report(const char *what, uint64_t ops, uint64_t ns)
{
    printf("%-44s %8.1f ns/op %8.2f Mops/s\n", what, (double)ns / (double)ops,
           (double)ops * 1e3 / (double)ns);
}

static void mac_n(uint8_t mac[6], uint32_t n)
{
    mac[0] = 0x02;
    mac[1] = 0;
    pkt_put_be32(mac + 2, n * 2654435761u);
}

struct reader {
    struct mac_table *t;
    atomic_bool *stop;
    uint64_t ops, ns, hits;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    uint8_t mac[6];
    uint32_t v, i = 0;
    uint64_t t0 = now_ns();
    while (!atomic_load_explicit(r->stop, memory_order_relaxed)) {
        for (int k = 0; k < 1024; k++, i++) {
            mac_n(mac, i % N_MACS);
            r->hits += mac_table_lookup(r->t, 10, mac, &v) == 0;
        }
        r->ops += 1024;
    }
    r->ns = now_ns() - t0;
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = 2;
    if (argc == 3 && !strcmp(argv[1], "--threads"))
        threads = atoi(argv[2]);
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "usage: perf_net [--threads 1..64]\n");
        return 2;
    }
    const uint64_t N = 2000000;
    struct frame f;
    struct pkt_meta m;
    volatile uint32_t sink = 0;
    uint64_t t;

    /* parsing */
    fr_init(&f);
    fr_eth_vlan(&f, MAC_B, MAC_A, 10, PKT_ETHERTYPE_IPV4);
    fr_ipv4(&f, "10.0.0.1", "10.0.0.2", PKT_IPPROTO_UDP, 8 + 18);
    fr_udp(&f, 1234, 80, 18);
    fr_zero(&f, 18);
    t = now_ns();
    for (uint64_t i = 0; i < N; i++)
        sink += (uint32_t)pkt_parse(f.p, f.len, &m);
    report("pkt_parse (802.1Q + IPv4 + UDP, 64 B)", N, now_ns() - t);
    t = now_ns();
    for (uint64_t i = 0; i < N; i++)
        sink += pkt_hash(&m, PKT_HASH_L4, (uint32_t)i);
    report("pkt_hash L4", N, now_ns() - t);

    struct vlan_port vp;
    struct vlan_ingress in;
    const uint16_t allowed[] = {10};
    vlan_port_set_trunk(&vp, 0, allowed, 1);
    t = now_ns();
    for (uint64_t i = 0; i < N; i++)
        sink += (uint32_t)vlan_port_ingress(&vp, &m, NULL, &in);
    report("vlan_port_ingress (trunk)", N, now_ns() - t);

    struct policer pol;
    policer_init(&pol, TB_UNIT_BITS, 10000000000ull, 8 * 100000, 0);
    t = now_ns();
    for (uint64_t i = 0; i < N; i++)
        sink += policer_admit(&pol, 64, i * 50);
    report("policer_admit", N, now_ns() - t);

    /* MAC table */
    struct mac_table_config mc = {.max_entries = 8192, .aging_ns = 300000000000ull, .seed = 1};
    struct mac_table *mt;
    if (mac_table_create(&mc, &mt))
        return 1;
    uint8_t mac[6];
    for (uint32_t i = 0; i < N_MACS; i++) {
        mac_n(mac, i);
        mac_table_learn(mt, 10, mac, i % 16, 0);
    }
    uint32_t v;
    t = now_ns();
    for (uint64_t i = 0; i < N; i++) {
        mac_n(mac, (uint32_t)(i % N_MACS));
        sink += (uint32_t)mac_table_lookup(mt, 10, mac, &v);
    }
    report("mac_table_lookup (hit, 4096 MACs)", N, now_ns() - t);
    t = now_ns();
    for (uint64_t i = 0; i < N; i++) {
        mac_n(mac, (uint32_t)(i % N_MACS));
        sink += (uint32_t)mac_table_learn(mt, 10, mac, (uint32_t)(i % N_MACS) % 16, i);
    }
    report("mac_table_learn (known MAC, refresh path)", N, now_ns() - t);

    /* lookups on `threads` threads while this thread moves MACs */
    atomic_bool stop = false;
    struct reader rd[64];
    pthread_t th[64];
    for (int i = 0; i < threads; i++) {
        rd[i] = (struct reader){.t = mt, .stop = &stop};
        pthread_create(&th[i], NULL, reader_main, &rd[i]);
    }
    uint64_t moves = 0;
    t = now_ns();
    while (now_ns() - t < 1000000000ull) {
        mac_n(mac, (uint32_t)(moves % N_MACS));
        mac_table_learn(mt, 10, mac, (uint32_t)(moves % 17), t + moves);
        moves++;
    }
    uint64_t wns = now_ns() - t;
    atomic_store(&stop, true);
    uint64_t ops = 0, ns = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        ops += rd[i].ops;
        ns += rd[i].ns;
    }
    char label[64];
    snprintf(label, sizeof(label), "mac_table_lookup, %d readers + 1 mover", threads);
    report(label, ops, ns / (uint64_t)threads); /* aggregate rate over wall time */
    report("mac_table_learn moving MACs (concurrently)", moves, wns);
    mac_table_destroy(mt);

    /* bond selection */
    struct bond b;
    struct bond_config bc = {.mode = BOND_MODE_STATIC, .hash = PKT_HASH_L4};
    bond_init(&b, &bc, 0);
    for (uint32_t i = 0; i < 4; i++) {
        bond_member_add(&b, i, MAC_A, 0);
        bond_member_set_link(&b, i, true, 0);
    }
    uint32_t port;
    t = now_ns();
    for (uint64_t i = 0; i < N; i++)
        sink += (uint32_t)bond_select_tx(&b, &m, &port);
    report("bond_select_tx (4 members, L4)", N, now_ns() - t);

    /* VXLAN */
    struct vxlan_tunnel tun = {.ttl = 64};
    uint8_t remote[4] = {192, 168, 0, 2};
    memcpy(tun.local_mac, MAC_A, 6);
    memcpy(tun.nexthop_mac, MAC_B, 6);
    fr_ip4addr(tun.local_ip, "192.168.0.1");
    struct frame g;
    fr_udp4_frame(&g, MAC_C, MAC_A, "10.0.0.1", "10.0.0.2", 1, 2, 18);
    t = now_ns();
    for (uint64_t i = 0; i < N; i++) {
        uint8_t *p = g.p;
        size_t len = g.len;
        sink += (uint32_t)vxlan_encap(&tun, &p, &len, 128, remote, 42, (uint32_t)i, NULL);
    }
    report("vxlan_encap (64 B inner)", N, now_ns() - t);
    uint8_t *p = g.p;
    size_t len = g.len;
    vxlan_encap(&tun, &p, &len, 128, remote, 42, 7, NULL);
    struct vxlan_decap_result r;
    t = now_ns();
    for (uint64_t i = 0; i < N; i++)
        sink += (uint32_t)vxlan_decap(p, len, 0, &r, NULL);
    report("vxlan_decap", N, now_ns() - t);
    return sink == 0xdeadbeef;
}
