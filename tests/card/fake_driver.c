/* SPDX-License-Identifier: Apache-2.0 */
#include "fake_driver.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE    (8u << 20)
#define MEM_GPA     0x40000000ull
#define RING_OFF(q) (0x1000u + (q)*0x10000u)
#define RXBUF_OFF   0x100000u
#define TXBUF_OFF   0x500000u
#define TXBUF_SZ    0x2800u   /* 10 KiB per slot: header + jumbo frame */
#define BIGBUF_OFF  0x780000u /* one larger frame (a GSO frame) in flight at a time */
#define BIGBUF_SZ   0x11000u

static int fdrv_sendmsg(struct fdrv *d, uint32_t req, const void *p, uint32_t size, int fd)
{
    struct vhost_user_hdr h = {.request = req, .flags = VHOST_USER_VERSION, .size = size};
    struct iovec iov[2] = {{&h, sizeof(h)}, {(void *)p, size}};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = size ? 2 : 1};

    if (fd >= 0) {
        struct cmsghdr *c;
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof(ctl.buf);
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    return sendmsg(d->sock, &mh, 0) == (ssize_t)(sizeof(h) + size) ? 0 : -EIO;
}

static int fdrv_get_u64(struct fdrv *d, uint32_t req, uint64_t *v)
{
    struct {
        struct vhost_user_hdr h;
        uint64_t v;
    } __attribute__((packed)) r;
    size_t got = 0;

    if (fdrv_sendmsg(d, req, NULL, 0, -1))
        return -EIO;
    while (got < sizeof(r)) {
        ssize_t n = recv(d->sock, (char *)&r + got, sizeof(r) - got, 0);
        if (n <= 0)
            return -EIO;
        got += (size_t)n;
    }
    if (r.h.request != req || r.h.size != 8)
        return -EPROTO;
    *v = r.v;
    return 0;
}

/* GET_INFLIGHT_FD for our two queues: the reply carries the region's fd. */
static int fdrv_get_inflight(struct fdrv *d)
{
    struct vhost_user_inflight inf = {.num_queues = 2, .queue_size = FDRV_RING};
    struct {
        struct vhost_user_hdr h;
        uint8_t p[24];
    } __attribute__((packed)) r;
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {&r, sizeof(r)};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl)};
    struct cmsghdr *c;
    uint8_t payload[24] = {0};

    memcpy(payload, &inf, sizeof(inf));
    if (fdrv_sendmsg(d, VHOST_USER_GET_INFLIGHT_FD, payload, sizeof(payload), -1) ||
        recvmsg(d->sock, &mh, MSG_WAITALL) != (ssize_t)sizeof(r) ||
        r.h.request != VHOST_USER_GET_INFLIGHT_FD || !(c = CMSG_FIRSTHDR(&mh)) ||
        c->cmsg_type != SCM_RIGHTS)
        return -EPROTO;
    memcpy(&d->inflight_fd, CMSG_DATA(c), sizeof(int));
    memcpy(&inf, r.p, sizeof(inf));
    d->inflight_size = inf.mmap_size;
    d->inflight = mmap(NULL, inf.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, d->inflight_fd,
                       (off_t)inf.mmap_offset);
    if (d->inflight == MAP_FAILED) {
        d->inflight = NULL;
        return -errno;
    }
    return fdrv_sendmsg(d, VHOST_USER_SET_INFLIGHT_FD, r.p, sizeof(r.p), d->inflight_fd);
}

static uint64_t gpa_of(struct fdrv *d, const void *p)
{
    return MEM_GPA + (uint64_t)((const uint8_t *)p - d->mem);
}

static bool fdrv_packed(const struct fdrv *d)
{
    return d->features & FDRV_F_PACKED;
}

/* Packed: make one single-descriptor buffer available at the next slot. The flags go
 * last (release), which publishes the descriptor. */
static void fdrv_packed_put(struct fdrv_vq *q, uint64_t addr, uint32_t len, uint16_t id,
                            uint16_t flags)
{
    struct pvirtq_desc *pd = &q->pdesc[q->avail_idx];

    pd->addr = addr;
    pd->len = len;
    pd->id = id;
    flags |= q->avail_wrap ? PVIRTQ_DESC_F_AVAIL : PVIRTQ_DESC_F_USED;
    __atomic_store_n(&pd->flags, flags, __ATOMIC_RELEASE);
    if (++q->avail_idx == FDRV_RING) {
        q->avail_idx = 0;
        q->avail_wrap = !q->avail_wrap;
    }
}

/* Packed: the used descriptor at last_used, if the device has written it. */
static bool fdrv_packed_used(struct fdrv_vq *q, struct pvirtq_desc *out)
{
    struct pvirtq_desc *pd = &q->pdesc[q->last_used];
    uint16_t f = __atomic_load_n(&pd->flags, __ATOMIC_ACQUIRE);

    if (!!(f & PVIRTQ_DESC_F_AVAIL) != q->used_wrap || !!(f & PVIRTQ_DESC_F_USED) != q->used_wrap)
        return false;
    *out = *pd;
    if (++q->last_used == FDRV_RING) { /* every chain is one descriptor here */
        q->last_used = 0;
        q->used_wrap = !q->used_wrap;
    }
    return true;
}

/* Whether a used entry is waiting on queue q. */
static bool fdrv_has_used(struct fdrv *d, struct fdrv_vq *q)
{
    if (fdrv_packed(d)) {
        uint16_t f = __atomic_load_n(&q->pdesc[q->last_used].flags, __ATOMIC_ACQUIRE);
        return !!(f & PVIRTQ_DESC_F_AVAIL) == q->used_wrap &&
               !!(f & PVIRTQ_DESC_F_USED) == q->used_wrap;
    }
    return __atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE) != q->last_used;
}

static void fdrv_post_rx(struct fdrv *d, uint16_t id)
{
    struct fdrv_vq *q = &d->vq[0];
    if (fdrv_packed(d)) {
        q->posted[q->avail_idx] = id;
        fdrv_packed_put(q, MEM_GPA + RXBUF_OFF + (uint64_t)id * d->rx_buf_size, d->rx_buf_size, id,
                        VIRTQ_DESC_F_WRITE);
        return;
    }
    q->desc[id].addr = MEM_GPA + RXBUF_OFF + (uint64_t)id * d->rx_buf_size;
    q->desc[id].len = d->rx_buf_size;
    q->desc[id].flags = VIRTQ_DESC_F_WRITE;
    q->desc[id].next = 0;
    q->avail->ring[q->avail_idx % FDRV_RING] = id;
    q->avail_idx++;
    __atomic_store_n(&q->avail->idx, q->avail_idx, __ATOMIC_RELEASE);
}

int fdrv_connect(struct fdrv *d, const char *path, uint64_t features, uint32_t rx_buf_size)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct vhost_user_mem_table t = {.nregions = 1};
    uint64_t v, offered;

    memset(d, 0, sizeof(*d));
    d->inflight_fd = -1;
    d->rx_buf_size = rx_buf_size;
    d->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (d->sock < 0 || connect(d->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -errno;
    d->size = MEM_SIZE;
    d->memfd = memfd_create("fdrv-guest", MFD_CLOEXEC);
    if (d->memfd < 0 || ftruncate(d->memfd, (off_t)d->size) < 0)
        return -errno;
    d->mem = mmap(NULL, d->size, PROT_READ | PROT_WRITE, MAP_SHARED, d->memfd, 0);
    if (d->mem == MAP_FAILED)
        return -errno;
    if (fdrv_get_u64(d, VHOST_USER_GET_FEATURES, &offered))
        return -EIO;
    d->features = (features & offered) | (1ull << VIRTIO_F_VERSION_1) |
                  (1ull << VHOST_USER_F_PROTOCOL_FEATURES);
    d->hdr_len = VIRTIO_NET_HDR_LEN;
    fdrv_sendmsg(d, VHOST_USER_SET_OWNER, NULL, 0, -1);
    if (fdrv_get_u64(d, VHOST_USER_GET_PROTOCOL_FEATURES, &v))
        return -EIO;
    v &= (1ull << VHOST_USER_PROTOCOL_F_MQ) | (1ull << VHOST_USER_PROTOCOL_F_CONFIG) |
         ((features & FDRV_F_INFLIGHT) ? 1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD : 0);
    fdrv_sendmsg(d, VHOST_USER_SET_PROTOCOL_FEATURES, &v, 8, -1);
    fdrv_sendmsg(d, VHOST_USER_SET_FEATURES, &d->features, 8, -1);
    if ((features & FDRV_F_INFLIGHT) && fdrv_get_inflight(d))
        return -EPROTO;
    t.regions[0].guest_phys_addr = MEM_GPA;
    t.regions[0].memory_size = d->size;
    t.regions[0].userspace_addr = (uint64_t)(uintptr_t)d->mem;
    fdrv_sendmsg(d, VHOST_USER_SET_MEM_TABLE, &t, 8 + sizeof(t.regions[0]), d->memfd);
    for (unsigned i = 0; i < 2; i++) {
        struct fdrv_vq *q = &d->vq[i];
        uint8_t *base = d->mem + RING_OFF(i);
        struct vhost_user_vring_state st = {.index = i, .num = FDRV_RING};
        struct vhost_user_vring_addr a = {.index = i};
        uint64_t idx = i;

        q->desc = (void *)base;
        q->avail = (void *)(base + 0x1000);
        q->used = (void *)(base + 0x2000);
        if (fdrv_packed(d)) { /* descriptor ring, driver area, device area */
            q->pdesc = (void *)base;
            q->drv_ev = (void *)(base + 0x1000);
            q->dev_ev = (void *)(base + 0x2000);
            q->avail_wrap = q->used_wrap = true;
            st.num = FDRV_RING;
            if (d->features & FDRV_F_EVENT_IDX) /* notify at the first used slot */
                *q->drv_ev =
                    (struct pvirtq_event){.off_wrap = 1u << 15, .flags = PVIRTQ_EVENT_DESC};
        }
        a.desc_user_addr = (uint64_t)(uintptr_t)q->desc;
        a.avail_user_addr = (uint64_t)(uintptr_t)q->avail;
        a.used_user_addr = (uint64_t)(uintptr_t)q->used;
        a.log_guest_addr = gpa_of(d, q->used);
        q->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        q->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        fdrv_sendmsg(d, VHOST_USER_SET_VRING_NUM, &st, sizeof(st), -1);
        st.num = fdrv_packed(d) ? 1u << 15 : 0; /* packed: both wrap counters start at 1 */
        fdrv_sendmsg(d, VHOST_USER_SET_VRING_BASE, &st, sizeof(st), -1);
        fdrv_sendmsg(d, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), -1);
        fdrv_sendmsg(d, VHOST_USER_SET_VRING_CALL, &idx, 8, q->call_fd);
        fdrv_sendmsg(d, VHOST_USER_SET_VRING_KICK, &idx, 8, q->kick_fd);
    }
    for (uint16_t id = 0; id < FDRV_RING; id++)
        fdrv_post_rx(d, id);
    for (unsigned i = 0; i < 2; i++) {
        struct vhost_user_vring_state st = {.index = i, .num = 1};
        fdrv_sendmsg(d, VHOST_USER_SET_VRING_ENABLE, &st, sizeof(st), -1);
    }
    /* A reply-bearing request as a barrier: everything above has been processed. */
    return fdrv_get_u64(d, VHOST_USER_GET_FEATURES, &v);
}

void fdrv_close(struct fdrv *d)
{
    if (d->sock >= 0)
        close(d->sock);
    for (unsigned i = 0; i < 2; i++) {
        if (d->vq[i].kick_fd > 0)
            close(d->vq[i].kick_fd);
        if (d->vq[i].call_fd > 0)
            close(d->vq[i].call_fd);
    }
    if (d->mem && d->mem != MAP_FAILED)
        munmap(d->mem, d->size);
    if (d->inflight)
        munmap(d->inflight, d->inflight_size);
    if (d->inflight_fd > 0)
        close(d->inflight_fd);
    if (d->memfd > 0)
        close(d->memfd);
    memset(d, 0, sizeof(*d));
    d->sock = -1;
}

unsigned fdrv_tx_reclaim(struct fdrv *d)
{
    struct fdrv_vq *q = &d->vq[1];
    if (fdrv_packed(d)) {
        struct pvirtq_desc u;
        unsigned n = 0;
        uint16_t want = q->last_used;
        while (fdrv_packed_used(q, &u)) {
            if ((d->features & FDRV_F_IN_ORDER) && u.id != want)
                d->order_errors++;
            want = q->last_used;
            n++;
        }
        d->tx_inflight -= n;
        return n;
    }
    uint16_t u = __atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE);
    unsigned n = (uint16_t)(u - q->last_used);
    /* Transmit chains are made available slot by slot (id == slot). */
    if (d->features & FDRV_F_IN_ORDER)
        for (uint16_t i = q->last_used; i != u; i++)
            if (q->used->ring[i % FDRV_RING].id != i % FDRV_RING)
                d->order_errors++;
    q->last_used = u;
    return n;
}

static int fdrv_queue_tx(struct fdrv *d, const void *frame, uint32_t len,
                         const struct virtio_net_hdr_v1 *hdr)
{
    struct fdrv_vq *q = &d->vq[1];
    uint16_t slot;
    uint8_t *buf;

    if (len + d->hdr_len > BIGBUF_SZ)
        return -EMSGSIZE;
    fdrv_tx_reclaim(d);
    if (fdrv_packed(d) ? d->tx_inflight >= FDRV_RING
                       : (uint16_t)(q->avail_idx - q->last_used) >= FDRV_RING)
        return -ENOBUFS;
    slot = q->avail_idx % FDRV_RING;
    buf = d->mem + TXBUF_OFF + (size_t)slot * TXBUF_SZ;
    if (len + d->hdr_len > TXBUF_SZ)
        buf = d->mem + BIGBUF_OFF;
    memset(buf, 0, d->hdr_len);
    if (hdr)
        memcpy(buf, hdr, d->hdr_len);
    memcpy(buf + d->hdr_len, frame, len);
    if (fdrv_packed(d)) { /* id = slot: transmit buffers are used in ring order */
        fdrv_packed_put(q, gpa_of(d, buf), d->hdr_len + len, slot, 0);
        d->tx_inflight++;
        return 0;
    }
    q->desc[slot].addr = gpa_of(d, buf);
    q->desc[slot].len = d->hdr_len + len;
    q->desc[slot].flags = 0;
    q->avail->ring[slot] = slot;
    q->avail_idx++;
    return 0;
}

static void fdrv_kick(struct fdrv *d)
{
    uint64_t one = 1;
    if (!fdrv_packed(d))
        __atomic_store_n(&d->vq[1].avail->idx, d->vq[1].avail_idx, __ATOMIC_RELEASE);
    if (write(d->vq[1].kick_fd, &one, sizeof(one)) < 0)
        return;
}

int fdrv_send(struct fdrv *d, const void *frame, uint32_t len, const struct virtio_net_hdr_v1 *hdr)
{
    int ret = fdrv_queue_tx(d, frame, len, hdr);
    if (!ret)
        fdrv_kick(d);
    return ret;
}

int fdrv_send_burst(struct fdrv *d, const void *frame, uint32_t len, unsigned n)
{
    unsigned i;
    for (i = 0; i < n; i++)
        if (fdrv_queue_tx(d, frame, len, NULL))
            break;
    if (i)
        fdrv_kick(d);
    return (int)i;
}

int fdrv_queue_burst(struct fdrv *d, const void *frame, uint32_t len, unsigned n)
{
    unsigned i;
    for (i = 0; i < n; i++)
        if (fdrv_queue_tx(d, frame, len, NULL))
            break;
    if (i && !fdrv_packed(d))
        __atomic_store_n(&d->vq[1].avail->idx, d->vq[1].avail_idx, __ATOMIC_RELEASE);
    return (int)i;
}

unsigned fdrv_rx_recycle(struct fdrv *d)
{
    struct fdrv_vq *q = &d->vq[0];
    unsigned n = 0;

    if (fdrv_packed(d)) {
        struct pvirtq_desc u;
        while (fdrv_packed_used(q, &u)) {
            if (u.id < FDRV_RING)
                fdrv_post_rx(d, u.id);
            n++;
        }
        return n;
    }
    uint16_t u = __atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE);

    while (q->last_used != u) {
        uint32_t id = q->used->ring[q->last_used % FDRV_RING].id;
        q->last_used++;
        if (id < FDRV_RING)
            fdrv_post_rx(d, (uint16_t)id);
        n++;
    }
    return n;
}

int fdrv_send_frames(struct fdrv *d, const uint8_t *const *frames, const uint32_t *lens, unsigned n)
{
    unsigned i;
    for (i = 0; i < n; i++)
        if (fdrv_queue_tx(d, frames[i], lens[i], NULL))
            break;
    if (i)
        fdrv_kick(d);
    return (int)i;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int fdrv_recv(struct fdrv *d, uint8_t *buf, uint32_t cap, struct virtio_net_hdr_v1 *hdr,
              unsigned *nbufs, int timeout_ms)
{
    struct fdrv_vq *q = &d->vq[0];
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    struct virtio_net_hdr_v1 h;
    uint32_t got = 0, hdr_got = 0;
    unsigned nb = 1;

    for (;;) {
        if (fdrv_has_used(d, q))
            break;
        if (now_ms() >= end)
            return 0;
        usleep(200);
    }
    for (unsigned k = 0; k < nb; k++) {
        struct virtq_used_elem e;
        uint8_t *src;
        uint32_t len;
        while (!fdrv_has_used(d, q)) {
            if (now_ms() >= end)
                return -ETIMEDOUT;
            usleep(100);
        }
        if (fdrv_packed(d)) {
            struct pvirtq_desc u;
            uint16_t slot = q->last_used;
            fdrv_packed_used(q, &u);
            e.id = u.id;
            e.len = (u.flags & VIRTQ_DESC_F_WRITE) ? u.len : 0;
            if ((d->features & FDRV_F_IN_ORDER) && e.id != q->posted[slot]) {
                d->order_errors++;
                return -EPROTO;
            }
        } else {
            e = q->used->ring[q->last_used % FDRV_RING];
            if ((d->features & FDRV_F_IN_ORDER) &&
                e.id != q->avail->ring[q->last_used % FDRV_RING]) {
                d->order_errors++;
                return -EPROTO;
            }
            q->last_used++;
        }
        if (e.id >= FDRV_RING || e.len > d->rx_buf_size)
            return -EINVAL;
        src = d->mem + RXBUF_OFF + (size_t)e.id * d->rx_buf_size;
        len = e.len;
        if (hdr_got < d->hdr_len) {
            uint32_t hl = d->hdr_len - hdr_got < len ? d->hdr_len - hdr_got : len;
            memcpy((uint8_t *)&h + hdr_got, src, hl);
            hdr_got += hl;
            src += hl;
            len -= hl;
            if (hdr_got == d->hdr_len && (d->features & FDRV_F_MRG))
                nb = h.num_buffers ? h.num_buffers : 1;
        }
        if (got + len <= cap)
            memcpy(buf + got, src, len);
        got += len;
        fdrv_post_rx(d, (uint16_t)e.id);
    }
    /* Event idx: ask for a notification at the next used entry (interrupt-driven guest). */
    if (fdrv_packed(d))
        __atomic_store_n(&q->drv_ev->off_wrap,
                         (uint16_t)(q->last_used | (unsigned)q->used_wrap << 15), __ATOMIC_RELEASE);
    else
        q->avail->ring[FDRV_RING] = q->last_used;
    if (hdr)
        *hdr = h;
    if (nbufs)
        *nbufs = nb;
    return (int)got;
}

uint8_t *fdrv_rx_buf(struct fdrv *d, uint16_t id)
{
    return d->mem + RXBUF_OFF + (size_t)id * d->rx_buf_size;
}

unsigned fdrv_drain(struct fdrv *d)
{
    static uint8_t scratch[16384];
    unsigned n = 0;
    while (fdrv_recv(d, scratch, sizeof(scratch), NULL, NULL, 0) > 0)
        n++;
    return n;
}

uint64_t fdrv_calls(struct fdrv *d)
{
    uint64_t v = 0;
    if (read(d->vq[0].call_fd, &v, sizeof(v)) != sizeof(v))
        return 0;
    return v;
}

/* One queue's region: what is wrong, or NULL. The packed layout only (the tests that set up a
 * region run on packed rings; test_vhost_user covers the split one). */
static const char *fdrv_inflight_problem(const struct fdrv *d, unsigned i, bool *recorded)
{
    const struct vhost_user_inflight_queue_packed *q =
        (const void *)(d->inflight + i * virtq_inflight_queue_size_packed(FDRV_RING));
    bool seen[FDRV_RING] = {false};
    unsigned n = 0;

    if (!fdrv_packed(d))
        return "only packed rings' regions are checked";
    if (q->version != 1 || q->desc_num != FDRV_RING)
        return "region not set up";
    for (unsigned k = 0; k < FDRV_RING; k++) {
        if (q->desc[k].inflight)
            return "a chain is still in flight";
        *recorded |= q->desc[k].counter != 0;
    }
    for (uint16_t f = q->free_head; f < FDRV_RING; f = q->desc[f].next) {
        if (seen[f])
            return "the free list loops";
        seen[f] = true;
        n++;
    }
    if (n != FDRV_RING)
        return "entries missing from the free list";
    if (q->old_free_head != q->free_head || q->old_used_idx != q->used_idx ||
        q->old_used_wrap_counter != q->used_wrap_counter || q->used_idx >= FDRV_RING)
        return "not at a consistent point";
    return NULL;
}

int fdrv_inflight_check(const struct fdrv *d, int timeout_ms)
{
    const char *why = NULL;
    bool recorded = false;

    if (!d->inflight)
        return 0;
    for (int t = 0; t <= timeout_ms; t++) {
        recorded = false;
        why = fdrv_inflight_problem(d, 0, &recorded);
        if (!why)
            why = fdrv_inflight_problem(d, 1, &recorded);
        if (!why && !recorded)
            why = "no chain was ever recorded";
        if (!why)
            return 0;
        usleep(1000);
    }
    fprintf(stderr, "fake driver: inflight region: %s\n", why);
    return -1;
}
