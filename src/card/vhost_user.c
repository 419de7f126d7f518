/* SPDX-License-Identifier: Apache-2.0 */
#include "card/vhost_user.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* Payload size rules: exact size, or -1 for variable (checked by the handler). */
enum { VU_SZ_VAR = -1 };

static int vu_expected_size(uint32_t req)
{
    switch (req) {
    case VHOST_USER_GET_FEATURES:
    case VHOST_USER_SET_OWNER:
    case VHOST_USER_RESET_OWNER:
    case VHOST_USER_SET_LOG_FD:
    case VHOST_USER_GET_PROTOCOL_FEATURES:
    case VHOST_USER_GET_QUEUE_NUM:
    case VHOST_USER_RESET_DEVICE:
    case VHOST_USER_GET_MAX_MEM_SLOTS:
    case VHOST_USER_GET_STATUS:
        return 0;
    case VHOST_USER_SET_FEATURES:
    case VHOST_USER_SET_PROTOCOL_FEATURES:
    case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL:
    case VHOST_USER_SET_VRING_ERR:
    case VHOST_USER_SEND_RARP:
    case VHOST_USER_NET_SET_MTU:
    case VHOST_USER_SET_STATUS:
        return 8;
    case VHOST_USER_SET_VRING_NUM:
    case VHOST_USER_SET_VRING_BASE:
    case VHOST_USER_GET_VRING_BASE:
    case VHOST_USER_SET_VRING_ENABLE:
        return sizeof(struct vhost_user_vring_state);
    case VHOST_USER_SET_VRING_ADDR:
        return sizeof(struct vhost_user_vring_addr);
    case VHOST_USER_SET_LOG_BASE:
        return sizeof(struct vhost_user_log);
    case VHOST_USER_ADD_MEM_REG:
    case VHOST_USER_REM_MEM_REG:
        return sizeof(struct vhost_user_mem_single);
    case VHOST_USER_SET_MEM_TABLE:
    case VHOST_USER_GET_CONFIG:
    case VHOST_USER_SET_CONFIG:
    case VHOST_USER_GET_INFLIGHT_FD:
    case VHOST_USER_SET_INFLIGHT_FD:
        return VU_SZ_VAR;
    default:
        return -2; /* unsupported */
    }
}

void vu_msg_close_fds(struct vu_msg *msg)
{
    for (unsigned i = 0; i < msg->nfds; i++) {
        if (msg->fds[i] >= 0)
            close(msg->fds[i]);
        msg->fds[i] = -1;
    }
    msg->nfds = 0;
}

int vu_msg_recv(int fd, struct vu_msg *msg, const char *who)
{
    union {
        char buf[CMSG_SPACE(VHOST_USER_MAX_FDS * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = &msg->hdr, .iov_len = sizeof(msg->hdr)};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = ctl.buf,
                        .msg_controllen = sizeof(ctl.buf)};
    struct cmsghdr *c;
    ssize_t n;
    int ret;

    msg->nfds = 0;
    do {
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n == 0)
        return -ECONNRESET;
    if (n < 0)
        return -errno;
    for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            unsigned cnt = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (unsigned i = 0; i < cnt; i++) {
                int f;
                memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                if (msg->nfds < VHOST_USER_MAX_FDS)
                    msg->fds[msg->nfds++] = f;
                else
                    close(f);
            }
        }
    }
    if (mh.msg_flags & MSG_CTRUNC) {
        log_err("%s: message carried more than %u file descriptors", who, VHOST_USER_MAX_FDS);
        ret = -EPROTO;
        goto fail;
    }
    if ((size_t)n != sizeof(msg->hdr)) {
        log_err("%s: short message header (%zd of %zu bytes)", who, n, sizeof(msg->hdr));
        ret = -EPROTO;
        goto fail;
    }
    if ((msg->hdr.flags & VHOST_USER_FLAG_VERSION_MASK) != VHOST_USER_VERSION) {
        log_err("%s: %s with protocol version %u (expected %u)", who,
                vhost_user_request_name(msg->hdr.request),
                msg->hdr.flags & VHOST_USER_FLAG_VERSION_MASK, VHOST_USER_VERSION);
        ret = -EPROTO;
        goto fail;
    }
    if (msg->hdr.size > VU_MAX_PAYLOAD) {
        log_err("%s: %s payload of %u bytes exceeds %u", who,
                vhost_user_request_name(msg->hdr.request), msg->hdr.size, VU_MAX_PAYLOAD);
        ret = -EPROTO;
        goto fail;
    }
    if (msg->hdr.size) {
        size_t got = 0;
        while (got < msg->hdr.size) {
            n = recv(fd, (char *)&msg->p + got, msg->hdr.size - got, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                log_err("%s: %s payload truncated (%zu of %u bytes): %s", who,
                        vhost_user_request_name(msg->hdr.request), got, msg->hdr.size,
                        n == 0 ? "connection closed" : strerror(errno));
                ret = -EPROTO;
                goto fail;
            }
            got += (size_t)n;
        }
    }
    return 0;
fail:
    vu_msg_close_fds(msg);
    return ret;
}

static int vu_send_reply(struct vu_dev *dev, struct vu_msg *reply)
{
    struct iovec iov[2] = {{.iov_base = &reply->hdr, .iov_len = sizeof(reply->hdr)},
                           {.iov_base = &reply->p, .iov_len = reply->hdr.size}};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = reply->hdr.size ? 2 : 1};
    ssize_t n;

    if (reply->nfds == 1) {
        struct cmsghdr *c;
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof(ctl.buf);
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &reply->fds[0], sizeof(int));
    }
    do {
        n = sendmsg(dev->fd, &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)(sizeof(reply->hdr) + reply->hdr.size)) {
        log_err("%s: sending %s reply: %s", dev->name, vhost_user_request_name(reply->hdr.request),
                n < 0 ? strerror(errno) : "short write");
        return -EIO;
    }
    return 0;
}

void vu_dev_init(struct vu_dev *dev, const char *name, const struct vu_dev_ops *ops, void *opaque)
{
    memset(dev, 0, sizeof(*dev));
    snprintf(dev->name, sizeof(dev->name), "%s", name);
    dev->fd = -1;
    dev->inflight_fd = -1;
    dev->ops = ops;
    dev->opaque = opaque;
    for (unsigned i = 0; i < VU_MAX_QUEUES; i++) {
        struct vu_vring *vr = &dev->vr[i];
        vr->kick_fd = vr->call_fd = vr->err_fd = -1;
        vr->vq.call_fd = -1;
        snprintf(vr->name, sizeof(vr->name), "vhost-user '%s' queue %u", name, i);
        vr->vq.name = vr->name;
    }
}

void vu_dev_attach(struct vu_dev *dev, int fd)
{
    struct timeval tv = {.tv_sec = 2};
    /* A frontend that sends a header and stalls must not hang the control thread. */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    dev->fd = fd;
}

static void vu_close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void vu_ring_stop(struct vu_dev *dev, unsigned i)
{
    struct vu_vring *vr = &dev->vr[i];

    if (!vr->running)
        return;
    if (dev->ops->queue_stop)
        dev->ops->queue_stop(dev->opaque, dev, i);
    vr->running = false;
    if (vr->vq.packed)
        vr->base = (uint32_t)vr->vq.last_avail_idx | (uint32_t)vr->vq.avail_wrap << 15 |
                   (uint32_t)vr->vq.used_idx << 16 | (uint32_t)vr->vq.used_wrap << 31;
    else
        vr->base = vr->vq.last_avail_idx;
}

static void vu_stop_all(struct vu_dev *dev)
{
    for (unsigned i = 0; i < VU_MAX_QUEUES; i++)
        vu_ring_stop(dev, i);
}

/* The three ring areas as local pointers: the descriptor table (16 bytes an entry, 16-byte
 * aligned), the driver area (split: avail ring; packed: driver event suppression) and the
 * device area (used ring; device event suppression). -EINVAL, logged, when one is not in
 * shared memory or misaligned. */
static int vu_ring_map(struct vu_dev *dev, struct vu_vring *vr, uint64_t drv_len,
                       unsigned drv_align, uint64_t dev_len, unsigned dev_align, void **desc,
                       void **drv, void **devp)
{
    *desc = vu_mem_uva_range(dev->mem, vr->addr.desc_user_addr, 16ull * vr->num);
    *drv = vu_mem_uva_range(dev->mem, vr->addr.avail_user_addr, drv_len);
    *devp = vu_mem_uva_range(dev->mem, vr->addr.used_user_addr, dev_len);
    if (*desc && *drv && *devp && !((uintptr_t)*desc & 15) &&
        !((uintptr_t)*drv & (drv_align - 1)) && !((uintptr_t)*devp & (dev_align - 1)))
        return 0;
    log_err("%s: %s ring addresses desc 0x%llx driver 0x%llx device 0x%llx (size %u) not in "
            "shared memory or misaligned",
            vr->name, vu_dev_has_feature(dev, VIRTIO_F_RING_PACKED) ? "packed" : "split",
            (unsigned long long)vr->addr.desc_user_addr,
            (unsigned long long)vr->addr.avail_user_addr,
            (unsigned long long)vr->addr.used_user_addr, vr->num);
    return -EINVAL;
}

/* Once the ring areas are mapped: a fresh data-plane state with what both layouts share
 * (the layout's own set-up follows). */
static void vu_ring_reset(struct vu_dev *dev, struct vu_vring *vr)
{
    memset(&vr->vq, 0, sizeof(vr->vq));
    vr->vq.name = vr->name;
    vr->vq.call_fd = vr->call_fd;
    vr->vq.in_order = vu_dev_has_feature(dev, VIRTIO_F_IN_ORDER);
}

/* Ring vr's part of the inflight region, `stride` bytes a queue, in *q: NULL when the region
 * has none for it; -EINVAL (logged) when the region is too small for the ring. */
static int vu_inflight_queue(struct vu_dev *dev, struct vu_vring *vr, uint64_t stride, void **q)
{
    unsigned i = (unsigned)(vr - dev->vr);

    *q = NULL;
    if (!dev->inflight_addr || i >= dev->inflight_num_queues)
        return 0;
    if (dev->inflight_queue_size < vr->num || (i + 1) * stride > dev->inflight_size) {
        log_err("%s: inflight region (%zu bytes for %u queues of %u entries) too small for a "
                "%s ring of %u",
                vr->name, dev->inflight_size, dev->inflight_num_queues, dev->inflight_queue_size,
                vu_dev_has_feature(dev, VIRTIO_F_RING_PACKED) ? "packed" : "split", vr->num);
        return -EINVAL;
    }
    *q = (uint8_t *)dev->inflight_addr + i * stride;
    return 0;
}

/*
 * Packed ring start with an inflight region: a fresh region is set up; one a previous run
 * left (the card restarted, the frontend kept it) says where the device was, whatever the
 * vring base says, and which chains it had in flight. Those are popped again: they lie
 * from the used slot on, chains completing in order here.
 */
static int vu_ring_inflight_packed(struct vu_dev *dev, struct vu_vring *vr)
{
    struct virtq *vq = &vr->vq;
    struct vhost_user_inflight_queue_packed *q;
    uint16_t used_idx;
    bool used_wrap;
    int n = vu_inflight_queue(dev, vr, virtq_inflight_queue_size_packed(dev->inflight_queue_size),
                              (void **)&q);

    if (n || !q)
        return n;
    if (__atomic_load_n(&q->version, __ATOMIC_ACQUIRE) != 0) {
        n = virtq_inflight_recover_packed(q, vr->num, vq->pdesc, &used_idx, &used_wrap);
        if (n < 0) {
            log_warn("%s: inflight region of the last run is inconsistent; resuming from the "
                     "vring base",
                     vr->name);
        } else {
            if (n || used_idx != vq->used_idx || used_wrap != vq->used_wrap)
                log_info("%s: %d chains were in flight; popping again from used slot %u wrap %d "
                         "(vring base: avail %u/%d used %u/%d)",
                         vr->name, n, used_idx, used_wrap, vq->last_avail_idx, vq->avail_wrap,
                         vq->used_idx, vq->used_wrap);
            vq->used_idx = vq->last_avail_idx = used_idx;
            vq->used_wrap = vq->avail_wrap = used_wrap;
        }
    }
    virtq_inflight_init_packed(q, vr->num, vq->used_idx, vq->used_wrap);
    vq->pinflight = q;
    return 0;
}

/*
 * Packed ring (VIRTIO_F_RING_PACKED): descriptor ring, then the driver's and the device's
 * event suppression areas where a split ring has its avail and used rings. The vring base
 * holds both positions, as vhost-user defines it for packed rings: bits 0-14 the next
 * slot to pop, 15 its wrap counter, 16-30 the next slot to write used, 31 its wrap
 * counter. A frontend that sends only the low half (DPDK's virtio_user) means used =
 * avail. When used is behind avail, chains popped but not completed by the last device
 * run are popped again from the used position, as for split rings.
 */
static int vu_ring_map_packed(struct vu_dev *dev, struct vu_vring *vr)
{
    struct virtq *vq = &vr->vq;
    struct pvirtq_desc *desc;
    struct pvirtq_event *drv_ev, *dev_ev;
    uint32_t base = vr->base;

    if (vu_ring_map(dev, vr, 4, 4, 4, 4, (void **)&desc, (void **)&drv_ev, (void **)&dev_ev))
        return -EINVAL;
    if ((base & 0x7fff) >= vr->num || ((base >> 16) & 0x7fff) >= vr->num) {
        log_err("%s: packed ring base 0x%08x lies beyond the ring (size %u)", vr->name, base,
                vr->num);
        return -EINVAL;
    }
    vu_ring_reset(dev, vr);
    virtq_init_packed(vq, vr->num, desc, drv_ev, dev_ev, dev->mem,
                      vu_dev_has_feature(dev, VIRTIO_RING_F_EVENT_IDX));
    vq->last_avail_idx = (uint16_t)(base & 0x7fff);
    vq->avail_wrap = (base >> 15) & 1;
    vq->used_idx = vq->last_avail_idx;
    vq->used_wrap = vq->avail_wrap;
    if (base >> 16) {
        vq->used_idx = (uint16_t)((base >> 16) & 0x7fff);
        vq->used_wrap = base >> 31;
        if (vq->used_idx != vq->last_avail_idx || vq->used_wrap != vq->avail_wrap) {
            log_warn("%s: packed ring base: used slot %u wrap %d behind avail slot %u wrap %d; "
                     "resuming from the used slot",
                     vr->name, vq->used_idx, vq->used_wrap, vq->last_avail_idx, vq->avail_wrap);
            vq->last_avail_idx = vq->used_idx;
            vq->avail_wrap = vq->used_wrap;
        }
    }
    if (vu_dev_has_feature(dev, VHOST_F_LOG_ALL) && dev->log &&
        (vr->addr.flags & (1u << VHOST_VRING_F_LOG))) {
        if (vu_mem_uva_to_gpa(dev->mem, vr->addr.desc_user_addr, &vq->desc_gpa) ||
            vu_mem_uva_to_gpa(dev->mem, vr->addr.used_user_addr, &vq->device_ev_gpa)) {
            log_err("%s: packed ring not in guest memory: cannot log its writes", vr->name);
            return -EINVAL;
        }
        vq->log_used = true;
        vq->log = dev->log;
    }
    return vu_ring_inflight_packed(dev, vr);
}

/* Translate ring addresses and hand the ring to the data plane if it can run. */
static int vu_ring_try_start(struct vu_dev *dev, unsigned i)
{
    struct vu_vring *vr = &dev->vr[i];
    struct virtq *vq = &vr->vq;
    struct virtq_desc *desc;
    struct virtq_avail *avail;
    struct virtq_used *used;
    struct vhost_user_inflight_queue *q;
    int ret;

    if (vr->running || !vr->started || !vr->enabled || !vr->addr_set || !dev->mem ||
        i >= dev->ops->num_queues)
        return 0;
    if (vr->num == 0) {
        log_err("%s: started without SET_VRING_NUM", vr->name);
        return -EINVAL;
    }
    if (vu_dev_has_feature(dev, VIRTIO_F_RING_PACKED)) {
        ret = vu_ring_map_packed(dev, vr);
        if (ret)
            return ret;
        goto run;
    }
    if (vr->base > 0xffff) {
        log_err("%s: split ring base %u out of range", vr->name, vr->base);
        return -EINVAL;
    }
    if (vu_ring_map(dev, vr, 4 + 2ull * vr->num + 2, 2, 4 + 8ull * vr->num + 2, 4, (void **)&desc,
                    (void **)&avail, (void **)&used))
        return -EINVAL;
    vu_ring_reset(dev, vr);
    virtq_init(vq, vr->num, desc, avail, used, dev->mem,
               vu_dev_has_feature(dev, VIRTIO_RING_F_EVENT_IDX));
    vq->next_head = vr->base & (vr->num - 1);
    vq->last_avail_idx = vr->base;
    vq->used_idx = vr->base;
    vq->log_used = vr->addr.flags & (1u << VHOST_VRING_F_LOG);
    vq->used_gpa = vr->addr.log_guest_addr;
    if (vu_dev_has_feature(dev, VHOST_F_LOG_ALL) && dev->log && vq->log_used)
        vq->log = dev->log;
    {
        uint16_t uidx = __atomic_load_n(&used->idx, __ATOMIC_ACQUIRE);
        if (uidx != vr->base) {
            /* Frontend lost track (e.g. reconnect after a crash): what the driver saw
             * completed is authoritative; chains after it are processed again. */
            log_warn("%s: ring base %u but used index %u; resuming from the used index", vr->name,
                     vr->base, uidx);
            vq->last_avail_idx = uidx;
            vq->used_idx = uidx;
        }
    }
    vq->shadow_avail_idx = vq->last_avail_idx;
    ret = vu_inflight_queue(dev, vr, virtq_inflight_queue_size(dev->inflight_queue_size),
                            (void **)&q);
    if (ret)
        return ret;
    if (q) {
        if (q->version == 0) {
            q->version = 1;
            q->desc_num = vr->num;
        } else {
            unsigned pending = virtq_inflight_pending(q, vr->num);
            /* Chains complete in order here, so every one in flight lies after the used
             * index and is popped again from there. */
            if (pending)
                log_info("%s: %u descriptors were in flight; re-processing from used index %u",
                         vr->name, pending, vq->used_idx);
            for (unsigned d = 0; d < vr->num; d++)
                q->desc[d].inflight = 0;
        }
        q->used_idx = vq->used_idx;
        vq->inflight = q;
    }
run:
    vr->running = true;
    if (dev->ops->queue_start)
        dev->ops->queue_start(dev->opaque, dev, i);
    return 0;
}

static int vu_start_all(struct vu_dev *dev)
{
    for (unsigned i = 0; i < VU_MAX_QUEUES; i++) {
        int ret = vu_ring_try_start(dev, i);
        if (ret)
            return ret;
    }
    return 0;
}

static void vu_inflight_unmap(struct vu_dev *dev)
{
    if (dev->inflight_addr)
        munmap(dev->inflight_addr, dev->inflight_size);
    dev->inflight_addr = NULL;
    dev->inflight_size = 0;
    vu_close_fd(&dev->inflight_fd);
}

static void vu_reset_rings(struct vu_dev *dev)
{
    for (unsigned i = 0; i < VU_MAX_QUEUES; i++) {
        struct vu_vring *vr = &dev->vr[i];
        vu_close_fd(&vr->kick_fd);
        vu_close_fd(&vr->call_fd);
        vu_close_fd(&vr->err_fd);
        vr->num = 0;
        vr->base = 0;
        vr->addr_set = false;
        vr->started = false;
        vr->enabled = false;
        memset(&vr->vq, 0, sizeof(vr->vq));
        vr->vq.call_fd = -1;
        vr->vq.name = vr->name;
    }
}

void vu_dev_signal_err(struct vu_dev *dev)
{
    uint64_t one = 1;

    for (unsigned i = 0; i < VU_MAX_QUEUES; i++)
        if (dev->vr[i].err_fd >= 0 && write(dev->vr[i].err_fd, &one, sizeof(one)) != sizeof(one))
            log_debug("%s: cannot signal the error eventfd", dev->vr[i].name);
}

void vu_dev_disconnect(struct vu_dev *dev)
{
    vu_stop_all(dev);
    vu_reset_rings(dev);
    vu_mem_free(dev->mem);
    dev->mem = NULL;
    vu_log_free(dev->log);
    dev->log = NULL;
    /* The inflight region survives a reconnect only through the frontend, which keeps
     * the fd and hands it back with SET_INFLIGHT_FD. */
    vu_inflight_unmap(dev);
    vu_close_fd(&dev->fd);
    dev->owner = false;
    dev->features = 0;
    dev->features_acked = false;
    dev->protocol_features = 0;
    dev->status = 0;
}

static struct vu_vring *vu_vring_get(struct vu_dev *dev, uint32_t idx, const char *req)
{
    if (idx >= dev->ops->num_queues) {
        log_err("%s: %s for queue %u, device has %u", dev->name, req, idx, dev->ops->num_queues);
        return NULL;
    }
    return &dev->vr[idx];
}

static int vu_expected_fds(struct vu_dev *dev, const struct vu_msg *msg)
{
    switch (msg->hdr.request) {
    case VHOST_USER_SET_MEM_TABLE:
        return msg->hdr.size >= 8 ? (int)msg->p.mem.nregions : 0;
    case VHOST_USER_SET_LOG_BASE:
    case VHOST_USER_SET_LOG_FD:
    case VHOST_USER_SET_INFLIGHT_FD:
    case VHOST_USER_ADD_MEM_REG:
        return 1;
    case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL:
    case VHOST_USER_SET_VRING_ERR:
        return (msg->p.u64 & VHOST_USER_VRING_NOFD) ? 0 : 1;
    default:
        return 0;
    }
}

static int vu_set_mem_table(struct vu_dev *dev, struct vu_msg *msg)
{
    struct vu_mem *m;
    int ret;

    if (msg->hdr.size < 8 || msg->p.mem.nregions > VHOST_USER_MAX_MEM_REGIONS ||
        msg->hdr.size != 8 + msg->p.mem.nregions * sizeof(struct vhost_user_mem_region)) {
        log_err("%s: SET_MEM_TABLE payload of %u bytes for %u regions", dev->name, msg->hdr.size,
                msg->p.mem.nregions);
        return -EPROTO;
    }
    ret = vu_mem_map_table(&m, &msg->p.mem, msg->fds, msg->nfds, dev->name);
    if (ret)
        return ret;
    vu_stop_all(dev);
    vu_mem_free(dev->mem);
    dev->mem = m;
    return vu_start_all(dev);
}

/* CONFIGURE_MEM_SLOTS: one region more or less, the other mappings kept. Rings are stopped
 * (a grace period: no worker uses the old table) and started again on the new table. */
static int vu_add_mem_reg(struct vu_dev *dev, struct vu_msg *msg)
{
    struct vu_mem *m;
    int ret = vu_mem_add_region(&m, dev->mem, &msg->p.mem_one.region, msg->fds[0], dev->name);

    if (ret)
        return ret;
    vu_stop_all(dev);
    vu_mem_free_table(dev->mem);
    dev->mem = m;
    log_info("%s: memory region added (gpa 0x%llx, %llu bytes), %u in use", dev->name,
             (unsigned long long)msg->p.mem_one.region.guest_phys_addr,
             (unsigned long long)msg->p.mem_one.region.memory_size, m->nregions);
    return vu_start_all(dev);
}

static int vu_rem_mem_reg(struct vu_dev *dev, struct vu_msg *msg)
{
    struct vu_mem_map gone;
    struct vu_mem *m;
    int ret = vu_mem_remove_region(&m, dev->mem, &msg->p.mem_one.region, &gone, dev->name);

    if (ret)
        return ret;
    vu_stop_all(dev);
    vu_mem_free_table(dev->mem);
    dev->mem = m;
    vu_mem_unmap_region(&gone);
    log_info("%s: memory region removed (gpa 0x%llx), %u in use", dev->name,
             (unsigned long long)gone.gpa, m->nregions);
    return vu_start_all(dev);
}

static int vu_set_log_base(struct vu_dev *dev, struct vu_msg *msg, struct vu_msg *reply,
                           bool *has_reply)
{
    struct vu_log_area *l;
    int ret;

    if (!vu_dev_has_proto(dev, VHOST_USER_PROTOCOL_F_LOG_SHMFD)) {
        log_err("%s: SET_LOG_BASE without LOG_SHMFD negotiated", dev->name);
        return -EPROTO;
    }
    ret = vu_log_map(&l, msg->fds[0], msg->p.log.mmap_size, msg->p.log.mmap_offset, dev->name);
    if (ret)
        return ret;
    vu_stop_all(dev);
    vu_log_free(dev->log);
    dev->log = l;
    ret = vu_start_all(dev);
    reply->hdr.size = 8;
    reply->p.u64 = 0;
    *has_reply = true;
    return ret;
}

/* Bytes a queue takes in an inflight region we make: the packed layout's (the larger) when
 * packed rings are offered, as GET_INFLIGHT_FD may come before the features are set. */
static uint64_t vu_inflight_alloc_size(const struct vu_dev *dev, uint16_t qs)
{
    return (dev->ops->features & (1ull << VIRTIO_F_RING_PACKED))
               ? virtq_inflight_queue_size_packed(qs)
               : virtq_inflight_queue_size(qs);
}

static int vu_get_inflight_fd(struct vu_dev *dev, struct vu_msg *msg, struct vu_msg *reply,
                              bool *has_reply)
{
    uint16_t nq = msg->p.inflight.num_queues, qs = msg->p.inflight.queue_size;
    uint64_t qsz, total;
    void *p;
    int fd;

    if (msg->hdr.size < 20 || msg->hdr.size > sizeof(struct vhost_user_inflight) + 4) {
        log_err("%s: GET_INFLIGHT_FD payload of %u bytes", dev->name, msg->hdr.size);
        return -EPROTO;
    }
    if (!vu_dev_has_proto(dev, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) || nq == 0 ||
        nq > dev->ops->num_queues || qs == 0 || qs > VIRTQ_MAX_SIZE) {
        log_err("%s: GET_INFLIGHT_FD for %u queues of %u entries rejected", dev->name, nq, qs);
        return -EPROTO;
    }
    qsz = vu_inflight_alloc_size(dev, qs);
    total = qsz * nq;
    fd = memfd_create("qtcard-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)total) < 0) {
        close(fd);
        return -errno;
    }
    p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return -errno;
    }
    memset(p, 0, total);
    vu_stop_all(dev);
    vu_inflight_unmap(dev);
    dev->inflight_addr = p;
    dev->inflight_size = total;
    dev->inflight_fd = fd;
    dev->inflight_num_queues = nq;
    dev->inflight_queue_size = qs;
    reply->hdr.size = msg->hdr.size;
    reply->p.inflight.mmap_size = total;
    reply->p.inflight.mmap_offset = 0;
    reply->p.inflight.num_queues = nq;
    reply->p.inflight.queue_size = qs;
    reply->fds[0] = fd;
    reply->nfds = 1;
    *has_reply = true;
    return vu_start_all(dev);
}

static int vu_set_inflight_fd(struct vu_dev *dev, struct vu_msg *msg)
{
    uint16_t nq = msg->p.inflight.num_queues, qs = msg->p.inflight.queue_size;
    uint64_t need, len;
    struct stat st;
    void *p;

    if (msg->hdr.size < 20 || msg->hdr.size > sizeof(struct vhost_user_inflight) + 4) {
        log_err("%s: SET_INFLIGHT_FD payload of %u bytes", dev->name, msg->hdr.size);
        return -EPROTO;
    }
    if (!vu_dev_has_proto(dev, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) || nq == 0 ||
        nq > dev->ops->num_queues || qs == 0 || qs > VIRTQ_MAX_SIZE) {
        log_err("%s: SET_INFLIGHT_FD for %u queues of %u entries rejected", dev->name, nq, qs);
        return -EPROTO;
    }
    /* At least the split layout's size; mapped up to what a region of ours would hold (a
     * packed ring checks its own layout's size when it starts). */
    need = virtq_inflight_queue_size(qs) * nq;
    if (msg->p.inflight.mmap_size < need || msg->p.inflight.mmap_offset + need < need ||
        fstat(msg->fds[0], &st) < 0 || !S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size < msg->p.inflight.mmap_offset + need ||
        msg->p.inflight.mmap_offset % (uint64_t)sysconf(_SC_PAGESIZE)) {
        log_err("%s: SET_INFLIGHT_FD region (size %llu offset %llu) too small or misplaced",
                dev->name, (unsigned long long)msg->p.inflight.mmap_size,
                (unsigned long long)msg->p.inflight.mmap_offset);
        return -EINVAL;
    }
    len = vu_inflight_alloc_size(dev, qs) * nq;
    if (len > msg->p.inflight.mmap_size)
        len = msg->p.inflight.mmap_size;
    if (len > (uint64_t)st.st_size - msg->p.inflight.mmap_offset)
        len = (uint64_t)st.st_size - msg->p.inflight.mmap_offset;
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, msg->fds[0],
             (off_t)msg->p.inflight.mmap_offset);
    if (p == MAP_FAILED)
        return -errno;
    vu_stop_all(dev);
    vu_inflight_unmap(dev);
    dev->inflight_addr = p;
    dev->inflight_size = len;
    dev->inflight_fd = msg->fds[0];
    msg->fds[0] = -1;
    dev->inflight_num_queues = nq;
    dev->inflight_queue_size = qs;
    return vu_start_all(dev);
}

static int vu_config(struct vu_dev *dev, struct vu_msg *msg, struct vu_msg *reply, bool *has_reply)
{
    struct vhost_user_config *c = &msg->p.config;
    bool get = msg->hdr.request == VHOST_USER_GET_CONFIG;
    int ret;

    if (msg->hdr.size < VHOST_USER_CONFIG_HDR_SIZE || c->size > VHOST_USER_MAX_CONFIG_SIZE ||
        msg->hdr.size != VHOST_USER_CONFIG_HDR_SIZE + c->size) {
        log_err("%s: %s payload of %u bytes for %u config bytes", dev->name,
                vhost_user_request_name(msg->hdr.request), msg->hdr.size, c->size);
        return -EPROTO;
    }
    if (!vu_dev_has_proto(dev, VHOST_USER_PROTOCOL_F_CONFIG)) {
        log_err("%s: %s without CONFIG negotiated", dev->name,
                vhost_user_request_name(msg->hdr.request));
        return -EPROTO;
    }
    if (get) {
        reply->hdr.size = msg->hdr.size;
        reply->p.config.offset = c->offset;
        reply->p.config.size = c->size;
        reply->p.config.flags = 0;
        ret = dev->ops->get_config
                  ? dev->ops->get_config(dev->opaque, c->offset, reply->p.config.payload, c->size)
                  : -ENOTSUP;
        if (ret) /* the spec's way to fail GET_CONFIG: an empty reply */
            reply->hdr.size = 0;
        *has_reply = true;
        return 0;
    }
    return dev->ops->set_config ? dev->ops->set_config(dev->opaque, c->offset, c->payload, c->size)
                                : -ENOTSUP;
}

/* Offered features: the device's plus what the core always supports. */
static uint64_t vu_offered_features(const struct vu_dev *dev)
{
    return dev->ops->features | (1ull << VHOST_USER_F_PROTOCOL_FEATURES) |
           (1ull << VIRTIO_F_VERSION_1) | (1ull << VHOST_F_LOG_ALL);
}

static uint64_t vu_offered_protocol(const struct vu_dev *dev)
{
    return dev->ops->protocol_features | (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) |
           (1ull << VHOST_USER_PROTOCOL_F_LOG_SHMFD) |
           (1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) |
           (1ull << VHOST_USER_PROTOCOL_F_RESET_DEVICE) | (1ull << VHOST_USER_PROTOCOL_F_CONFIG) |
           (1ull << VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS);
}

static int vu_set_vring_fd(struct vu_dev *dev, struct vu_msg *msg)
{
    uint64_t v = msg->p.u64;
    struct vu_vring *vr;
    int fd = msg->nfds ? msg->fds[0] : -1;
    int ret;

    if (v & ~(uint64_t)(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD)) {
        log_err("%s: %s payload 0x%llx has unknown bits", dev->name,
                vhost_user_request_name(msg->hdr.request), (unsigned long long)v);
        return -EPROTO;
    }
    vr =
        vu_vring_get(dev, v & VHOST_USER_VRING_IDX_MASK, vhost_user_request_name(msg->hdr.request));
    if (!vr)
        return -EINVAL;
    msg->nfds = 0; /* fd ownership moves to the ring */
    switch (msg->hdr.request) {
    case VHOST_USER_SET_VRING_KICK:
        vu_ring_stop(dev, (unsigned)(vr - dev->vr));
        vu_close_fd(&vr->kick_fd);
        vr->kick_fd = fd;
        vr->started = true;
        if (!vu_dev_has_feature(dev, VHOST_USER_F_PROTOCOL_FEATURES))
            vr->enabled = true;
        ret = vu_ring_try_start(dev, (unsigned)(vr - dev->vr));
        return ret;
    case VHOST_USER_SET_VRING_CALL:
        vu_ring_stop(dev, (unsigned)(vr - dev->vr));
        vu_close_fd(&vr->call_fd);
        vr->call_fd = fd;
        return vu_ring_try_start(dev, (unsigned)(vr - dev->vr));
    default:
        vu_close_fd(&vr->err_fd);
        vr->err_fd = fd;
        return 0;
    }
}

int vu_dev_process(struct vu_dev *dev, struct vu_msg *msg, struct vu_msg *reply, bool *has_reply)
{
    uint32_t req = msg->hdr.request;
    int expect = vu_expected_size(req);
    struct vu_vring *vr;
    int nfds_ok;
    int ret = 0;

    *has_reply = false;
    memset(&reply->hdr, 0, sizeof(reply->hdr));
    reply->hdr.request = req;
    reply->hdr.flags = VHOST_USER_VERSION | VHOST_USER_FLAG_REPLY;
    reply->nfds = 0;
    dev->n_msgs++;
    if (expect == -2) {
        log_err("%s: unsupported request %u (%s)", dev->name, req, vhost_user_request_name(req));
        return -EPROTO;
    }
    if (msg->hdr.flags & VHOST_USER_FLAG_REPLY) {
        log_err("%s: %s carries the reply flag", dev->name, vhost_user_request_name(req));
        return -EPROTO;
    }
    if (expect >= 0 && msg->hdr.size != (uint32_t)expect) {
        log_err("%s: %s payload is %u bytes, expected %d", dev->name, vhost_user_request_name(req),
                msg->hdr.size, expect);
        return -EPROTO;
    }
    nfds_ok = vu_expected_fds(dev, msg);
    /* REM_MEM_REG: no fd, but older QEMUs send one; it is ignored. */
    if ((int)msg->nfds != nfds_ok && !(req == VHOST_USER_REM_MEM_REG && msg->nfds == 1)) {
        log_err("%s: %s carries %u file descriptors, expected %d", dev->name,
                vhost_user_request_name(req), msg->nfds, nfds_ok);
        return -EPROTO;
    }
    if (!dev->owner && req != VHOST_USER_SET_OWNER && req != VHOST_USER_GET_FEATURES &&
        req != VHOST_USER_GET_PROTOCOL_FEATURES && req != VHOST_USER_SET_PROTOCOL_FEATURES &&
        req != VHOST_USER_GET_QUEUE_NUM && req != VHOST_USER_SET_FEATURES &&
        req != VHOST_USER_GET_MAX_MEM_SLOTS) {
        /* Frontends (QEMU, DPDK) always start with SET_OWNER; tolerate but note it. */
        log_debug("%s: %s before SET_OWNER", dev->name, vhost_user_request_name(req));
    }

    switch (req) {
    case VHOST_USER_GET_FEATURES:
        reply->hdr.size = 8;
        reply->p.u64 = vu_offered_features(dev);
        *has_reply = true;
        break;
    case VHOST_USER_SET_FEATURES:
        if (msg->p.u64 & ~vu_offered_features(dev)) {
            log_err("%s: SET_FEATURES 0x%llx includes unoffered bits 0x%llx", dev->name,
                    (unsigned long long)msg->p.u64,
                    (unsigned long long)(msg->p.u64 & ~vu_offered_features(dev)));
            return -EPROTO;
        }
        vu_stop_all(dev);
        dev->features = msg->p.u64;
        dev->features_acked = true;
        if (dev->ops->features_set)
            dev->ops->features_set(dev->opaque, dev, dev->features);
        ret = vu_start_all(dev);
        break;
    case VHOST_USER_GET_PROTOCOL_FEATURES:
        reply->hdr.size = 8;
        reply->p.u64 = vu_offered_protocol(dev);
        *has_reply = true;
        break;
    case VHOST_USER_SET_PROTOCOL_FEATURES:
        if (msg->p.u64 & ~vu_offered_protocol(dev)) {
            log_err("%s: SET_PROTOCOL_FEATURES 0x%llx includes unoffered bits", dev->name,
                    (unsigned long long)msg->p.u64);
            return -EPROTO;
        }
        dev->protocol_features = msg->p.u64;
        break;
    case VHOST_USER_SET_OWNER:
        dev->owner = true;
        break;
    case VHOST_USER_RESET_OWNER:
    case VHOST_USER_RESET_DEVICE:
        vu_stop_all(dev);
        vu_reset_rings(dev);
        dev->features = 0;
        dev->features_acked = false;
        dev->status = 0;
        break;
    case VHOST_USER_GET_QUEUE_NUM:
        reply->hdr.size = 8;
        reply->p.u64 = dev->ops->queue_num_reply;
        *has_reply = true;
        break;
    case VHOST_USER_SET_MEM_TABLE:
        ret = vu_set_mem_table(dev, msg);
        break;
    case VHOST_USER_SET_LOG_BASE:
        ret = vu_set_log_base(dev, msg, reply, has_reply);
        break;
    case VHOST_USER_SET_LOG_FD:
        /* Log notifications over an eventfd: the frontend never needs one from us. */
        break;
    case VHOST_USER_SET_VRING_NUM:
        if (!(vr = vu_vring_get(dev, msg->p.state.index, "SET_VRING_NUM")))
            return -EINVAL;
        if (msg->p.state.num == 0 || msg->p.state.num > VIRTQ_MAX_SIZE ||
            (msg->p.state.num & (msg->p.state.num - 1))) {
            log_err("%s: ring size %u is not a power of two in 1..%u", vr->name, msg->p.state.num,
                    VIRTQ_MAX_SIZE);
            return -EINVAL;
        }
        if (vr->running) {
            log_err("%s: SET_VRING_NUM while the ring runs", vr->name);
            return -EBUSY;
        }
        vr->num = (uint16_t)msg->p.state.num;
        break;
    case VHOST_USER_SET_VRING_ADDR:
        if (!(vr = vu_vring_get(dev, msg->p.addr.index, "SET_VRING_ADDR")))
            return -EINVAL;
        if (msg->p.addr.flags & ~(1u << VHOST_VRING_F_LOG)) {
            log_err("%s: SET_VRING_ADDR flags 0x%x unknown", vr->name, msg->p.addr.flags);
            return -EINVAL;
        }
        vu_ring_stop(dev, msg->p.addr.index);
        vr->addr = msg->p.addr;
        vr->addr_set = true;
        ret = vu_ring_try_start(dev, msg->p.addr.index);
        break;
    case VHOST_USER_SET_VRING_BASE:
        if (!(vr = vu_vring_get(dev, msg->p.state.index, "SET_VRING_BASE")))
            return -EINVAL;
        /* Packed rings use all 32 bits (vu_ring_map_packed); split ones 16, checked when the
         * ring starts (the features may be set after this). */
        if (vr->running) {
            log_err("%s: SET_VRING_BASE while the ring runs", vr->name);
            return -EBUSY;
        }
        vr->base = msg->p.state.num;
        break;
    case VHOST_USER_GET_VRING_BASE:
        if (!(vr = vu_vring_get(dev, msg->p.state.index, "GET_VRING_BASE")))
            return -EINVAL;
        vu_ring_stop(dev, msg->p.state.index);
        vr->started = false;
        vu_close_fd(&vr->kick_fd);
        reply->hdr.size = sizeof(struct vhost_user_vring_state);
        reply->p.state.index = msg->p.state.index;
        reply->p.state.num = vr->base;
        *has_reply = true;
        break;
    case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL:
    case VHOST_USER_SET_VRING_ERR:
        ret = vu_set_vring_fd(dev, msg);
        break;
    case VHOST_USER_SET_VRING_ENABLE:
        if (!(vr = vu_vring_get(dev, msg->p.state.index, "SET_VRING_ENABLE")))
            return -EINVAL;
        /* DPDK's virtio_user sends this before SET_FEATURES when it reconnects, so it is
         * accepted whatever has been negotiated so far. */
        if (msg->p.state.num > 1) {
            log_err("%s: SET_VRING_ENABLE %u is not 0 or 1", vr->name, msg->p.state.num);
            return -EPROTO;
        }
        vr->enabled = msg->p.state.num;
        if (!vr->enabled)
            vu_ring_stop(dev, msg->p.state.index);
        else
            ret = vu_ring_try_start(dev, msg->p.state.index);
        break;
    case VHOST_USER_SEND_RARP:
    case VHOST_USER_NET_SET_MTU:
        break; /* accepted; the switch learns MACs from traffic */
    case VHOST_USER_GET_CONFIG:
    case VHOST_USER_SET_CONFIG:
        ret = vu_config(dev, msg, reply, has_reply);
        break;
    case VHOST_USER_GET_INFLIGHT_FD:
        ret = vu_get_inflight_fd(dev, msg, reply, has_reply);
        break;
    case VHOST_USER_SET_INFLIGHT_FD:
        ret = vu_set_inflight_fd(dev, msg);
        break;
    case VHOST_USER_SET_STATUS:
        if (msg->p.u64 > 0xff)
            return -EPROTO;
        dev->status = (uint8_t)msg->p.u64;
        break;
    case VHOST_USER_GET_STATUS:
        reply->hdr.size = 8;
        reply->p.u64 = dev->status;
        *has_reply = true;
        break;
    case VHOST_USER_GET_MAX_MEM_SLOTS:
    case VHOST_USER_ADD_MEM_REG:
    case VHOST_USER_REM_MEM_REG:
        if (!vu_dev_has_proto(dev, VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) {
            log_err("%s: %s without CONFIGURE_MEM_SLOTS negotiated", dev->name,
                    vhost_user_request_name(req));
            return -EPROTO;
        }
        if (req == VHOST_USER_GET_MAX_MEM_SLOTS) {
            reply->hdr.size = 8;
            reply->p.u64 = VHOST_USER_MAX_MEM_REGIONS;
            *has_reply = true;
        } else {
            ret =
                req == VHOST_USER_ADD_MEM_REG ? vu_add_mem_reg(dev, msg) : vu_rem_mem_reg(dev, msg);
        }
        break;
    default:
        log_err("%s: %s is not supported", dev->name, vhost_user_request_name(req));
        return -EPROTO;
    }
    if (!*has_reply && (msg->hdr.flags & VHOST_USER_FLAG_NEED_REPLY) &&
        vu_dev_has_proto(dev, VHOST_USER_PROTOCOL_F_REPLY_ACK)) {
        reply->hdr.size = 8;
        reply->p.u64 = ret ? 1 : 0;
        *has_reply = true;
    }
    return ret;
}

int vu_dev_handle_readable(struct vu_dev *dev)
{
    struct vu_msg msg, reply;
    bool has_reply = false;
    int ret;

    if (dev->fd < 0)
        return -ENOTCONN;
    ret = vu_msg_recv(dev->fd, &msg, dev->name);
    if (ret) {
        if (ret == -ECONNRESET)
            log_info("%s: frontend disconnected", dev->name);
        return ret;
    }
    log_debug("%s: %s size %u fds %u", dev->name, vhost_user_request_name(msg.hdr.request),
              msg.hdr.size, msg.nfds);
    ret = vu_dev_process(dev, &msg, &reply, &has_reply);
    vu_msg_close_fds(&msg);
    if (has_reply) {
        int r = vu_send_reply(dev, &reply);
        if (!ret)
            ret = r;
    }
    if (ret && ret != -ECONNRESET)
        log_err("%s: %s failed (%s); disconnecting the frontend", dev->name,
                vhost_user_request_name(msg.hdr.request), strerror(-ret));
    return ret;
}
