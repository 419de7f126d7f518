/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bad: hands virtio-blk malformed rings. After each case the device must set
 * NEEDS_RESET (virtio 1.2, 2.1.2), and after a reset it must work again
 * (a seeded sector is written and read back). Then the same for the
 * virtio-net transmit queue when there is a net device. The VMM must
 * survive, log the errors and exit 0 on the final power-off.
 */
#include "rt/rt.h"
#include "rt/io.h"
#include "rt/vblk.h"

const char guest_name[] = "bad";

#define QSIZE          64
#define NEEDS_RESET_MS 2000
#define FAR_AWAY       (1ull << 46) /* 64 TiB: outside any guest RAM */

struct bad_ctx {
    struct vblk b;
    uint8_t *buf;
    struct virtq_desc *indirect;
    uint64_t seed;
};

typedef void (*bad_case_fn)(struct bad_ctx *c, struct virtq *vq);

/* A well-formed request header and status (slot 0) with a data descriptor in between. */
static void bad_hdr(struct bad_ctx *c, struct virtq_desc *d)
{
    struct vblk_slot *s = &c->b.slots[0];

    s->hdr.type = VIRTIO_BLK_T_IN;
    s->hdr.reserved = 0;
    s->hdr.sector = 0;
    s->status = 0xff;
    d->addr = (uint64_t)&s->hdr;
    d->len = sizeof(s->hdr);
}

static void bad_status(struct bad_ctx *c, struct virtq_desc *d)
{
    d->addr = (uint64_t)&c->b.slots[0].status;
    d->len = 1;
    d->flags = VIRTQ_DESC_F_WRITE;
    d->next = 0;
}

/* Data buffer outside guest RAM. */
static void case_oob_addr(struct bad_ctx *c, struct virtq *vq)
{
    bad_hdr(c, &vq->desc[0]);
    vq->desc[0].flags = VIRTQ_DESC_F_NEXT;
    vq->desc[0].next = 1;
    vq->desc[1] = (struct virtq_desc){FAR_AWAY, 4096, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2};
    bad_status(c, &vq->desc[2]);
    virtq_publish(vq, 0);
}

/* Data buffer that starts in RAM and runs past its end. */
static void case_straddle(struct bad_ctx *c, struct virtq *vq)
{
    bad_hdr(c, &vq->desc[0]);
    vq->desc[0].flags = VIRTQ_DESC_F_NEXT;
    vq->desc[0].next = 1;
    vq->desc[1] = (struct virtq_desc){(uint64_t)c->buf, 0x80000000u,
                                      VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2};
    bad_status(c, &vq->desc[2]);
    virtq_publish(vq, 0);
}

/*
 * 0 -> 1 -> 0 ...: a write request whose descriptors are all device-readable, so that only
 * the loop is wrong.
 */
static void case_loop(struct bad_ctx *c, struct virtq *vq)
{
    bad_hdr(c, &vq->desc[0]);
    c->b.slots[0].hdr.type = VIRTIO_BLK_T_OUT;
    vq->desc[0].flags = VIRTQ_DESC_F_NEXT;
    vq->desc[0].next = 1;
    vq->desc[1] = (struct virtq_desc){(uint64_t)c->buf, 512, VIRTQ_DESC_F_NEXT, 0};
    virtq_publish(vq, 0);
}

/* Every descriptor chained, the last one pointing on: longer than the queue. */
static void case_long_chain(struct bad_ctx *c, struct virtq *vq)
{
    bad_hdr(c, &vq->desc[0]);
    vq->desc[0].flags = VIRTQ_DESC_F_NEXT;
    vq->desc[0].next = 1;
    for (uint16_t i = 1; i < vq->size; i++)
        vq->desc[i] =
            (struct virtq_desc){(uint64_t)c->buf, 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
                                (uint16_t)((i + 1) % vq->size)};
    virtq_publish(vq, 0);
}

/* next index beyond the table */
static void case_next_oob(struct bad_ctx *c, struct virtq *vq)
{
    bad_hdr(c, &vq->desc[0]);
    vq->desc[0].flags = VIRTQ_DESC_F_NEXT;
    vq->desc[0].next = (uint16_t)(vq->size + 7);
    virtq_publish(vq, 0);
}

/* head index beyond the table */
static void case_head_oob(struct bad_ctx *c, struct virtq *vq)
{
    (void)c;
    virtq_publish(vq, (uint16_t)(vq->size + 3));
}

/* avail idx moved forward by more than the queue size */
static void case_avail_jump(struct bad_ctx *c, struct virtq *vq)
{
    bad_hdr(c, &vq->desc[0]);
    vq->desc[0].flags = VIRTQ_DESC_F_NEXT;
    vq->desc[0].next = 1;
    bad_status(c, &vq->desc[1]);
    for (uint16_t i = 0; i < vq->size; i++)
        vq->avail->ring[i] = 0;
    vq->avail_idx = (uint16_t)(vq->avail_idx + vq->size + 5);
    barrier();
    vq->avail->idx = vq->avail_idx;
}

/* header in a device-writable descriptor, too short */
static void case_short_header(struct bad_ctx *c, struct virtq *vq)
{
    bad_hdr(c, &vq->desc[0]);
    vq->desc[0].len = 4;
    vq->desc[0].flags = VIRTQ_DESC_F_NEXT;
    vq->desc[0].next = 1;
    bad_status(c, &vq->desc[1]);
    virtq_publish(vq, 0);
}

/* indirect table whose length is not a multiple of 16 */
static void case_indirect_len(struct bad_ctx *c, struct virtq *vq)
{
    bad_hdr(c, &c->indirect[0]);
    c->indirect[0].flags = VIRTQ_DESC_F_NEXT;
    c->indirect[0].next = 1;
    bad_status(c, &c->indirect[1]);
    vq->desc[0] = (struct virtq_desc){(uint64_t)c->indirect, 2 * 16 + 4, VIRTQ_DESC_F_INDIRECT, 0};
    virtq_publish(vq, 0);
}

/* indirect table outside guest RAM */
static void case_indirect_oob(struct bad_ctx *c, struct virtq *vq)
{
    (void)c;
    vq->desc[0] = (struct virtq_desc){FAR_AWAY, 4 * 16, VIRTQ_DESC_F_INDIRECT, 0};
    virtq_publish(vq, 0);
}

/* an indirect descriptor inside an indirect table */
static void case_indirect_nested(struct bad_ctx *c, struct virtq *vq)
{
    bad_hdr(c, &c->indirect[0]);
    c->indirect[0].flags = VIRTQ_DESC_F_NEXT;
    c->indirect[0].next = 1;
    c->indirect[1] =
        (struct virtq_desc){(uint64_t)&c->indirect[8], 2 * 16, VIRTQ_DESC_F_INDIRECT, 0};
    vq->desc[0] = (struct virtq_desc){(uint64_t)c->indirect, 2 * 16, VIRTQ_DESC_F_INDIRECT, 0};
    virtq_publish(vq, 0);
}

/* loop inside an indirect table (a write request: every descriptor device-readable) */
static void case_indirect_loop(struct bad_ctx *c, struct virtq *vq)
{
    bad_hdr(c, &c->indirect[0]);
    c->b.slots[0].hdr.type = VIRTIO_BLK_T_OUT;
    c->indirect[0].flags = VIRTQ_DESC_F_NEXT;
    c->indirect[0].next = 1;
    c->indirect[1] = (struct virtq_desc){(uint64_t)c->buf, 512, VIRTQ_DESC_F_NEXT, 0};
    vq->desc[0] = (struct virtq_desc){(uint64_t)c->indirect, 2 * 16, VIRTQ_DESC_F_INDIRECT, 0};
    virtq_publish(vq, 0);
}

static const struct {
    const char *name;
    bad_case_fn fn;
    bool indirect;
} bad_cases[] = {
    {"oob-addr", case_oob_addr, false},
    {"straddle-ram-end", case_straddle, false},
    {"loop", case_loop, false},
    {"long-chain", case_long_chain, false},
    {"next-oob", case_next_oob, false},
    {"head-oob", case_head_oob, false},
    {"avail-jump", case_avail_jump, false},
    {"short-header", case_short_header, false},
    {"indirect-len", case_indirect_len, true},
    {"indirect-oob", case_indirect_oob, true},
    {"indirect-nested", case_indirect_nested, true},
    {"indirect-loop", case_indirect_loop, true},
};

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The device works: write a seeded block at a per-round sector and read it back. */
static int bad_prove_working(struct bad_ctx *c, unsigned round)
{
    uint64_t sector = 8 + round * 8ull;
    uint64_t *w = (uint64_t *)c->buf;
    int st;

    for (int i = 0; i < 512; i++)
        w[i] = splitmix64(c->seed + round * 512ull + (uint64_t)i);
    st = vblk_rw(&c->b, VIRTIO_BLK_T_OUT, sector, c->buf, 4096);
    if (st != VIRTIO_BLK_S_OK) {
        printf("bad: write after reset failed (%d)\n", st);
        return -EIO;
    }
    memset(c->buf, 0, 4096);
    st = vblk_rw(&c->b, VIRTIO_BLK_T_IN, sector, c->buf, 4096);
    if (st != VIRTIO_BLK_S_OK) {
        printf("bad: read after reset failed (%d)\n", st);
        return -EIO;
    }
    for (int i = 0; i < 512; i++) {
        if (w[i] != splitmix64(c->seed + round * 512ull + (uint64_t)i)) {
            printf("bad: data read back after reset differs at word %d\n", i);
            return -EIO;
        }
    }
    return 0;
}

/* 0: NEEDS_RESET; 1: the device completed the request instead; -ETIMEDOUT: neither. */
static int bad_wait_needs_reset(struct bad_ctx *c, uint32_t *used_len)
{
    struct virtq *vq = &c->b.vd.vq[0];

    for (int ms = 0; ms < NEEDS_RESET_MS; ms++) {
        uint8_t st = virtio_status(&c->b.vd);

        if (st & VIRTIO_STATUS_NEEDS_RESET)
            return 0;
        if (vq->used->idx != vq->last_used) {
            *used_len = vq->used->ring[vq->last_used % vq->size].len;
            return 1;
        }
        udelay(1000);
    }
    return -ETIMEDOUT;
}

/*
 * virtio-net transmit queue. Ring violations (buffer outside RAM, loop, avail
 * jump) must give NEEDS_RESET; for a device-writable or too short transmit
 * header the device may also drop the frame (completion accepted).
 */
#define NET_RXQ     0
#define NET_TXQ     1
#define NET_HDR_LEN 12

struct bad_net {
    struct virtio_dev vd;
    uint8_t *frame; /* virtio_net_hdr + 60-byte broadcast frame */
};

static int bad_net_init(struct bad_net *n)
{
    int ret = virtio_init(&n->vd, 0);

    if (ret == 0)
        ret = virtq_setup(&n->vd, NET_RXQ, QSIZE);
    if (ret == 0)
        ret = virtq_setup(&n->vd, NET_TXQ, QSIZE);
    if (ret == 0)
        virtio_driver_ok(&n->vd);
    return ret;
}

/* A well-formed frame is transmitted (the device returns the buffer). */
static int bad_net_prove_working(struct bad_net *n)
{
    struct virtq_buf b = {(uint64_t)n->frame, NET_HDR_LEN + 60, false};
    int head = virtq_add(&n->vd.vq[NET_TXQ], &b, 1);

    if (head < 0)
        return head;
    virtq_kick(&n->vd, &n->vd.vq[NET_TXQ]);
    return virtq_wait(&n->vd, &n->vd.vq[NET_TXQ], head, NULL, 2000);
}

enum { NET_TX_OOB, NET_TX_LOOP, NET_TX_AVAIL_JUMP, NET_TX_WRITABLE, NET_TX_SHORT_HDR };

static const struct {
    const char *name;
    int kind;
    bool may_complete;
} bad_net_cases[] = {
    {"net-tx-oob-addr", NET_TX_OOB, false},          {"net-tx-loop", NET_TX_LOOP, false},
    {"net-tx-avail-jump", NET_TX_AVAIL_JUMP, false}, {"net-tx-writable", NET_TX_WRITABLE, true},
    {"net-tx-short-header", NET_TX_SHORT_HDR, true},
};

static void bad_net_case(struct bad_net *n, int kind)
{
    struct virtq *vq = &n->vd.vq[NET_TXQ];
    uint64_t f = (uint64_t)n->frame;

    switch (kind) {
    case NET_TX_OOB:
        vq->desc[0] = (struct virtq_desc){FAR_AWAY, NET_HDR_LEN + 60, 0, 0};
        break;
    case NET_TX_LOOP:
        vq->desc[0] = (struct virtq_desc){f, NET_HDR_LEN, VIRTQ_DESC_F_NEXT, 1};
        vq->desc[1] = (struct virtq_desc){f + NET_HDR_LEN, 60, VIRTQ_DESC_F_NEXT, 0};
        break;
    case NET_TX_AVAIL_JUMP:
        vq->desc[0] = (struct virtq_desc){f, NET_HDR_LEN + 60, 0, 0};
        for (uint16_t i = 0; i < vq->size; i++)
            vq->avail->ring[i] = 0;
        vq->avail_idx = (uint16_t)(vq->avail_idx + vq->size + 5);
        barrier();
        vq->avail->idx = vq->avail_idx;
        return;
    case NET_TX_WRITABLE:
        vq->desc[0] = (struct virtq_desc){f, NET_HDR_LEN + 60, VIRTQ_DESC_F_WRITE, 0};
        break;
    case NET_TX_SHORT_HDR:
        vq->desc[0] = (struct virtq_desc){f, 4, 0, 0};
        break;
    }
    virtq_publish(vq, 0);
}

/* 0: NEEDS_RESET; 1: the device returned the buffer; -ETIMEDOUT: neither. */
static int bad_net_wait(struct bad_net *n)
{
    struct virtq *vq = &n->vd.vq[NET_TXQ];

    for (int ms = 0; ms < NEEDS_RESET_MS; ms++) {
        if (virtio_status(&n->vd) & VIRTIO_STATUS_NEEDS_RESET)
            return 0;
        if (vq->used->idx != vq->last_used)
            return 1;
        udelay(1000);
    }
    return -ETIMEDOUT;
}

static int bad_net(bool lenient)
{
    static struct bad_net net;
    struct bad_net *n = &net;
    unsigned passed = 0;
    bool completed;
    int ret;

    ret = virtio_find(VIRTIO_ID_NET, 0, &n->vd);
    if (ret == -ENODEV) {
        printf("bad: no virtio-net device, net cases skipped\n");
        return 0;
    }
    if (ret < 0)
        return ret;
    n->frame = rt_alloc(NET_HDR_LEN + 60, 64);
    memset(n->frame + NET_HDR_LEN, 0xff, 6); /* broadcast */
    n->frame[NET_HDR_LEN + 6] = 0x02;        /* locally administered source */
    n->frame[NET_HDR_LEN + 12] = 0x88;       /* local experimental ethertype 0x88b5 */
    n->frame[NET_HDR_LEN + 13] = 0xb5;
    ret = bad_net_init(n);
    if (ret == 0)
        ret = bad_net_prove_working(n);
    if (ret < 0) {
        printf("bad: virtio-net does not transmit a well-formed frame (%d)\n", ret);
        return ret;
    }
    for (unsigned i = 0; i < ARRAY_SIZE(bad_net_cases); i++) {
        bad_net_case(n, bad_net_cases[i].kind);
        virtq_kick(&n->vd, &n->vd.vq[NET_TXQ]);
        ret = bad_net_wait(n);
        if (ret < 0) {
            printf("bad: case %s: neither NEEDS_RESET nor a completion within %d ms\n",
                   bad_net_cases[i].name, NEEDS_RESET_MS);
            return ret;
        }
        completed = ret == 1;
        if (completed && !bad_net_cases[i].may_complete && !lenient) {
            printf("bad: case %s: device completed the frame instead of setting NEEDS_RESET\n",
                   bad_net_cases[i].name);
            return -EPROTO;
        }
        virtio_reset(&n->vd);
        ret = bad_net_init(n);
        if (ret == 0)
            ret = bad_net_prove_working(n);
        if (ret < 0) {
            printf("bad: case %s: device broken after reset (%d)\n", bad_net_cases[i].name, ret);
            return ret;
        }
        printf("bad: case %s ok: %s, reset, device works\n", bad_net_cases[i].name,
               completed ? "completed (allowed)" : "NEEDS_RESET");
        passed++;
    }
    printf("bad: %u net cases passed\n", passed);
    return 0;
}

int guest_main(void)
{
    static struct bad_ctx ctx;
    struct bad_ctx *c = &ctx;
    bool has_indirect;
    /* lenient: a device that completes a malformed request instead (QEMU does for some) passes */
    bool lenient = cmdline_get_u64("bad.lenient", 0) != 0;
    unsigned passed = 0, skipped = 0, tolerated = 0;
    uint32_t used_len = 0;
    int ret;

    c->seed = cmdline_get_u64("bad.seed", 1);
    ret = vblk_open(&c->b, 0, QSIZE, 1ull << VIRTIO_F_INDIRECT_DESC);
    if (ret == -ENODEV)
        printf("NODEV virtio-blk\n");
    if (ret < 0) {
        printf("bad: no virtio-blk disk (%d)\n", ret);
        return ret;
    }
    has_indirect = virtio_has(&c->b.vd, VIRTIO_F_INDIRECT_DESC);
    c->buf = rt_alloc(4096, 4096);
    c->indirect = rt_alloc(16 * 16, 16);
    printf("bad: queue size %u, indirect descriptors %s\n", c->b.vd.vq[0].size,
           has_indirect ? "negotiated" : "not offered");
    ret = bad_prove_working(c, 0);
    if (ret < 0)
        return ret;

    for (unsigned i = 0; i < ARRAY_SIZE(bad_cases); i++) {
        struct virtq *vq = &c->b.vd.vq[0];
        bool completed;

        if (bad_cases[i].indirect && !has_indirect) {
            printf("bad: case %s skipped (no VIRTIO_F_INDIRECT_DESC)\n", bad_cases[i].name);
            skipped++;
            continue;
        }
        bad_cases[i].fn(c, vq);
        virtq_kick(&c->b.vd, vq);
        ret = bad_wait_needs_reset(c, &used_len);
        if (ret < 0) {
            printf("bad: case %s: device did not set NEEDS_RESET within %d ms (status 0x%x)\n",
                   bad_cases[i].name, NEEDS_RESET_MS, virtio_status(&c->b.vd));
            return ret;
        }
        completed = ret == 1;
        if (completed) {
            printf("bad: case %s: device completed the request (used len %u, status byte %u) "
                   "instead of setting NEEDS_RESET\n",
                   bad_cases[i].name, used_len, c->b.slots[0].status);
            if (!lenient)
                return -EPROTO;
            tolerated++;
        }
        ret = vblk_reinit(&c->b, QSIZE);
        if (ret < 0) {
            printf("bad: case %s: re-initialisation after reset failed (%d)\n", bad_cases[i].name,
                   ret);
            return ret;
        }
        ret = bad_prove_working(c, i + 1);
        if (ret < 0) {
            printf("bad: case %s: device broken after reset\n", bad_cases[i].name);
            return ret;
        }
        printf("bad: case %s ok: %s, reset, device works\n", bad_cases[i].name,
               completed ? "completed (tolerated)" : "NEEDS_RESET");
        passed++;
    }
    printf("bad: %u cases passed (%u of them tolerated), %u skipped\n", passed, tolerated, skipped);
    return bad_net(lenient);
}
