/* SPDX-License-Identifier: Apache-2.0 */
/*
 * io_uring data path. A request is split into extents through the driver's
 * map_io (cached metadata); plain host extents go on the ring, zero extents
 * are filled in place, backing extents are resolved down the chain. Anything
 * that changes metadata (allocating writes) or needs a transform (compressed
 * clusters) runs through the synchronous driver path inline.
 */
#include "image/img_internal.h"
#include "common/log.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>

struct aio_req {
    struct qtimg_aio *aio;
    qtimg_aio_cb cb;
    void *opaque;
    unsigned pending; /* ring operations not yet completed */
    int ret;
    bool submitted_all;
    struct aio_req *next_free;
};

struct qtimg_aio {
    struct qtimg *img;
    struct io_uring ring;
    unsigned depth;
    unsigned inflight; /* requests */
    unsigned sqes_queued;
    struct aio_req *reqs;
    struct aio_req *free_list;
};

int qtimg_aio_init(struct qtimg *img, unsigned depth, struct qtimg_aio **out)
{
    struct qtimg_aio *aio;
    int ret;

    if (depth == 0 || depth > 4096)
        return -EINVAL;
    aio = calloc(1, sizeof(*aio));
    if (!aio)
        return -ENOMEM;
    aio->img = img;
    aio->depth = depth;
    /* a request may split into several ring operations */
    ret = io_uring_queue_init(depth * 4 < 64 ? 64 : depth * 4, &aio->ring, 0);
    if (ret < 0) {
        log_err("image '%s': io_uring setup: %s", img->path, strerror(-ret));
        free(aio);
        return ret;
    }
    aio->reqs = calloc(depth, sizeof(*aio->reqs));
    if (!aio->reqs) {
        io_uring_queue_exit(&aio->ring);
        free(aio);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < depth; i++) {
        aio->reqs[i].next_free = aio->free_list;
        aio->free_list = &aio->reqs[i];
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
    free(aio);
}

unsigned qtimg_aio_inflight(const struct qtimg_aio *aio)
{
    return aio->inflight;
}

static void aio_req_done(struct aio_req *r)
{
    struct qtimg_aio *aio = r->aio;
    qtimg_aio_cb cb = r->cb;
    void *opaque = r->opaque;
    int ret = r->ret;

    r->next_free = aio->free_list;
    aio->free_list = r;
    aio->inflight--;
    if (cb)
        cb(opaque, ret);
}

static int aio_queue_rw(struct qtimg_aio *aio, struct aio_req *r, int fd, bool write, void *buf,
                        uint64_t len, uint64_t off)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&aio->ring);

    if (!sqe) {
        int ret = io_uring_submit(&aio->ring);
        if (ret < 0)
            return ret;
        aio->sqes_queued = 0;
        sqe = io_uring_get_sqe(&aio->ring);
        if (!sqe)
            return -EAGAIN;
    }
    if (write)
        io_uring_prep_write(sqe, fd, buf, (unsigned)len, off);
    else
        io_uring_prep_read(sqe, fd, buf, (unsigned)len, off);
    io_uring_sqe_set_data(sqe, r);
    r->pending++;
    aio->sqes_queued++;
    return 0;
}

static bool aio_dio_ok(const void *buf, uint64_t len, uint64_t off)
{
    return ((uintptr_t)buf % IMG_DIO_ALIGN) == 0 && len % IMG_DIO_ALIGN == 0 &&
           off % IMG_DIO_ALIGN == 0;
}

/* Queues the reads for [off, off+len) of img (resolving the backing chain). */
static int aio_read_chain(struct qtimg_aio *aio, struct aio_req *r, struct qtimg *img, uint8_t *buf,
                          uint64_t len, uint64_t off)
{
    while (len) {
        struct img_ext ext;
        int ret;

        if (!img || off >= img->size) {
            memset(buf, 0, len);
            return 0;
        }
        {
            uint64_t n = len;
            if (n > img->size - off)
                n = img->size - off;
            ret = img->drv->map_io(img, off, n, false, &ext);
        }
        if (ret < 0)
            return ret;
        if (ext.len == 0)
            return -EIO;
        switch (ext.kind) {
        case IMG_EXT_HOST: {
            int fd = (img->data_fd != img->fd && aio_dio_ok(buf, ext.len, ext.host_off))
                         ? img->data_fd
                         : img->fd;
            ret = aio_queue_rw(aio, r, fd, false, buf, ext.len, ext.host_off);
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

static int aio_write(struct qtimg_aio *aio, struct aio_req *r, uint8_t *buf, uint64_t len,
                     uint64_t off)
{
    struct qtimg *img = aio->img;

    while (len) {
        struct img_ext ext;
        int ret = img->drv->map_io(img, off, len, true, &ext);
        if (ret < 0)
            return ret;
        if (ext.len == 0)
            return -EIO;
        if (ext.kind == IMG_EXT_HOST) {
            int fd = (img->data_fd != img->fd && aio_dio_ok(buf, ext.len, ext.host_off))
                         ? img->data_fd
                         : img->fd;
            ret = aio_queue_rw(aio, r, fd, true, buf, ext.len, ext.host_off);
        } else {
            /* allocation or metadata change: synchronous path */
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
    aio->free_list = r->next_free;
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
        /* drain what is on the ring, then flush metadata and data */
        while (aio->inflight > 1) {
            ret = qtimg_aio_poll(aio, true);
            if (ret < 0)
                break;
        }
        ret = qtimg_flush(img);
        break;
    }
    if (ret < 0)
        r->ret = ret;
    if (aio->sqes_queued) {
        int sr = io_uring_submit(&aio->ring);
        if (sr < 0 && r->ret == 0)
            r->ret = sr;
        aio->sqes_queued = 0;
    }
    if (--r->pending == 0)
        aio_req_done(r);
    return 0;
}

int qtimg_aio_poll(struct qtimg_aio *aio, bool wait)
{
    struct io_uring_cqe *cqe;
    int done = 0, ret;

    if (!aio->inflight)
        return 0;
    if (wait) {
        ret = io_uring_wait_cqe(&aio->ring, &cqe);
        if (ret < 0)
            return ret;
    }
    while (io_uring_peek_cqe(&aio->ring, &cqe) == 0) {
        struct aio_req *r = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&aio->ring, cqe);
        if (!r)
            continue;
        if (res < 0 && r->ret == 0)
            r->ret = res;
        /* short transfers: the file ends (reads past EOF are zero in qcow2) */
        if (--r->pending == 0) {
            aio_req_done(r);
            done++;
        }
    }
    return done;
}
