/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-blk on a raw file or block device (virtio 1.2, section 5.2).
 *
 * Each queue has an I/O thread with its own io_uring. The thread waits on the
 * ring only: a POLL_ADD on the queue's kick eventfd (the ioeventfd the guest's
 * notify write signals), one on a stop eventfd, and the completions of the
 * reads, writes, fsyncs and fallocates it submitted for guest requests.
 */
#include "vmm/devices/virtio_blk.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/config.h"
#include "vmm/device.h"
#include "vmm/devices/devstate.h"

#define SECTOR_SHIFT 9
#define SECTOR_SIZE  512u

#define TAG_KICK ((uint64_t)-1)
#define TAG_STOP ((uint64_t)-2)

struct blk_req {
    struct blk_queue *bq;
    struct virtq_elem *elem;
    uint8_t *status;
    uint32_t type;
    uint64_t offset;
    uint64_t bytes;
    uint32_t used_len;
    uint32_t flags; /* discard / write-zeroes segment flags */
    bool zero_range_tried;
    int niov;
    struct iovec *iov;
    struct blk_req *next_free;
};

struct blk_queue {
    struct virtio_blk *blk;
    uint16_t index;
    struct io_uring ring;
    bool ring_ok;
    pthread_t thread;
    bool running;
    int stop_fd;
    uint32_t inflight;
    bool stopping;
    bool need_pop; /* requests left unpopped because every slot was busy */
    struct blk_req *reqs;
    struct blk_req *free;
};

static const char *blk_name(const struct virtio_blk *blk)
{
    return blk->vdev.name;
}

static void blk_stat_add(uint64_t *c, uint64_t v)
{
    __atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

/* ---- config space ---- */

static void blk_config_read(struct virtio_dev *vdev, uint32_t off, void *data, uint32_t len)
{
    struct virtio_blk *blk = vdev->priv;

    memcpy(data, (const uint8_t *)&blk->config + off, len);
}

static bool blk_features_ok(struct virtio_dev *vdev, uint64_t features)
{
    return true;
}

/* ---- requests ---- */

static void blk_req_complete(struct blk_req *req, uint8_t status)
{
    struct blk_queue *bq = req->bq;
    struct virtio_blk *blk = bq->blk;

    if (status != VIRTIO_BLK_S_OK)
        blk_stat_add(&blk->stats.errors, 1);
    *req->status = status;
    virtq_push(&blk->vdev.queues[bq->index].vq, req->elem->head, req->used_len + 1);
    req->next_free = bq->free;
    bq->free = req;
    bq->inflight--;
}

static struct io_uring_sqe *blk_get_sqe(struct blk_queue *bq)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&bq->ring);

    if (!sqe) {
        io_uring_submit(&bq->ring);
        sqe = io_uring_get_sqe(&bq->ring);
    }
    return sqe;
}

static bool blk_range_ok(struct virtio_blk *blk, uint64_t sector, uint64_t nsectors)
{
    return sector <= blk->capacity && nsectors <= blk->capacity - sector;
}

static bool blk_iov_aligned(const struct iovec *iov, int n)
{
    for (int i = 0; i < n; i++)
        if (((uintptr_t)iov[i].iov_base | iov[i].iov_len) & (SECTOR_SIZE - 1))
            return false;
    return true;
}

static int blk_submit_rw(struct blk_queue *bq, struct blk_req *req, bool is_write)
{
    struct virtio_blk *blk = bq->blk;
    struct io_uring_sqe *sqe = blk_get_sqe(bq);
    int fd = blk->fd;

    if (!sqe)
        return -EBUSY;
    /* O_DIRECT needs sector-aligned buffers; the guest's may not be. */
    if (blk->fd_buffered >= 0 && !blk_iov_aligned(req->iov, req->niov))
        fd = blk->fd_buffered;
    if (is_write)
        io_uring_prep_writev(sqe, fd, req->iov, (unsigned)req->niov, req->offset);
    else
        io_uring_prep_readv(sqe, fd, req->iov, (unsigned)req->niov, req->offset);
    io_uring_sqe_set_data(sqe, req);
    return 0;
}

static int blk_submit_fallocate(struct blk_queue *bq, struct blk_req *req, int mode)
{
    struct io_uring_sqe *sqe = blk_get_sqe(bq);

    if (!sqe)
        return -EBUSY;
    io_uring_prep_fallocate(sqe, bq->blk->fd, mode | FALLOC_FL_KEEP_SIZE, req->offset, req->bytes);
    io_uring_sqe_set_data(sqe, req);
    return 0;
}

/*
 * Start one request. Returns 1 when submitted, 0 when completed at once, or
 * -EIO when the request is malformed beyond a status reply (queue broken).
 */
static int blk_req_start(struct blk_queue *bq, struct blk_req *req)
{
    struct virtio_blk *blk = bq->blk;
    struct virtq_elem *elem = req->elem;
    struct virtq *vq = &blk->vdev.queues[bq->index].vq;
    struct virtio_blk_outhdr hdr;
    struct iovec *last;
    uint64_t data_len;
    int n;

    /* Header (16 readable bytes) and status (last writable byte) are mandatory. */
    if (elem->out_len < sizeof(hdr) || elem->in_num == 0) {
        virtq_fail(vq, "request %u has no %s", elem->head,
                   elem->in_num ? "16-byte header" : "writable status byte");
        return -EIO;
    }
    virtq_elem_read(elem, 0, &hdr, sizeof(hdr));
    last = &elem->iov[elem->out_num + elem->in_num - 1];
    req->status = (uint8_t *)last->iov_base + last->iov_len - 1;
    req->type = hdr.type;
    req->used_len = 0;
    req->zero_range_tried = false;

    switch (hdr.type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
        bool is_write = hdr.type == VIRTIO_BLK_T_OUT;

        if (is_write) {
            data_len = elem->out_len - sizeof(hdr);
            n = virtq_iov_slice(elem->iov, elem->out_num, sizeof(hdr), data_len, req->iov,
                                elem->iov_cap);
        } else {
            data_len = elem->in_len - 1;
            n = virtq_iov_slice(elem->iov + elem->out_num, elem->in_num, 0, data_len, req->iov,
                                elem->iov_cap);
        }
        if (n < 0 || data_len % SECTOR_SIZE ||
            !blk_range_ok(blk, hdr.sector, data_len >> SECTOR_SHIFT)) {
            log_debug("disk '%s': %s of %" PRIu64 " bytes at sector %" PRIu64
                      " refused (capacity %" PRIu64 " sectors)",
                      blk_name(blk), is_write ? "write" : "read", data_len, (uint64_t)hdr.sector,
                      blk->capacity);
            blk_req_complete(req, VIRTIO_BLK_S_IOERR);
            return 0;
        }
        if (is_write && blk->readonly) {
            blk_req_complete(req, VIRTIO_BLK_S_IOERR);
            return 0;
        }
        if (data_len == 0) {
            blk_req_complete(req, VIRTIO_BLK_S_OK);
            return 0;
        }
        req->niov = n;
        req->offset = hdr.sector << SECTOR_SHIFT;
        req->bytes = data_len;
        return blk_submit_rw(bq, req, is_write) < 0 ? -EBUSY : 1;
    }
    case VIRTIO_BLK_T_FLUSH: {
        struct io_uring_sqe *sqe = blk_get_sqe(bq);

        if (!sqe)
            return -EBUSY;
        io_uring_prep_fsync(sqe, blk->fd, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data(sqe, req);
        return 1;
    }
    case VIRTIO_BLK_T_GET_ID: {
        size_t len =
            elem->in_len - 1 < VIRTIO_BLK_ID_BYTES ? elem->in_len - 1 : VIRTIO_BLK_ID_BYTES;

        req->used_len = (uint32_t)virtq_elem_write(elem, 0, blk->serial, len);
        blk_req_complete(req, VIRTIO_BLK_S_OK);
        return 0;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES: {
        struct virtio_blk_discard_write_zeroes seg;
        bool discard = hdr.type == VIRTIO_BLK_T_DISCARD;
        uint32_t max =
            discard ? blk->config.max_discard_sectors : blk->config.max_write_zeroes_sectors;

        /* Exactly one segment: we advertise max_*_seg = 1. */
        if (elem->out_len != sizeof(hdr) + sizeof(seg)) {
            blk_req_complete(req, VIRTIO_BLK_S_UNSUPP);
            return 0;
        }
        virtq_elem_read(elem, sizeof(hdr), &seg, sizeof(seg));
        if (blk->readonly) {
            blk_req_complete(req, VIRTIO_BLK_S_IOERR);
            return 0;
        }
        if ((seg.flags & ~VIRTIO_BLK_WZ_FLAG_UNMAP) || (discard && seg.flags) ||
            seg.num_sectors > max || !blk_range_ok(blk, seg.sector, seg.num_sectors)) {
            blk_req_complete(req, discard && seg.flags ? VIRTIO_BLK_S_UNSUPP : VIRTIO_BLK_S_IOERR);
            return 0;
        }
        if (seg.num_sectors == 0) {
            blk_req_complete(req, VIRTIO_BLK_S_OK);
            return 0;
        }
        req->offset = seg.sector << SECTOR_SHIFT;
        req->bytes = (uint64_t)seg.num_sectors << SECTOR_SHIFT;
        req->flags = seg.flags;
        /* Write zeroes without permission to unmap keeps the blocks allocated. */
        if (discard || (seg.flags & VIRTIO_BLK_WZ_FLAG_UNMAP))
            return blk_submit_fallocate(bq, req, FALLOC_FL_PUNCH_HOLE) < 0 ? -EBUSY : 1;
        req->zero_range_tried = true;
        return blk_submit_fallocate(bq, req, FALLOC_FL_ZERO_RANGE) < 0 ? -EBUSY : 1;
    }
    default:
        blk_req_complete(req, VIRTIO_BLK_S_UNSUPP);
        return 0;
    }
}

/* An io_uring completion for req. Returns true when the request finished. */
static bool blk_req_done(struct blk_queue *bq, struct blk_req *req, int res)
{
    struct virtio_blk *blk = bq->blk;

    switch (req->type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT:
        if (res < 0 || (uint64_t)res != req->bytes) {
            log_warn("disk '%s': %s of %" PRIu64 " bytes at offset %" PRIu64 " failed (%d)",
                     blk_name(blk), req->type == VIRTIO_BLK_T_IN ? "read" : "write", req->bytes,
                     req->offset, res);
            blk_req_complete(req, VIRTIO_BLK_S_IOERR);
            return true;
        }
        if (req->type == VIRTIO_BLK_T_IN) {
            req->used_len = (uint32_t)req->bytes;
            blk_stat_add(&blk->stats.reads, 1);
            blk_stat_add(&blk->stats.read_bytes, req->bytes);
        } else {
            blk_stat_add(&blk->stats.writes, 1);
            blk_stat_add(&blk->stats.write_bytes, req->bytes);
        }
        break;
    case VIRTIO_BLK_T_FLUSH:
        if (res < 0) {
            log_warn("disk '%s': flush failed (%d)", blk_name(blk), res);
            blk_req_complete(req, VIRTIO_BLK_S_IOERR);
            return true;
        }
        blk_stat_add(&blk->stats.flushes, 1);
        break;
    case VIRTIO_BLK_T_WRITE_ZEROES:
        /* Files without ZERO_RANGE (tmpfs): a punched hole reads as zeroes too. */
        if (res == -EOPNOTSUPP && req->zero_range_tried) {
            req->zero_range_tried = false;
            if (blk_submit_fallocate(bq, req, FALLOC_FL_PUNCH_HOLE) == 0) {
                io_uring_submit(&bq->ring);
                return false;
            }
        }
        /* fall through */
    case VIRTIO_BLK_T_DISCARD:
        if (res < 0) {
            log_warn("disk '%s': %s of %" PRIu64 " bytes at offset %" PRIu64 " failed (%d)",
                     blk_name(blk), req->type == VIRTIO_BLK_T_DISCARD ? "discard" : "write-zeroes",
                     req->bytes, req->offset, res);
            blk_req_complete(req, VIRTIO_BLK_S_IOERR);
            return true;
        }
        blk_stat_add(
            req->type == VIRTIO_BLK_T_DISCARD ? &blk->stats.discards : &blk->stats.write_zeroes, 1);
        break;
    }
    blk_req_complete(req, VIRTIO_BLK_S_OK);
    return true;
}

/* Pop and start every available request. Returns true when something completed inline. */
static bool blk_queue_process(struct blk_queue *bq)
{
    struct virtq *vq = &bq->blk->vdev.queues[bq->index].vq;
    bool completed = false;

    bq->need_pop = false;
    while (!bq->stopping) {
        struct blk_req *req = bq->free;
        int ret;

        if (!req) {
            bq->need_pop = true;
            break;
        }
        ret = virtq_pop(vq, req->elem);
        if (ret <= 0)
            break;
        bq->free = req->next_free;
        bq->inflight++;
        ret = blk_req_start(bq, req);
        if (ret == 0)
            completed = true;
        else if (ret == -EBUSY)
            blk_req_complete(req, VIRTIO_BLK_S_IOERR), completed = true;
        else if (ret < 0) {
            /* Broken queue: give the slot back without touching the guest. */
            req->next_free = bq->free;
            bq->free = req;
            bq->inflight--;
            break;
        }
    }
    io_uring_submit(&bq->ring);
    return completed;
}

static int blk_arm_poll(struct blk_queue *bq, int fd, uint64_t tag)
{
    struct io_uring_sqe *sqe = blk_get_sqe(bq);

    if (!sqe)
        return -EBUSY;
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, tag);
    return 0;
}

static void *blk_queue_thread(void *arg)
{
    struct blk_queue *bq = arg;
    struct virtio_blk *blk = bq->blk;
    struct virtio_queue *q = &blk->vdev.queues[bq->index];
    bool notify;

    blk_arm_poll(bq, q->kick_fd, TAG_KICK);
    blk_arm_poll(bq, bq->stop_fd, TAG_STOP);
    notify = blk_queue_process(bq);
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        bool kicked = false;
        int ret;

        if (notify)
            virtio_dev_notify_queue(&blk->vdev, bq->index);
        notify = false;
        if (bq->stopping && bq->inflight == 0)
            break;
        ret = io_uring_submit_and_wait(&bq->ring, 1);
        if (ret < 0 && ret != -EINTR) {
            log_err("disk '%s': queue %u io_uring wait failed (%d)", blk_name(blk), bq->index, ret);
            virtio_dev_set_needs_reset(&blk->vdev);
            break;
        }
        io_uring_for_each_cqe(&bq->ring, head, cqe)
        {
            uint64_t tag = io_uring_cqe_get_data64(cqe);

            seen++;
            if (tag == TAG_KICK) {
                kicked = true;
            } else if (tag == TAG_STOP) {
                bq->stopping = true;
            } else {
                notify |= blk_req_done(bq, (struct blk_req *)(uintptr_t)tag, cqe->res);
            }
        }
        io_uring_cq_advance(&bq->ring, seen);
        if (kicked) {
            uint64_t v;

            if (read(q->kick_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                log_debug("disk '%s': reading kick fd failed", blk_name(blk));
            blk_arm_poll(bq, q->kick_fd, TAG_KICK);
        }
        if ((kicked || bq->need_pop) && !bq->stopping)
            notify |= blk_queue_process(bq);
    }
    return NULL;
}

static void blk_queue_stop(struct blk_queue *bq)
{
    uint64_t one = 1;

    if (!bq->running)
        return;
    if (write(bq->stop_fd, &one, sizeof(one)) != sizeof(one))
        log_err("disk '%s': cannot stop queue %u", blk_name(bq->blk), bq->index);
    pthread_join(bq->thread, NULL);
    bq->running = false;
    io_uring_queue_exit(&bq->ring);
    bq->ring_ok = false;
    close(bq->stop_fd);
    bq->stop_fd = -1;
    for (uint32_t i = 0; bq->reqs && i < bq->blk->vdev.queues[bq->index].size; i++) {
        free(bq->reqs[i].elem);
        free(bq->reqs[i].iov);
    }
    free(bq->reqs);
    bq->reqs = NULL;
    bq->free = NULL;
}

static int blk_queue_start(struct virtio_blk *blk, uint16_t index)
{
    struct blk_queue *bq = &blk->queues[index];
    uint16_t size = blk->vdev.queues[index].size;
    int ret;

    *bq = (struct blk_queue){.blk = blk, .index = index, .stop_fd = -1};
    bq->reqs = calloc(size, sizeof(*bq->reqs));
    if (!bq->reqs)
        return -ENOMEM;
    for (uint32_t i = 0; i < size; i++) {
        struct blk_req *req = &bq->reqs[i];

        req->bq = bq;
        req->elem = virtq_elem_alloc(size);
        req->iov = calloc(size, sizeof(struct iovec));
        if (!req->elem || !req->iov) {
            ret = -ENOMEM;
            goto fail;
        }
        req->next_free = bq->free;
        bq->free = req;
    }
    bq->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (bq->stop_fd < 0) {
        ret = -errno;
        goto fail;
    }
    ret = io_uring_queue_init(size + 8u, &bq->ring, 0);
    if (ret < 0) {
        log_err("disk '%s': io_uring for queue %u failed (%d)", blk_name(blk), index, ret);
        goto fail;
    }
    bq->ring_ok = true;
    ret = -pthread_create(&bq->thread, NULL, blk_queue_thread, bq);
    if (ret < 0)
        goto fail;
    bq->running = true;
    return 0;
fail:
    if (bq->ring_ok)
        io_uring_queue_exit(&bq->ring);
    if (bq->stop_fd >= 0)
        close(bq->stop_fd);
    for (uint32_t i = 0; i < size; i++) {
        free(bq->reqs[i].elem);
        free(bq->reqs[i].iov);
    }
    free(bq->reqs);
    bq->reqs = NULL;
    return ret;
}

static void blk_reset(struct virtio_dev *vdev)
{
    struct virtio_blk *blk = vdev->priv;

    for (uint16_t q = 0; q < vdev->num_queues; q++)
        blk_queue_stop(&blk->queues[q]);
}

static int blk_activate(struct virtio_dev *vdev)
{
    struct virtio_blk *blk = vdev->priv;
    int ret;

    for (uint16_t q = 0; q < vdev->num_queues; q++) {
        if (!vdev->queues[q].enabled)
            continue;
        ret = blk_queue_start(blk, q);
        if (ret < 0) {
            blk_reset(vdev);
            return ret;
        }
    }
    return 0;
}

static const struct virtio_dev_ops blk_ops = {
    .activate = blk_activate,
    .reset = blk_reset,
    .config_read = blk_config_read,
    .features_ok = blk_features_ok,
};

/* ---- creation ---- */

static int blk_open(struct virtio_blk *blk, const struct disk_config *dc)
{
    int flags = (dc->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    struct stat st;
    uint64_t size;

    blk->fd = open(dc->path, flags | (dc->direct ? O_DIRECT : 0));
    if (blk->fd < 0) {
        int err = -errno;

        log_err("disk '%s': cannot open (%s)", dc->path, strerror(errno));
        return err;
    }
    if (dc->direct) {
        blk->fd_buffered = open(dc->path, flags);
        if (blk->fd_buffered < 0) {
            log_err("disk '%s': cannot open (%s)", dc->path, strerror(errno));
            return -errno;
        }
    }
    if (fstat(blk->fd, &st) < 0)
        return -errno;
    if (S_ISBLK(st.st_mode)) {
        if (ioctl(blk->fd, BLKGETSIZE64, &size) < 0) {
            log_err("disk '%s': cannot read block device size (%s)", dc->path, strerror(errno));
            return -errno;
        }
    } else if (S_ISREG(st.st_mode)) {
        size = (uint64_t)st.st_size;
    } else {
        log_err("disk '%s': not a regular file or block device", dc->path);
        return -EINVAL;
    }
    if (size % SECTOR_SIZE)
        log_warn("disk '%s': size %" PRIu64 " is not a multiple of 512; the last %" PRIu64
                 " bytes are not visible to the guest",
                 dc->path, size, size % SECTOR_SIZE);
    blk->capacity = size >> SECTOR_SHIFT;
    return 0;
}

int virtio_blk_create(struct vm *vm, const struct disk_config *dc, int index,
                      struct virtio_blk **out)
{
    struct virtio_blk *blk = calloc(1, sizeof(*blk));
    uint16_t nq = dc->num_queues ? (uint16_t)dc->num_queues : 1;
    uint16_t qsize = dc->queue_size ? (uint16_t)dc->queue_size : 256;
    uint64_t features;
    char name[32];
    int ret;

    if (!blk)
        return -ENOMEM;
    blk->fd = blk->fd_buffered = -1;
    if (!dc->path || nq > VIRTIO_BLK_MAX_QUEUES || qsize < 4 || qsize > 1024) {
        log_err("disk %d ('%s'): need a path, 1-%d queues and a queue size of 4-1024", index,
                dc->path ? dc->path : "", VIRTIO_BLK_MAX_QUEUES);
        ret = -EINVAL;
        goto fail;
    }
    snprintf(blk->path, sizeof(blk->path), "%s", dc->path);
    blk->queues = calloc(nq, sizeof(*blk->queues));
    if (!blk->queues) {
        ret = -ENOMEM;
        goto fail;
    }
    ret = blk_open(blk, dc);
    if (ret < 0)
        goto fail;
    blk->readonly = dc->readonly;
    memset(blk->serial, 0, sizeof(blk->serial));
    if (dc->serial)
        memcpy(blk->serial, dc->serial, strnlen(dc->serial, sizeof(blk->serial)));

    blk->config.capacity = blk->capacity;
    blk->config.seg_max = qsize - 2u;
    blk->config.blk_size = SECTOR_SIZE;
    blk->config.num_queues = nq;
    blk->config.max_discard_sectors = VIRTIO_BLK_MAX_DISCARD_SECTORS;
    blk->config.max_discard_seg = 1;
    blk->config.discard_sector_alignment = 8;
    blk->config.max_write_zeroes_sectors = VIRTIO_BLK_MAX_DISCARD_SECTORS;
    blk->config.max_write_zeroes_seg = 1;
    blk->config.write_zeroes_may_unmap = 1;
    features =
        (1ull << VIRTIO_BLK_F_SEG_MAX) | (1ull << VIRTIO_BLK_F_BLK_SIZE) |
        (1ull << VIRTIO_BLK_F_FLUSH) | (nq > 1 ? 1ull << VIRTIO_BLK_F_MQ : 0) |
        (dc->readonly ? 1ull << VIRTIO_BLK_F_RO
                      : (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES));

    snprintf(name, sizeof(name), "blk%d", index);
    ret = virtio_dev_init(&blk->vdev, vm, name, VIRTIO_ID_BLOCK, 0x018000, features, nq, qsize,
                          sizeof(blk->config), &blk_ops, blk);
    if (ret < 0)
        goto fail;
    *out = blk;
    return 0;
fail:
    if (blk->fd >= 0)
        close(blk->fd);
    if (blk->fd_buffered >= 0)
        close(blk->fd_buffered);
    free(blk->queues);
    free(blk);
    return ret;
}

void virtio_blk_destroy(struct virtio_blk *blk)
{
    if (!blk)
        return;
    virtio_dev_destroy(&blk->vdev);
    if (blk->fd >= 0)
        close(blk->fd);
    if (blk->fd_buffered >= 0)
        close(blk->fd_buffered);
    free(blk->queues);
    free(blk);
}

void virtio_blk_stats(struct virtio_blk *blk, json_object *devices)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "id", json_object_new_string(blk->vdev.name));
    json_object_object_add(o, "type", json_object_new_string("virtio-blk"));
    json_object_object_add(o, "path", json_object_new_string(blk->path));
    json_object_object_add(o, "pci_slot", json_object_new_int(blk->vdev.pci.slot));
    json_object_object_add(o, "status", json_object_new_int(virtio_dev_status(&blk->vdev)));
#define STAT(n)                                                                                    \
    json_object_object_add(                                                                        \
        o, #n, json_object_new_uint64(__atomic_load_n(&blk->stats.n, __ATOMIC_RELAXED)))
    STAT(reads);
    STAT(writes);
    STAT(read_bytes);
    STAT(write_bytes);
    STAT(flushes);
    STAT(discards);
    STAT(write_zeroes);
    STAT(errors);
#undef STAT
    json_object_array_add(devices, o);
}

/* ---- registration ---- */

struct blk_list {
    int n;
    struct virtio_blk *blk[VM_MAX_DISKS];
};

static void virtio_blk_exit_all(struct vm *vm)
{
    struct blk_list *list = devstate_get(vm, "virtio-blk");

    if (!list)
        return;
    for (int i = list->n - 1; i >= 0; i--)
        virtio_blk_destroy(list->blk[i]);
    devstate_clear(vm, "virtio-blk");
    free(list);
}

static int virtio_blk_init_all(struct vm *vm, const struct vm_config *cfg)
{
    struct pci_bus *bus = pci_bus_of(vm);
    struct blk_list *list;
    int ret;

    if (cfg->n_disks == 0)
        return 0;
    if (!bus) {
        log_err("virtio-blk: no PCI bus");
        return -ENODEV;
    }
    list = calloc(1, sizeof(*list));
    if (!list)
        return -ENOMEM;
    ret = devstate_set(vm, "virtio-blk", list);
    if (ret < 0) {
        free(list);
        return ret;
    }
    for (int i = 0; i < cfg->n_disks && i < VM_MAX_DISKS; i++) {
        struct virtio_blk *blk;

        if (cfg->disks[i].vhost_socket)
            continue; /* vhost-user-blk frontend */
        ret = virtio_blk_create(vm, &cfg->disks[i], i, &blk);
        if (ret < 0)
            goto fail;
        ret = virtio_dev_plug(&blk->vdev, bus);
        if (ret < 0) {
            virtio_blk_destroy(blk);
            goto fail;
        }
        list->blk[list->n++] = blk;
        log_info("disk '%s': virtio-blk %s, %" PRIu64 " sectors%s, %u queue(s)", blk->path,
                 blk->vdev.name, blk->capacity, blk->readonly ? ", read-only" : "",
                 blk->vdev.num_queues);
    }
    return 0;
fail:
    virtio_blk_exit_all(vm);
    return ret;
}

static void virtio_blk_stats_all(struct vm *vm, json_object *devices)
{
    struct blk_list *list = devstate_get(vm, "virtio-blk");

    for (int i = 0; list && i < list->n; i++)
        virtio_blk_stats(list->blk[i], devices);
}

VMM_DEVICE(virtio_blk, DEV_LEVEL_VIRTIO, virtio_blk_init_all, virtio_blk_exit_all,
           virtio_blk_stats_all)
