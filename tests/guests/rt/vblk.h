/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-blk on top of the polling virtio driver (virtio 1.2, 5.2). */
#ifndef QT_GUEST_VBLK_H
#define QT_GUEST_VBLK_H

#include "virtio.h"

#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_MQ           12
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define VBLK_SLOTS          64
#define VBLK_TIMEOUT_MS     10000

struct virtio_blk_req_hdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

struct virtio_blk_discard_wz {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};

/* Per in-flight request: header and status live in guest RAM the device can reach. */
struct vblk_slot {
    struct virtio_blk_req_hdr hdr;
    struct virtio_blk_discard_wz seg;
    uint8_t status;
    int head; /* -1 when free */
};

struct vblk {
    struct virtio_dev vd;
    uint64_t capacity; /* 512-byte sectors */
    uint32_t max_discard_sectors;
    uint32_t max_write_zeroes_sectors;
    uint64_t extra_features;
    uint16_t n_queues;       /* > 1 only when VIRTIO_BLK_F_MQ was asked for and offered */
    struct vblk_slot *slots; /* VBLK_SLOTS entries */
};

/*
 * nth virtio-blk device: negotiate RO, BLK_SIZE, FLUSH, DISCARD, WRITE_ZEROES, SEG_MAX,
 * SIZE_MAX plus extra_features (e.g. 1 << VIRTIO_F_INDIRECT_DESC); one queue.
 */
int vblk_open(struct vblk *b, int nth, uint16_t queue_size, uint64_t extra_features);
/* Re-run initialisation after a reset (same queue memory, same features asked). */
int vblk_reinit(struct vblk *b, uint16_t queue_size);
/* Synchronous request: returns the virtio-blk status byte (>= 0) or -errno on a transport error. */
int vblk_rw(struct vblk *b, uint32_t type, uint64_t sector, void *buf, uint32_t len);
/* The same on request queue q (uses slot q: one vCPU per queue may call it concurrently). */
int vblk_rw_queue(struct vblk *b, uint16_t q, uint32_t type, uint64_t sector, void *buf,
                  uint32_t len);
/* Discard or write-zeroes of [sector, sector + n). */
int vblk_discard_wz(struct vblk *b, uint32_t type, uint64_t sector, uint32_t n, bool unmap);

/* Asynchronous use: submit in slot, kick, then reap completions. */
int vblk_submit(struct vblk *b, int slot, uint32_t type, uint64_t sector, void *buf, uint32_t len);
/* Reaps one completion: its slot, or -EBUSY when none is ready. */
int vblk_reap(struct vblk *b);

#endif
