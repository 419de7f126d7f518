/* SPDX-License-Identifier: Apache-2.0 */
/*
 * io_uring data path. A request is split into extents through the driver's
 * map_io (cached metadata); plain host extents go on the ring, zero extents
 * are filled in place, backing extents are resolved down the chain.
 * Allocating writes that need no copy-on-write read reserve a cluster with
 * write_prepare, write the data on the ring and publish the L2 entry in
 * write_commit when the data has landed. What remains (copy-on-write from a
 * backing file or a shared/compressed cluster, compressed reads) runs through
 * the synchronous driver path.
 *
 * Completions (callbacks) are delivered only from qtimg_aio_poll(), never
 * from inside qtimg_aio_submit(). Ring submissions are batched: submit
 * queues, poll submits and reaps.
 */
#include "image/img_internal.h"
#include "common/log.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>

struct aio_cow;

struct aio_req {
    struct qtimg_aio *aio;
    qtimg_aio_cb cb;
    void *opaque;
    unsigned pending; /* ring operations not yet completed (+1 while submitting) */
    int ret;
    struct aio_req *next; /* free list or done list */
    struct aio_cow *cow;  /* set: the fill reads of a copy-on-write */
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
    struct qtimg *img; /* for the commit */
    struct img_ticket t;
    bool has_ticket;
    uint8_t *zero_tail; /* short read: zero from here */
    uint64_t want;
    uint8_t *free_buf; /* bounce buffer to free on completion */
    bool decrypt;      /* read of encrypted data: decrypt on completion */
    uint64_t host;
    struct aio_op *next_free;
};

struct qtimg_aio {
    struct qtimg *img;
    struct io_uring ring;
    unsigned depth;
    unsigned inflight; /* requests */
    unsigned sqes_queued;
    unsigned ops_on_ring;
    struct aio_req *reqs;
    struct aio_req *free_list;
    struct aio_req *done_head, *done_tail;
    struct aio_op *ops;
    struct aio_op *free_ops;
};

#define AIO_OPS_PER_REQ 8

int qtimg_aio_init(struct qtimg *img, unsigned depth, struct qtimg_aio **out)
{
    unsigned nops = depth * AIO_OPS_PER_REQ, entries;
    struct qtimg_aio *aio;
    int ret;

    if (depth == 0 || depth > 4096)
        return -EINVAL;
    aio = calloc(1, sizeof(*aio));
    if (!aio)
        return -ENOMEM;
    aio->img = img;
    aio->depth = depth;
    entries = nops < 64 ? 64 : nops;
    ret = io_uring_queue_init(entries, &aio->ring, 0);
    if (ret < 0) {
        log_err("image '%s': io_uring setup: %s", img->path, strerror(-ret));
        free(aio);
        return ret;
    }
    aio->reqs = calloc(depth, sizeof(*aio->reqs));
    aio->ops = calloc(nops, sizeof(*aio->ops));
    if (!aio->reqs || !aio->ops) {
        io_uring_queue_exit(&aio->ring);
        free(aio->reqs);
        free(aio->ops);
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

void qtimg_aio_fini(struct qtimg_aio *aio)
{
    if (!aio)
        return;
    while (aio->inflight)
        if (qtimg_aio_poll(aio, true) < 0)
            break;
    io_uring_queue_exit(&aio->ring);
    free(aio->reqs);
    free(aio->ops);
    free(aio);
}

unsigned qtimg_aio_inflight(const struct qtimg_aio *aio)
{
    return aio->inflight;
}

int qtimg_aio_fd(const struct qtimg_aio *aio)
{
    return aio->ring.ring_fd;
}

/* The request finished: queue it for delivery from poll. */
static void aio_req_finish(struct aio_req *r)
{
    struct qtimg_aio *aio = r->aio;

    r->next = NULL;
    if (aio->done_tail)
        aio->done_tail->next = r;
    else
        aio->done_head = r;
    aio->done_tail = r;
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

/* Queues one read or write; NULL op pool or ring: caller does it synchronously. */
static struct aio_op *aio_queue_rw(struct qtimg_aio *aio, struct aio_req *r, struct qtimg *img,
                                   bool write, void *buf, uint64_t len, uint64_t host)
{
    struct aio_op *op = aio->free_ops;
    struct io_uring_sqe *sqe;
    int fd = (img->data_fd != img->fd && aio_dio_ok(buf, len, host)) ? img->data_fd : img->fd;

    if (!op)
        return NULL;
    sqe = io_uring_get_sqe(&aio->ring);
    if (!sqe) {
        if (io_uring_submit(&aio->ring) < 0)
            return NULL;
        aio->sqes_queued = 0;
        sqe = io_uring_get_sqe(&aio->ring);
        if (!sqe)
            return NULL;
    }
    aio->free_ops = op->next_free;
    memset(op, 0, sizeof(*op));
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

/* Queues the reads for [off, off+len) of img (resolving the backing chain). */
static int aio_read_chain(struct qtimg_aio *aio, struct aio_req *r, struct qtimg *img, uint8_t *buf,
                          uint64_t len, uint64_t off)
{
    while (len) {
        struct img_ext ext = {0};
        uint64_t n = len;
        int ret;

        if (!img || off >= img->size) {
            memset(buf, 0, len);
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
            struct aio_op *op = aio_queue_rw(aio, r, img, false, buf, ext.len, ext.host_off);
            if (op) {
                op->decrypt = ext.crypt;
                op->host = ext.host_off;
                ret = 0;
            } else {
                ret = img_data_pread(img, buf, ext.len, ext.host_off);
                if (ret == 0 && ext.crypt)
                    ret = img->drv->crypt(img, false, ext.host_off, buf, ext.len);
            }
            break;
        }
        case IMG_EXT_ZERO:
            memset(buf, 0, ext.len);
            ret = 0;
            break;
        case IMG_EXT_BACKING:
            ret = aio_read_chain(aio, r, img->backing, buf, ext.len, off);
            break;
        default:
            ret = qtimg_pread(img, buf, ext.len, off);
            break;
        }
        if (ret < 0)
            return ret;
        buf += ext.len;
        off += ext.len;
        len -= ext.len;
    }
    return 0;
}

static int aio_reap(struct qtimg_aio *aio, bool wait);

static void aio_cow_free(struct aio_cow *c)
{
    free(c->bounce);
    free(c);
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
    if (ret == 0) {
        op = aio_queue_rw(aio, r, c->img, true, c->bounce, len, host);
        if (op) {
            op->t = c->t;
            op->has_ticket = true;
            op->free_buf = c->bounce;
            c->bounce = NULL;
            aio_cow_free(c);
            if (--r->pending == 0) /* the write op holds the request now */
                aio_req_finish(r);
            return;
        }
        ret = img_data_pwrite(c->img, c->bounce, len, host);
    }
    {
        int cr = c->img->drv->write_commit(c->img, &c->t, ret);
        if (ret == 0)
            ret = cr;
    }
    if (ret < 0 && r->ret == 0)
        r->ret = ret;
    aio_cow_free(c);
    if (--r->pending == 0)
        aio_req_finish(r);
}

/* Starts a copy-on-write allocation: user data into a bounce buffer, fill
 * reads queued; the write follows in aio_cow_reads_done. */
static int aio_cow_start(struct qtimg_aio *aio, struct aio_req *r, struct qtimg *img,
                         const struct img_ticket *t, const uint8_t *buf, uint64_t off, uint64_t n)
{
    uint64_t coff = off - t->guest_base, span = t->cow_hi - t->cow_lo;
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
        /* both sides come from the backing file: one read of the whole span
         * (as QEMU does), the data goes over it when the read is done */
        c->data = buf;
        c->data_off = coff - t->cow_lo;
        c->data_len = n;
        ret =
            aio_read_chain(aio, &c->sub, img->backing, c->bounce, span, t->guest_base + t->cow_lo);
        goto queued;
    }
    memcpy(c->bounce + (coff - t->cow_lo), buf, n);
    if (coff > t->cow_lo) {
        if (t->head_zero)
            memset(c->bounce, 0, coff - t->cow_lo);
        else
            ret = aio_read_chain(aio, &c->sub, img->backing, c->bounce, coff - t->cow_lo,
                                 t->guest_base + t->cow_lo);
    }
    if (ret == 0 && coff + n < t->cow_hi) {
        if (t->tail_zero)
            memset(c->bounce + (coff + n - t->cow_lo), 0, t->cow_hi - coff - n);
        else
            ret = aio_read_chain(aio, &c->sub, img->backing, c->bounce + (coff + n - t->cow_lo),
                                 t->cow_hi - coff - n, t->guest_base + coff + n);
    }
queued:
    if (ret < 0 && c->sub.ret == 0)
        c->sub.ret = ret;
    if (--c->sub.pending == 0)
        aio_cow_reads_done(aio, c);
    return 0;
}

/* Waits for every operation on the ring (completions are delivered later, from poll). */
static int aio_drain_others(struct qtimg_aio *aio)
{
    while (aio->ops_on_ring) {
        int ret = aio_reap(aio, true);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int aio_write(struct qtimg_aio *aio, struct aio_req *r, uint8_t *buf, uint64_t len,
                     uint64_t off)
{
    struct qtimg *img = aio->img;

    while (len) {
        struct img_ext ext = {0};
        struct img_ticket t = {0};
        bool has_ticket = false;
        int ret = img->drv->map_io(img, off, len, true, &ext);

        if (ret < 0)
            return ret;
        if (ext.len == 0 || ext.len > len)
            return -EIO;
        if (ext.kind != IMG_EXT_HOST && img->drv->write_prepare && aio->free_ops) {
            ret = img->drv->write_prepare(img, off, len, &ext, &t);
            if (ret == -EBUSY) {
                /* the cluster is being allocated by an earlier request */
                ret = aio_drain_others(aio);
                if (ret < 0)
                    return ret;
                continue;
            }
            if (ret < 0)
                return ret;
            has_ticket = ext.kind == IMG_EXT_HOST;
        }
        if (has_ticket && t.cow) {
            ret = aio_cow_start(aio, r, img, &t, buf, off, ext.len);
        } else if (ext.kind == IMG_EXT_HOST && ext.crypt) {
            /* in-place write of an encrypted image: encrypt a copy */
            uint8_t *bounce = NULL;
            struct aio_op *op = NULL;
            if (posix_memalign((void **)&bounce, IMG_DIO_ALIGN, ext.len))
                return -ENOMEM;
            memcpy(bounce, buf, ext.len);
            ret = img->drv->crypt(img, true, ext.host_off, bounce, ext.len);
            if (ret == 0)
                op = aio_queue_rw(aio, r, img, true, bounce, ext.len, ext.host_off);
            if (op) {
                op->free_buf = bounce;
            } else {
                if (ret == 0)
                    ret = img_data_pwrite(img, bounce, ext.len, ext.host_off);
                free(bounce);
            }
        } else if (ext.kind == IMG_EXT_HOST) {
            struct aio_op *op = aio_queue_rw(aio, r, img, true, buf, ext.len, ext.host_off);
            if (op) {
                op->t = t;
                op->has_ticket = has_ticket;
                ret = 0;
            } else {
                ret = img_data_pwrite(img, buf, ext.len, ext.host_off);
                if (has_ticket) {
                    int c = img->drv->write_commit(img, &t, ret);
                    if (ret == 0)
                        ret = c;
                }
            }
        } else {
            /* copy-on-write or metadata change: synchronous path; earlier
             * allocations must be published first */
            if (img->drv->write_prepare) {
                ret = aio_drain_others(aio);
                if (ret < 0)
                    return ret;
            }
            ret = qtimg_pwrite(img, buf, ext.len, off);
        }
        if (ret < 0)
            return ret;
        buf += ext.len;
        off += ext.len;
        len -= ext.len;
    }
    return 0;
}

int qtimg_aio_submit(struct qtimg_aio *aio, enum qtimg_aio_op op, void *buf, uint64_t len,
                     uint64_t off, qtimg_aio_cb cb, void *opaque)
{
    struct qtimg *img = aio->img;
    struct aio_req *r = aio->free_list;
    int ret;

    if (!r)
        return -EAGAIN;
    if (op != QTIMG_AIO_FLUSH && (off > img->size || len > img->size - off)) {
        log_err("image '%s': request [%llu, +%llu) past the end", img->path,
                (unsigned long long)off, (unsigned long long)len);
        return -EINVAL;
    }
    if (op == QTIMG_AIO_WRITE && img->read_only)
        return -EROFS;
    aio->free_list = r->next;
    memset(r, 0, sizeof(*r));
    r->aio = aio;
    r->cb = cb;
    r->opaque = opaque;
    aio->inflight++;
    r->pending = 1; /* held until submission finishes */
    switch (op) {
    case QTIMG_AIO_READ:
        ret = aio_read_chain(aio, r, img, buf, len, off);
        break;
    case QTIMG_AIO_WRITE:
        ret = aio_write(aio, r, buf, len, off);
        break;
    default:
        /* everything before the flush completes first */
        ret = aio_drain_others(aio);
        if (ret == 0)
            ret = qtimg_flush(img);
        break;
    }
    if (ret < 0)
        r->ret = ret;
    if (--r->pending == 0)
        aio_req_finish(r);
    return 0;
}

static void aio_op_done(struct qtimg_aio *aio, struct aio_op *op, int res)
{
    struct aio_req *r = op->req;
    int ret = res < 0 ? res : 0;

    if (res >= 0 && (uint64_t)res < op->want) {
        if (op->zero_tail) /* read past the end of the file: zeroes */
            memset(op->zero_tail + res, 0, op->want - (uint64_t)res);
        else
            ret = -EIO; /* short write */
    }
    if (ret == 0 && op->decrypt)
        ret = op->img->drv->crypt(op->img, false, op->host, op->zero_tail, op->want);
    if (op->has_ticket) {
        int c = op->img->drv->write_commit(op->img, &op->t, ret);
        if (ret == 0)
            ret = c;
    }
    if (ret < 0 && r->ret == 0)
        r->ret = ret;
    free(op->free_buf);
    op->next_free = aio->free_ops;
    aio->free_ops = op;
    aio->ops_on_ring--;
    if (--r->pending == 0) {
        if (r->cow)
            aio_cow_reads_done(aio, r->cow);
        else
            aio_req_finish(r);
    }
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
    while (io_uring_peek_cqe(&aio->ring, &cqe) == 0) {
        struct aio_op *op = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&aio->ring, cqe);
        if (op)
            aio_op_done(aio, op, res);
    }
    /* completions may have queued follow-up work (copy-on-write writes):
     * submit it now, so that a caller sleeping on the ring fd is woken */
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
