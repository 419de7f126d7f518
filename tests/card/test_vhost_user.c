/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user backend core against an in-process fake frontend: the frontend
 * side of a socketpair sends real protocol messages (with fds), guest memory
 * is a memfd, and the test plays the driver by writing rings in it.
 */
#include "card/vhost_user.h"
#include "common/log.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#define MEM_SIZE  (1u << 20)
#define MEM_GPA   0x100000ull
#define MEM_UVA   0x7f1200000000ull
#define RING_NUM  8
#define DESC_GPA  (MEM_GPA + 0x1000)
#define AVAIL_GPA (MEM_GPA + 0x2000)
#define USED_GPA  (MEM_GPA + 0x3000)
#define BUF_GPA   (MEM_GPA + 0x10000)

struct fx {
    int sock[2]; /* [0] frontend, [1] backend */
    int memfd;
    uint8_t *mem; /* the test's (driver's) view of guest memory */
    struct vu_dev dev;
    struct vu_dev_ops ops;
    int started[VU_MAX_QUEUES];
    int stopped[VU_MAX_QUEUES];
};

static uint8_t *gpa(struct fx *f, uint64_t a)
{
    return f->mem + (a - MEM_GPA);
}

static void on_start(void *opaque, struct vu_dev *dev, unsigned q)
{
    struct fx *f = opaque;
    (void)dev;
    f->started[q]++;
}

static void on_stop(void *opaque, struct vu_dev *dev, unsigned q)
{
    struct fx *f = opaque;
    (void)dev;
    f->stopped[q]++;
}

static int get_cfg(void *opaque, uint32_t off, uint8_t *buf, uint32_t size)
{
    static const uint8_t cfg[8] = {0x52, 0x54, 0, 1, 2, 3, 1, 0};
    (void)opaque;
    if (off > sizeof(cfg) || size > sizeof(cfg) - off)
        return -EINVAL;
    memcpy(buf, cfg + off, size);
    return 0;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f->sock), 0);
    f->memfd = memfd_create("guest", 0);
    assert_true(f->memfd >= 0);
    assert_int_equal(ftruncate(f->memfd, MEM_SIZE), 0);
    f->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    assert_true(f->mem != MAP_FAILED);
    f->ops.features = (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_RING_F_EVENT_IDX) |
                      (1ull << VIRTIO_RING_F_INDIRECT_DESC) | (1ull << VIRTIO_F_RING_PACKED);
    f->ops.protocol_features = 1ull << VHOST_USER_PROTOCOL_F_MQ;
    f->ops.num_queues = 2;
    f->ops.queue_num_reply = 1;
    f->ops.queue_start = on_start;
    f->ops.queue_stop = on_stop;
    f->ops.get_config = get_cfg;
    vu_dev_init(&f->dev, "test", &f->ops, f);
    vu_dev_attach(&f->dev, f->sock[1]);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    vu_dev_disconnect(&f->dev); /* closes sock[1] */
    close(f->sock[0]);
    munmap(f->mem, MEM_SIZE);
    close(f->memfd);
    free(f);
    return 0;
}

/* Send one message from the frontend side; hdr_flags 0 means version 1. */
static void fe_send(struct fx *f, uint32_t req, uint32_t flags, const void *payload, uint32_t size,
                    const int *fds, unsigned nfds)
{
    struct vhost_user_hdr h = {
        .request = req, .flags = flags ? flags : VHOST_USER_VERSION, .size = size};
    struct iovec iov[2] = {{&h, sizeof(h)}, {(void *)payload, size}};
    union {
        char buf[CMSG_SPACE(8 * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = size ? 2 : 1};

    if (nfds) {
        struct cmsghdr *c;
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    assert_int_equal(sendmsg(f->sock[0], &mh, 0), (ssize_t)(sizeof(h) + size));
}

/* Send, let the backend process, return its result. */
static int fe_req(struct fx *f, uint32_t req, const void *payload, uint32_t size, const int *fds,
                  unsigned nfds)
{
    fe_send(f, req, 0, payload, size, fds, nfds);
    return vu_dev_handle_readable(&f->dev);
}

static void fe_reply(struct fx *f, uint32_t req, void *payload, uint32_t size, int *fd_out)
{
    struct vhost_user_hdr h;
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov[2] = {{&h, sizeof(h)}, {payload, size}};
    struct msghdr mh = {
        .msg_iov = iov, .msg_iovlen = 2, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
    ssize_t n = recvmsg(f->sock[0], &mh, 0);
    assert_int_equal(n, (ssize_t)(sizeof(h) + size));
    assert_int_equal(h.request, req);
    assert_int_equal(h.flags, VHOST_USER_VERSION | VHOST_USER_FLAG_REPLY);
    assert_int_equal(h.size, size);
    if (fd_out) {
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        assert_non_null(c);
        memcpy(fd_out, CMSG_DATA(c), sizeof(int));
    }
}

static uint64_t fe_get_u64(struct fx *f, uint32_t req)
{
    uint64_t v = 0;
    assert_int_equal(fe_req(f, req, NULL, 0, NULL, 0), 0);
    fe_reply(f, req, &v, sizeof(v), NULL);
    return v;
}

static void fe_mem_table(struct fx *f)
{
    struct vhost_user_mem_table t = {.nregions = 1};
    t.regions[0].guest_phys_addr = MEM_GPA;
    t.regions[0].memory_size = MEM_SIZE;
    t.regions[0].userspace_addr = MEM_UVA;
    t.regions[0].mmap_offset = 0;
    assert_int_equal(
        fe_req(f, VHOST_USER_SET_MEM_TABLE, &t, 8 + sizeof(t.regions[0]), &f->memfd, 1), 0);
}

static uint64_t uva(uint64_t g)
{
    return g - MEM_GPA + MEM_UVA;
}

/* Negotiate and start queue q; features beyond the basics in extra. */
static void fe_start(struct fx *f, unsigned q, uint64_t extra_features, uint64_t extra_proto)
{
    uint64_t feat = fe_get_u64(f, VHOST_USER_GET_FEATURES), proto;
    struct vhost_user_vring_state st = {.index = q, .num = RING_NUM};
    struct vhost_user_vring_addr a = {.index = q,
                                      .desc_user_addr = uva(DESC_GPA),
                                      .avail_user_addr = uva(AVAIL_GPA),
                                      .used_user_addr = uva(USED_GPA),
                                      .log_guest_addr = USED_GPA};
    uint64_t v;
    int kick = memfd_create("kick", 0), call = memfd_create("call", 0);

    assert_true(feat & (1ull << VHOST_USER_F_PROTOCOL_FEATURES));
    assert_int_equal(fe_req(f, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0), 0);
    proto = fe_get_u64(f, VHOST_USER_GET_PROTOCOL_FEATURES);
    assert_true(proto & (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK));
    v = (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) | (1ull << VHOST_USER_PROTOCOL_F_CONFIG) |
        extra_proto;
    assert_int_equal(fe_req(f, VHOST_USER_SET_PROTOCOL_FEATURES, &v, 8, NULL, 0), 0);
    v = (1ull << VHOST_USER_F_PROTOCOL_FEATURES) | (1ull << VIRTIO_F_VERSION_1) | extra_features;
    assert_int_equal(fe_req(f, VHOST_USER_SET_FEATURES, &v, 8, NULL, 0), 0);
    fe_mem_table(f);
    assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_NUM, &st, sizeof(st), NULL, 0), 0);
    /* Packed: both wrap counters start at 1 (only the avail half sent, as DPDK does). */
    st.num = (extra_features & (1ull << VIRTIO_F_RING_PACKED)) ? 1u << 15 : 0;
    assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_BASE, &st, sizeof(st), NULL, 0), 0);
    assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), 0);
    v = q;
    assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_CALL, &v, 8, &call, 1), 0);
    assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_KICK, &v, 8, &kick, 1), 0);
    close(kick);
    close(call);
    /* Protocol features negotiated: the ring starts disabled. */
    assert_int_equal(f->started[q], 0);
    st.num = 1;
    assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_ENABLE, &st, sizeof(st), NULL, 0), 0);
    assert_int_equal(f->started[q], 1);
    assert_true(f->dev.vr[q].running);
}

/* Driver side: put a descriptor and publish head in the avail ring. */
static void drv_desc(struct fx *f, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    struct virtq_desc *d = (struct virtq_desc *)gpa(f, DESC_GPA);
    d[i].addr = addr;
    d[i].len = len;
    d[i].flags = flags;
    d[i].next = next;
}

static void drv_avail(struct fx *f, uint16_t head)
{
    struct virtq_avail *av = (struct virtq_avail *)gpa(f, AVAIL_GPA);
    av->ring[av->idx % RING_NUM] = head;
    __atomic_store_n(&av->idx, (uint16_t)(av->idx + 1), __ATOMIC_RELEASE);
}

static struct virtq *vq0(struct fx *f)
{
    return &f->dev.vr[0].vq;
}

/* A used entry for a head the test made available itself. */
static void push_head(struct virtq *vq, uint16_t head, uint32_t len)
{
    struct virtq_elem e = {.head = head, .n_descs = 1};
    virtq_push(vq, &e, len);
}

static void test_handshake_and_ring(void **state)
{
    struct fx *f = *state;
    struct virtq_elem e;
    struct virtq_used *used = (struct virtq_used *)gpa(f, USED_GPA);
    struct vhost_user_vring_state st = {.index = 0};

    assert_int_equal(fe_get_u64(f, VHOST_USER_GET_QUEUE_NUM), 1);
    fe_start(f, 0, 0, 0);
    /* Two-descriptor chain: 14 readable bytes, then 100 writable. */
    memcpy(gpa(f, BUF_GPA), "hello, vhost!", 14);
    drv_desc(f, 3, BUF_GPA, 14, VIRTQ_DESC_F_NEXT, 5);
    drv_desc(f, 5, BUF_GPA + 0x100, 100, VIRTQ_DESC_F_WRITE, 0);
    drv_avail(f, 3);
    assert_int_equal(virtq_pop(vq0(f), &e), 1);
    assert_int_equal(e.head, 3);
    assert_int_equal(e.n_out, 1);
    assert_int_equal(e.n_in, 1);
    assert_int_equal(e.out_len, 14);
    assert_int_equal(e.in_len, 100);
    assert_string_equal((char *)e.iov[0].base, "hello, vhost!");
    /* The backend's pointer aliases the driver's memory. */
    memcpy(e.iov[1].base, "reply", 6);
    assert_string_equal((char *)gpa(f, BUF_GPA + 0x100), "reply");
    assert_int_equal(virtq_pop(vq0(f), &e), 0);
    push_head(vq0(f), 3, 6);
    assert_int_equal(used->idx, 0); /* not visible before flush */
    virtq_flush(vq0(f));
    assert_int_equal(used->idx, 1);
    assert_int_equal(used->ring[0].id, 3);
    assert_int_equal(used->ring[0].len, 6);
    /* GET_VRING_BASE stops the ring and reports where the device is. */
    assert_int_equal(fe_req(f, VHOST_USER_GET_VRING_BASE, &st, sizeof(st), NULL, 0), 0);
    fe_reply(f, VHOST_USER_GET_VRING_BASE, &st, sizeof(st), NULL);
    assert_int_equal(st.num, 1);
    assert_int_equal(f->stopped[0], 1);
    assert_false(f->dev.vr[0].running);
}

static void test_indirect_and_event_idx(void **state)
{
    struct fx *f = *state;
    struct virtq_desc *ind = (struct virtq_desc *)gpa(f, BUF_GPA + 0x4000);
    struct virtq_avail *av = (struct virtq_avail *)gpa(f, AVAIL_GPA);
    struct virtq_elem e;

    fe_start(f, 0, 1ull << VIRTIO_RING_F_EVENT_IDX, 0);
    ind[0] = (struct virtq_desc){BUF_GPA, 64, VIRTQ_DESC_F_NEXT, 1};
    ind[1] = (struct virtq_desc){BUF_GPA + 0x200, 32, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2};
    ind[2] = (struct virtq_desc){BUF_GPA + 0x300, 32, VIRTQ_DESC_F_WRITE, 0};
    drv_desc(f, 0, BUF_GPA + 0x4000, 3 * sizeof(struct virtq_desc), VIRTQ_DESC_F_INDIRECT, 0);
    drv_avail(f, 0);
    assert_int_equal(virtq_pop(vq0(f), &e), 1);
    assert_int_equal(e.n_out, 1);
    assert_int_equal(e.n_in, 2);
    assert_int_equal(e.in_len, 64);
    push_head(vq0(f), 0, 0);
    virtq_flush(vq0(f));
    /* First completion always signals; then used_event controls it. */
    assert_true(virtq_need_notify(vq0(f)));
    av->ring[RING_NUM] = 5; /* used_event: notify when used passes 5 */
    drv_avail(f, 0);
    assert_int_equal(virtq_pop(vq0(f), &e), 1);
    push_head(vq0(f), 0, 0);
    virtq_flush(vq0(f));
    assert_false(virtq_need_notify(vq0(f)));
    av->ring[RING_NUM] = 1; /* used idx went 1 -> 2: crossing event 1 */
    drv_avail(f, 0);
    assert_int_equal(virtq_pop(vq0(f), &e), 1);
    push_head(vq0(f), 0, 0);
    virtq_flush(vq0(f));
    av->ring[RING_NUM] = 2;
    assert_true(virtq_need_notify(vq0(f)));
    /* Kick suppression: before sleeping the device publishes avail_event. */
    assert_false(virtq_enable_kicks(vq0(f)));
    assert_int_equal(*(uint16_t *)&((struct virtq_used *)gpa(f, USED_GPA))->ring[RING_NUM], 3);
}

static void test_hostile_rings(void **state)
{
    struct fx *f = *state;
    struct virtq_desc *ind = (struct virtq_desc *)gpa(f, BUF_GPA + 0x4000);
    struct virtq_avail *av = (struct virtq_avail *)gpa(f, AVAIL_GPA);
    struct virtq_elem e;

    fe_start(f, 0, 0, 0);
    /* Buffer outside guest memory. */
    drv_desc(f, 0, MEM_GPA + MEM_SIZE - 8, 64, 0, 0);
    drv_avail(f, 0);
    assert_int_equal(virtq_pop(vq0(f), &e), -EINVAL);
    /* Address overflow. */
    vq0(f)->last_avail_idx = av->idx;
    drv_desc(f, 0, UINT64_MAX - 4, 64, 0, 0);
    drv_avail(f, 0);
    assert_int_equal(virtq_pop(vq0(f), &e), -EINVAL);
    /* Loop: 1 -> 2 -> 1. */
    vq0(f)->last_avail_idx = av->idx;
    drv_desc(f, 1, BUF_GPA, 8, VIRTQ_DESC_F_NEXT, 2);
    drv_desc(f, 2, BUF_GPA, 8, VIRTQ_DESC_F_NEXT, 1);
    drv_avail(f, 1);
    assert_int_equal(virtq_pop(vq0(f), &e), -EINVAL);
    /* next out of range. */
    vq0(f)->last_avail_idx = av->idx;
    drv_desc(f, 1, BUF_GPA, 8, VIRTQ_DESC_F_NEXT, RING_NUM + 3);
    drv_avail(f, 1);
    assert_int_equal(virtq_pop(vq0(f), &e), -EINVAL);
    /* Readable after writable. */
    vq0(f)->last_avail_idx = av->idx;
    drv_desc(f, 1, BUF_GPA, 8, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
    drv_desc(f, 2, BUF_GPA, 8, 0, 0);
    drv_avail(f, 1);
    assert_int_equal(virtq_pop(vq0(f), &e), -EINVAL);
    /* Nested indirect. */
    vq0(f)->last_avail_idx = av->idx;
    ind[0] = (struct virtq_desc){BUF_GPA + 0x4000, 16, VIRTQ_DESC_F_INDIRECT, 0};
    drv_desc(f, 0, BUF_GPA + 0x4000, 16, VIRTQ_DESC_F_INDIRECT, 0);
    drv_avail(f, 0);
    assert_int_equal(virtq_pop(vq0(f), &e), -EINVAL);
    /* Indirect table of odd length. */
    vq0(f)->last_avail_idx = av->idx;
    drv_desc(f, 0, BUF_GPA + 0x4000, 17, VIRTQ_DESC_F_INDIRECT, 0);
    drv_avail(f, 0);
    assert_int_equal(virtq_pop(vq0(f), &e), -EINVAL);
    /* Head out of range. */
    vq0(f)->last_avail_idx = av->idx;
    drv_avail(f, RING_NUM);
    assert_int_equal(virtq_pop(vq0(f), &e), -EINVAL);
    /* Avail index runs more than a ring ahead. */
    vq0(f)->last_avail_idx = av->idx;
    av->idx = (uint16_t)(av->idx + RING_NUM + 1);
    assert_int_equal(virtq_pop(vq0(f), &e), -EINVAL);
    /* A good chain still works afterwards. */
    vq0(f)->last_avail_idx = av->idx;
    drv_desc(f, 4, BUF_GPA, 60, 0, 0);
    drv_avail(f, 4);
    assert_int_equal(virtq_pop(vq0(f), &e), 1);
    assert_int_equal(e.out_len, 60);
}

/* Packed ring, driver side: descriptor i with the AVAIL/USED bits of wrap counter w. */
static void pdrv_put(struct fx *f, unsigned i, uint64_t addr, uint32_t len, uint16_t id,
                     uint16_t flags, bool w)
{
    struct pvirtq_desc *d = (struct pvirtq_desc *)gpa(f, DESC_GPA);
    d[i].addr = addr;
    d[i].len = len;
    d[i].id = id;
    flags |= w ? PVIRTQ_DESC_F_AVAIL : PVIRTQ_DESC_F_USED;
    __atomic_store_n(&d[i].flags, flags, __ATOMIC_RELEASE);
}

static void test_packed_ring(void **state)
{
    struct fx *f = *state;
    struct pvirtq_desc *d = (struct pvirtq_desc *)gpa(f, DESC_GPA);
    struct pvirtq_desc *ind = (struct pvirtq_desc *)gpa(f, BUF_GPA + 0x4000);
    struct pvirtq_event *drv_ev = (struct pvirtq_event *)gpa(f, AVAIL_GPA);
    struct vhost_user_vring_state st = {.index = 0};
    struct virtq_elem e[RING_NUM];
    struct virtq *vq;

    fe_start(f, 0, (1ull << VIRTIO_F_RING_PACKED) | (1ull << VIRTIO_RING_F_EVENT_IDX), 0);
    vq = vq0(f);
    assert_true(vq->packed && vq->avail_wrap && vq->used_wrap);
    assert_int_equal(virtq_pop(vq, &e[0]), 0); /* zeroed ring: nothing available */

    /* A two-descriptor chain (ID in the last one), then an indirect one. */
    strcpy((char *)gpa(f, BUF_GPA), "packed!");
    pdrv_put(f, 1, BUF_GPA + 0x100, 100, 7, VIRTQ_DESC_F_WRITE, true);
    pdrv_put(f, 0, BUF_GPA, 8, 99, VIRTQ_DESC_F_NEXT, true); /* head last */
    ind[0] = (struct pvirtq_desc){BUF_GPA, 64, 0, 0};
    ind[1] = (struct pvirtq_desc){BUF_GPA + 0x200, 32, 0, VIRTQ_DESC_F_WRITE};
    ind[2] = (struct pvirtq_desc){BUF_GPA + 0x300, 32, 0, VIRTQ_DESC_F_WRITE};
    pdrv_put(f, 2, BUF_GPA + 0x4000, 3 * sizeof(*ind), 5, VIRTQ_DESC_F_INDIRECT, true);
    assert_int_equal(virtq_avail_count(vq), 1);
    assert_int_equal(virtq_pop(vq, &e[0]), 1);
    assert_int_equal(e[0].head, 7);
    assert_int_equal(e[0].n_descs, 2);
    assert_int_equal(e[0].n_out, 1);
    assert_int_equal(e[0].n_in, 1);
    assert_string_equal((char *)e[0].iov[0].base, "packed!");
    assert_int_equal(virtq_pop(vq, &e[1]), 1);
    assert_int_equal(e[1].head, 5);
    assert_int_equal(e[1].n_descs, 1);
    assert_int_equal(e[1].in_len, 64);
    assert_int_equal(virtq_pop(vq, &e[2]), 0);
    /* Unpop both, pop them again. */
    virtq_unpop(vq, e, 2);
    assert_int_equal(vq->last_avail_idx, 0);
    assert_int_equal(virtq_pop(vq, &e[0]), 1);
    assert_int_equal(virtq_pop(vq, &e[1]), 1);
    assert_int_equal(vq->last_avail_idx, 3);
    /* Used: one descriptor per chain, at the used position, skipping the chain's length. */
    virtq_push(vq, &e[0], 6);
    assert_int_equal(d[0].flags, VIRTQ_DESC_F_NEXT | PVIRTQ_DESC_F_AVAIL); /* not yet used */
    virtq_flush(vq);
    assert_int_equal(d[0].id, 7);
    assert_int_equal(d[0].len, 6);
    assert_int_equal(d[0].flags, PVIRTQ_DESC_F_AVAIL | PVIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE);
    assert_int_equal(vq->used_idx, 2);
    /* Event idx: the first completion signals, then the driver's off_wrap decides. */
    drv_ev->flags = PVIRTQ_EVENT_DESC;
    drv_ev->off_wrap = 1u << 15 | 5;
    assert_true(virtq_need_notify(vq));
    virtq_push(vq, &e[1], 0);
    virtq_flush(vq);
    assert_int_equal(d[2].id, 5);
    assert_int_equal(d[2].flags, PVIRTQ_DESC_F_AVAIL | PVIRTQ_DESC_F_USED); /* no len */
    assert_false(virtq_need_notify(vq)); /* used 2 -> 3, event at 5 */
    drv_ev->off_wrap = 1u << 15 | 2;
    /* wrap around: fill the rest of the ring (slots 3..7) and the first slots again */
    for (unsigned i = 3; i < RING_NUM; i++)
        pdrv_put(f, i, BUF_GPA, 8, (uint16_t)(100 + i), 0, true);
    pdrv_put(f, 0, BUF_GPA, 8, 200, 0, false); /* next lap: wrap counter 0 */
    for (unsigned i = 0; i < 6; i++) {
        assert_int_equal(virtq_pop(vq, &e[i]), 1);
        virtq_push(vq, &e[i], 0);
    }
    /* A batch: all written but the first, whose flags publish the batch at the flush. */
    assert_int_equal(d[3].flags, PVIRTQ_DESC_F_AVAIL);
    assert_int_equal(d[4].flags, PVIRTQ_DESC_F_AVAIL | PVIRTQ_DESC_F_USED);
    virtq_flush(vq);
    assert_int_equal(d[3].flags, PVIRTQ_DESC_F_AVAIL | PVIRTQ_DESC_F_USED);
    assert_int_equal(e[5].head, 200);
    assert_false(vq->avail_wrap);
    assert_false(vq->used_wrap);
    assert_int_equal(vq->used_idx, 1);
    assert_int_equal(d[0].flags, 0);     /* used with wrap counter 0: both bits clear */
    assert_false(virtq_need_notify(vq)); /* the event at slot 2 of the old lap was passed: 3 */
    drv_ev->off_wrap = 0;                /* slot 0 of the new lap: just written */
    pdrv_put(f, 1, BUF_GPA, 8, 201, 0, false);
    assert_int_equal(virtq_pop(vq, &e[0]), 1);
    virtq_push(vq, &e[0], 0);
    virtq_flush(vq);
    assert_false(virtq_need_notify(vq)); /* slot 0 of this lap went out in the last batch */
    drv_ev->flags = PVIRTQ_EVENT_DISABLE;
    assert_false(virtq_need_notify(vq));
    drv_ev->flags = PVIRTQ_EVENT_ENABLE;
    assert_true(virtq_need_notify(vq));
    /* Kicks: the device event suppression area. */
    virtq_disable_kicks(vq);
    assert_int_equal(((struct pvirtq_event *)gpa(f, USED_GPA))->flags, PVIRTQ_EVENT_DISABLE);
    assert_false(virtq_enable_kicks(vq));
    assert_int_equal(((struct pvirtq_event *)gpa(f, USED_GPA))->flags, PVIRTQ_EVENT_ENABLE);
    pdrv_put(f, 2, BUF_GPA, 8, 202, 0, false);
    assert_true(virtq_enable_kicks(vq)); /* work arrived: do not sleep */
    assert_int_equal(virtq_pop(vq, &e[0]), 1);
    virtq_push(vq, &e[0], 0);
    virtq_flush(vq);
    drv_ev->flags = PVIRTQ_EVENT_DESC;
    drv_ev->off_wrap = 2; /* slot 2 of this lap: just written */
    assert_true(virtq_need_notify(vq));

    /* GET_VRING_BASE: both positions and wrap counters. */
    assert_int_equal(fe_req(f, VHOST_USER_GET_VRING_BASE, &st, sizeof(st), NULL, 0), 0);
    fe_reply(f, VHOST_USER_GET_VRING_BASE, &st, sizeof(st), NULL);
    assert_int_equal(st.num, 3u | 0u << 15 | 3u << 16 | 0u << 31);
}

/* Hostile packed rings: each is refused with -EINVAL, the queue is not advanced. */
static void test_packed_hostile(void **state)
{
    struct fx *f = *state;
    struct pvirtq_desc *ind = (struct pvirtq_desc *)gpa(f, BUF_GPA + 0x4000);
    struct virtq_elem e;
    struct virtq *vq;

    fe_start(f, 0, 1ull << VIRTIO_F_RING_PACKED, 0);
    vq = vq0(f);
    /* Buffer outside guest memory. */
    pdrv_put(f, 0, MEM_GPA + MEM_SIZE - 8, 64, 1, 0, true);
    assert_int_equal(virtq_pop(vq, &e), -EINVAL);
    /* Readable after writable. */
    pdrv_put(f, 1, BUF_GPA, 8, 1, 0, true);
    pdrv_put(f, 0, BUF_GPA, 8, 1, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, true);
    assert_int_equal(virtq_pop(vq, &e), -EINVAL);
    /* A chain that never ends: every slot says NEXT. */
    for (unsigned i = 0; i < RING_NUM; i++)
        pdrv_put(f, i, BUF_GPA, 8, 1, VIRTQ_DESC_F_NEXT, true);
    assert_int_equal(virtq_pop(vq, &e), -EINVAL);
    /* Indirect: chained, after direct ones, nested, bad length, unmapped table. */
    pdrv_put(f, 0, BUF_GPA + 0x4000, 16, 1, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, true);
    assert_int_equal(virtq_pop(vq, &e), -EINVAL);
    pdrv_put(f, 1, BUF_GPA + 0x4000, 16, 1, VIRTQ_DESC_F_INDIRECT, true);
    pdrv_put(f, 0, BUF_GPA, 8, 1, VIRTQ_DESC_F_NEXT, true);
    assert_int_equal(virtq_pop(vq, &e), -EINVAL);
    ind[0] = (struct pvirtq_desc){BUF_GPA + 0x4000, 16, 0, VIRTQ_DESC_F_INDIRECT};
    pdrv_put(f, 0, BUF_GPA + 0x4000, 16, 1, VIRTQ_DESC_F_INDIRECT, true);
    assert_int_equal(virtq_pop(vq, &e), -EINVAL);
    pdrv_put(f, 0, BUF_GPA + 0x4000, 24, 1, VIRTQ_DESC_F_INDIRECT, true);
    assert_int_equal(virtq_pop(vq, &e), -EINVAL);
    pdrv_put(f, 0, MEM_GPA + MEM_SIZE, 16, 1, VIRTQ_DESC_F_INDIRECT, true);
    assert_int_equal(virtq_pop(vq, &e), -EINVAL);
    /* More segments than an element holds. */
    for (unsigned i = 0; i < VIRTQ_MAX_IOV + 1; i++)
        ind[i] = (struct pvirtq_desc){BUF_GPA, 8, 0, 0};
    pdrv_put(f, 0, BUF_GPA + 0x4000, (VIRTQ_MAX_IOV + 1) * 16, 1, VIRTQ_DESC_F_INDIRECT, true);
    assert_int_equal(virtq_pop(vq, &e), -EINVAL);
    assert_int_equal(vq->last_avail_idx, 0);
    assert_true(vq->avail_wrap);
    /* A fine one still pops (the device decides to break the queue, not virtq). */
    pdrv_put(f, 0, BUF_GPA, 8, 3, 0, true);
    assert_int_equal(virtq_pop(vq, &e), 1);
    assert_int_equal(e.head, 3);

    /* A ring base beyond the ring is refused when the ring starts. */
    {
        struct vhost_user_vring_state st = {.index = 0};
        assert_int_equal(fe_req(f, VHOST_USER_GET_VRING_BASE, &st, sizeof(st), NULL, 0), 0);
        fe_reply(f, VHOST_USER_GET_VRING_BASE, &st, sizeof(st), NULL);
        uint64_t idx = 0;
        int kick = memfd_create("kick", 0);
        st.num = RING_NUM | 1u << 15;
        assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_BASE, &st, sizeof(st), NULL, 0), 0);
        /* A new kick fd starts the ring again: refused. */
        assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_KICK, &idx, 8, &kick, 1), -EINVAL);
        assert_false(f->dev.vr[0].running);
        /* A good base, but a device area that is not 4-byte aligned (the ring has its kick
         * fd, so the new addresses start it at once): refused too. */
        struct vhost_user_vring_addr a = {.index = 0,
                                          .desc_user_addr = uva(DESC_GPA),
                                          .avail_user_addr = uva(AVAIL_GPA),
                                          .used_user_addr = uva(USED_GPA) + 2};
        st.num = 1u << 15;
        assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_BASE, &st, sizeof(st), NULL, 0), 0);
        assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), -EINVAL);
        assert_false(f->dev.vr[0].running);
        /* Both right: it runs. */
        a.used_user_addr = uva(USED_GPA);
        assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), 0);
        assert_true(f->dev.vr[0].running);
        close(kick);
    }
}

static void test_bad_messages(void **state)
{
    struct fx *f = *state;
    struct vhost_user_vring_state st = {.index = 0, .num = 100};
    struct vhost_user_mem_table t = {.nregions = 2};
    uint64_t v = 0;
    int fds[2];

    /* Wrong version. */
    fe_send(f, VHOST_USER_GET_FEATURES, 0x2, NULL, 0, NULL, 0);
    assert_int_equal(vu_dev_handle_readable(&f->dev), -EPROTO);
    /* Payload bigger than any request. */
    {
        static uint8_t big[1024];
        fe_send(f, VHOST_USER_SET_FEATURES, 0, big, sizeof(big), NULL, 0);
        assert_int_equal(vu_dev_handle_readable(&f->dev), -EPROTO);
        /* The stream is now out of sync, as with a real hostile frontend: reset it. */
        teardown(state);
        setup(state);
        f = *state;
    }
    /* Wrong size for the request. */
    assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_NUM, &v, 4, NULL, 0), -EPROTO);
    /* Ring size not a power of two. */
    assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_NUM, &st, sizeof(st), NULL, 0), -EINVAL);
    /* Queue index out of range. */
    st.index = 7;
    st.num = 8;
    assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_NUM, &st, sizeof(st), NULL, 0), -EINVAL);
    /* Unknown request. */
    assert_int_equal(fe_req(f, 99, NULL, 0, NULL, 0), -EPROTO);
    /* Reply flag on a request. */
    fe_send(f, VHOST_USER_GET_FEATURES, VHOST_USER_VERSION | VHOST_USER_FLAG_REPLY, NULL, 0, NULL,
            0);
    assert_int_equal(vu_dev_handle_readable(&f->dev), -EPROTO);
    /* fd count mismatch: two regions, one fd. */
    t.regions[0] = (struct vhost_user_mem_region){MEM_GPA, 0x1000, MEM_UVA, 0};
    t.regions[1] =
        (struct vhost_user_mem_region){MEM_GPA + 0x1000, 0x1000, MEM_UVA + 0x1000, 0x1000};
    assert_int_equal(fe_req(f, VHOST_USER_SET_MEM_TABLE, &t, 8 + 2 * 32, &f->memfd, 1), -EPROTO);
    /* Region larger than its backing file (would SIGBUS on access). */
    t.nregions = 1;
    t.regions[0].memory_size = 2ull * MEM_SIZE;
    assert_int_equal(fe_req(f, VHOST_USER_SET_MEM_TABLE, &t, 8 + 32, &f->memfd, 1), -EINVAL);
    /* Overflowing region. */
    t.regions[0] = (struct vhost_user_mem_region){UINT64_MAX - 0xfff, 0x2000, MEM_UVA, 0};
    assert_int_equal(fe_req(f, VHOST_USER_SET_MEM_TABLE, &t, 8 + 32, &f->memfd, 1), -EINVAL);
    /* Overlapping regions. */
    fds[0] = fds[1] = f->memfd;
    t.nregions = 2;
    t.regions[0] = (struct vhost_user_mem_region){MEM_GPA, 0x2000, MEM_UVA, 0};
    t.regions[1] = (struct vhost_user_mem_region){MEM_GPA + 0x1000, 0x1000, MEM_UVA + 0x8000, 0};
    assert_int_equal(fe_req(f, VHOST_USER_SET_MEM_TABLE, &t, 8 + 2 * 32, fds, 2), -EINVAL);
    /* Features never offered. */
    v = 1ull << 63;
    assert_int_equal(fe_req(f, VHOST_USER_SET_FEATURES, &v, 8, NULL, 0), -EPROTO);
    /* Kick with an fd although the NOFD bit says none. */
    v = VHOST_USER_VRING_NOFD;
    assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_KICK, &v, 8, &f->memfd, 1), -EPROTO);
    /* Ring addresses outside shared memory make the start fail. */
    fe_mem_table(f);
    st.index = 0;
    st.num = 8;
    assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_NUM, &st, sizeof(st), NULL, 0), 0);
    {
        struct vhost_user_vring_addr a = {.index = 0,
                                          .desc_user_addr = 0x1000,
                                          .avail_user_addr = uva(AVAIL_GPA),
                                          .used_user_addr = uva(USED_GPA)};
        assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), 0);
        v = 0;
        assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_KICK, &v, 8, &f->memfd, 1), -EINVAL);
    }
    /* Peer hang-up is reported as such. */
    close(f->sock[0]);
    f->sock[0] = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(vu_dev_handle_readable(&f->dev), -ECONNRESET);
}

static void test_reply_ack_config_log(void **state)
{
    struct fx *f = *state;
    struct vhost_user_config cfg = {.offset = 0, .size = 6};
    struct vhost_user_log lg = {.mmap_size = 4096, .mmap_offset = 0};
    int logfd = memfd_create("log", 0);
    uint8_t *bitmap;
    uint64_t v;

    fe_start(f, 0, 1ull << VHOST_F_LOG_ALL, 1ull << VHOST_USER_PROTOCOL_F_LOG_SHMFD);
    /* REPLY_ACK on a request without its own reply. */
    v = 0;
    fe_send(f, VHOST_USER_SET_VRING_ERR, VHOST_USER_VERSION | VHOST_USER_FLAG_NEED_REPLY, &v, 8,
            &f->memfd, 1);
    assert_int_equal(vu_dev_handle_readable(&f->dev), 0);
    fe_reply(f, VHOST_USER_SET_VRING_ERR, &v, 8, NULL);
    assert_int_equal(v, 0);
    /* Config space. */
    assert_int_equal(
        fe_req(f, VHOST_USER_GET_CONFIG, &cfg, VHOST_USER_CONFIG_HDR_SIZE + 6, NULL, 0), 0);
    fe_reply(f, VHOST_USER_GET_CONFIG, &cfg, VHOST_USER_CONFIG_HDR_SIZE + 6, NULL);
    assert_memory_equal(cfg.payload, "\x52\x54\x00\x01\x02\x03", 6);
    /* Config beyond the device's space: empty reply. */
    cfg.offset = 4;
    cfg.size = 8;
    assert_int_equal(
        fe_req(f, VHOST_USER_GET_CONFIG, &cfg, VHOST_USER_CONFIG_HDR_SIZE + 8, NULL, 0), 0);
    fe_reply(f, VHOST_USER_GET_CONFIG, &cfg, 0, NULL);
    /* Dirty log: used-ring writes are logged once the ring runs with logging. */
    assert_int_equal(ftruncate(logfd, 4096), 0);
    assert_int_equal(fe_req(f, VHOST_USER_SET_LOG_BASE, &lg, sizeof(lg), &logfd, 1), 0);
    fe_reply(f, VHOST_USER_SET_LOG_BASE, &v, 8, NULL);
    bitmap = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, logfd, 0);
    assert_true(bitmap != MAP_FAILED);
    {
        struct vhost_user_vring_state st = {.index = 0};
        struct vhost_user_vring_addr a = {.index = 0,
                                          .flags = 1u << VHOST_VRING_F_LOG,
                                          .desc_user_addr = uva(DESC_GPA),
                                          .avail_user_addr = uva(AVAIL_GPA),
                                          .used_user_addr = uva(USED_GPA),
                                          .log_guest_addr = USED_GPA};
        struct virtq_elem e;
        uint64_t page;
        assert_int_equal(fe_req(f, VHOST_USER_GET_VRING_BASE, &st, sizeof(st), NULL, 0), 0);
        fe_reply(f, VHOST_USER_GET_VRING_BASE, &st, sizeof(st), NULL);
        assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), 0);
        v = 0;
        assert_int_equal(fe_req(f, VHOST_USER_SET_VRING_KICK, &v, 8, &f->memfd, 1), 0);
        assert_true(f->dev.vr[0].running);
        assert_non_null(vq0(f)->log);
        drv_desc(f, 2, BUF_GPA + 0x5000, 100, VIRTQ_DESC_F_WRITE, 0);
        drv_avail(f, 2);
        assert_int_equal(virtq_pop(vq0(f), &e), 1);
        memset(e.iov[0].base, 0xab, 10);
        virtq_log_elem_write(vq0(f), &e, 10);
        virtq_push(vq0(f), &e, 10);
        virtq_flush(vq0(f));
        page = USED_GPA / 4096;
        assert_true(bitmap[page / 8] & (1u << (page % 8)));
        page = (BUF_GPA + 0x5000) / 4096;
        assert_true(bitmap[page / 8] & (1u << (page % 8)));
        page = (BUF_GPA + 0x9000) / 4096; /* untouched */
        assert_false(bitmap[page / 8] & (1u << (page % 8)));
    }
    munmap(bitmap, 4096);
    close(logfd);
}

/* GET_INFLIGHT_FD for both queues: the region, mapped, sized for the packed layout (the
 * larger), which the device offers. */
static void *get_inflight(struct fx *f, int *fd, uint64_t *size)
{
    struct vhost_user_inflight inf = {.num_queues = 2, .queue_size = RING_NUM};
    uint8_t payload[24] = {0};
    void *p;

    memcpy(payload, &inf, sizeof(inf));
    assert_int_equal(fe_req(f, VHOST_USER_GET_INFLIGHT_FD, payload, 24, NULL, 0), 0);
    fe_reply(f, VHOST_USER_GET_INFLIGHT_FD, payload, 24, fd);
    memcpy(&inf, payload, sizeof(inf));
    assert_int_equal(inf.mmap_size, 2 * virtq_inflight_queue_size_packed(RING_NUM));
    assert_true(*fd >= 0);
    *size = inf.mmap_size;
    p = mmap(NULL, inf.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

static void test_inflight(void **state)
{
    struct fx *f = *state;
    struct vhost_user_inflight_queue *q;
    struct virtq_elem e;
    uint8_t payload[24] = {0};
    uint64_t size;
    int fd = -1;

    fe_start(f, 0, 0, 1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD);
    q = get_inflight(f, &fd, &size);
    assert_int_equal(q->desc_num, RING_NUM);
    drv_desc(f, 6, BUF_GPA, 20, 0, 0);
    drv_avail(f, 6);
    assert_int_equal(virtq_pop(vq0(f), &e), 1);
    assert_int_equal(q->desc[6].inflight, 1);
    assert_int_equal(virtq_inflight_pending(q, RING_NUM), 1);
    push_head(vq0(f), 6, 0);
    virtq_flush(vq0(f));
    assert_int_equal(q->desc[6].inflight, 0);
    assert_int_equal(q->used_idx, 1);
    /* Bad geometry is refused: no queues, more queues than the device has, no entries, and
     * (when the ring starts) fewer entries than the ring. */
    {
        static const struct {
            uint16_t nq, qs;
            int ret;
        } bad[] = {
            {0, RING_NUM, -EPROTO}, {3, RING_NUM, -EPROTO}, {2, 0, -EPROTO}, {2, 7, -EINVAL}};
        for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            struct vhost_user_inflight b = {.num_queues = bad[i].nq, .queue_size = bad[i].qs};
            memcpy(payload, &b, sizeof(b));
            assert_int_equal(fe_req(f, VHOST_USER_GET_INFLIGHT_FD, payload, 24, NULL, 0),
                             bad[i].ret);
        }
    }
    munmap(q, size);
    close(fd);
}

/* The card restarts: a new backend on a new connection, the frontend's memory unchanged. */
static void reconnect(struct fx *f)
{
    vu_dev_disconnect(&f->dev);
    close(f->sock[0]);
    memset(f->started, 0, sizeof(f->started));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f->sock), 0);
    vu_dev_init(&f->dev, "test", &f->ops, f);
    vu_dev_attach(&f->dev, f->sock[1]);
}

static void set_inflight(struct fx *f, int fd, uint64_t size)
{
    struct vhost_user_inflight inf = {.mmap_size = size, .num_queues = 2, .queue_size = RING_NUM};
    uint8_t payload[24] = {0};
    memcpy(payload, &inf, sizeof(inf));
    assert_int_equal(fe_req(f, VHOST_USER_SET_INFLIGHT_FD, payload, 24, &fd, 1), 0);
}

/* Packed inflight tracking (vhost-user "Inflight I/O tracking", packed virtqueue): each
 * popped chain's descriptors are copied into entries taken from the free list, the head in
 * flight; a flush returns published chains to the list; unpop gives entries back; after a
 * card restart the region, not the stale vring base, says where to resume. */
static void test_inflight_packed(void **state)
{
    struct fx *f = *state;
    const uint64_t packed = (1ull << VIRTIO_F_RING_PACKED) | (1ull << VIRTIO_RING_F_EVENT_IDX);
    struct pvirtq_desc *d = (struct pvirtq_desc *)gpa(f, DESC_GPA);
    struct vhost_user_inflight_queue_packed *q;
    struct virtq_elem e[4];
    uint64_t size;
    int fd = -1;

    fe_start(f, 0, packed, 1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD);
    q = get_inflight(f, &fd, &size);
    assert_int_equal(q->version, 1);
    assert_int_equal(q->desc_num, RING_NUM);
    assert_int_equal(q->free_head, 0);
    assert_int_equal(q->used_idx, 0);
    assert_int_equal(q->used_wrap_counter, 1);
    assert_ptr_equal(vq0(f)->pinflight, f->dev.inflight_addr); /* queue 0's region */

    /* A: two descriptors (slots 0, 1; ID 7); B: slot 2 (ID 5); C: slot 3 (ID 9). */
    pdrv_put(f, 1, BUF_GPA + 0x100, 100, 7, VIRTQ_DESC_F_WRITE, true);
    pdrv_put(f, 0, BUF_GPA, 8, 7, VIRTQ_DESC_F_NEXT, true);
    pdrv_put(f, 2, BUF_GPA + 0x200, 30, 5, 0, true);
    pdrv_put(f, 3, BUF_GPA + 0x300, 40, 9, 0, true);
    for (unsigned i = 0; i < 3; i++)
        assert_int_equal(virtq_pop(vq0(f), &e[i]), 1);
    assert_int_equal(q->desc[0].inflight, 1);
    assert_int_equal(q->desc[0].num, 2);
    assert_int_equal(q->desc[0].last, 1);
    assert_int_equal(q->desc[0].addr, BUF_GPA);
    assert_int_equal(q->desc[1].addr, BUF_GPA + 0x100);
    assert_int_equal(q->desc[1].len, 100);
    assert_int_equal(q->desc[1].id, 7);
    assert_true(q->desc[1].flags & VIRTQ_DESC_F_WRITE);
    assert_int_equal(q->desc[1].inflight, 0); /* not a head */
    assert_int_equal(q->desc[2].num, 1);
    assert_int_equal(q->desc[2].id, 5);
    assert_int_equal(q->desc[3].id, 9);
    assert_true(q->desc[0].counter < q->desc[2].counter);
    assert_true(q->desc[2].counter < q->desc[3].counter);
    assert_int_equal(q->free_head, 4);
    assert_int_equal(q->old_free_head, 4);
    /* C given back: its entry is free again, then taken again. */
    virtq_unpop(vq0(f), &e[2], 1);
    assert_int_equal(q->desc[3].inflight, 0);
    assert_int_equal(q->free_head, 3);
    assert_int_equal(virtq_pop(vq0(f), &e[2]), 1);
    assert_int_equal(e[2].islot, 3);
    assert_int_equal(q->desc[3].inflight, 1);

    /* A completes: nothing changes in the region before the flush publishes it. */
    virtq_push(vq0(f), &e[0], 50);
    assert_int_equal(q->desc[0].inflight, 1);
    assert_int_equal(q->free_head, 4);
    assert_int_equal(q->used_idx, 0);
    virtq_flush(vq0(f));
    assert_int_equal(d[0].flags, PVIRTQ_DESC_F_AVAIL | PVIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE);
    assert_int_equal(q->desc[0].inflight, 0);
    assert_int_equal(q->free_head, 0); /* A's two entries, then the rest */
    assert_int_equal(q->desc[1].next, 4);
    assert_int_equal(q->used_idx, 2);
    assert_int_equal(q->old_used_idx, 2);
    assert_int_equal(q->old_free_head, 0);
    /* D (slot 4) takes the entry A gave back. */
    pdrv_put(f, 4, BUF_GPA + 0x400, 10, 11, 0, true);
    assert_int_equal(virtq_pop(vq0(f), &e[3]), 1);
    assert_int_equal(e[3].islot, 0);
    assert_int_equal(q->desc[0].id, 11);
    assert_int_equal(q->free_head, 1);

    /* The card dies with B, C and D in flight. The frontend reconnects with a base from
     * before any of this (slot 0); the region says slot 2. */
    reconnect(f);
    fe_start(f, 0, packed, 1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD);
    set_inflight(f, fd, size);
    assert_ptr_not_equal(vq0(f)->pinflight, NULL);
    assert_int_equal(vq0(f)->last_avail_idx, 2);
    assert_int_equal(vq0(f)->used_idx, 2);
    assert_int_equal(q->free_head, 0); /* a fresh region from there */
    assert_int_equal(q->used_idx, 2);
    for (unsigned i = 0; i < RING_NUM; i++)
        assert_int_equal(q->desc[i].inflight, 0);
    assert_int_equal(virtq_pop(vq0(f), &e[0]), 1);
    assert_int_equal(e[0].head, 5); /* B again */
    assert_int_equal(virtq_pop(vq0(f), &e[1]), 1);
    assert_int_equal(e[1].head, 9); /* C */
    assert_int_equal(virtq_pop(vq0(f), &e[2]), 1);
    assert_int_equal(e[2].head, 11); /* D */
    assert_int_equal(virtq_pop(vq0(f), &e[3]), 0);

    /* The frontend scribbles over the region while the ring runs: tracking turns off,
     * the ring goes on. */
    q->free_head = 999;
    pdrv_put(f, 5, BUF_GPA, 8, 12, 0, true);
    assert_int_equal(virtq_pop(vq0(f), &e[3]), 1);
    assert_null(vq0(f)->pinflight);
    virtq_push(vq0(f), &e[3], 0);
    virtq_flush(vq0(f));

    /* After another restart an inconsistent region is set aside: the vring base rules. */
    reconnect(f);
    q->desc_num = RING_NUM; /* make it otherwise plausible */
    q->used_idx = RING_NUM + 1;
    fe_start(f, 0, packed, 1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD);
    set_inflight(f, fd, size);
    assert_int_equal(vq0(f)->last_avail_idx, 0);
    assert_int_equal(q->used_idx, 0);
    munmap(q, size);
    close(fd);
}

/* The recovery step by itself: a flush cut short after the region's used index moved is
 * completed when its first descriptor went out as used, rolled back when it did not; a
 * region whose free list loops or whose indices run past the ring is refused. */
static void test_inflight_packed_recover(void **state)
{
    size_t sz = virtq_inflight_queue_size_packed(RING_NUM);
    struct vhost_user_inflight_queue_packed *q = calloc(1, sz);
    struct pvirtq_desc ring[RING_NUM] = {0};
    uint16_t used;
    bool wrap;
    (void)state;

    assert_non_null(q);
    /* Two chains in flight at slots 2 and 3 (entries 0 and 1); the flush of the first was
     * cut short: used_idx 3 recorded, old_used_idx still 2. */
    virtq_inflight_init_packed(q, RING_NUM, 2, true);
    q->desc[0].inflight = q->desc[1].inflight = 1;
    q->desc[0].last = 0;
    q->desc[1].last = 1;
    q->free_head = q->old_free_head = 2;
    q->used_idx = 3;
    q->free_head = 0; /* entry 0 back on the list in the cut-short flush */
    q->desc[0].next = 2;
    ring[2].flags = PVIRTQ_DESC_F_AVAIL; /* still available: never went out */
    assert_int_equal(virtq_inflight_recover_packed(q, RING_NUM, ring, &used, &wrap), 2);
    assert_int_equal(used, 2);
    assert_true(wrap);
    /* Same, but the descriptor shows used: the flush is completed. */
    q->used_idx = 3;
    q->free_head = 0;
    ring[2].flags = PVIRTQ_DESC_F_AVAIL | PVIRTQ_DESC_F_USED;
    assert_int_equal(virtq_inflight_recover_packed(q, RING_NUM, ring, &used, &wrap), 1);
    assert_int_equal(used, 3);
    assert_int_equal(q->desc[0].inflight, 0);
    /* Inconsistent regions. */
    q->desc[3].next = 2;
    q->free_head = q->old_free_head = 2; /* 2 -> 3 -> 2 -> ... */
    q->used_idx = q->old_used_idx = 3;
    assert_int_equal(virtq_inflight_recover_packed(q, RING_NUM, ring, &used, &wrap), -EINVAL);
    virtq_inflight_init_packed(q, RING_NUM, 0, true);
    q->old_used_idx = RING_NUM;
    assert_int_equal(virtq_inflight_recover_packed(q, RING_NUM, ring, &used, &wrap), -EINVAL);
    virtq_inflight_init_packed(q, RING_NUM, 0, true);
    q->used_wrap_counter = 2;
    assert_int_equal(virtq_inflight_recover_packed(q, RING_NUM, ring, &used, &wrap), -EINVAL);
    virtq_inflight_init_packed(q, RING_NUM, 0, true);
    assert_int_equal(virtq_inflight_recover_packed(q, RING_NUM / 2, ring, &used, &wrap), -EINVAL);
    free(q);
}

/* Random messages (fixed seed) straight into the message handler: every one is
 * either handled or refused, none crashes (ASan/UBSan run this too). */
/* CONFIGURE_MEM_SLOTS: regions added and removed one at a time, rings restarted on the
 * new table, every malformed or impossible request refused. */
static void test_mem_slots(void **state)
{
    struct fx *f = *state;
    struct vhost_user_mem_single one = {0};
    struct virtq_elem e;
    const uint64_t xgpa = 0x10000000ull, xuva = 0x7f1300000000ull, xsize = 0x10000;
    int xfd = memfd_create("extra", 0);
    uint8_t *xmem;

    /* Not negotiated yet: refused. */
    assert_true(fe_req(f, VHOST_USER_GET_MAX_MEM_SLOTS, NULL, 0, NULL, 0) < 0);
    fe_start(f, 0, 0, 1ull << VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS);
    assert_int_equal(fe_get_u64(f, VHOST_USER_GET_MAX_MEM_SLOTS), VHOST_USER_MAX_MEM_REGIONS);
    assert_true(xfd >= 0);
    assert_int_equal(ftruncate(xfd, (off_t)xsize), 0);
    xmem = mmap(NULL, xsize, PROT_READ | PROT_WRITE, MAP_SHARED, xfd, 0);
    assert_true(xmem != MAP_FAILED);

    /* A buffer in memory the backend does not know yet: the chain is refused. */
    memcpy(xmem, "slot!", 6);
    drv_desc(f, 0, xgpa, 6, 0, 0);
    drv_avail(f, 0);
    assert_int_equal(virtq_pop(vq0(f), &e), -EINVAL);

    /* Add the region: the ring restarts on the new table and the chain is readable. */
    one.region.guest_phys_addr = xgpa;
    one.region.memory_size = xsize;
    one.region.userspace_addr = xuva;
    assert_int_equal(fe_req(f, VHOST_USER_ADD_MEM_REG, &one, sizeof(one), &xfd, 1), 0);
    assert_int_equal(f->started[0], 2);
    assert_true(f->dev.vr[0].running);
    assert_int_equal(f->dev.mem->nregions, 2);
    assert_int_equal(virtq_pop(vq0(f), &e), 1);
    assert_int_equal(e.out_len, 6);
    assert_string_equal((char *)e.iov[0].base, "slot!");
    virtq_push(vq0(f), &e, 0);
    virtq_flush(vq0(f));

    /* Refused: overlapping, without an fd, a file too short, and a ninth region. */
    one.region.guest_phys_addr = xgpa + 0x1000;
    assert_true(fe_req(f, VHOST_USER_ADD_MEM_REG, &one, sizeof(one), &xfd, 1) < 0);
    assert_true(fe_req(f, VHOST_USER_ADD_MEM_REG, &one, sizeof(one), NULL, 0) < 0);
    one.region.guest_phys_addr = 0x20000000ull;
    one.region.memory_size = 2 * xsize;
    assert_true(fe_req(f, VHOST_USER_ADD_MEM_REG, &one, sizeof(one), &xfd, 1) < 0);
    one.region.memory_size = xsize;
    for (unsigned i = 2; i < VHOST_USER_MAX_MEM_REGIONS; i++) {
        one.region.guest_phys_addr = 0x20000000ull + i * 0x100000ull;
        one.region.userspace_addr = 0x7f1400000000ull + i * 0x100000ull;
        assert_int_equal(fe_req(f, VHOST_USER_ADD_MEM_REG, &one, sizeof(one), &xfd, 1), 0);
    }
    assert_int_equal(f->dev.mem->nregions, VHOST_USER_MAX_MEM_REGIONS);
    one.region.guest_phys_addr = 0x30000000ull;
    assert_true(fe_req(f, VHOST_USER_ADD_MEM_REG, &one, sizeof(one), &xfd, 1) < 0);
    assert_int_equal(f->dev.mem->nregions, VHOST_USER_MAX_MEM_REGIONS);

    /* Remove: an unknown region is refused; the extra one goes (an fd, as older QEMUs
     * send, is ignored), and a chain into it is refused again. */
    one.region.guest_phys_addr = 0x30000000ull;
    assert_true(fe_req(f, VHOST_USER_REM_MEM_REG, &one, sizeof(one), NULL, 0) < 0);
    one.region.guest_phys_addr = xgpa;
    one.region.userspace_addr = xuva + 0x1000; /* gpa and size match, uva does not */
    assert_true(fe_req(f, VHOST_USER_REM_MEM_REG, &one, sizeof(one), NULL, 0) < 0);
    one.region.userspace_addr = xuva;
    assert_int_equal(fe_req(f, VHOST_USER_REM_MEM_REG, &one, sizeof(one), &xfd, 1), 0);
    assert_int_equal(f->dev.mem->nregions, VHOST_USER_MAX_MEM_REGIONS - 1);
    assert_true(f->dev.vr[0].running);
    drv_desc(f, 1, xgpa, 6, 0, 0);
    drv_avail(f, 1);
    assert_int_equal(virtq_pop(vq0(f), &e), -EINVAL);
    /* The rings' own memory stays mapped and usable. */
    memcpy(gpa(f, BUF_GPA), "still", 6);
    drv_desc(f, 2, BUF_GPA, 6, 0, 0);
    vq0(f)->last_avail_idx++; /* skip the refused chain, as a reset queue would */
    drv_avail(f, 2);
    assert_int_equal(virtq_pop(vq0(f), &e), 1);
    assert_string_equal((char *)e.iov[0].base, "still");
    munmap(xmem, xsize);
    close(xfd);
}

static void test_random_messages(void **state)
{
    struct fx *f = *state;
    unsigned seed = 12345;

    fe_start(f, 0, 0, 0);
    for (unsigned iter = 0; iter < 20000; iter++) {
        struct vu_msg msg, reply;
        bool has_reply;
        uint8_t *p = (uint8_t *)&msg.p;

        memset(&msg, 0, sizeof(msg));
        msg.hdr.request = (uint32_t)(rand_r(&seed) % (VHOST_USER_REQUEST_MAX + 4));
        msg.hdr.flags = VHOST_USER_VERSION | ((rand_r(&seed) & 1) ? VHOST_USER_FLAG_NEED_REPLY : 0);
        switch (rand_r(&seed) % 3) {
        case 0:
            msg.hdr.size = 8;
            break;
        case 1:
            msg.hdr.size = (uint32_t)(rand_r(&seed) % (VU_MAX_PAYLOAD + 1));
            break;
        default:
            msg.hdr.size = (uint32_t)(rand_r(&seed) % 48);
        }
        for (unsigned i = 0; i < msg.hdr.size; i++)
            p[i] = (uint8_t)rand_r(&seed);
        /* Small queue indices most of the time, so ring messages get past the index check. */
        if (rand_r(&seed) % 2)
            msg.p.state.index = (uint32_t)(rand_r(&seed) % 3);
        msg.nfds = 0;
        if (rand_r(&seed) % 8 == 0) {
            msg.fds[0] = dup(f->memfd);
            msg.nfds = 1;
        }
        vu_dev_process(&f->dev, &msg, &reply, &has_reply);
        vu_msg_close_fds(&msg);
        if (reply.nfds)
            close(reply.fds[0]);
    }
}

/* Random descriptor tables and avail rings: pop returns a chain inside guest memory,
 * nothing, or an error; never a pointer outside the shared memory. */
/* Every segment of a popped element lies in the backend's own mapping of the guest memory,
 * at the offset of its guest-physical address. */
static void assert_elem_in_memory(struct fx *f, const struct virtq_elem *e)
{
    const uint8_t *lo = f->dev.mem->r[0].host, *hi = lo + f->dev.mem->r[0].size;
    for (unsigned i = 0; i < (unsigned)(e->n_out + e->n_in); i++) {
        assert_true(e->iov[i].base >= lo);
        assert_true(e->iov[i].base + e->iov[i].len <= hi);
        assert_int_equal(e->iov[i].base - lo, e->iov[i].gpa - MEM_GPA);
    }
}

static void test_random_rings(void **state)
{
    struct fx *f = *state;
    struct virtq_desc *d = (struct virtq_desc *)gpa(f, DESC_GPA);
    struct virtq_avail *av = (struct virtq_avail *)gpa(f, AVAIL_GPA);
    unsigned seed = 777, popped = 0, errors = 0;

    fe_start(f, 0, 1ull << VIRTIO_RING_F_EVENT_IDX, 0);
    for (unsigned iter = 0; iter < 5000; iter++) {
        struct virtq_elem e;
        int ret;
        for (unsigned i = 0; i < RING_NUM; i++) {
            d[i].addr = (rand_r(&seed) % 4) ? BUF_GPA + (uint64_t)(rand_r(&seed) % 0x20000)
                                            : ((uint64_t)rand_r(&seed) << 20) ^ rand_r(&seed);
            d[i].len =
                (rand_r(&seed) % 4) ? (uint32_t)(rand_r(&seed) % 4096) : (uint32_t)rand_r(&seed);
            d[i].flags = (uint16_t)(rand_r(&seed) % 8);
            d[i].next = (uint16_t)(rand_r(&seed) % (RING_NUM + 2));
            av->ring[i] = (uint16_t)(rand_r(&seed) % (RING_NUM + 1));
        }
        av->idx = (uint16_t)(vq0(f)->last_avail_idx + rand_r(&seed) % (RING_NUM + 2));
        ret = virtq_pop(vq0(f), &e);
        if (ret == 1) {
            popped++;
            assert_elem_in_memory(f, &e);
        } else if (ret < 0) {
            errors++;
        }
        vq0(f)->last_avail_idx = av->idx; /* resynchronise for the next round */
    }
    /* Both outcomes occur, so the checks were really exercised. */
    assert_true(popped > 100);
    assert_true(errors > 100);
}

/* A random packed descriptor: mostly in memory, some an indirect table's size and place,
 * mostly marked available for wrap counter w. */
static void rand_pdesc(struct pvirtq_desc *t, unsigned *seed, bool w)
{
    t->addr = (rand_r(seed) % 4) ? BUF_GPA + (uint64_t)(rand_r(seed) % 0x20000)
                                 : ((uint64_t)rand_r(seed) << 20) ^ rand_r(seed);
    if (rand_r(seed) % 8 == 0)
        t->addr = BUF_GPA + 0x4000;
    t->len = (rand_r(seed) % 4) ? (uint32_t)(rand_r(seed) % 4096) : (uint32_t)rand_r(seed);
    if (rand_r(seed) % 4 == 0)
        t->len = 16u * (1 + rand_r(seed) % 4);
    t->id = (uint16_t)rand_r(seed);
    t->flags = (uint16_t)((rand_r(seed) % 8) |
                          ((rand_r(seed) % 4) ? (w ? 0x80 : 0x8000) : (rand_r(seed) & 0x8080)));
}

/* The same on a packed ring: random descriptors (flags with random AVAIL/USED bits too) and
 * indirect tables; every element popped lies inside guest memory and advances the ring by
 * as many slots as it says. */
static void test_random_packed_rings(void **state)
{
    struct fx *f = *state;
    struct pvirtq_desc *d = (struct pvirtq_desc *)gpa(f, DESC_GPA);
    struct pvirtq_desc *ind = (struct pvirtq_desc *)gpa(f, BUF_GPA + 0x4000);
    unsigned seed = 4242, popped = 0, errors = 0, empty = 0;
    struct virtq *vq;

    fe_start(f, 0, 1ull << VIRTIO_F_RING_PACKED, 0);
    vq = vq0(f);
    for (unsigned iter = 0; iter < 5000; iter++) {
        uint16_t at = vq->last_avail_idx;
        struct virtq_elem e;
        int ret;
        for (unsigned i = 0; i < RING_NUM; i++) {
            rand_pdesc(&d[i], &seed, vq->avail_wrap);
            rand_pdesc(&ind[i], &seed, vq->avail_wrap);
        }
        ret = virtq_pop(vq, &e);
        if (ret == 1) {
            popped++;
            assert_true(e.n_descs >= 1 && e.n_descs <= RING_NUM);
            assert_int_equal(vq->last_avail_idx, (at + e.n_descs) % RING_NUM);
            assert_elem_in_memory(f, &e);
        } else if (ret < 0) {
            errors++;
            assert_int_equal(vq->last_avail_idx, at); /* nothing consumed */
        } else {
            empty++;
        }
    }
    assert_true(popped > 100);
    assert_true(errors > 100);
    assert_true(empty > 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_handshake_and_ring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indirect_and_event_idx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_rings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_packed_ring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_packed_hostile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_ack_config_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inflight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inflight_packed, setup, teardown),
        cmocka_unit_test(test_inflight_packed_recover),
        cmocka_unit_test_setup_teardown(test_mem_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_rings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_packed_rings, setup, teardown),
    };
    log_init("test_vhost_user", LOG_LVL_ERROR);
    /* The random tests provoke thousands of (expected) error lines. */
    if (!getenv("QT_LOG"))
        log_set_level(LOG_LVL_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
