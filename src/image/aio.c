/* SPDX-License-Identifier: Apache-2.0 */
/*
 * io_uring data path. Nothing here blocks the calling (poll-mode) thread
 * once an image is open, apart from the exceptions listed in docs/qtimg.md.
 *
 * A request is split into extents through the driver's map_io (cached
 * metadata); host extents go on the ring, zero extents are filled in place,
 * backing extents are resolved down the chain, compressed clusters are read
 * on the ring and inflated on completion. Allocating writes reserve a
 * cluster with write_prepare, write the data on the ring (after the fill
 * reads of a copy-on-write, from the backing chain or from the cluster being
 * replaced) and publish the L2 entry in write_commit once the data landed.
 *
 * The driver runs in non-blocking mode while this file calls it
 * (img->nowait): where it would wait for metadata I/O it says what it needs
 * and returns -EWOULDBLOCK. The request is then parked with its progress:
 *   - IMG_NEED_READ: the table is read on the ring (one read shared by every
 *     request missing it), handed to meta_insert, and the requests resume;
 *   - IMG_NEED_ROOM: the cache is full of dirty tables; an asynchronous
 *     write-back runs and the request is retried when it is done;
 *   - IMG_NEED_RETRY: an allocation of the same cluster or ring slots are in
 *     flight; retried after the next completions.
 * A flush request starts once every request submitted before it has
 * completed, and runs on the ring (driver meta_flush: ordered table writes
 * and fdatasyncs; raw: one fdatasync); later requests proceed meanwhile.
 * Discard and write-zeroes step through the driver's zero_step (metadata in
 * the cache, parked like writes; partial parts written with zeroes through
 * the write path); raw images use IORING_OP_FALLOCATE.
 *
 * Completions (callbacks) are delivered only from qtimg_aio_poll(), never
 * from inside qtimg_aio_submit(). Ring submissions are batched: submit
 * queues, poll submits and reaps.
 */
#include "image/img_internal.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>

struct aio_cow;

struct aio_req {
    struct qtimg_aio *aio;
    qtimg_aio_cb cb;
    void *opaque;
    unsigned pending; /* ring operations and parked parts (+1 while submitting) */
    int ret;
    struct aio_req *next; /* free list, done list or flush queue */
    struct aio_cow *cow;  /* set: the fill reads of a copy-on-write */
    uint64_t seq;         /* submission order */
    bool active;          /* a read, write, discard or write-zeroes not yet completed */
    bool flush;
};

/* An allocating write that needs the data around it: fill reads, then one write. */
struct aio_cow {
    struct aio_req sub; /* the fill reads */
    struct aio_req *parent;
    struct qtimg *img;
    struct img_ticket t;
    uint8_t *bounce;
    const uint8_t *data; /* the caller's data, copied in after a whole-span read */
    uint64_t data_off, data_len;
};

/* One ring operation. */
struct aio_op {
    struct aio_req *req;
    struct qtimg *img;
    struct img_ticket t;
    bool has_ticket;
    bool pooled;
    uint8_t *zero_tail; /* short read: zero from here */
    uint64_t want;
    uint8_t *free_buf; /* bounce buffer to free on completion */
    bool decrypt;      /* read of encrypted data: decrypt on completion */
    int falloc;        /* raw discard (1) / write-zeroes (2): fallocate at host, want bytes */
    uint64_t host;
    /* compressed read: inflate free_buf, copy [coff, coff+dlen) to dst */
    bool inflate;
    uint8_t *dst;
    uint64_t coff, dlen, ulen;
    /* driver metadata I/O (no request) */
    bool meta;
    img_io_done meta_done;
    void *meta_arg;
    struct aio_op *next_free;
};

/* A request part waiting for metadata: resumes at (buf, len, off). */
enum aio_park_kind { AIO_PARK_READ, AIO_PARK_WRITE, AIO_PARK_DISCARD, AIO_PARK_ZERO };
struct aio_park {
    enum aio_park_kind kind;
    struct aio_req *r; /* holds one of its pending counts */
    struct qtimg *img; /* read: where in the chain */
    uint8_t *buf;
    uint64_t len, off;
    struct aio_park *next;
};

/* One table read on the ring, shared by the requests that miss it. */
struct aio_fetch {
    struct qtimg_aio *aio;
    struct img_need need;
    uint8_t *buf;
    struct aio_park *head, *tail;
    struct aio_fetch *next;
};

struct qtimg_aio {
    struct qtimg *img;
    struct io_uring ring;
    unsigned depth;
    unsigned inflight; /* requests */
    unsigned sqes_queued;
    unsigned ops_on_ring;
    unsigned tickets; /* allocations in flight */
    uint64_t seq;
    struct aio_req *reqs;
    struct aio_req *free_list;
    struct aio_req *done_head, *done_tail;
    struct aio_req *flush_head, *flush_tail;
    struct aio_op *ops;
    struct aio_op *free_ops;
    struct img_need need; /* filled by the driver in non-blocking mode */
    struct img_io io;     /* ring access handed to the driver */
    struct aio_fetch *fetches;
    struct aio_park *retry_head, *retry_tail; /* retried after any completion */
    struct aio_park *room_head, *room_tail;   /* retried after a write-back */
    bool kick;                                /* something completed: parked requests may proceed */
    bool meta_busy;                           /* a driver metadata flush / write-back is running */
    struct aio_req *meta_req;
    uint8_t *zbuf; /* zeroes written by write-zeroes (never written to) */
    uint64_t zbuf_len;
};

#define AIO_OPS_PER_REQ 8

static int aio_io_queue(void *ctx, struct qtimg *img, enum img_io_op op, void *buf, uint64_t len,
                        uint64_t off, img_io_done done, void *arg);

int qtimg_aio_init(struct qtimg *img, unsigned depth, struct qtimg_aio **out)
{
    unsigned nops = depth * AIO_OPS_PER_REQ, entries;
    struct qtimg_aio *aio;
    int ret;

    if (depth == 0 || depth > 4096)
        return -EINVAL;
    if (img->drv->aio_attach) {
        ret = img->drv->aio_attach(img);
        if (ret < 0)
            return ret;
    }
    aio = calloc(1, sizeof(*aio));
    if (!aio)
        return -ENOMEM;
    aio->img = img;
    aio->depth = depth;
    aio->io.ctx = aio;
    aio->io.queue = aio_io_queue;
    {
        struct qtimg_info info;
        aio->zbuf_len = 65536;
        if (qtimg_get_info(img, &info) == 0 && info.cluster_size > aio->zbuf_len)
            aio->zbuf_len = info.cluster_size;
        if (posix_memalign((void **)&aio->zbuf, IMG_DIO_ALIGN, aio->zbuf_len)) {
            free(aio);
            return -ENOMEM;
        }
        memset(aio->zbuf, 0, aio->zbuf_len);
    }
    entries = nops < 64 ? 64 : nops;
    ret = io_uring_queue_init(entries, &aio->ring, 0);
    if (ret < 0) {
        log_err("image '%s': io_uring setup: %s", img->path, strerror(-ret));
        free(aio->zbuf);
        free(aio);
        return ret;
    }
    aio->reqs = calloc(depth, sizeof(*aio->reqs));
    aio->ops = calloc(nops, sizeof(*aio->ops));
    if (!aio->reqs || !aio->ops) {
        io_uring_queue_exit(&aio->ring);
        free(aio->reqs);
        free(aio->ops);
        free(aio->zbuf);
        free(aio);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < depth; i++) {
        aio->reqs[i].next = aio->free_list;
        aio->free_list = &aio->reqs[i];
    }
    for (unsigned i = 0; i < nops; i++) {
        aio->ops[i].next_free = aio->free_ops;
        aio->free_ops = &aio->ops[i];
    }
    *out = aio;
    return 0;
}

static bool aio_busy(const struct qtimg_aio *aio)
{
    return aio->inflight || aio->ops_on_ring || aio->meta_busy || aio->fetches || aio->retry_head ||
           aio->room_head;
}

void qtimg_aio_fini(struct qtimg_aio *aio)
{
    if (!aio)
        return;
    while (aio_busy(aio)) {
        int ret = qtimg_aio_poll(aio, aio->ops_on_ring > 0);
        if (ret < 0)
            break;
        if (ret == 0 && aio_busy(aio) && !aio->ops_on_ring && !aio->sqes_queued &&
            !aio->meta_busy) {
            log_err("image '%s': %u requests stuck at queue teardown", aio->img->path,
                    aio->inflight);
            break;
        }
    }
    io_uring_queue_exit(&aio->ring);
    free(aio->reqs);
    free(aio->ops);
    free(aio->zbuf);
    free(aio);
}

unsigned qtimg_aio_inflight(const struct qtimg_aio *aio)
{
    /* metadata I/O of the queue's own (a write-back) counts as one */
    return aio->inflight + (aio->inflight == 0 && aio_busy(aio));
}

int qtimg_aio_fd(const struct qtimg_aio *aio)
{
    return aio->ring.ring_fd;
}

/* Non-blocking mode for every image of the chain while we call the drivers. */
static void aio_nowait(struct qtimg_aio *aio, bool on)
{
    for (struct qtimg *i = aio->img; i; i = i->backing)
        i->nowait = on ? &aio->need : NULL;
}

/* The request finished: queue it for delivery from poll. */
static void aio_req_finish(struct aio_req *r)
{
    struct qtimg_aio *aio = r->aio;

    r->active = false;
    r->next = NULL;
    if (aio->done_tail)
        aio->done_tail->next = r;
    else
        aio->done_head = r;
    aio->done_tail = r;
    aio->kick = true; /* a waiting flush may start */
}

static void aio_cow_reads_done(struct qtimg_aio *aio, struct aio_cow *c);

/* Drops one pending count of r. */
static void aio_req_put(struct qtimg_aio *aio, struct aio_req *r)
{
    if (--r->pending)
        return;
    if (r->cow)
        aio_cow_reads_done(aio, r->cow);
    else
        aio_req_finish(r);
}

static void aio_req_fail(struct aio_req *r, int ret)
{
    if (ret < 0 && r->ret == 0)
        r->ret = ret;
}

static int aio_deliver(struct qtimg_aio *aio)
{
    int n = 0;

    while (aio->done_head) {
        struct aio_req *r = aio->done_head;
        qtimg_aio_cb cb = r->cb;
        void *opaque = r->opaque;
        int ret = r->ret;

        aio->done_head = r->next;
        if (!aio->done_head)
            aio->done_tail = NULL;
        r->next = aio->free_list;
        aio->free_list = r;
        aio->inflight--;
        n++;
        if (cb)
            cb(opaque, ret);
    }
    return n;
}

static bool aio_dio_ok(const void *buf, uint64_t len, uint64_t off)
{
    return ((uintptr_t)buf % IMG_DIO_ALIGN) == 0 && len % IMG_DIO_ALIGN == 0 &&
           off % IMG_DIO_ALIGN == 0;
}

static struct io_uring_sqe *aio_get_sqe(struct qtimg_aio *aio)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&aio->ring);

    if (sqe)
        return sqe;
    if (io_uring_submit(&aio->ring) < 0)
        return NULL;
    aio->sqes_queued = 0;
    return io_uring_get_sqe(&aio->ring);
}

/* An op from the pool; must: from the heap when the pool is empty (a step
 * that cannot be parked, e.g. the write of a copy-on-write). */
static struct aio_op *aio_op_get(struct qtimg_aio *aio, bool must)
{
    struct aio_op *op = aio->free_ops;

    if (op) {
        aio->free_ops = op->next_free;
        memset(op, 0, sizeof(*op));
        op->pooled = true;
        return op;
    }
    return must ? calloc(1, sizeof(*op)) : NULL;
}

static void aio_op_put(struct qtimg_aio *aio, struct aio_op *op)
{
    if (op->pooled) {
        op->next_free = aio->free_ops;
        aio->free_ops = op;
    } else {
        free(op);
    }
}

/* Queues one read or write on fd for request r; NULL: no op slot or SQE (park). */
static struct aio_op *aio_queue_rw_fd(struct qtimg_aio *aio, struct aio_req *r, struct qtimg *img,
                                      int fd, bool write, void *buf, uint64_t len, uint64_t host,
                                      bool must)
{
    struct aio_op *op;
    struct io_uring_sqe *sqe;

    op = aio_op_get(aio, must);
    if (!op)
        return NULL;
    sqe = aio_get_sqe(aio);
    if (!sqe) {
        aio_op_put(aio, op);
        return NULL;
    }
    op->req = r;
    op->img = img;
    op->want = len;
    op->zero_tail = write ? NULL : buf;
    if (write)
        io_uring_prep_write(sqe, fd, buf, (unsigned)len, host);
    else
        io_uring_prep_read(sqe, fd, buf, (unsigned)len, host);
    io_uring_sqe_set_data(sqe, op);
    r->pending++;
    aio->sqes_queued++;
    aio->ops_on_ring++;
    return op;
}

/* The same on the image's file (its O_DIRECT fd when the request allows). */
static struct aio_op *aio_queue_rw(struct qtimg_aio *aio, struct aio_req *r, struct qtimg *img,
                                   bool write, void *buf, uint64_t len, uint64_t host, bool must)
{
    int fd = (img->data_fd != img->fd && aio_dio_ok(buf, len, host)) ? img->data_fd : img->fd;

    return aio_queue_rw_fd(aio, r, img, fd, write, buf, len, host, must);
}

/* Driver metadata I/O on fd. */
static int aio_io_queue_fd(struct qtimg_aio *aio, struct qtimg *img, int fd, enum img_io_op kind,
                           void *buf, uint64_t len, uint64_t off, img_io_done done, void *arg)
{
    struct aio_op *op = calloc(1, sizeof(*op));
    struct io_uring_sqe *sqe;

    if (!op)
        return -ENOMEM;
    sqe = aio_get_sqe(aio);
    if (!sqe) {
        free(op);
        return -EBUSY;
    }
    op->meta = true;
    op->meta_done = done;
    op->meta_arg = arg;
    op->img = img;
    switch (kind) {
    case IMG_IO_READ:
        io_uring_prep_read(sqe, fd, buf, (unsigned)len, off);
        break;
    case IMG_IO_WRITE:
        io_uring_prep_write(sqe, fd, buf, (unsigned)len, off);
        break;
    default:
        io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
        break;
    }
    io_uring_sqe_set_data(sqe, op);
    aio->sqes_queued++;
    aio->ops_on_ring++;
    return 0;
}

/* Driver metadata I/O on img->fd (struct img_io). */
static int aio_io_queue(void *ctx, struct qtimg *img, enum img_io_op kind, void *buf, uint64_t len,
                        uint64_t off, img_io_done done, void *arg)
{
    return aio_io_queue_fd(ctx, img, img->fd, kind, buf, len, off, done, arg);
}

/* Preallocation the driver asked for: fallocate on the ring, result unused. */
static void aio_queue_falloc(struct qtimg_aio *aio, struct qtimg *img)
{
    struct io_uring_sqe *sqe;
    struct aio_op *op;

    if (!img->falloc_len)
        return;
    op = calloc(1, sizeof(*op));
    sqe = op ? aio_get_sqe(aio) : NULL;
    if (sqe) {
        op->meta = true;
        io_uring_prep_fallocate(sqe, img->fd, 0, img->falloc_off, img->falloc_len);
        io_uring_sqe_set_data(sqe, op);
        aio->sqes_queued++;
        aio->ops_on_ring++;
    } else {
        free(op);
    }
    img->falloc_len = 0;
}

/* ---- parking ---- */

static void aio_fetch_done(void *arg, int res);

static void aio_list_add(struct aio_park **head, struct aio_park **tail, struct aio_park *p)
{
    p->next = NULL;
    if (*tail)
        (*tail)->next = p;
    else
        *head = p;
    *tail = p;
}

/* Parks the rest of a request part on what aio->need names. */
static int aio_park(struct qtimg_aio *aio, enum aio_park_kind kind, struct aio_req *r,
                    struct qtimg *img, uint8_t *buf, uint64_t len, uint64_t off)
{
    struct aio_park *p = calloc(1, sizeof(*p));
    struct img_need need = aio->need;

    if (!p)
        return -ENOMEM;
    memset(&aio->need, 0, sizeof(aio->need));
    p->kind = kind;
    p->r = r;
    p->img = img;
    p->buf = buf;
    p->len = len;
    p->off = off;
    r->pending++;
    if (need.kind == IMG_NEED_READ && need.img && need.img->drv->meta_insert) {
        struct aio_fetch *f;
        for (f = aio->fetches; f; f = f->next)
            if (f->need.img == need.img && f->need.table == need.table && f->need.off == need.off &&
                f->need.alt_fd == need.alt_fd && f->need.fd == need.fd)
                break;
        if (!f) {
            f = calloc(1, sizeof(*f));
            if (f && posix_memalign((void **)&f->buf, IMG_DIO_ALIGN, need.len) == 0) {
                f->aio = aio;
                f->need = need;
                if (aio_io_queue_fd(aio, need.img, need.alt_fd ? need.fd : need.img->fd,
                                    IMG_IO_READ, f->buf, need.len, need.off, aio_fetch_done,
                                    f) == 0) {
                    f->next = aio->fetches;
                    aio->fetches = f;
                } else {
                    free(f->buf);
                    free(f);
                    f = NULL;
                }
            } else {
                free(f);
                f = NULL;
            }
        }
        if (f) {
            if (f->tail)
                f->tail->next = p;
            else
                f->head = p;
            f->tail = p;
            return 0;
        }
        /* no memory for the read now: retry later */
    }
    if (need.kind == IMG_NEED_ROOM)
        aio_list_add(&aio->room_head, &aio->room_tail, p);
    else
        aio_list_add(&aio->retry_head, &aio->retry_tail, p);
    return 0;
}

static int aio_read_chain(struct qtimg_aio *aio, struct aio_req *r, struct qtimg *img, uint8_t *buf,
                          uint64_t len, uint64_t off, uint64_t *done);
static int aio_write(struct qtimg_aio *aio, struct aio_req *r, uint8_t *buf, uint64_t len,
                     uint64_t off, uint64_t *done);
static int aio_zero(struct qtimg_aio *aio, struct aio_req *r, uint64_t len, uint64_t off, bool zero,
                    uint64_t *done);

/* Reads [off, off+len) of img into buf for r; parks what cannot go on yet. */
static int aio_read_or_park(struct qtimg_aio *aio, struct aio_req *r, struct qtimg *img,
                            uint8_t *buf, uint64_t len, uint64_t off)
{
    uint64_t done = 0;
    int ret = aio_read_chain(aio, r, img, buf, len, off, &done);

    if (ret == -EWOULDBLOCK)
        ret = aio_park(aio, AIO_PARK_READ, r, img, buf + done, len - done, off + done);
    return ret;
}

static int aio_write_or_park(struct qtimg_aio *aio, struct aio_req *r, uint8_t *buf, uint64_t len,
                             uint64_t off)
{
    uint64_t done = 0;
    int ret = aio_write(aio, r, buf, len, off, &done);

    if (ret == -EWOULDBLOCK)
        ret = aio_park(aio, AIO_PARK_WRITE, r, aio->img, buf + done, len - done, off + done);
    return ret;
}

static int aio_zero_or_park(struct qtimg_aio *aio, struct aio_req *r, uint64_t len, uint64_t off,
                            bool zero)
{
    uint64_t done = 0;
    int ret = aio_zero(aio, r, len, off, zero, &done);

    if (ret == -EWOULDBLOCK)
        ret = aio_park(aio, zero ? AIO_PARK_ZERO : AIO_PARK_DISCARD, r, aio->img, NULL, len - done,
                       off + done);
    return ret;
}

static void aio_resume(struct qtimg_aio *aio, struct aio_park *p)
{
    int ret;

    switch (p->kind) {
    case AIO_PARK_READ:
        ret = aio_read_or_park(aio, p->r, p->img, p->buf, p->len, p->off);
        break;
    case AIO_PARK_WRITE:
        ret = aio_write_or_park(aio, p->r, p->buf, p->len, p->off);
        break;
    default:
        ret = aio_zero_or_park(aio, p->r, p->len, p->off, p->kind == AIO_PARK_ZERO);
        break;
    }

    aio_req_fail(p->r, ret);
    aio_req_put(aio, p->r);
    free(p);
}

static void aio_fetch_done(void *arg, int res)
{
    struct aio_fetch *f = arg;
    struct qtimg_aio *aio = f->aio;
    struct aio_park *p, *next;
    int ret = res < 0 ? res : 0;

    for (struct aio_fetch **pp = &aio->fetches; *pp; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    }
    if (ret == 0) {
        if ((uint64_t)res < f->need.len) /* past the end of the file */
            memset(f->buf + res, 0, f->need.len - (uint64_t)res);
        ret = f->need.img->drv->meta_insert(f->need.img, &f->need, f->buf);
        if (ret == 0)
            f->buf = NULL; /* the cache owns it */
    }
    free(f->buf);
    if (ret < 0 && ret != -EWOULDBLOCK)
        log_err("image '%s': reading metadata at 0x%llx: %s", f->need.img->path,
                (unsigned long long)f->need.off, strerror(-ret));
    for (p = f->head; p; p = next) {
        next = p->next;
        p->next = NULL;
        if (ret == -EWOULDBLOCK) {
            /* no room for it yet: retry after the write-back */
            aio_list_add(&aio->room_head, &aio->room_tail, p);
        } else if (ret < 0) {
            aio_req_fail(p->r, ret);
            aio_req_put(aio, p->r);
            free(p);
        } else {
            aio_resume(aio, p);
        }
    }
    free(f);
}

/* Resumes everything parked for a retry, once. */
static void aio_run_retries(struct qtimg_aio *aio)
{
    struct aio_park *p = aio->retry_head, *next;

    aio->retry_head = aio->retry_tail = NULL;
    aio->kick = false;
    for (; p; p = next) {
        next = p->next;
        p->next = NULL;
        aio_resume(aio, p);
    }
}

/* ---- flush and write-back ---- */

static void aio_meta_done(void *arg, int res)
{
    struct qtimg_aio *aio = arg;
    struct aio_req *r = aio->meta_req;

    aio->meta_busy = false;
    aio->meta_req = NULL;
    aio->kick = true;
    if (aio->room_head) { /* tables were written back: room for those waiting */
        if (aio->retry_tail)
            aio->retry_tail->next = aio->room_head;
        else
            aio->retry_head = aio->room_head;
        aio->retry_tail = aio->room_tail;
        aio->room_head = aio->room_tail = NULL;
    }
    if (res < 0)
        log_err("image '%s': %s: %s", aio->img->path, r ? "flush" : "metadata write-back",
                strerror(-res));
    if (r) {
        aio_req_fail(r, res < 0 ? res : 0);
        aio_req_put(aio, r);
    }
}

static uint64_t aio_oldest_active(const struct qtimg_aio *aio)
{
    uint64_t min = UINT64_MAX;

    for (unsigned i = 0; i < aio->depth; i++)
        if (aio->reqs[i].active && aio->reqs[i].seq < min)
            min = aio->reqs[i].seq;
    return min;
}

/* Starts the next flush request whose predecessors are all done, or the
 * write-back the driver asked for; one at a time. */
static void aio_meta_kick(struct qtimg_aio *aio)
{
    struct qtimg *img = aio->img;

    while (!aio->meta_busy) {
        struct aio_req *r = aio->flush_head;
        bool final;
        int ret;

        if (r && aio_oldest_active(aio) > r->seq) {
            aio->flush_head = r->next;
            if (!aio->flush_head)
                aio->flush_tail = NULL;
            r->next = NULL;
            final = true;
        } else if ((img->want_writeback || img->want_flush) && img->drv->meta_flush) {
            r = NULL;
            final = img->want_flush;
        } else {
            return;
        }
        aio->meta_busy = true;
        aio->meta_req = r;
        if (final)
            img->want_flush = false;
        img->want_writeback = false;
        ret = 0;
        if (img->read_only)
            aio_meta_done(aio, 0); /* nothing to write */
        else if (img->drv->meta_flush)
            ret = img->drv->meta_flush(img, &aio->io, final, aio_meta_done, aio);
        else
            ret = aio_io_queue(aio, img, IMG_IO_FDATASYNC, NULL, 0, 0, aio_meta_done, aio);
        if (ret < 0)
            aio_meta_done(aio, ret);
    }
}

/* ---- reads ---- */

/* Queues a compressed cluster read; inflated on completion. */
static int aio_queue_inflate(struct qtimg_aio *aio, struct aio_req *r, struct qtimg *img,
                             uint8_t *buf, const struct img_ext *ext)
{
    uint8_t *in = malloc(ext->clen);
    struct aio_op *op;

    if (!in)
        return -ENOMEM;
    op = aio_queue_rw(aio, r, img, false, in, ext->clen, ext->host_off, false);
    if (!op) {
        free(in);
        aio->need.kind = IMG_NEED_RETRY;
        return -EWOULDBLOCK;
    }
    op->free_buf = in;
    op->inflate = true;
    op->host = ext->host_off;
    op->dst = buf;
    op->coff = ext->coff;
    op->dlen = ext->len;
    op->ulen = ext->ulen;
    return 0;
}

/* Queues the reads for [off, off+len) of img (resolving the backing chain);
 * -EWOULDBLOCK with *done bytes handled when the rest has to wait. */
static int aio_read_chain(struct qtimg_aio *aio, struct aio_req *r, struct qtimg *img, uint8_t *buf,
                          uint64_t len, uint64_t off, uint64_t *done)
{
    *done = 0;
    while (len) {
        struct img_ext ext = {0};
        uint64_t n = len, sub = 0;
        int ret;

        if (!img || off >= img->size) {
            memset(buf, 0, len);
            *done += len;
            return 0;
        }
        if (n > img->size - off)
            n = img->size - off;
        ret = img->drv->map_io(img, off, n, false, &ext);
        if (ret < 0)
            return ret;
        if (ext.len == 0 || ext.len > n)
            return -EIO;
        switch (ext.kind) {
        case IMG_EXT_HOST: {
            struct aio_op *op =
                ext.alt_fd
                    ? aio_queue_rw_fd(aio, r, img, ext.fd, false, buf, ext.len, ext.host_off, false)
                    : aio_queue_rw(aio, r, img, false, buf, ext.len, ext.host_off, false);
            if (!op) {
                aio->need.kind = IMG_NEED_RETRY;
                return -EWOULDBLOCK;
            }
            op->decrypt = ext.crypt;
            op->host = ext.host_off;
            break;
        }
        case IMG_EXT_ZERO:
            memset(buf, 0, ext.len);
            break;
        case IMG_EXT_BACKING:
            ret = aio_read_chain(aio, r, img->backing, buf, ext.len, off, &sub);
            if (ret < 0) {
                *done += sub;
                return ret;
            }
            break;
        case IMG_EXT_COMPRESSED:
            ret = aio_queue_inflate(aio, r, img, buf, &ext);
            break;
        default:
            /* the synchronous path: it reports what is wrong (no key, ...) */
            aio_nowait(aio, false);
            ret = qtimg_pread(img, buf, ext.len, off);
            aio_nowait(aio, true);
            break;
        }
        if (ret < 0)
            return ret;
        buf += ext.len;
        off += ext.len;
        len -= ext.len;
        *done += ext.len;
    }
    return 0;
}

/* ---- writes ---- */

static void aio_cow_free(struct aio_cow *c)
{
    free(c->bounce);
    free(c);
}

static void aio_ticket_commit(struct qtimg_aio *aio, struct qtimg *img, const struct img_ticket *t,
                              struct aio_req *r, int ret)
{
    int c = img->drv->write_commit(img, t, ret);

    aio->tickets--;
    aio->kick = true;
    aio_req_fail(r, ret < 0 ? ret : c);
}

/* The fill reads are done: write the whole span, then publish. */
static void aio_cow_reads_done(struct qtimg_aio *aio, struct aio_cow *c)
{
    struct aio_req *r = c->parent;
    uint64_t len = c->t.cow_hi - c->t.cow_lo, host = c->t.host + c->t.cow_lo;
    struct aio_op *op;
    int ret = c->sub.ret;

    if (c->data)
        memcpy(c->bounce + c->data_off, c->data, c->data_len);
    if (ret == 0 && c->t.crypt)
        ret = c->img->drv->crypt(c->img, true, host, c->bounce, len);
    if (ret == 0) {
        op = aio_queue_rw(aio, r, c->img, true, c->bounce, len, host, true);
        if (op) {
            op->t = c->t;
            op->has_ticket = true;
            op->free_buf = c->bounce;
            c->bounce = NULL;
            aio_cow_free(c);
            aio_req_put(aio, r); /* the write op holds the request now */
            return;
        }
        ret = -EBUSY;
        log_err("image '%s': no room on the ring for a copy-on-write", c->img->path);
    }
    aio_ticket_commit(aio, c->img, &c->t, r, ret);
    aio_cow_free(c);
    aio_req_put(aio, r);
}

/* Starts a copy-on-write allocation: user data into a bounce buffer, fill
 * reads queued (from the backing chain, or from the image itself when the
 * cluster replaces a shared or compressed one); the write follows in
 * aio_cow_reads_done. */
static int aio_cow_start(struct qtimg_aio *aio, struct aio_req *r, struct qtimg *img,
                         const struct img_ticket *t, const uint8_t *buf, uint64_t off, uint64_t n)
{
    uint64_t coff = off - t->guest_base, span = t->cow_hi - t->cow_lo;
    struct qtimg *src = t->replace ? img : img->backing;
    struct aio_cow *c = calloc(1, sizeof(*c));
    int ret = 0;

    if (!c || posix_memalign((void **)&c->bounce, IMG_DIO_ALIGN, span)) {
        free(c);
        return -ENOMEM;
    }
    c->parent = r;
    c->img = img;
    c->t = *t;
    c->sub.aio = aio;
    c->sub.cow = c;
    c->sub.pending = 1; /* held while queueing */
    r->pending++;       /* the copy-on-write as a whole */
    if (coff > t->cow_lo && coff + n < t->cow_hi && !t->head_zero && !t->tail_zero) {
        /* both sides come from the source: one read of the whole span (as
         * QEMU does), the data goes over it when the read is done */
        c->data = buf;
        c->data_off = coff - t->cow_lo;
        c->data_len = n;
        ret = aio_read_or_park(aio, &c->sub, src, c->bounce, span, t->guest_base + t->cow_lo);
        goto queued;
    }
    memcpy(c->bounce + (coff - t->cow_lo), buf, n);
    if (coff > t->cow_lo) {
        if (t->head_zero)
            memset(c->bounce, 0, coff - t->cow_lo);
        else
            ret = aio_read_or_park(aio, &c->sub, src, c->bounce, coff - t->cow_lo,
                                   t->guest_base + t->cow_lo);
    }
    if (ret == 0 && coff + n < t->cow_hi) {
        if (t->tail_zero)
            memset(c->bounce + (coff + n - t->cow_lo), 0, t->cow_hi - coff - n);
        else
            ret = aio_read_or_park(aio, &c->sub, src, c->bounce + (coff + n - t->cow_lo),
                                   t->cow_hi - coff - n, t->guest_base + coff + n);
    }
queued:
    aio_req_fail(&c->sub, ret);
    aio_req_put(aio, &c->sub);
    return 0;
}

/* Queues a write of encrypted data (a copy, encrypted for its host offset). */
static int aio_write_crypt(struct qtimg_aio *aio, struct aio_req *r, struct qtimg *img,
                           const uint8_t *buf, const struct img_ext *ext,
                           const struct img_ticket *t, bool has_ticket)
{
    uint8_t *bounce = NULL;
    struct aio_op *op;
    int ret;

    if (posix_memalign((void **)&bounce, IMG_DIO_ALIGN, ext->len))
        return -ENOMEM;
    memcpy(bounce, buf, ext->len);
    ret = img->drv->crypt(img, true, ext->host_off, bounce, ext->len);
    if (ret < 0) {
        free(bounce);
        return ret;
    }
    op = aio_queue_rw(aio, r, img, true, bounce, ext->len, ext->host_off, true);
    if (!op) {
        free(bounce);
        return -EBUSY;
    }
    op->free_buf = bounce;
    op->t = *t;
    op->has_ticket = has_ticket;
    return 0;
}

static int aio_write(struct qtimg_aio *aio, struct aio_req *r, uint8_t *buf, uint64_t len,
                     uint64_t off, uint64_t *done)
{
    struct qtimg *img = aio->img;

    *done = 0;
    while (len) {
        struct img_ext ext = {0};
        struct img_ticket t = {0};
        bool has_ticket = false;
        int ret = img->drv->map_io(img, off, len, true, &ext);

        if (ret < 0)
            return ret;
        if (ext.len == 0 || ext.len > len)
            return -EIO;
        if (!aio->free_ops) {
            aio->need.kind = IMG_NEED_RETRY; /* ring slots */
            return -EWOULDBLOCK;
        }
        if (ext.kind != IMG_EXT_HOST && img->drv->write_prepare) {
            ret = img->drv->write_prepare(img, off, len, &ext, &t);
            if (ret == -EBUSY) {
                /* the cluster is being allocated by an earlier request */
                aio->need.kind = IMG_NEED_RETRY;
                return -EWOULDBLOCK;
            }
            if (ret < 0)
                return ret;
            aio_queue_falloc(aio, img);
            has_ticket = ext.kind == IMG_EXT_HOST;
            if (has_ticket)
                aio->tickets++;
        }
        if (has_ticket && t.cow) {
            ret = aio_cow_start(aio, r, img, &t, buf, off, ext.len);
            if (ret < 0)
                aio_ticket_commit(aio, img, &t, r, ret);
        } else if (ext.kind == IMG_EXT_HOST && (ext.crypt || t.crypt)) {
            ret = aio_write_crypt(aio, r, img, buf, &ext, &t, has_ticket);
            if (ret < 0 && has_ticket)
                aio_ticket_commit(aio, img, &t, r, ret);
        } else if (ext.kind == IMG_EXT_HOST) {
            struct aio_op *op =
                aio_queue_rw(aio, r, img, true, buf, ext.len, ext.host_off, has_ticket);
            if (op) {
                op->t = t;
                op->has_ticket = has_ticket;
            } else if (has_ticket) {
                aio_ticket_commit(aio, img, &t, r, -EBUSY);
                ret = -EBUSY;
            } else {
                aio->need.kind = IMG_NEED_RETRY;
                return -EWOULDBLOCK;
            }
        } else {
            /* the synchronous path: only what it refuses (no key, corrupt
             * image, unaligned encrypted request) and drivers without
             * write_prepare; earlier allocations are published first */
            if (aio->tickets) {
                aio->need.kind = IMG_NEED_RETRY;
                return -EWOULDBLOCK;
            }
            aio_nowait(aio, false);
            ret = qtimg_pwrite(img, buf, ext.len, off);
            aio_nowait(aio, true);
        }
        if (ret < 0)
            return ret;
        buf += ext.len;
        off += ext.len;
        len -= ext.len;
        *done += ext.len;
    }
    return 0;
}

/* ---- discard and write-zeroes ---- */

/* Writes zeroes over [off, off+len) through the write path (on the ring). */
static int aio_write_zeroes(struct qtimg_aio *aio, struct aio_req *r, uint64_t len, uint64_t off)
{
    while (len) {
        uint64_t n = len < aio->zbuf_len ? len : aio->zbuf_len;
        int ret = aio_write_or_park(aio, r, aio->zbuf, n, off);
        if (ret < 0)
            return ret;
        off += n;
        len -= n;
    }
    return 0;
}

/* Raw images: fallocate on the ring (punch a hole / zero the range). */
static int aio_queue_fallocate(struct qtimg_aio *aio, struct aio_req *r, bool zero, uint64_t len,
                               uint64_t off)
{
    struct qtimg *img = aio->img;
    struct aio_op *op = aio_op_get(aio, false);
    struct io_uring_sqe *sqe = op ? aio_get_sqe(aio) : NULL;

    if (!sqe) {
        if (op)
            aio_op_put(aio, op);
        aio->need.kind = IMG_NEED_RETRY;
        return -EWOULDBLOCK;
    }
    op->req = r;
    op->img = img;
    op->falloc = zero ? 2 : 1;
    op->host = off;
    op->want = len;
    io_uring_prep_fallocate(sqe, img->fd,
                            zero ? FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
                                 : FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                            off, len);
    io_uring_sqe_set_data(sqe, op);
    r->pending++;
    aio->sqes_queued++;
    aio->ops_on_ring++;
    return 0;
}

/* The fallocate of a raw discard / write-zeroes completed. */
static int aio_falloc_done(struct qtimg_aio *aio, struct aio_op *op, int res)
{
    if (res >= 0)
        return 0;
    if (res != -EOPNOTSUPP && res != -EINVAL && res != -ENOSYS)
        return res;
    if (op->falloc == 1)
        return 0; /* discard is advisory */
    /* the file system refuses: write the zeroes */
    return aio_write_zeroes(aio, op->req, op->want, op->host);
}

/* Discard (zero=false) or write-zeroes of [off, off+len); -EWOULDBLOCK with
 * *done bytes handled when the rest has to wait. */
static int aio_zero(struct qtimg_aio *aio, struct aio_req *r, uint64_t len, uint64_t off, bool zero,
                    uint64_t *done)
{
    struct qtimg *img = aio->img;

    *done = 0;
    if (!len)
        return 0;
    if (!img->drv->zero_step) {
        int ret = 0;
        if (img->drv->fmt == QTIMG_FMT_RAW)
            ret = aio_queue_fallocate(aio, r, zero, len, off);
        else if (zero)
            ret = aio_write_zeroes(aio, r, len, off);
        if (ret == 0)
            *done = len;
        return ret;
    }
    while (len) {
        uint64_t n = 0;
        bool wz = false;
        int ret;

        if (!aio->free_ops) {
            aio->need.kind = IMG_NEED_RETRY; /* ring slots */
            return -EWOULDBLOCK;
        }
        ret = img->drv->zero_step(img, off, len, zero, &n, &wz);
        if (ret == -EBUSY) {
            /* the cluster is being allocated by an earlier request */
            aio->need.kind = IMG_NEED_RETRY;
            return -EWOULDBLOCK;
        }
        if (ret < 0)
            return ret;
        if (n == 0 || n > len)
            return -EIO;
        if (wz) {
            ret = aio_write_zeroes(aio, r, n, off);
            if (ret < 0)
                return ret;
        }
        off += n;
        len -= n;
        *done += n;
    }
    return 0;
}

int qtimg_aio_submit(struct qtimg_aio *aio, enum qtimg_aio_op op, void *buf, uint64_t len,
                     uint64_t off, qtimg_aio_cb cb, void *opaque)
{
    struct qtimg *img = aio->img;
    struct aio_req *r = aio->free_list;
    int ret = 0;

    if (!r)
        return -EAGAIN;
    if (op != QTIMG_AIO_FLUSH && (off > img->size || len > img->size - off)) {
        log_err("image '%s': request [%llu, +%llu) past the end", img->path,
                (unsigned long long)off, (unsigned long long)len);
        return -EINVAL;
    }
    if (op != QTIMG_AIO_READ && op != QTIMG_AIO_FLUSH && img->read_only)
        return -EROFS;
    aio->free_list = r->next;
    memset(r, 0, sizeof(*r));
    r->aio = aio;
    r->cb = cb;
    r->opaque = opaque;
    r->seq = ++aio->seq;
    aio->inflight++;
    r->pending = 1; /* held until submission finishes (a flush: until it is done) */
    if (op == QTIMG_AIO_FLUSH) {
        r->flush = true;
        if (aio->flush_tail)
            aio->flush_tail->next = r;
        else
            aio->flush_head = r;
        aio->flush_tail = r;
        aio_meta_kick(aio);
        return 0;
    }
    r->active = true;
    aio_nowait(aio, true);
    if (op == QTIMG_AIO_READ)
        ret = aio_read_or_park(aio, r, img, buf, len, off);
    else if (op == QTIMG_AIO_WRITE)
        ret = aio_write_or_park(aio, r, buf, len, off);
    else
        ret = aio_zero_or_park(aio, r, len, off, op == QTIMG_AIO_WRITE_ZEROES);
    aio_nowait(aio, false);
    aio_req_fail(r, ret);
    aio_req_put(aio, r);
    aio_meta_kick(aio);
    return 0;
}

static void aio_op_done(struct qtimg_aio *aio, struct aio_op *op, int res)
{
    struct aio_req *r = op->req;
    int ret = res < 0 ? res : 0;

    aio->ops_on_ring--;
    aio->kick = true;
    if (op->meta) {
        img_io_done done = op->meta_done;
        void *arg = op->meta_arg;
        free(op);
        if (done)
            done(arg, res);
        return;
    }
    if (op->falloc) {
        aio_req_fail(r, aio_falloc_done(aio, op, res));
        aio_op_put(aio, op);
        aio_req_put(aio, r);
        return;
    }
    if (res >= 0 && (uint64_t)res < op->want) {
        if (op->zero_tail) /* read past the end of the file: zeroes */
            memset(op->zero_tail + res, 0, op->want - (uint64_t)res);
        else
            ret = -EIO; /* short write */
    }
    if (ret == 0 && op->decrypt)
        ret = op->img->drv->crypt(op->img, false, op->host, op->zero_tail, op->want);
    if (ret == 0 && op->inflate) {
        uint8_t *out = op->ulen >= op->coff + op->dlen ? malloc(op->ulen) : NULL;
        if (!out)
            ret = -ENOMEM;
        else
            ret = op->img->drv->inflate(op->img, op->free_buf, op->want, op->host, out);
        if (ret == 0)
            memcpy(op->dst, out + op->coff, op->dlen);
        free(out);
    }
    if (op->has_ticket)
        aio_ticket_commit(aio, op->img, &op->t, r, ret);
    else
        aio_req_fail(r, ret);
    free(op->free_buf);
    aio_op_put(aio, op);
    aio_req_put(aio, r);
}

static int aio_reap(struct qtimg_aio *aio, bool wait)
{
    struct io_uring_cqe *cqe;
    int ret;

    if (aio->sqes_queued || (wait && aio->ops_on_ring)) {
        ret = io_uring_submit_and_wait(&aio->ring, wait && aio->ops_on_ring ? 1 : 0);
        if (ret < 0 && ret != -EINTR)
            return ret;
        aio->sqes_queued = 0;
    }
    aio_nowait(aio, true);
    while (io_uring_peek_cqe(&aio->ring, &cqe) == 0) {
        struct aio_op *op = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&aio->ring, cqe);
        if (op)
            aio_op_done(aio, op, res);
    }
    if (aio->kick && aio->retry_head)
        aio_run_retries(aio);
    aio_nowait(aio, false);
    aio_meta_kick(aio);
    /* completions may have queued follow-up work (copy-on-write writes,
     * table reads, flush steps): submit it now, so that a caller sleeping on
     * the ring fd is woken */
    if (aio->sqes_queued) {
        ret = io_uring_submit(&aio->ring);
        if (ret < 0 && ret != -EINTR)
            return ret;
        aio->sqes_queued = 0;
    }
    return 0;
}

int qtimg_aio_poll(struct qtimg_aio *aio, bool wait)
{
    int ret = aio_reap(aio, wait && !aio->done_head);
    if (ret < 0)
        return ret;
    return aio_deliver(aio);
}
