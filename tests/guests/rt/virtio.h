/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A minimal polling virtio-pci (modern, virtio 1.2 section 4.1) driver:
 * capability discovery, reset, feature negotiation (VERSION_1 required),
 * split virtqueues, notification and used-ring polling. No interrupts.
 */
#ifndef QT_GUEST_VIRTIO_H
#define QT_GUEST_VIRTIO_H

#include "rt.h"

#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_ID_NET     1
#define VIRTIO_ID_BLOCK   2
#define VIRTIO_ID_RNG     4

#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER      0x02
#define VIRTIO_STATUS_DRIVER_OK   0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED      0x80

#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX     29
#define VIRTIO_F_VERSION_1     32

#define VIRTQ_DESC_F_NEXT          1
#define VIRTQ_DESC_F_WRITE         2
#define VIRTQ_DESC_F_INDIRECT      4
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY     1

#define VIRTQ_MAX_SIZE    256
#define VIRTIO_MAX_QUEUES 4

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct virtq_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[];
};

struct virtq_used_elem {
    uint32_t id;
    uint32_t len;
};

struct virtq_used {
    uint16_t flags;
    uint16_t idx;
    struct virtq_used_elem ring[];
};

struct virtq {
    uint16_t index;
    uint16_t size;
    struct virtq_desc *desc;
    volatile struct virtq_avail *avail;
    volatile struct virtq_used *used;
    uint16_t avail_idx; /* next avail->idx we will publish */
    uint16_t last_used;
    uint16_t free_head;
    uint16_t num_free;
    uint16_t chain_len[VIRTQ_MAX_SIZE]; /* descriptors per chain, by head */
    uint64_t notify_addr;
    void *mem; /* descriptor table, then avail ring, then used ring */
};

struct virtio_dev {
    struct pci_dev pci;
    uint64_t common;
    uint64_t notify_base;
    uint32_t notify_mult;
    uint64_t isr;
    uint64_t device_cfg;
    uint32_t device_cfg_len;
    uint64_t features; /* negotiated */
    int n_queues;
    struct virtq vq[VIRTIO_MAX_QUEUES];
};

/* One buffer of a chain: device-readable unless write is set. */
struct virtq_buf {
    uint64_t addr;
    uint32_t len;
    bool write;
};

/* Bump allocator for queue and buffer memory (never freed). */
void *rt_alloc(size_t size, size_t align);

/* The nth (0-based) modern virtio device of this type on bus 0: caps parsed, BARs mapped. */
int virtio_find(uint16_t type, int nth, struct virtio_dev *vd);
/* Reset and negotiate: want & offered, plus VERSION_1 (required). Leaves FEATURES_OK set. */
int virtio_init(struct virtio_dev *vd, uint64_t want);
/* Set up queue q with at most max_size entries. */
int virtq_setup(struct virtio_dev *vd, uint16_t q, uint16_t max_size);
void virtio_driver_ok(struct virtio_dev *vd);
void virtio_reset(struct virtio_dev *vd);
uint8_t virtio_status(const struct virtio_dev *vd);
uint64_t virtio_offered_features(const struct virtio_dev *vd);
static inline bool virtio_has(const struct virtio_dev *vd, unsigned bit)
{
    return (vd->features >> bit) & 1;
}

uint8_t virtio_cfg_read8(const struct virtio_dev *vd, uint32_t off);
uint16_t virtio_cfg_read16(const struct virtio_dev *vd, uint32_t off);
uint32_t virtio_cfg_read32(const struct virtio_dev *vd, uint32_t off);
uint64_t virtio_cfg_read64(const struct virtio_dev *vd, uint32_t off);

/* Queue a chain; returns its head (>= 0) or -ENOSPC. Does not notify. */
int virtq_add(struct virtq *vq, const struct virtq_buf *bufs, int n);
/* Publish a raw head on the avail ring (used by the malformed-ring tests). */
void virtq_publish(struct virtq *vq, uint16_t head);
void virtq_kick(struct virtio_dev *vd, struct virtq *vq);
/* A completed chain: its head (>= 0) and written length, or -EBUSY when none is ready. */
int virtq_poll(struct virtq *vq, uint32_t *len);
/* Poll until head completes; -ETIMEDOUT after timeout_ms, -EIO when NEEDS_RESET shows up. */
int virtq_wait(struct virtio_dev *vd, struct virtq *vq, int head, uint32_t *len,
               uint64_t timeout_ms);

#endif
