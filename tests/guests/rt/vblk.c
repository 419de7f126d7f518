/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-blk requests: header (device-readable), data, status byte (device-writable). */
#include "vblk.h"

int vblk_reinit(struct vblk *b, uint16_t queue_size)
{
    uint64_t want = (1ull << VIRTIO_BLK_F_RO) | (1ull << VIRTIO_BLK_F_BLK_SIZE) |
                    (1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_BLK_F_DISCARD) |
                    (1ull << VIRTIO_BLK_F_WRITE_ZEROES) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
                    (1ull << VIRTIO_BLK_F_SIZE_MAX) | b->extra_features;
    int ret;

    ret = virtio_init(&b->vd, want);
    if (ret < 0)
        return ret;
    b->n_queues = 1;
    if (virtio_has(&b->vd, VIRTIO_BLK_F_MQ) && b->vd.device_cfg_len >= 36) {
        uint16_t nq = virtio_cfg_read16(&b->vd, 34);

        if (nq == 0) {
            printf("virtio-blk: VIRTIO_BLK_F_MQ with num_queues 0\n");
            return -EPROTO;
        }
        b->n_queues = nq < VIRTIO_MAX_QUEUES ? nq : VIRTIO_MAX_QUEUES;
    }
    for (uint16_t q = 0; q < b->n_queues; q++) {
        ret = virtq_setup(&b->vd, q, queue_size);
        if (ret < 0) {
            printf("virtio-blk: queue %u setup failed (%d)\n", q, ret);
            return ret;
        }
    }
    virtio_driver_ok(&b->vd);
    for (int i = 0; i < VBLK_SLOTS; i++)
        b->slots[i].head = -1;
    return 0;
}

int vblk_open(struct vblk *b, int nth, uint16_t queue_size, uint64_t extra_features)
{
    int ret;

    memset(b, 0, sizeof(*b));
    b->extra_features = extra_features;
    ret = virtio_find(VIRTIO_ID_BLOCK, nth, &b->vd);
    if (ret < 0)
        return ret;
    b->slots = rt_alloc(sizeof(*b->slots) * VBLK_SLOTS, 64);
    ret = vblk_reinit(b, queue_size);
    if (ret < 0)
        return ret;
    if (!b->vd.device_cfg || b->vd.device_cfg_len < 8)
        return -ENODEV;
    b->capacity = virtio_cfg_read64(&b->vd, 0);
    if (virtio_has(&b->vd, VIRTIO_BLK_F_DISCARD) && b->vd.device_cfg_len >= 44)
        b->max_discard_sectors = virtio_cfg_read32(&b->vd, 36);
    if (virtio_has(&b->vd, VIRTIO_BLK_F_WRITE_ZEROES) && b->vd.device_cfg_len >= 56)
        b->max_write_zeroes_sectors = virtio_cfg_read32(&b->vd, 48);
    return 0;
}

static int vblk_submit_queue(struct vblk *b, uint16_t q, int slot, uint32_t type, uint64_t sector,
                             void *buf, uint32_t len)
{
    struct vblk_slot *s = &b->slots[slot];
    struct virtq_buf bufs[3];
    int n = 0, head;

    s->hdr.type = type;
    s->hdr.reserved = 0;
    s->hdr.sector = sector;
    s->status = 0xff;
    bufs[n++] = (struct virtq_buf){(uint64_t)&s->hdr, sizeof(s->hdr), false};
    if (len)
        bufs[n++] = (struct virtq_buf){(uint64_t)buf, len,
                                       type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID};
    bufs[n++] = (struct virtq_buf){(uint64_t)&s->status, 1, true};
    head = virtq_add(&b->vd.vq[q], bufs, n);
    if (head < 0)
        return head;
    s->head = head;
    return 0;
}

int vblk_submit(struct vblk *b, int slot, uint32_t type, uint64_t sector, void *buf, uint32_t len)
{
    return vblk_submit_queue(b, 0, slot, type, sector, buf, len);
}

int vblk_reap(struct vblk *b)
{
    int head = virtq_poll(&b->vd.vq[0], NULL);

    if (head < 0)
        return head;
    for (int i = 0; i < VBLK_SLOTS; i++) {
        if (b->slots[i].head == head) {
            b->slots[i].head = -1;
            return i;
        }
    }
    panic("virtio-blk: completion for head %d matches no request", head);
}

int vblk_rw_queue(struct vblk *b, uint16_t q, uint32_t type, uint64_t sector, void *buf,
                  uint32_t len)
{
    int ret;

    if (q >= b->n_queues)
        return -EINVAL;
    /* Slot q: each queue may be driven by its own vCPU. */
    ret = vblk_submit_queue(b, q, q, type, sector, buf, len);
    if (ret < 0)
        return ret;
    virtq_kick(&b->vd, &b->vd.vq[q]);
    ret = virtq_wait(&b->vd, &b->vd.vq[q], b->slots[q].head, NULL, VBLK_TIMEOUT_MS);
    b->slots[q].head = -1;
    if (ret < 0)
        return ret;
    return b->slots[q].status;
}

int vblk_rw(struct vblk *b, uint32_t type, uint64_t sector, void *buf, uint32_t len)
{
    return vblk_rw_queue(b, 0, type, sector, buf, len);
}

int vblk_discard_wz(struct vblk *b, uint32_t type, uint64_t sector, uint32_t n, bool unmap)
{
    struct vblk_slot *s = &b->slots[0];

    s->seg.sector = sector;
    s->seg.num_sectors = n;
    s->seg.flags = unmap ? 1 : 0;
    return vblk_rw(b, type, 0, &s->seg, sizeof(s->seg));
}
