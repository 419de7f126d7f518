/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hostile-input driver for the card's packet-facing code: every input goes
 * through pkt_parse(), VLAN classification, port security, storm
 * classification, hashing, VLAN pop/push, vxlan_decap(), lacp_pdu_decode()
 * and a live LACP member's lacp_rx(), and the results are checked for
 * internal consistency (offsets inside the frame, round trips). Any
 * violation aborts.
 *
 * With -Dfuzz=true under clang it is a libFuzzer target. Otherwise it is a
 * deterministic mutation runner (suite 'unit'): valid seed frames of every
 * kind are truncated, extended and bit-flipped by a fixed-seed PRNG, each
 * mutant in an exact-size heap buffer so ASan sees any over-read.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bond.h"
#include "frames.h"
#include "lacp.h"
#include "pkt.h"
#include "policer.h"
#include "security.h"
#include "vlan.h"
#include "vxlan.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_net: invariant failed: %s (line %d)\n", #cond, __LINE__);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct fuzz_ctx {
    struct vlan_port access, trunk;
    struct port_security sec;
    struct lacp lacp;
    int member;
    uint64_t now;
};

static void fuzz_ctx_init(struct fuzz_ctx *c)
{
    const uint16_t allowed[] = {10, 20, 4094};
    memset(c, 0, sizeof(*c));
    CHECK(vlan_port_set_access(&c->access, 10) == 0);
    CHECK(vlan_port_set_trunk(&c->trunk, 5, allowed, 3) == 0);
    c->trunk.accept_qinq = true;
    CHECK(port_security_init(&c->sec, MAC_A) == 0);
    CHECK(port_security_add_ip(&c->sec, "10.0.0.1") == 0);
    CHECK(port_security_add_ip(&c->sec, "2001:db8::1") == 0);
    struct lacp_config lc = {.sys_prio = 1, .key = 1, .active = true, .fast = true};
    memcpy(lc.sys_mac, MAC_B, 6);
    CHECK(lacp_init(&c->lacp, &lc) == 0);
    c->member = lacp_member_add(&c->lacp, 1, 1, MAC_B, 0);
    CHECK(c->member >= 0);
    CHECK(lacp_member_set_link(&c->lacp, (unsigned)c->member, true, 0) == 0);
}

static void fuzz_pkt(struct fuzz_ctx *c, const uint8_t *f, size_t len)
{
    struct pkt_meta m;
    int rc = pkt_parse(f, len, &m);

    CHECK(rc == 0 || rc == -EINVAL || rc == -EMSGSIZE);
    CHECK((rc == 0) == (m.bad == PKT_BAD_NONE));
    if (m.bad != PKT_BAD_TRUNC_ETH && m.bad != PKT_BAD_OVERSIZE)
        CHECK(m.l3_ofs <= len && m.n_vlans <= PKT_MAX_VLANS);
    if (rc == 0) {
        CHECK(m.l4_ofs <= len);
        if (m.l3 == PKT_L3_IPV4 || m.l3 == PKT_L3_IPV6)
            CHECK((size_t)m.l3_ofs + m.l3_len <= len);
        if (m.l4_ofs)
            CHECK(m.l4_ofs >= m.l3_ofs);
    }

    struct vlan_stats vs = {0};
    struct vlan_ingress in;
    if (vlan_port_ingress(&c->access, &m, &vs, &in) == 0)
        CHECK(in.vid == 10);
    if (vlan_port_ingress(&c->trunk, &m, &vs, &in) == 0)
        CHECK(vlan_port_is_member(&c->trunk, in.vid));

    struct sec_stats ss = {0};
    enum sec_verdict v = port_security_check_ingress(&c->sec, &m, rc, &ss);
    CHECK((unsigned)v < SEC__MAX && ss.verdicts[v] == 1);
    (void)storm_control_classify(&m, false);
    (void)pkt_hash(&m, PKT_HASH_L2, 1);
    (void)pkt_hash(&m, PKT_HASH_L3, 1);
    (void)pkt_hash(&m, PKT_HASH_L4, 1);

    /* pop then push restores the frame */
    if (len <= FR_MAX) {
        uint8_t buf[FR_MAX + 8];
        uint8_t *p = buf + 4;
        size_t l = len;
        uint16_t tci;
        memcpy(p, f, len);
        if (pkt_vlan_pop(&p, &l, &tci) == 0) {
            CHECK(l + 4 == len);
            uint16_t tpid = pkt_get_be16(f + 12);
            CHECK(pkt_vlan_push(&p, &l, (size_t)(p - buf), tpid, tci) == 0);
            CHECK(l == len && !memcmp(p, f, len));
        }
    }
}

static void fuzz_vxlan(const uint8_t *f, size_t len)
{
    struct vxlan_decap_result r;
    struct vxlan_stats st = {0};
    if (vxlan_decap(f, len, 0, &r, &st) == 0) {
        CHECK(r.inner_ofs + r.inner_len <= len);
        CHECK(r.inner_len >= PKT_ETH_HLEN && r.vni <= VXLAN_VNI_MAX);
        CHECK(st.decap_pkts == 0); /* counted by the caller, which knows its VNIs */
    } else {
        uint64_t n = 0;
        for (int i = 0; i < VXLAN_BAD__MAX; i++)
            n += st.bad[i];
        CHECK(n == 1);
    }
}

static void fuzz_lacp(struct fuzz_ctx *c, const uint8_t *f, size_t len)
{
    struct lacp_pdu pdu, back;
    enum lacp_bad bad;
    uint8_t buf[LACP_FRAME_LEN];

    if (len >= PKT_ETH_HLEN &&
        lacp_pdu_decode(f + PKT_ETH_HLEN, len - PKT_ETH_HLEN, &pdu, &bad) == 0) {
        CHECK(lacp_pdu_encode(&pdu, buf, sizeof(buf)) == LACP_PDU_LEN);
        CHECK(lacp_pdu_decode(buf, LACP_PDU_LEN, &back, &bad) == 0);
        CHECK(!memcmp(&pdu.actor, &back.actor, sizeof(pdu.actor)));
        CHECK(!memcmp(&pdu.partner, &back.partner, sizeof(pdu.partner)));
    }
    c->now += 10000000; /* 10 ms per input: timers run too */
    int rc = lacp_rx(&c->lacp, (unsigned)c->member, f, len, c->now);
    CHECK(rc == 0 || rc == -EBADMSG);
    lacp_run(&c->lacp, c->now);
    rc = lacp_member_tx(&c->lacp, (unsigned)c->member, c->now, buf, sizeof(buf));
    CHECK(rc == 0 || rc == LACP_FRAME_LEN);
    if (rc == LACP_FRAME_LEN)
        CHECK(lacp_pdu_decode(buf + PKT_ETH_HLEN, LACP_PDU_LEN, &pdu, &bad) == 0);
}

static void fuzz_one(struct fuzz_ctx *c, const uint8_t *data, size_t size)
{
    uint8_t *f = malloc(size ? size : 1); /* exact size: ASan sees over-reads */
    if (!f)
        return;
    memcpy(f, data, size);
    fuzz_pkt(c, f, size);
    fuzz_vxlan(f, size);
    fuzz_lacp(c, f, size);
    free(f);
}

#ifdef QT_CARD_NET_FUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fuzz_ctx ctx;
    static int ready;
    if (!ready) {
        fuzz_ctx_init(&ctx);
        ready = 1;
    }
    fuzz_one(&ctx, data, size);
    return 0;
}
#else

static uint32_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 16);
}

static void seed_vxlan(struct frame *f)
{
    struct vxlan_tunnel t = {.dst_port = 0};
    uint8_t remote[4] = {192, 168, 0, 2};
    memcpy(t.local_mac, MAC_A, 6);
    memcpy(t.nexthop_mac, MAC_B, 6);
    fr_ip4addr(t.local_ip, "192.168.0.1");
    fr_udp4_frame(f, MAC_C, MAC_A, "10.0.0.1", "10.0.0.2", 1, 2, 20);
    CHECK(vxlan_encap(&t, &f->p, &f->len, 128, remote, 77, 5, NULL) == 0);
}

static void seed_lacp(struct frame *f)
{
    struct lacp_pdu pdu = {.actor = {.sys_prio = 1,
                                     .sys_mac = {2, 0, 0, 0, 0, 9},
                                     .key = 3,
                                     .port_prio = 1,
                                     .port = 7,
                                     .state = 0x3f},
                           .partner = {.sys_prio = 1,
                                       .sys_mac = {0x52, 0x54, 0, 0, 0, 0x0b},
                                       .key = 1,
                                       .port_prio = 1,
                                       .port = 1,
                                       .state = 0x3f}};
    fr_init(f);
    fr_eth(f, lacp_slow_mac, MAC_C, PKT_ETHERTYPE_SLOW);
    CHECK(lacp_pdu_encode(&pdu, f->p + f->len, LACP_PDU_LEN) == LACP_PDU_LEN);
    f->len += LACP_PDU_LEN;
}

int main(void)
{
    struct frame seeds[8];
    int n = 0;
    struct fuzz_ctx ctx;
    uint64_t s = 0x9e3779b97f4a7c15ull;

    fuzz_ctx_init(&ctx);
    fr_udp4_frame(&seeds[n++], MAC_B, MAC_A, "10.0.0.1", "10.0.0.2", 68, 67, 30);
    fr_init(&seeds[n]);
    fr_eth_vlan(&seeds[n], MAC_BCAST, MAC_A, 20, PKT_ETHERTYPE_ARP);
    fr_arp(&seeds[n++], 1, MAC_A, "10.0.0.1", MAC_B, "10.0.0.2");
    fr_init(&seeds[n]);
    fr_eth(&seeds[n], MAC_MCAST, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&seeds[n], "2001:db8::1", "ff02::1:ff00:2", PKT_IPPROTO_ICMPV6, 32);
    fr_nd(&seeds[n++], 136, "2001:db8::1", MAC_A);
    fr_init(&seeds[n]);
    fr_eth(&seeds[n], MAC_B, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&seeds[n], "2001:db8::1", "2001:db8::2", 0, 8 + 20);
    fr_u8(&seeds[n], PKT_IPPROTO_TCP);
    fr_zero(&seeds[n], 7);
    fr_tcp(&seeds[n++], 1, 2);
    seed_vxlan(&seeds[n++]);
    seed_lacp(&seeds[n++]);

    unsigned runs = 0;
    for (int iter = 0; iter < 400000; iter++) {
        const struct frame *sd = &seeds[iter % n];
        uint8_t buf[FR_MAX];
        size_t len = sd->len;
        memcpy(buf, sd->p, len);
        switch (rnd(&s) % 4) {
        case 0: /* truncate */
            len = rnd(&s) % (len + 1);
            break;
        case 1: /* extend with junk */
            while (len < FR_MAX && rnd(&s) % 8)
                buf[len++] = (uint8_t)rnd(&s);
            break;
        default: /* flip bytes, biased towards the headers */
            for (unsigned k = 1 + rnd(&s) % 4; k; k--) {
                size_t at = rnd(&s) % (len < 80 ? len : 80);
                buf[at] = (uint8_t)(rnd(&s) % 3 ? rnd(&s) : buf[at] ^ (1u << (rnd(&s) % 8)));
            }
        }
        fuzz_one(&ctx, buf, len);
        runs++;
    }
    for (int i = 0; i < n; i++) /* the seeds themselves */
        fuzz_one(&ctx, seeds[i].p, seeds[i].len);
    printf("fuzz_net: %u mutants of %d seed frames, no invariant broken\n", runs, n);
    return 0;
}
#endif
