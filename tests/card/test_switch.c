/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The qtcard switch in process: a card with one worker and its control
 * thread, VM ports driven by in-process virtio-net drivers (fake_driver.c)
 * over real vhost-user sockets. Covers learning, flooding with split
 * horizon, VLAN access/trunk isolation, anti-spoofing, mergeable receive
 * buffers, checksum offload carried or completed, malformed frames, the
 * API's error answers and the state file.
 */
#include "card/card.h"
#include "common/http.h"
#include "common/log.h"
#include "fake_driver.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

struct env {
    struct card card;
    pthread_t ctl;
    char dir[64];
    char state[128];
    char api[128];
    struct httpd *httpd;
};

static void *ctl_main(void *arg)
{
    card_run_control(arg);
    return NULL;
}

static void env_start(struct env *e)
{
    struct card_config cfg = {.cores = 1, .idle_us = 50};
    memset(e, 0, sizeof(*e));
    snprintf(e->dir, sizeof(e->dir), "/tmp/qtcard-test-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(e->state, sizeof(e->state), "%s/state.json", e->dir);
    snprintf(e->api, sizeof(e->api), "%s/api.sock", e->dir);
    cfg.socket_dir = e->dir;
    cfg.state_file = e->state;
    cfg.api_socket = e->api;
    assert_int_equal(card_init(&e->card, &cfg), 0);
    assert_int_equal(card_start_workers(&e->card), 0);
    assert_int_equal(pthread_create(&e->ctl, NULL, ctl_main, &e->card), 0);
}

static void env_stop(struct env *e)
{
    char cmd[128];
    card_stop(&e->card);
    pthread_join(e->ctl, NULL);
    if (e->httpd)
        httpd_stop(e->httpd);
    card_destroy(&e->card);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
    assert_int_equal(system(cmd), 0);
}

static int jcall(struct card *c, int (*fn)(struct card *, json_object *, char *, size_t),
                 const char *json)
{
    json_object *j = json_tokener_parse(json);
    char err[256] = "";
    int ret;
    assert_non_null(j);
    ret = fn(c, j, err, sizeof(err));
    json_object_put(j);
    return ret;
}

static void add_port(struct env *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_port(struct env *e, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    assert_int_equal(jcall(&e->card, card_port_add, buf), 0);
}

/* Features every fake driver of the running test asks for as well (the packed-ring runs
 * of the tests set FDRV_F_PACKED). */
static uint64_t extra_features;

static int packed_on(void **state)
{
    (void)state;
    extra_features = FDRV_F_PACKED;
    return 0;
}

/* Packed rings with inflight tracking (the region checked at the end of the test). */
static int packed_inflight_on(void **state)
{
    (void)state;
    extra_features = FDRV_F_PACKED | FDRV_F_INFLIGHT;
    return 0;
}

static int packed_off(void **state)
{
    (void)state;
    extra_features = 0;
    return 0;
}

static void connect_port(struct env *e, struct fdrv *d, const char *name, uint64_t features,
                         uint32_t bufsz)
{
    char path[192];
    struct port *p;
    snprintf(path, sizeof(path), "%s/%s.sock", e->dir, name);
    assert_int_equal(fdrv_connect(d, path, features | extra_features, bufsz), 0);
    /* The device offers packed rings: the driver got what it asked for. */
    assert_int_equal(!!(d->features & FDRV_F_PACKED), !!(extra_features & FDRV_F_PACKED));
    /* Wait until both rings of the port run. */
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&e->card.lock);
        p = card_port_find(&e->card, name);
        bool up = p && p->q[0].rx_running && p->q[0].tx_running;
        pthread_mutex_unlock(&e->card.lock);
        if (up)
            return;
        usleep(1000);
    }
    fail_msg("port %s did not come up", name);
}

static const uint8_t MAC_A[6] = {0x02, 0, 0, 0, 0, 0xa};
static const uint8_t MAC_B[6] = {0x02, 0, 0, 0, 0, 0xb};
static const uint8_t MAC_X[6] = {0x02, 0, 0, 0, 0, 0x99};
static const uint8_t BCAST[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static uint32_t eth_frame(uint8_t *f, const uint8_t *dst, const uint8_t *src, uint16_t type,
                          uint32_t payload, uint8_t fill)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    pkt_put_be16(f + 12, type);
    memset(f + 14, fill, payload);
    return 14 + payload;
}

/* IPv4/UDP frame from src_ip; UDP checksum field left as the pseudo-header sum. */
static uint32_t udp_frame(uint8_t *f, const uint8_t *dst, const uint8_t *src, const uint8_t ip[4],
                          uint32_t payload)
{
    uint8_t *iph = f + 14, *udp = f + 34;
    uint32_t sum = 0;
    uint16_t ulen = (uint16_t)(8 + payload);
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    pkt_put_be16(f + 12, PKT_ETHERTYPE_IPV4);
    memset(iph, 0, 20);
    iph[0] = 0x45;
    pkt_put_be16(iph + 2, (uint16_t)(20 + ulen));
    iph[8] = 64;
    iph[9] = PKT_IPPROTO_UDP;
    memcpy(iph + 12, ip, 4);
    iph[16] = 10, iph[17] = 0, iph[18] = 0, iph[19] = 2;
    pkt_put_be16(iph + 10, pkt_csum(iph, 20));
    pkt_put_be16(udp, 1234);
    pkt_put_be16(udp + 2, 5678);
    pkt_put_be16(udp + 4, ulen);
    for (uint32_t i = 0; i < payload; i++)
        udp[8 + i] = (uint8_t)(i * 7);
    /* Pseudo-header sum (not complemented), as a sender with checksum offload leaves it. */
    sum += pkt_get_be16(iph + 12) + pkt_get_be16(iph + 14) + pkt_get_be16(iph + 16) +
           pkt_get_be16(iph + 18) + PKT_IPPROTO_UDP + ulen;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    pkt_put_be16(udp + 6, (uint16_t)sum);
    return 34 + ulen;
}

static bool udp_csum_valid(const uint8_t *f, uint32_t len)
{
    uint8_t buf[12 + 2048];
    const uint8_t *iph = f + 14;
    uint16_t ulen = pkt_get_be16(f + 38);
    if (len < 42 || (uint32_t)(34 + ulen) > len || ulen > 2048)
        return false;
    memcpy(buf, iph + 12, 8);
    buf[8] = 0;
    buf[9] = PKT_IPPROTO_UDP;
    pkt_put_be16(buf + 10, ulen);
    memcpy(buf + 12, f + 34, ulen);
    return pkt_csum(buf, 12u + ulen) == 0;
}

static uint8_t rxbuf[16384];

static int recv1(struct fdrv *d, struct virtio_net_hdr_v1 *h, unsigned *nb)
{
    return fdrv_recv(d, rxbuf, sizeof(rxbuf), h, nb, 2000);
}

/* Nothing arrives within a short grace period. */
static void expect_silence(struct fdrv *d)
{
    assert_int_equal(fdrv_recv(d, rxbuf, sizeof(rxbuf), NULL, NULL, 150), 0);
}

static uint64_t port_drop(struct env *e, const char *name, enum port_drop why)
{
    struct port *p;
    uint64_t v;
    pthread_mutex_lock(&e->card.lock);
    p = card_port_find(&e->card, name);
    v = p ? __atomic_load_n(&p->drops[why], __ATOMIC_RELAXED) : ~0ull;
    pthread_mutex_unlock(&e->card.lock);
    return v;
}

static void test_learning_flooding(void **state)
{
    struct env e;
    struct fdrv a, b, c;
    uint8_t f[128];
    uint32_t n;
    (void)state;

    env_start(&e);
    assert_int_equal(jcall(&e.card, card_switch_add, "{\"name\":\"br0\"}"), 0);
    add_port(&e, "{\"name\":\"a\",\"switch\":\"br0\"}");
    add_port(&e, "{\"name\":\"b\",\"switch\":\"br0\"}");
    add_port(&e, "{\"name\":\"c\",\"switch\":\"br0\"}");
    connect_port(&e, &a, "a", 0, 2048);
    connect_port(&e, &b, "b", 0, 2048);
    connect_port(&e, &c, "c", 0, 2048);

    /* Unknown destination: flooded to b and c, not back to a. */
    n = eth_frame(f, MAC_X, MAC_A, 0x88b5, 50, 0x11);
    assert_int_equal(fdrv_send(&a, f, n, NULL), 0);
    assert_int_equal(recv1(&b, NULL, NULL), (int)n);
    assert_memory_equal(rxbuf, f, n);
    assert_int_equal(recv1(&c, NULL, NULL), (int)n);
    expect_silence(&a);
    /* b answers a: a was learned, so only a gets it. */
    n = eth_frame(f, MAC_A, MAC_B, 0x88b5, 60, 0x22);
    assert_int_equal(fdrv_send(&b, f, n, NULL), 0);
    assert_int_equal(recv1(&a, NULL, NULL), (int)n);
    assert_memory_equal(rxbuf, f, n);
    expect_silence(&c);
    /* And now a -> b is unicast too. */
    n = eth_frame(f, MAC_B, MAC_A, 0x88b5, 70, 0x33);
    assert_int_equal(fdrv_send(&a, f, n, NULL), 0);
    assert_int_equal(recv1(&b, NULL, NULL), (int)n);
    expect_silence(&c);
    /* Broadcast goes everywhere but the source. */
    n = eth_frame(f, BCAST, MAC_B, 0x88b5, 40, 0x44);
    assert_int_equal(fdrv_send(&b, f, n, NULL), 0);
    assert_int_equal(recv1(&a, NULL, NULL), (int)n);
    assert_int_equal(recv1(&c, NULL, NULL), (int)n);
    expect_silence(&b);
    /* A runt frame is counted and dropped. */
    assert_int_equal(fdrv_send(&a, f, 10, NULL), 0);
    expect_silence(&b);
    assert_int_equal(port_drop(&e, "a", DROP_MALFORMED), 1);

    assert_int_equal(fdrv_inflight_check(&a, 1000), 0);
    assert_int_equal(fdrv_inflight_check(&b, 1000), 0);
    assert_int_equal(fdrv_inflight_check(&c, 1000), 0);
    fdrv_close(&a);
    fdrv_close(&b);
    fdrv_close(&c);
    env_stop(&e);
}

/* The switch remembers the last source learned and the last destination looked up
 * for the rest of a burst; a station moving within the burst must still be seen. */
static void test_move_within_burst(void **state)
{
    struct env e;
    struct fdrv a, b, c;
    uint8_t f1[128], f2[128], f3[128];
    const uint8_t *frames[3] = {f1, f2, f3};
    uint32_t lens[3], n;
    (void)state;

    env_start(&e);
    assert_int_equal(jcall(&e.card, card_switch_add, "{\"name\":\"br0\"}"), 0);
    add_port(&e, "{\"name\":\"a\",\"switch\":\"br0\"}");
    add_port(&e, "{\"name\":\"b\",\"switch\":\"br0\"}");
    add_port(&e, "{\"name\":\"c\",\"switch\":\"br0\"}");
    connect_port(&e, &a, "a", 0, 2048);
    connect_port(&e, &b, "b", 0, 2048);
    connect_port(&e, &c, "c", 0, 2048);

    /* B is learned behind port b (the broadcast reaches a and c). */
    n = eth_frame(f1, BCAST, MAC_B, 0x88b5, 40, 0x01);
    assert_int_equal(fdrv_send(&b, f1, n, NULL), 0);
    assert_int_equal(recv1(&a, NULL, NULL), (int)n);
    assert_int_equal(recv1(&c, NULL, NULL), (int)n);

    /* One burst from a: X -> B (to b), then B itself sends from a to A (B moves
     * to a; A unknown: flooded to b and c), then X -> B again: B is now behind
     * the input port, so the frame goes nowhere. */
    lens[0] = eth_frame(f1, MAC_B, MAC_X, 0x88b5, 50, 0x11);
    lens[1] = eth_frame(f2, MAC_A, MAC_B, 0x88b5, 51, 0x22);
    lens[2] = eth_frame(f3, MAC_B, MAC_X, 0x88b5, 52, 0x33);
    assert_int_equal(fdrv_send_frames(&a, frames, lens, 3), 3);
    assert_int_equal(recv1(&b, NULL, NULL), (int)lens[0]);
    assert_memory_equal(rxbuf, f1, lens[0]);
    assert_int_equal(recv1(&b, NULL, NULL), (int)lens[1]);
    assert_memory_equal(rxbuf, f2, lens[1]);
    assert_int_equal(recv1(&c, NULL, NULL), (int)lens[1]);
    assert_memory_equal(rxbuf, f2, lens[1]);
    expect_silence(&b);
    expect_silence(&c);
    expect_silence(&a);
    assert_int_equal(port_drop(&e, "a", DROP_NO_DEST), 1);

    /* B back behind b; then from a: X -> B (to b) and, in the same burst, a frame
     * from B to B: learning it moves B to a, so the destination looked up for the
     * first frame no longer holds and the second frame is dropped. */
    n = eth_frame(f1, BCAST, MAC_B, 0x88b5, 40, 0x02);
    assert_int_equal(fdrv_send(&b, f1, n, NULL), 0);
    assert_int_equal(recv1(&a, NULL, NULL), (int)n);
    assert_int_equal(recv1(&c, NULL, NULL), (int)n);
    lens[0] = eth_frame(f1, MAC_B, MAC_X, 0x88b5, 53, 0x44);
    lens[1] = eth_frame(f2, MAC_B, MAC_B, 0x88b5, 54, 0x55);
    assert_int_equal(fdrv_send_frames(&a, frames, lens, 2), 2);
    assert_int_equal(recv1(&b, NULL, NULL), (int)lens[0]);
    assert_memory_equal(rxbuf, f1, lens[0]);
    expect_silence(&b);
    expect_silence(&c);
    assert_int_equal(port_drop(&e, "a", DROP_NO_DEST), 2);

    fdrv_close(&a);
    fdrv_close(&b);
    fdrv_close(&c);
    env_stop(&e);
}

/* Fill the virtio-net header area of every receive buffer of d. */
static void fill_rx_headers(struct fdrv *d, const void *hdr, size_t len)
{
    for (uint16_t id = 0; id < FDRV_RING; id++)
        memcpy(fdrv_rx_buf(d, id), hdr, len);
}

/*
 * The receive path leaves a buffer's virtio-net header alone when it already holds the
 * header to write (dp.c vnet_hdr_store). Whatever a recycled buffer held before, the
 * driver must read exactly the header of the packet: stale offload flags, a stale
 * num_buffers, garbage, and the unchanged case.
 */
static void test_rx_header_reuse(void **state)
{
    struct env e;
    struct fdrv a, b, c;
    struct virtio_net_hdr_v1 h, stale;
    uint8_t f[256], garbage[sizeof(h)];
    unsigned nb, n;
    (void)state;

    env_start(&e);
    assert_int_equal(jcall(&e.card, card_switch_add, "{\"name\":\"br0\"}"), 0);
    add_port(&e, "{\"name\":\"a\",\"switch\":\"br0\"}");
    add_port(&e, "{\"name\":\"b\",\"switch\":\"br0\"}");
    add_port(&e, "{\"name\":\"c\",\"switch\":\"br0\"}");
    connect_port(&e, &a, "a", FDRV_F_CSUM, 2048);
    connect_port(&e, &b, "b", FDRV_F_CSUM | FDRV_F_MRG, 2048); /* 12-byte header */
    connect_port(&e, &c, "c", FDRV_F_CSUM, 2048);              /* 12 bytes, no MRG */
    n = udp_frame(f, BCAST, MAC_A, (const uint8_t[]){10, 0, 0, 1}, 100);

    for (int round = 0; round < 5; round++) {
        memset(&stale, 0, sizeof(stale));
        switch (round) {
        case 0: /* garbage everywhere */
            memset(garbage, 0xa5, sizeof(garbage));
            memcpy(&stale, garbage, sizeof(stale));
            break;
        case 1: /* a previous packet's checksum offload, same num_buffers */
            stale.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
            stale.csum_start = 34;
            stale.csum_offset = 6;
            stale.num_buffers = 1;
            break;
        case 2: /* only num_buffers differs (the last bytes) */
            stale.num_buffers = 3;
            break;
        case 3: /* only gso_size differs */
            stale.gso_size = 1448;
            stale.num_buffers = 1;
            break;
        default: /* already the header of a plain one-buffer packet */
            stale.num_buffers = 1;
            break;
        }
        fill_rx_headers(&b, &stale, sizeof(stale));
        fill_rx_headers(&c, &stale, sizeof(stale));
        assert_int_equal(fdrv_send(&a, f, n, NULL), 0);
        for (int k = 0; k < 2; k++) {
            memset(&h, 0x5a, sizeof(h));
            assert_int_equal(recv1(k ? &c : &b, &h, &nb), (int)n);
            assert_memory_equal(rxbuf, f, n);
            assert_int_equal(h.flags, 0);
            assert_int_equal(h.gso_type, 0);
            assert_int_equal(h.hdr_len, 0);
            assert_int_equal(h.gso_size, 0);
            assert_int_equal(h.csum_start, 0);
            assert_int_equal(h.csum_offset, 0);
            /* Without MRG_RXBUF the field is still part of the 12-byte header and the
             * device sets it to 1 (virtio 1.2 5.1.6.3). */
            assert_int_equal(h.num_buffers, 1);
        }
    }
    fdrv_close(&a);
    fdrv_close(&b);
    fdrv_close(&c);
    env_stop(&e);
}

/*
 * VIRTIO_F_IN_ORDER: the device uses buffers in the order they were made available,
 * including receive buffers returned empty (frame too big) and frames spread over several
 * mergeable buffers. The fake driver checks every used entry against its avail ring.
 */
static void test_in_order(void **state)
{
    struct env e;
    struct fdrv a, r, s;
    uint8_t small[128], big[1600];
    unsigned nsmall, nbig, got_r = 0, got_s = 0, empty_s = 0;
    (void)state;

    env_start(&e);
    assert_int_equal(jcall(&e.card, card_switch_add, "{\"name\":\"br0\"}"), 0);
    add_port(&e, "{\"name\":\"a\",\"switch\":\"br0\"}");
    add_port(&e, "{\"name\":\"r\",\"switch\":\"br0\"}");
    add_port(&e, "{\"name\":\"s\",\"switch\":\"br0\"}");
    connect_port(&e, &a, "a", FDRV_F_IN_ORDER, 2048);
    connect_port(&e, &r, "r", FDRV_F_IN_ORDER | FDRV_F_MRG, 512); /* 1500 B: 3 buffers */
    connect_port(&e, &s, "s", FDRV_F_IN_ORDER, 256);              /* 1500 B: too big */
    assert_true(a.features & FDRV_F_IN_ORDER);
    assert_true(r.features & FDRV_F_IN_ORDER);
    nsmall = udp_frame(small, BCAST, MAC_A, (const uint8_t[]){10, 0, 0, 1}, 60);
    nbig = udp_frame(big, BCAST, MAC_A, (const uint8_t[]){10, 0, 0, 1}, 1500 - 42);

    /* More frames than either ring has buffers, so every ring wraps: 3 rounds of
     * small, big, small. */
    for (int i = 0; i < 3 * FDRV_RING / 4; i++) {
        const uint8_t *frames[3] = {small, big, small};
        uint32_t lens[3] = {nsmall, nbig, nsmall};
        assert_int_equal(fdrv_send_frames(&a, frames, lens, 3), 3);
        for (int k = 0; k < 3; k++) {
            int n = recv1(&r, NULL, NULL);
            assert_int_equal(n, (int)lens[k]);
            got_r++;
        }
        for (int k = 0; k < 3; k++) {
            /* The big frame comes back as an empty buffer (len 0, dropped). */
            int n = fdrv_recv(&s, rxbuf, sizeof(rxbuf), NULL, NULL, 2000);
            assert_true(n >= 0);
            if (n == 0) {
                empty_s++;
            } else {
                assert_int_equal(n, (int)nsmall);
                got_s++;
            }
        }
        fdrv_tx_reclaim(&a);
    }
    assert_int_equal(got_r, 3 * (3 * FDRV_RING / 4));
    assert_int_equal(got_s, 2 * (3 * FDRV_RING / 4));
    assert_int_equal(empty_s, 3 * FDRV_RING / 4);
    assert_int_equal(a.order_errors, 0);
    assert_int_equal(r.order_errors, 0);
    assert_int_equal(s.order_errors, 0);
    fdrv_close(&a);
    fdrv_close(&r);
    fdrv_close(&s);
    env_stop(&e);
}

static void test_vlans(void **state)
{
    struct env e;
    struct fdrv d, x, t;
    uint8_t f[128], tagged[132];
    uint32_t n;
    (void)state;

    env_start(&e);
    assert_int_equal(jcall(&e.card, card_switch_add, "{\"name\":\"br1\"}"), 0);
    add_port(&e, "{\"name\":\"d\",\"switch\":\"br1\",\"vlan\":{\"mode\":\"access\",\"tag\":10}}");
    add_port(&e, "{\"name\":\"x\",\"switch\":\"br1\",\"vlan\":{\"mode\":\"access\",\"tag\":20}}");
    add_port(&e, "{\"name\":\"t\",\"switch\":\"br1\",\"vlan\":{\"mode\":\"trunk\",\"allowed\":"
                 "\"10,20\"}}");
    connect_port(&e, &d, "d", 0, 2048);
    connect_port(&e, &x, "x", 0, 2048);
    connect_port(&e, &t, "t", 0, 2048);

    /* Access VLAN 10 -> the trunk gets it tagged 10; VLAN 20 never sees it. */
    n = eth_frame(f, BCAST, MAC_A, 0x88b5, 46, 0x55);
    assert_int_equal(fdrv_send(&d, f, n, NULL), 0);
    assert_int_equal(recv1(&t, NULL, NULL), (int)n + 4);
    assert_int_equal(pkt_get_be16(rxbuf + 12), PKT_ETHERTYPE_VLAN);
    assert_int_equal(pkt_get_be16(rxbuf + 14) & 0xfff, 10);
    assert_memory_equal(rxbuf + 16, f + 12, n - 12);
    expect_silence(&x);
    /* Trunk frame tagged 20 -> access port 20, untagged. */
    memcpy(tagged, f, 12);
    pkt_put_be16(tagged + 12, PKT_ETHERTYPE_VLAN);
    pkt_put_be16(tagged + 14, 20);
    memcpy(tagged + 16, f + 12, n - 12);
    memcpy(tagged + 6, MAC_B, 6);
    assert_int_equal(fdrv_send(&t, tagged, n + 4, NULL), 0);
    assert_int_equal(recv1(&x, NULL, NULL), (int)n);
    assert_int_equal(pkt_get_be16(rxbuf + 12), 0x88b5);
    expect_silence(&d);
    /* VLAN 30 is not allowed on the trunk: dropped and counted. */
    pkt_put_be16(tagged + 14, 30);
    assert_int_equal(fdrv_send(&t, tagged, n + 4, NULL), 0);
    expect_silence(&d);
    expect_silence(&x);
    assert_int_equal(port_drop(&e, "t", DROP_VLAN), 1);
    /* A tagged frame on an access port is dropped. */
    assert_int_equal(fdrv_send(&d, tagged, n + 4, NULL), 0);
    expect_silence(&t);
    assert_int_equal(port_drop(&e, "d", DROP_VLAN), 1);

    fdrv_close(&d);
    fdrv_close(&x);
    fdrv_close(&t);
    env_stop(&e);
}

static void test_spoofing_mrg_csum(void **state)
{
    static const uint8_t ip_ok[4] = {10, 0, 0, 1}, ip_bad[4] = {10, 0, 0, 9};
    struct env e;
    struct fdrv s, r, g;
    struct virtio_net_hdr_v1 h = {0};
    uint8_t f[2048];
    unsigned nb = 0;
    uint32_t n;
    int got;
    (void)state;

    env_start(&e);
    assert_int_equal(jcall(&e.card, card_switch_add, "{\"name\":\"br2\"}"), 0);
    add_port(&e, "{\"name\":\"s\",\"switch\":\"br2\",\"mac\":\"02:00:00:00:00:0a\","
                 "\"anti_spoofing\":{\"ips\":[\"10.0.0.1\"]}}");
    add_port(&e, "{\"name\":\"r\",\"switch\":\"br2\"}");
    add_port(&e, "{\"name\":\"g\",\"switch\":\"br2\"}");
    connect_port(&e, &s, "s", FDRV_F_CSUM, 2048);
    /* r: mergeable buffers of 512 bytes, no guest checksum; g: guest checksum. */
    connect_port(&e, &r, "r", FDRV_F_MRG, 512);
    connect_port(&e, &g, "g", FDRV_F_CSUM | FDRV_F_MRG, 2048);

    /* Spoofed source MAC. */
    n = udp_frame(f, MAC_X, MAC_B, ip_ok, 100);
    assert_int_equal(fdrv_send(&s, f, n, NULL), 0);
    expect_silence(&r);
    assert_int_equal(port_drop(&e, "s", DROP_SPOOF), 1);
    /* Spoofed source IP. */
    n = udp_frame(f, MAC_X, MAC_A, ip_bad, 100);
    assert_int_equal(fdrv_send(&s, f, n, NULL), 0);
    expect_silence(&r);
    assert_int_equal(port_drop(&e, "s", DROP_SPOOF), 2);
    /* Legitimate 1500-byte frame with a partial checksum: r needs 4 buffers of 512
     * (12 + 1500 bytes) and a completed checksum; g may get the partial one. */
    n = udp_frame(f, MAC_X, MAC_A, ip_ok, 1500 - 42);
    h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h.csum_start = 34;
    h.csum_offset = 6;
    assert_int_equal(fdrv_send(&s, f, n, &h), 0);
    got = recv1(&r, &h, &nb);
    assert_int_equal(got, (int)n);
    assert_int_equal(nb, 3);
    assert_int_equal(h.num_buffers, 3);
    assert_false(h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
    assert_true(udp_csum_valid(rxbuf, n));
    assert_memory_equal(rxbuf + 42, f + 42, n - 42);
    got = recv1(&g, &h, &nb);
    assert_int_equal(got, (int)n);
    assert_int_equal(nb, 1);
    if (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
        assert_int_equal(h.csum_start, 34);
        assert_int_equal(h.csum_offset, 6);
    } else {
        assert_true(h.flags & VIRTIO_NET_HDR_F_DATA_VALID);
        assert_true(udp_csum_valid(rxbuf, n));
    }
    expect_silence(&s);

    assert_int_equal(fdrv_inflight_check(&s, 1000), 0);
    assert_int_equal(fdrv_inflight_check(&r, 1000), 0);
    assert_int_equal(fdrv_inflight_check(&g, 1000), 0);
    fdrv_close(&s);
    fdrv_close(&r);
    fdrv_close(&g);
    env_stop(&e);
}

/* ---- TSO: GSO frames delivered whole or segmented ---- */

#define GSO_PAYLOAD 30000
#define GSO_MSS     1448

/* IPv4/TCP frame A -> X with TCP options (12 bytes), PSH|FIN set, payload byte i = i*13+1,
 * and the virtio-net header a TSO driver sends with it (checksum field: pseudo header). */
static uint32_t tcp_gso_frame(uint8_t *f, uint32_t payload, uint16_t mss,
                              struct virtio_net_hdr_v1 *h)
{
    uint8_t *iph = f + 14, *tcp = f + 34;
    uint32_t sum, tl = 32 + payload;
    memcpy(f, MAC_X, 6);
    memcpy(f + 6, MAC_A, 6);
    pkt_put_be16(f + 12, PKT_ETHERTYPE_IPV4);
    memset(iph, 0, 20);
    iph[0] = 0x45;
    pkt_put_be16(iph + 2, (uint16_t)(20 + tl));
    pkt_put_be16(iph + 4, 7);
    iph[8] = 64;
    iph[9] = PKT_IPPROTO_TCP;
    iph[12] = 10, iph[15] = 1;
    iph[16] = 10, iph[19] = 2;
    pkt_put_be16(iph + 10, pkt_csum(iph, 20));
    memset(tcp, 0, 32);
    pkt_put_be16(tcp, 40000);
    pkt_put_be16(tcp + 2, 5201);
    pkt_put_be32(tcp + 4, 1000);
    pkt_put_be32(tcp + 8, 1);
    tcp[12] = 8 << 4;
    tcp[13] = 0x10 | 0x08 | 0x01; /* ACK PSH FIN */
    pkt_put_be16(tcp + 14, 65535);
    tcp[20] = 1, tcp[21] = 1, tcp[22] = 8, tcp[23] = 10;
    for (uint32_t i = 0; i < payload; i++)
        tcp[32 + i] = (uint8_t)(i * 13 + 1);
    sum = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + PKT_IPPROTO_TCP + tl;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    pkt_put_be16(tcp + 16, (uint16_t)sum);
    memset(h, 0, sizeof(*h));
    h->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h->gso_type = GSO_TYPE_TCPV4;
    h->hdr_len = 66;
    h->gso_size = mss;
    h->csum_start = 34;
    h->csum_offset = 16;
    return 66 + payload;
}

static bool tcp4_csum_valid(const uint8_t *f, uint32_t len)
{
    static uint8_t buf[12 + 65536];
    uint32_t tl = len - 34;
    memcpy(buf, f + 14 + 12, 8);
    buf[8] = 0;
    buf[9] = PKT_IPPROTO_TCP;
    pkt_put_be16(buf + 10, (uint16_t)tl);
    memcpy(buf + 12, f + 34, tl);
    return pkt_csum(buf, 12 + tl) == 0;
}

/* The same over IPv6: 2001:db8::1 -> 2001:db8::2, hdr_len 86. */
static uint32_t tcp6_gso_frame(uint8_t *f, uint32_t payload, uint16_t mss,
                               struct virtio_net_hdr_v1 *h)
{
    uint8_t *ip = f + 14, *tcp = f + 54;
    uint32_t sum, tl = 32 + payload;
    memcpy(f, MAC_X, 6);
    memcpy(f + 6, MAC_A, 6);
    pkt_put_be16(f + 12, PKT_ETHERTYPE_IPV6);
    memset(ip, 0, 40);
    ip[0] = 0x60;
    pkt_put_be16(ip + 4, (uint16_t)tl);
    ip[6] = PKT_IPPROTO_TCP;
    ip[7] = 64;
    ip[8] = 0x20, ip[9] = 0x01, ip[10] = 0x0d, ip[11] = 0xb8, ip[23] = 1;
    memcpy(ip + 24, ip + 8, 16);
    ip[39] = 2;
    memset(tcp, 0, 32);
    pkt_put_be16(tcp, 40000);
    pkt_put_be16(tcp + 2, 5201);
    pkt_put_be32(tcp + 4, 1000);
    tcp[12] = 8 << 4;
    tcp[13] = 0x10 | 0x08;
    tcp[20] = 1, tcp[21] = 1, tcp[22] = 8, tcp[23] = 10;
    for (uint32_t i = 0; i < payload; i++)
        tcp[32 + i] = (uint8_t)(i * 13 + 1);
    sum = 2 * (0x2001 + 0x0db8) + 1 + 2 + PKT_IPPROTO_TCP + tl;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    pkt_put_be16(tcp + 16, (uint16_t)sum);
    memset(h, 0, sizeof(*h));
    h->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h->gso_type = GSO_TYPE_TCPV6;
    h->hdr_len = 86;
    h->gso_size = mss;
    h->csum_start = 54;
    h->csum_offset = 16;
    return 86 + payload;
}

static bool tcp6_csum_valid(const uint8_t *f, uint32_t len)
{
    static uint8_t buf[40 + 65536];
    uint32_t tl = len - 54;
    memcpy(buf, f + 14 + 8, 32);
    pkt_put_be32(buf + 32, tl);
    buf[36] = buf[37] = buf[38] = 0;
    buf[39] = PKT_IPPROTO_TCP;
    memcpy(buf + 40, f + 54, tl);
    return pkt_csum(buf, 40 + tl) == 0;
}

static int64_t port_gso(struct env *e, const char *name, const char *key)
{
    struct port *p;
    json_object *o, *g, *v;
    int64_t r = -1;
    pthread_mutex_lock(&e->card.lock);
    p = card_port_find(&e->card, name);
    o = p ? card_port_json(&e->card, p, true) : NULL;
    pthread_mutex_unlock(&e->card.lock);
    if (o && json_object_object_get_ex(o, "gso", &g) && json_object_object_get_ex(g, key, &v))
        r = json_object_get_int64(v);
    json_object_put(o);
    return r;
}

/* Receive n segments of the frame f (payload GSO_PAYLOAD) on d and check each: parses,
 * IPv4 header and TCP checksums (completing a partial one as the guest would), sequence
 * numbers, FIN/PSH on the last only, and the payload reassembled. */
static void expect_segments(struct fdrv *d, const uint8_t *f, unsigned n, bool partial)
{
    static uint8_t joined[GSO_PAYLOAD];
    uint32_t off = 0;
    for (unsigned i = 0; i < n; i++) {
        struct virtio_net_hdr_v1 h;
        struct pkt_meta m;
        uint32_t plen;
        int got = recv1(d, &h, NULL);
        assert_true(got > 66);
        plen = (uint32_t)got - 66;
        assert_int_equal(plen, i + 1 < n ? GSO_MSS : GSO_PAYLOAD - (n - 1) * GSO_MSS);
        assert_int_equal(h.gso_type, GSO_TYPE_NONE);
        assert_int_equal(pkt_parse(rxbuf, (size_t)got, &m), 0);
        assert_int_equal(m.l4_proto, PKT_IPPROTO_TCP);
        assert_int_equal(pkt_get_be16(rxbuf + 16), (uint32_t)got - 14);
        assert_int_equal(pkt_get_be16(rxbuf + 18), 7 + i); /* IPv4 identification */
        assert_int_equal(pkt_csum(rxbuf + 14, 20), 0);
        assert_int_equal(pkt_get_be32(rxbuf + 38), 1000 + off);
        assert_int_equal(rxbuf[47] & 0x09, i + 1 < n ? 0 : 0x09);
        if (partial) {
            assert_true(h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
            assert_int_equal(h.csum_start, 34);
            assert_int_equal(h.csum_offset, 16);
            pkt_put_be16(rxbuf + 50, pkt_csum(rxbuf + 34, (uint32_t)got - 34));
        } else {
            assert_false(h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
        }
        assert_true(tcp4_csum_valid(rxbuf, (uint32_t)got));
        assert_memory_equal(rxbuf, f, 14);
        memcpy(joined + off, rxbuf + 66, plen);
        off += plen;
    }
    assert_int_equal(off, GSO_PAYLOAD);
    assert_memory_equal(joined, f + 66, GSO_PAYLOAD);
}

static void test_tso(void **state)
{
    static uint8_t f[66 + GSO_PAYLOAD], big[70000];
    const unsigned nseg = (GSO_PAYLOAD + GSO_MSS - 1) / GSO_MSS;
    struct env e;
    struct fdrv s, t, c, g;
    struct virtio_net_hdr_v1 h, rh;
    unsigned nb = 0;
    uint32_t n;
    int got;
    (void)state;

    env_start(&e);
    assert_int_equal(jcall(&e.card, card_switch_add, "{\"name\":\"br5\"}"), 0);
    add_port(&e, "{\"name\":\"s\",\"switch\":\"br5\"}");
    add_port(&e, "{\"name\":\"t\",\"switch\":\"br5\"}");
    add_port(&e, "{\"name\":\"c\",\"switch\":\"br5\"}");
    add_port(&e, "{\"name\":\"g\",\"switch\":\"br5\"}");
    /* s sends TSO; t takes TSO (mergeable 4 KiB buffers); c takes neither checksum nor
     * TSO offload; g takes checksum offload only. */
    connect_port(&e, &s, "s", FDRV_F_CSUM | FDRV_F_HOST_TSO | FDRV_F_MRG, 2048);
    connect_port(&e, &t, "t", FDRV_F_CSUM | FDRV_F_GUEST_TSO | FDRV_F_MRG, 4096);
    connect_port(&e, &c, "c", FDRV_F_MRG, 2048);
    connect_port(&e, &g, "g", FDRV_F_CSUM | FDRV_F_MRG, 2048);

    /* A 30 KB GSO frame to an unknown MAC is flooded to all three. */
    n = tcp_gso_frame(f, GSO_PAYLOAD, GSO_MSS, &h);
    assert_int_equal(fdrv_send(&s, f, n, &h), 0);
    got = fdrv_recv(&t, big, sizeof(big), &rh, &nb, 2000);
    assert_int_equal(got, (int)n);
    assert_int_equal(nb, (12 + n + 4095) / 4096);
    assert_int_equal(rh.gso_type, GSO_TYPE_TCPV4);
    assert_int_equal(rh.gso_size, GSO_MSS);
    assert_int_equal(rh.hdr_len, 66);
    assert_true(rh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
    assert_int_equal(rh.csum_start, 34);
    assert_int_equal(rh.csum_offset, 16);
    assert_memory_equal(big, f, n);
    expect_silence(&t);
    expect_segments(&c, f, nseg, false);
    expect_silence(&c);
    expect_segments(&g, f, nseg, true);
    expect_silence(&g);
    assert_int_equal(port_gso(&e, "s", "received"), 1);
    assert_int_equal(port_gso(&e, "t", "delivered_whole"), 1);
    assert_int_equal(port_gso(&e, "c", "segmented"), 1);
    assert_int_equal(port_gso(&e, "c", "segments"), nseg);
    assert_int_equal(port_gso(&e, "g", "segments"), nseg);
    assert_int_equal(port_gso(&e, "t", "segments"), 0);

    /* A small GSO frame (fits an ordinary packet buffer) takes the same way. */
    for (unsigned i = 0; i < 200 && fdrv_tx_reclaim(&s) == 0; i++)
        usleep(1000);
    n = tcp_gso_frame(f, 3000, 1000, &h);
    assert_int_equal(fdrv_send(&s, f, n, &h), 0);
    got = fdrv_recv(&t, big, sizeof(big), &rh, &nb, 2000);
    assert_int_equal(got, (int)n);
    assert_int_equal(rh.gso_size, 1000);
    for (unsigned i = 0; i < 3; i++) {
        got = recv1(&c, &rh, NULL);
        assert_int_equal(got, 66 + 1000);
        assert_true(tcp4_csum_valid(rxbuf, (uint32_t)got));
    }
    expect_silence(&c);
    for (unsigned i = 0; i < 3; i++)
        assert_int_equal(recv1(&g, NULL, NULL), 66 + 1000);
    expect_silence(&g);
    assert_int_equal(port_gso(&e, "s", "received"), 2);

    /* IPv6 (HOST_TSO6 / GUEST_TSO6): whole to t, segments with complete checksums to c. */
    for (unsigned i = 0; i < 200 && fdrv_tx_reclaim(&s) == 0; i++)
        usleep(1000);
    n = tcp6_gso_frame(f, 20000, 1400, &h);
    assert_int_equal(fdrv_send(&s, f, n, &h), 0);
    got = fdrv_recv(&t, big, sizeof(big), &rh, &nb, 2000);
    assert_int_equal(got, (int)n);
    assert_int_equal(rh.gso_type, GSO_TYPE_TCPV6);
    assert_int_equal(rh.hdr_len, 86);
    assert_int_equal(rh.csum_start, 54);
    assert_memory_equal(big, f, n);
    for (unsigned i = 0, off = 0; i < 15; i++) { /* 14 x 1400 + 400 */
        struct pkt_meta m;
        got = recv1(&c, &rh, NULL);
        assert_int_equal(got, 86 + (i < 14 ? 1400 : 400));
        assert_int_equal(pkt_parse(rxbuf, (size_t)got, &m), 0);
        assert_int_equal(m.l3, PKT_L3_IPV6);
        assert_int_equal(pkt_get_be16(rxbuf + 18), (uint32_t)got - 54);
        assert_int_equal(pkt_get_be32(rxbuf + 58), 1000 + off);
        assert_true(tcp6_csum_valid(rxbuf, (uint32_t)got));
        assert_memory_equal(rxbuf + 86, f + 86 + off, (uint32_t)got - 86);
        off += (uint32_t)got - 86;
    }
    expect_silence(&c);
    for (unsigned i = 0; i < 15; i++)
        assert_true(recv1(&g, NULL, NULL) > 86);
    expect_silence(&g);
    assert_int_equal(port_gso(&e, "s", "received"), 3);

    /* Malformed GSO frames are dropped and counted, nothing is delivered: gso_size 0,
     * csum_offset not the TCP checksum, no NEEDS_CSUM, and a GSO frame from a port that
     * did not negotiate TSO. */
    {
        uint64_t before = port_drop(&e, "s", DROP_GSO);
        struct virtio_net_hdr_v1 bad[3];
        n = tcp_gso_frame(f, GSO_PAYLOAD, GSO_MSS, &h);
        for (unsigned i = 0; i < 3; i++)
            bad[i] = h;
        bad[0].gso_size = 0;
        bad[1].csum_offset = 6;
        bad[2].flags = 0;
        for (unsigned i = 0; i < 3; i++) {
            for (unsigned k = 0; k < 200 && fdrv_tx_reclaim(&s) == 0; k++)
                usleep(1000);
            assert_int_equal(fdrv_send(&s, f, n, &bad[i]), 0);
            for (unsigned k = 0; k < 2000 && port_drop(&e, "s", DROP_GSO) != before + i + 1; k++)
                usleep(1000);
            assert_int_equal(port_drop(&e, "s", DROP_GSO), before + i + 1);
        }
        n = tcp_gso_frame(f, 3000, 1000, &h);
        assert_int_equal(fdrv_send(&c, f, n, &h), 0);
        for (unsigned k = 0; k < 2000 && port_drop(&e, "c", DROP_GSO) != 1; k++)
            usleep(1000);
        assert_int_equal(port_drop(&e, "c", DROP_GSO), 1);
        expect_silence(&t);
        expect_silence(&g);
        assert_int_equal(port_gso(&e, "s", "received"), 3);
    }

    assert_int_equal(fdrv_inflight_check(&s, 1000), 0);
    assert_int_equal(fdrv_inflight_check(&t, 1000), 0);
    assert_int_equal(fdrv_inflight_check(&c, 1000), 0);
    assert_int_equal(fdrv_inflight_check(&g, 1000), 0);
    fdrv_close(&s);
    fdrv_close(&t);
    fdrv_close(&c);
    fdrv_close(&g);
    env_stop(&e);
}

/*
 * USO (UDP_L4 GSO): a 10,000-byte UDP payload with gso_size 1400 from s reaches u (GUEST_USO)
 * whole, and everyone else as 8 datagrams of their own: c (no offloads) with complete
 * checksums, t (checksum and TSO offload, no USO) with partial ones. A port that did not
 * negotiate HOST_USO has its UDP GSO frame dropped and counted.
 */
static void test_uso(void **state)
{
    static uint8_t f[34 + 8 + 10000], big[70000], joined[10000];
    const uint8_t ip[4] = {10, 0, 0, 1};
    struct env e;
    struct fdrv s, u, c, t;
    struct virtio_net_hdr_v1 h, rh;
    unsigned nb = 0;
    uint32_t n;
    int got;
    (void)state;

    env_start(&e);
    assert_int_equal(jcall(&e.card, card_switch_add, "{\"name\":\"br7\"}"), 0);
    add_port(&e, "{\"name\":\"s\",\"switch\":\"br7\"}");
    add_port(&e, "{\"name\":\"u\",\"switch\":\"br7\"}");
    add_port(&e, "{\"name\":\"c\",\"switch\":\"br7\"}");
    add_port(&e, "{\"name\":\"t\",\"switch\":\"br7\"}");
    connect_port(&e, &s, "s", FDRV_F_CSUM | FDRV_F_HOST_USO | FDRV_F_MRG, 2048);
    connect_port(&e, &u, "u", FDRV_F_CSUM | FDRV_F_GUEST_USO | FDRV_F_MRG, 4096);
    connect_port(&e, &c, "c", FDRV_F_MRG, 2048);
    connect_port(&e, &t, "t", FDRV_F_CSUM | FDRV_F_GUEST_TSO | FDRV_F_MRG, 2048);
    assert_true(s.features & FDRV_F_HOST_USO);
    assert_true((u.features & FDRV_F_GUEST_USO) == FDRV_F_GUEST_USO);

    n = udp_frame(f, MAC_X, MAC_A, ip, 10000);
    memset(&h, 0, sizeof(h));
    h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h.gso_type = GSO_TYPE_UDP_L4;
    h.hdr_len = 42;
    h.gso_size = 1400;
    h.csum_start = 34;
    h.csum_offset = 6;
    assert_int_equal(fdrv_send(&s, f, n, &h), 0);
    got = fdrv_recv(&u, big, sizeof(big), &rh, &nb, 2000);
    assert_int_equal(got, (int)n);
    assert_int_equal(rh.gso_type, GSO_TYPE_UDP_L4);
    assert_int_equal(rh.gso_size, 1400);
    assert_int_equal(rh.hdr_len, 42);
    assert_true(rh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
    assert_int_equal(rh.csum_start, 34);
    assert_int_equal(rh.csum_offset, 6);
    assert_memory_equal(big, f, n);
    expect_silence(&u);
    for (int k = 0; k < 2; k++) {
        struct fdrv *d = k ? &t : &c;
        uint32_t off = 0;
        for (unsigned i = 0; i < 8; i++) {
            struct pkt_meta m;
            got = recv1(d, &rh, NULL);
            assert_int_equal(got, 42 + (i < 7 ? 1400 : 200));
            assert_int_equal(rh.gso_type, GSO_TYPE_NONE);
            assert_int_equal(pkt_parse(rxbuf, (size_t)got, &m), 0);
            assert_int_equal(m.l4_proto, PKT_IPPROTO_UDP);
            assert_int_equal(pkt_get_be16(rxbuf + 16), (uint32_t)got - 14); /* IP length */
            assert_int_equal(pkt_get_be16(rxbuf + 18), i);                  /* IP id */
            assert_int_equal(pkt_csum(rxbuf + 14, 20), 0);
            assert_int_equal(pkt_get_be16(rxbuf + 38), (uint32_t)got - 34); /* UDP length */
            if (k) { /* partial: complete it as the guest would */
                assert_true(rh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
                assert_int_equal(rh.csum_start, 34);
                assert_int_equal(rh.csum_offset, 6);
                pkt_put_be16(rxbuf + 40, pkt_csum(rxbuf + 34, (uint32_t)got - 34));
            } else {
                assert_false(rh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
            }
            assert_true(udp_csum_valid(rxbuf, (uint32_t)got));
            memcpy(joined + off, rxbuf + 42, (uint32_t)got - 42);
            off += (uint32_t)got - 42;
        }
        assert_int_equal(off, 10000);
        assert_memory_equal(joined, f + 42, 10000);
        expect_silence(d);
    }
    assert_int_equal(port_gso(&e, "u", "delivered_whole"), 1);
    assert_int_equal(port_gso(&e, "c", "segments"), 8);
    assert_int_equal(port_gso(&e, "t", "segments"), 8);

    /* t negotiated TSO but not USO: its UDP GSO frame is refused. */
    n = udp_frame(f, MAC_X, MAC_A, ip, 3000);
    h.gso_size = 1000;
    assert_int_equal(fdrv_send(&t, f, n, &h), 0);
    for (unsigned k = 0; k < 2000 && port_drop(&e, "t", DROP_GSO) != 1; k++)
        usleep(1000);
    assert_int_equal(port_drop(&e, "t", DROP_GSO), 1);
    expect_silence(&u);
    expect_silence(&c);

    fdrv_close(&s);
    fdrv_close(&u);
    fdrv_close(&c);
    fdrv_close(&t);
    env_stop(&e);
}

/* VLAN tags added and removed on the way: a GSO frame's hdr_len and csum_start move
 * with the tag, segments carry it. */
static void test_tso_vlan(void **state)
{
    static uint8_t f[66 + GSO_PAYLOAD], tf[70 + GSO_PAYLOAD], big[70000], seg[2048];
    const unsigned nseg = (GSO_PAYLOAD + GSO_MSS - 1) / GSO_MSS;
    struct env e;
    struct fdrv a, k, n;
    struct virtio_net_hdr_v1 h, rh;
    uint32_t len, off = 0;
    int got;
    (void)state;

    env_start(&e);
    assert_int_equal(jcall(&e.card, card_switch_add, "{\"name\":\"br6\"}"), 0);
    add_port(&e, "{\"name\":\"a\",\"switch\":\"br6\",\"vlan\":{\"mode\":\"access\",\"tag\":10}}");
    add_port(&e, "{\"name\":\"k\",\"switch\":\"br6\",\"vlan\":{\"mode\":\"trunk\",\"allowed\":"
                 "\"10\"}}");
    add_port(&e, "{\"name\":\"n\",\"switch\":\"br6\",\"vlan\":{\"mode\":\"trunk\",\"allowed\":"
                 "\"10\"}}");
    connect_port(&e, &a, "a", FDRV_F_CSUM | FDRV_F_HOST_TSO | FDRV_F_GUEST_TSO | FDRV_F_MRG, 4096);
    connect_port(&e, &k, "k", FDRV_F_CSUM | FDRV_F_HOST_TSO | FDRV_F_GUEST_TSO | FDRV_F_MRG, 4096);
    connect_port(&e, &n, "n", FDRV_F_MRG, 2048);

    /* Access -> trunk: the tag is added, hdr_len and csum_start grow by 4. */
    len = tcp_gso_frame(f, GSO_PAYLOAD, GSO_MSS, &h);
    assert_int_equal(fdrv_send(&a, f, len, &h), 0);
    got = fdrv_recv(&k, big, sizeof(big), &rh, NULL, 2000);
    assert_int_equal(got, (int)len + 4);
    assert_int_equal(pkt_get_be16(big + 12), PKT_ETHERTYPE_VLAN);
    assert_int_equal(pkt_get_be16(big + 14) & 0xfff, 10);
    assert_memory_equal(big + 16, f + 12, len - 12);
    assert_int_equal(rh.gso_type, GSO_TYPE_TCPV4);
    assert_int_equal(rh.hdr_len, 70);
    assert_int_equal(rh.csum_start, 38);
    assert_int_equal(rh.gso_size, GSO_MSS);
    /* The trunk without offloads gets tagged segments with complete checksums. */
    for (unsigned i = 0; i < nseg; i++) {
        struct pkt_meta m;
        got = recv1(&n, &rh, NULL);
        assert_true(got > 70);
        assert_int_equal(pkt_parse(rxbuf, (size_t)got, &m), 0);
        assert_int_equal(m.n_vlans, 1);
        assert_int_equal(m.vlan_tci[0] & 0xfff, 10);
        assert_int_equal(m.l4_proto, PKT_IPPROTO_TCP);
        memcpy(seg, rxbuf, 12); /* untagged copy for the checksum check */
        memcpy(seg + 12, rxbuf + 16, (uint32_t)got - 16);
        assert_true(tcp4_csum_valid(seg, (uint32_t)got - 4));
        assert_int_equal(pkt_get_be32(seg + 38), 1000 + off);
        assert_memory_equal(seg + 66, f + 66 + off, (uint32_t)got - 70);
        off += (uint32_t)got - 70;
    }
    assert_int_equal(off, GSO_PAYLOAD);
    expect_silence(&n);

    /* Trunk -> access: the tag is removed, hdr_len and csum_start shrink by 4. */
    memcpy(tf, f, 12);
    memcpy(tf + 6, MAC_B, 6);
    pkt_put_be16(tf + 12, PKT_ETHERTYPE_VLAN);
    pkt_put_be16(tf + 14, 10);
    memcpy(tf + 16, f + 12, len - 12);
    h.hdr_len = 70;
    h.csum_start = 38;
    assert_int_equal(fdrv_send(&k, tf, len + 4, &h), 0);
    got = fdrv_recv(&a, big, sizeof(big), &rh, NULL, 2000);
    assert_int_equal(got, (int)len);
    assert_int_equal(pkt_get_be16(big + 12), PKT_ETHERTYPE_IPV4);
    assert_memory_equal(big + 14, f + 14, len - 14);
    assert_int_equal(rh.gso_type, GSO_TYPE_TCPV4);
    assert_int_equal(rh.hdr_len, 66);
    assert_int_equal(rh.csum_start, 34);
    for (unsigned i = 0; i < nseg; i++) /* the other trunk still gets segments */
        assert_true(recv1(&n, NULL, NULL) > 70);
    expect_silence(&n);

    fdrv_close(&a);
    fdrv_close(&k);
    fdrv_close(&n);
    env_stop(&e);
}

/* Read one counter of the Tcp: lines of /proc/net/snmp inside namespace ns; -1 on error. */
static long long ns_tcp_counter(const char *ns, const char *name)
{
    char cmd[256], line[512], key[64];
    long long v = -1, x;
    FILE *pf;
    snprintf(cmd, sizeof(cmd),
             "ip netns exec %s awk '/^Tcp:/ {if (!h) {split($0, k); h = 1} else "
             "{for (i = 2; i <= NF; i++) print k[i], $i}}' /proc/net/snmp",
             ns);
    pf = popen(cmd, "r");
    if (!pf)
        return -1;
    while (fgets(line, sizeof(line), pf))
        if (sscanf(line, "%63s %lld", key, &x) == 2 && !strcmp(key, name))
            v = x;
    pclose(pf);
    return v;
}

/* Read the MAC of interface ifn (in this namespace) into mac. */
static void if_mac(const char *ifn, uint8_t *mac)
{
    char path[64];
    FILE *mf;
    snprintf(path, sizeof(path), "/sys/class/net/%s/address", ifn);
    mf = fopen(path, "r");
    assert_non_null(mf);
    assert_int_equal(fscanf(mf, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3],
                            &mac[4], &mac[5]),
                     6);
    fclose(mf);
}

/* Move tap ifn into a new namespace ns with address ip/24 and bring it up. */
static void tap_into_ns(const char *ns, const char *ifn, const char *ip)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "ip netns add %s && ip link set %s netns %s && ip -n %s addr add %s/24 dev %s && "
             "ip -n %s link set %s up && ip -n %s link set lo up",
             ns, ifn, ns, ns, ip, ifn, ns, ifn, ns);
    assert_int_equal(system(cmd), 0);
}

/* In ns, the fake driver's address 10.0.0.1 is MAC_A (02:00:00:00:00:0a), on ifn. */
static void ns_neigh_driver(const char *ns, const char *ifn)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ip -n %s neigh replace 10.0.0.1 lladdr 02:00:00:00:00:0a dev %s",
             ns, ifn);
    assert_int_equal(system(cmd), 0);
}

/* Write text to a new temporary file made from tmpl (mkstemp). */
static void write_temp(char *tmpl, const char *text)
{
    int fd = mkstemp(tmpl);
    FILE *fp;
    assert_true(fd >= 0);
    fp = fdopen(fd, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* Receive on d until want TCP resets with valid checksums (IPv4, from the kernel behind
 * a tap port) have come, or nothing more does; returns how many came. */
static unsigned recv_tcp4_resets(struct fdrv *d, unsigned have, unsigned want)
{
    for (int got; have < want && (got = recv1(d, NULL, NULL)) > 0;)
        if (got >= 54 && pkt_get_be16(rxbuf + 12) == PKT_ETHERTYPE_IPV4 &&
            rxbuf[23] == PKT_IPPROTO_TCP && (rxbuf[47] & 0x04) &&
            14u + pkt_get_be16(rxbuf + 16) <= (unsigned)got &&
            tcp4_csum_valid(rxbuf, 14u + pkt_get_be16(rxbuf + 16)))
            have++;
    return have;
}

/* The Linux kernel as the peer: segments written to a tap port in a network namespace
 * are checked by the kernel's TCP (no socket listens, so each valid segment is answered
 * with a reset; a bad checksum would count InCsumErrors). Needs root and iproute2. */
static void test_tso_kernel(void **state)
{
    static uint8_t f[66 + 4 + GSO_PAYLOAD]; /* room for 4 bytes of IPv4 options */
    const unsigned nseg = (GSO_PAYLOAD + GSO_MSS - 1) / GSO_MSS;
    char ns[32], ifn[16], cmd[512];
    long long in0, csum0, rst0, in1, csum1, rst1;
    struct virtio_net_hdr_v1 h;
    unsigned rsts = 0;
    struct env e;
    struct fdrv s;
    uint8_t mac[6];
    uint32_t n;
    (void)state;

    if (geteuid() != 0 || system("ip netns list >/dev/null 2>&1") != 0)
        skip();
    snprintf(ns, sizeof(ns), "qtgso%d", (int)getpid());
    snprintf(ifn, sizeof(ifn), "qtgso%d", (int)(getpid() % 100000));
    env_start(&e);
    assert_int_equal(jcall(&e.card, card_switch_add, "{\"name\":\"br7\"}"), 0);
    add_port(&e, "{\"name\":\"s\",\"switch\":\"br7\"}");
    add_port(&e, "{\"name\":\"tp\",\"switch\":\"br7\",\"type\":\"tap\",\"ifname\":\"%s\"}", ifn);
    connect_port(&e, &s, "s", FDRV_F_CSUM | FDRV_F_HOST_TSO | FDRV_F_MRG, 2048);
    if_mac(ifn, mac);
    tap_into_ns(ns, ifn, "10.0.0.2");
    ns_neigh_driver(ns, ifn);
    in0 = ns_tcp_counter(ns, "InSegs");
    csum0 = ns_tcp_counter(ns, "InCsumErrors");
    rst0 = ns_tcp_counter(ns, "OutRsts");
    assert_true(in0 >= 0 && csum0 >= 0 && rst0 >= 0);

    /* Twice: a plain frame, then one with 4 bytes of IPv4 options (NOP, NOP, NOP, end),
     * which every segment repeats. */
    for (int opts = 0; opts <= 4; opts += 4) {
        n = tcp_gso_frame(f, GSO_PAYLOAD, GSO_MSS, &h);
        memcpy(f, mac, 6);
        if (opts) {
            memmove(f + 34 + opts, f + 34, n - 34);
            memcpy(f + 34, "\x01\x01\x01\x00", 4);
            f[14] = 0x46;
            pkt_put_be16(f + 16, (uint16_t)(pkt_get_be16(f + 16) + opts));
            n += (uint32_t)opts;
            h.hdr_len = (uint16_t)(h.hdr_len + opts);
            h.csum_start = (uint16_t)(h.csum_start + opts);
        }
        assert_int_equal(fdrv_send(&s, f, n, &h), 0);
        /* The resets come back through the tap port. */
        rsts = recv_tcp4_resets(&s, rsts, nseg * (opts ? 2u : 1u));
    }
    in1 = ns_tcp_counter(ns, "InSegs");
    csum1 = ns_tcp_counter(ns, "InCsumErrors");
    rst1 = ns_tcp_counter(ns, "OutRsts");
    snprintf(cmd, sizeof(cmd), "ip netns del %s", ns);
    fdrv_close(&s);
    env_stop(&e);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(in1 - in0, 2 * nseg);
    assert_int_equal(csum1 - csum0, 0);
    assert_int_equal(rst1 - rst0, 2 * nseg);
    assert_int_equal(rsts, 2 * nseg);
}

/* A TCP transfer between namespaces: the receiver listens in ns_r on ip:port and prints
 * the byte count and SHA-256 of what it got; the sender in ns_s sends 8 MiB of a
 * pattern. Returns whether the receiver got exactly what was sent. */
static bool ns_tcp_transfer(const char *ns_s, const char *ns_r, const char *ip, int port)
{
    static const char recv_py[] =
        "import hashlib, socket, sys\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(30)\n"
        "print('ready', flush=True)\n"
        "c, _ = s.accept(); c.settimeout(30); h = hashlib.sha256(); n = 0\n"
        "while True:\n"
        "    b = c.recv(1 << 16)\n"
        "    if not b: break\n"
        "    h.update(b); n += len(b)\n"
        "print(n, h.hexdigest(), flush=True)\n";
    static const char send_py[] =
        "import hashlib, socket, sys\n"
        "d = bytes((i * 7 + 3) & 255 for i in range(1 << 16)) * 128\n"
        "c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)\n"
        "c.sendall(d); c.close()\n"
        "print(len(d), hashlib.sha256(d).hexdigest(), flush=True)\n";
    char rpath[] = "/tmp/qt-recv-XXXXXX", spath[] = "/tmp/qt-send-XXXXXX", cmd[512];
    char rline[160] = "", sline[160] = "", ready[16] = "";
    FILE *rf, *sf;

    write_temp(rpath, recv_py);
    write_temp(spath, send_py);
    snprintf(cmd, sizeof(cmd), "ip netns exec %s python3 %s %s %d", ns_r, rpath, ip, port);
    rf = popen(cmd, "r");
    assert_non_null(rf);
    assert_non_null(fgets(ready, sizeof(ready), rf)); /* listening */
    snprintf(cmd, sizeof(cmd), "ip netns exec %s python3 %s %s %d", ns_s, spath, ip, port);
    sf = popen(cmd, "r");
    assert_non_null(sf);
    if (!fgets(sline, sizeof(sline), sf))
        sline[0] = 0;
    pclose(sf);
    if (!fgets(rline, sizeof(rline), rf))
        rline[0] = 0;
    pclose(rf);
    unlink(rpath);
    unlink(spath);
    print_message("tap offload: sent %s        received %s", sline, rline);
    return sline[0] && !strcmp(sline, rline);
}

/*
 * Tap ports with offload on (a virtio-net header on the tap): TCP frames of up to 64 KiB
 * go between VMs and the host kernel whole, with their checksum left partial.
 *  - A VM's TSO frame to a tap reaches the kernel's TCP as one segment: one InSegs, one
 *    reset back (a tap without offload gives one per MSS, test_tso_kernel).
 *  - Between two namespaces, each behind a tap of the same switch: the sending kernel
 *    hands qtcard TSO frames (received), which go to the other tap whole
 *    (delivered_whole, nothing segmented), and 8 MiB arrive intact.
 *  - 'offload' is refused on other port types and when not a boolean; GET shows it.
 * Needs root, iproute2 and python3.
 */
static void test_tap_offload(void **state)
{
    static uint8_t f[66 + GSO_PAYLOAD];
    char ns[32], ns2[32], ifn[16], ifn2[16], cmd[512], err[256];
    long long in0, csum0, rst0, in1, csum1, rst1;
    int64_t whole1, seg1, sent1, rx2, whole2, seg2;
    struct virtio_net_hdr_v1 h;
    unsigned rsts = 0;
    struct env e;
    struct fdrv s;
    uint8_t mac[6];
    json_object *j, *o, *v;
    struct port *p;
    uint32_t n;
    bool ok;
    (void)state;

    if (geteuid() != 0 || system("ip netns list >/dev/null 2>&1") != 0 ||
        system("python3 -c 1 >/dev/null 2>&1") != 0)
        skip();
    snprintf(ns, sizeof(ns), "qtoffa%d", (int)getpid());
    snprintf(ns2, sizeof(ns2), "qtoffb%d", (int)getpid());
    snprintf(ifn, sizeof(ifn), "qtoffa%d", (int)(getpid() % 100000));
    snprintf(ifn2, sizeof(ifn2), "qtoffb%d", (int)(getpid() % 100000));
    env_start(&e);
    assert_int_equal(jcall(&e.card, card_switch_add, "{\"name\":\"br8\"}"), 0);

    /* Refusals, each with the port named. */
    j = json_tokener_parse("{\"name\":\"v\",\"switch\":\"br8\",\"offload\":true}");
    assert_int_equal(card_port_add(&e.card, j, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "'offload' is for tap ports"));
    json_object_put(j);
    snprintf(cmd, sizeof(cmd),
             "{\"name\":\"t\",\"switch\":\"br8\",\"type\":\"tap\",\"ifname\":\"%s\","
             "\"offload\":\"yes\"}",
             ifn);
    j = json_tokener_parse(cmd);
    assert_int_equal(card_port_add(&e.card, j, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "'offload' must be true or false"));
    json_object_put(j);

    add_port(&e, "{\"name\":\"s\",\"switch\":\"br8\"}");
    add_port(
        &e,
        "{\"name\":\"ta\",\"switch\":\"br8\",\"type\":\"tap\",\"ifname\":\"%s\",\"offload\":true}",
        ifn);
    add_port(
        &e,
        "{\"name\":\"tb\",\"switch\":\"br8\",\"type\":\"tap\",\"ifname\":\"%s\",\"offload\":true}",
        ifn2);
    pthread_mutex_lock(&e.card.lock);
    p = card_port_find(&e.card, "ta");
    o = p ? card_port_json(&e.card, p, false) : NULL;
    pthread_mutex_unlock(&e.card.lock);
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "offload", &v) && json_object_get_boolean(v));
    json_object_put(o);

    connect_port(&e, &s, "s", FDRV_F_CSUM | FDRV_F_HOST_TSO | FDRV_F_MRG, 2048);
    if_mac(ifn, mac);
    tap_into_ns(ns, ifn, "10.0.0.2");
    tap_into_ns(ns2, ifn2, "10.0.0.3");
    ns_neigh_driver(ns, ifn);
    in0 = ns_tcp_counter(ns, "InSegs");
    csum0 = ns_tcp_counter(ns, "InCsumErrors");
    rst0 = ns_tcp_counter(ns, "OutRsts");
    assert_true(in0 >= 0 && csum0 >= 0 && rst0 >= 0);

    /* 1. A VM's TSO frame to the host, whole. */
    n = tcp_gso_frame(f, GSO_PAYLOAD, GSO_MSS, &h);
    memcpy(f, mac, 6);
    assert_int_equal(fdrv_send(&s, f, n, &h), 0);
    rsts = recv_tcp4_resets(&s, 0, 1);
    in1 = ns_tcp_counter(ns, "InSegs");
    csum1 = ns_tcp_counter(ns, "InCsumErrors");
    rst1 = ns_tcp_counter(ns, "OutRsts");
    whole1 = port_gso(&e, "ta", "delivered_whole");
    seg1 = port_gso(&e, "ta", "segmented");
    sent1 = port_gso(&e, "s", "received");

    /* 2. Kernel to kernel through two taps: TSO frames in, whole out. */
    ok = ns_tcp_transfer(ns, ns2, "10.0.0.3", 5201);
    rx2 = port_gso(&e, "ta", "received");
    whole2 = port_gso(&e, "tb", "delivered_whole");
    seg2 = port_gso(&e, "tb", "segmented") + port_gso(&e, "ta", "segmented");
    print_message("tap offload: ta received %lld GSO frames, tb took %lld whole, %lld segmented\n",
                  (long long)rx2, (long long)whole2, (long long)seg2);

    /* Cleaned up before the checks, so that a failure leaves no namespace behind. */
    snprintf(cmd, sizeof(cmd), "ip netns del %s; ip netns del %s", ns, ns2);
    fdrv_close(&s);
    env_stop(&e);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(rsts, 1);
    assert_int_equal(in1 - in0, 1);
    assert_int_equal(csum1 - csum0, 0);
    assert_int_equal(rst1 - rst0, 1);
    assert_int_equal(whole1, 1);
    assert_int_equal(seg1, 0);
    assert_int_equal(sent1, 1);
    assert_true(ok);
    assert_true(rx2 > 0);
    assert_true(whole2 > 0);
    assert_int_equal(seg2, 0);
}

static void test_api_and_state(void **state)
{
    struct env e, e2;
    json_object *cfg;
    long status = 0;
    char *body = NULL;
    char url_err[64];
    (void)state;

    env_start(&e);
    assert_int_equal(card_api_start(&e.card, &e.httpd), 0);
    /* Errors name the object and the reason, with the right status. */
    assert_int_equal(
        httpc_unix(e.api, "POST", "/api/v1/switches", "{\"name\":\"sw\"}", &status, &body), 0);
    assert_int_equal(status, 201);
    free(body);
    assert_int_equal(
        httpc_unix(e.api, "POST", "/api/v1/switches", "{\"name\":\"sw\"}", &status, &body), 0);
    assert_int_equal(status, 409);
    assert_non_null(strstr(body, "already exists"));
    free(body);
    assert_int_equal(httpc_unix(e.api, "POST", "/api/v1/ports",
                                "{\"name\":\"p1\",\"switch\":\"nope\"}", &status, &body),
                     0);
    assert_int_equal(status, 404);
    free(body);
    assert_int_equal(httpc_unix(e.api, "POST", "/api/v1/ports",
                                "{\"name\":\"p1\",\"switch\":\"sw\",\"bogus\":1}", &status, &body),
                     0);
    assert_int_equal(status, 400);
    assert_non_null(strstr(body, "bogus"));
    free(body);
    assert_int_equal(httpc_unix(e.api, "POST", "/api/v1/ports",
                                "{\"name\":\"p1\",\"switch\":\"sw\",\"vlan\":{\"mode\":\"access\","
                                "\"tag\":5000}}",
                                &status, &body),
                     0);
    assert_int_equal(status, 400);
    free(body);
    assert_int_equal(httpc_unix(e.api, "POST", "/api/v1/ports", "not json", &status, &body), 0);
    assert_int_equal(status, 400);
    free(body);
    assert_int_equal(httpc_unix(e.api, "POST", "/api/v1/ports",
                                "{\"name\":\"p1\",\"switch\":\"sw\",\"vlan\":{\"mode\":\"trunk\","
                                "\"allowed\":\"100-110\",\"native\":1}}",
                                &status, &body),
                     0);
    assert_int_equal(status, 201);
    free(body);
    assert_int_equal(httpc_unix(e.api, "PUT", "/api/v1/ports/p1/policy",
                                "{\"ingress_rate\":{\"rate_bps\":1000000},\"coalescing\":true}",
                                &status, &body),
                     0);
    assert_int_equal(status, 204);
    free(body);
    assert_int_equal(httpc_unix(e.api, "GET", "/api/v1/ports/p1", NULL, &status, &body), 0);
    assert_int_equal(status, 200);
    assert_non_null(strstr(body, "\"ingress_rate\""));
    assert_non_null(strstr(body, "\"queue_stats\""));
    free(body);
    assert_int_equal(httpc_unix(e.api, "DELETE", "/api/v1/switches/sw", NULL, &status, &body), 0);
    assert_int_equal(status, 409); /* still has ports */
    free(body);
    snprintf(url_err, sizeof(url_err), "/api/v1/nothing");
    assert_int_equal(httpc_unix(e.api, "GET", url_err, NULL, &status, &body), 0);
    assert_int_equal(status, 404);
    free(body);
    /* An unknown port: 404 naming it from PATCH, DELETE and policy, and the card's lock is
     * released (the next request is answered). */
    {
        static const struct {
            const char *method, *url, *body;
        } gone[] = {{"PATCH", "/api/v1/ports/ghost", "{\"members\":[]}"},
                    {"DELETE", "/api/v1/ports/ghost", NULL},
                    {"PUT", "/api/v1/ports/ghost/policy", "{\"coalescing\":true}"}};
        for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++) {
            assert_int_equal(
                httpc_unix(e.api, gone[i].method, gone[i].url, gone[i].body, &status, &body), 0);
            assert_int_equal(status, 404);
            assert_non_null(strstr(body, "port 'ghost' not found"));
            free(body);
        }
        assert_int_equal(httpc_unix(e.api, "GET", "/api/v1/ports/p1", NULL, &status, &body), 0);
        assert_int_equal(status, 200);
        free(body);
    }
    /* Tunnel and bond settings are validated before anything is opened. */
    {
        static const char *const bad[] = {
            "{\"name\":\"vx\",\"switch\":\"sw\",\"type\":\"vxlan\",\"ifname\":\"lo\"}",
            "{\"name\":\"vx\",\"switch\":\"sw\",\"type\":\"vxlan\",\"ifname\":\"lo\","
            "\"vni\":100}",
            "{\"name\":\"vx\",\"switch\":\"sw\",\"type\":\"vxlan\",\"ifname\":\"lo\","
            "\"vni\":16777216,\"local_ip\":\"10.0.0.1\",\"nexthop_mac\":\"02:00:00:00:00:01\"}",
            "{\"name\":\"vx\",\"switch\":\"sw\",\"type\":\"vxlan\",\"ifname\":\"lo\","
            "\"vni\":5,\"local_ip\":\"10.0.0.1\",\"nexthop_mac\":\"02:00:00:00:00:01\","
            "\"remote_ips\":[\"224.0.0.1\"]}",
            "{\"name\":\"vx\",\"switch\":\"sw\",\"type\":\"vxlan\",\"ifname\":\"lo\","
            "\"vni\":5,\"local_ip\":\"10.0.0.1\",\"nexthop_mac\":\"zz\"}",
            "{\"name\":\"bd\",\"switch\":\"sw\",\"type\":\"bond\",\"members\":[]}",
            "{\"name\":\"bd\",\"switch\":\"sw\",\"type\":\"bond\",\"members\":[\"lo\"],"
            "\"hash\":\"l7\"}",
            "{\"name\":\"bd\",\"switch\":\"sw\",\"type\":\"bond\",\"members\":[\"lo\"],"
            "\"mode\":\"roundrobin\"}",
            "{\"name\":\"q\",\"switch\":\"sw\",\"queues\":9}",
            "{\"name\":\"q\",\"switch\":\"sw\",\"egress_rate\":{\"rate_bps\":\"fast\"}}",
            "{\"name\":\"q\",\"switch\":\"sw\",\"type\":\"warp\"}",
            "{\"name\":\"../x\",\"switch\":\"sw\"}",
        };
        for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            assert_int_equal(httpc_unix(e.api, "POST", "/api/v1/ports", bad[i], &status, &body), 0);
            if (status != 400)
                fail_msg("%s: HTTP %ld %s", bad[i], status, body);
            assert_non_null(strstr(body, "\"error\""));
            free(body);
        }
    }
    httpd_stop(e.httpd);
    e.httpd = NULL;

    /* A second card restores the same configuration from the state file. */
    memset(&e2, 0, sizeof(e2));
    {
        struct card_config c2 = {.cores = 1, .idle_us = 50};
        c2.socket_dir = e.dir;
        c2.state_file = e.state;
        c2.api_socket = e.api;
        assert_int_equal(card_init(&e2.card, &c2), 0);
        assert_int_equal(card_load_state(&e2.card), 0);
        cfg = card_config_json(&e2.card);
        assert_non_null(strstr(json_object_to_json_string(cfg), "100-110"));
        assert_non_null(strstr(json_object_to_json_string(cfg), "1000000"));
        assert_non_null(card_port_find(&e2.card, "p1"));
        assert_non_null(card_switch_find(&e2.card, "sw"));
        json_object_put(cfg);
        card_destroy(&e2.card);
    }
    env_stop(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learning_flooding),
        cmocka_unit_test(test_move_within_burst),
        cmocka_unit_test(test_rx_header_reuse),
        cmocka_unit_test(test_in_order),
        cmocka_unit_test(test_vlans),
        cmocka_unit_test(test_spoofing_mrg_csum),
        cmocka_unit_test(test_tso),
        cmocka_unit_test(test_uso),
        cmocka_unit_test(test_tso_vlan),
        cmocka_unit_test(test_tso_kernel),
        cmocka_unit_test(test_tap_offload),
        cmocka_unit_test(test_api_and_state),
        /* The same on packed rings. */
        cmocka_unit_test_setup_teardown(test_learning_flooding, packed_on, packed_off),
        cmocka_unit_test_setup_teardown(test_move_within_burst, packed_on, packed_off),
        cmocka_unit_test_setup_teardown(test_in_order, packed_on, packed_off),
        cmocka_unit_test_setup_teardown(test_vlans, packed_on, packed_off),
        cmocka_unit_test_setup_teardown(test_spoofing_mrg_csum, packed_on, packed_off),
        cmocka_unit_test_setup_teardown(test_tso, packed_on, packed_off),
        cmocka_unit_test_setup_teardown(test_uso, packed_on, packed_off),
        /* And with inflight tracking. */
        cmocka_unit_test_setup_teardown(test_learning_flooding, packed_inflight_on, packed_off),
        cmocka_unit_test_setup_teardown(test_spoofing_mrg_csum, packed_inflight_on, packed_off),
        cmocka_unit_test_setup_teardown(test_tso, packed_inflight_on, packed_off),
    };
    log_init("test_switch", LOG_LVL_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
