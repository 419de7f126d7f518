/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-blk device on a raw file or block device, served through io_uring. */
#ifndef QT_VMM_DEVICES_VIRTIO_BLK_H
#define QT_VMM_DEVICES_VIRTIO_BLK_H

#include <json-c/json.h>
#include <stdint.h>

#include "vmm/devices/virtio.h"

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

#define VIRTIO_BLK_ID_BYTES            20
#define VIRTIO_BLK_WZ_FLAG_UNMAP       1
#define VIRTIO_BLK_MAX_QUEUES          16
#define VIRTIO_BLK_MAX_DISCARD_SECTORS (1u << 22) /* 2 GiB per request */

struct virtio_blk_outhdr {
    uint32_t type;
    uint32_t ioprio;
    uint64_t sector;
};

struct virtio_blk_discard_write_zeroes {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};

/* struct virtio_blk_config up to write_zeroes_may_unmap (virtio 1.2, 5.2.4). */
struct virtio_blk_config {
    uint64_t capacity;
    uint32_t size_max;
    uint32_t seg_max;
    uint16_t cylinders;
    uint8_t heads;
    uint8_t sectors;
    uint32_t blk_size;
    uint8_t physical_block_exp;
    uint8_t alignment_offset;
    uint16_t min_io_size;
    uint32_t opt_io_size;
    uint8_t writeback;
    uint8_t unused0;
    uint16_t num_queues;
    uint32_t max_discard_sectors;
    uint32_t max_discard_seg;
    uint32_t discard_sector_alignment;
    uint32_t max_write_zeroes_sectors;
    uint32_t max_write_zeroes_seg;
    uint8_t write_zeroes_may_unmap;
    uint8_t unused1[3];
} __attribute__((packed));

struct virtio_blk_stats {
    uint64_t reads, writes, read_bytes, write_bytes, flushes, discards, write_zeroes, errors;
};

struct blk_queue;
struct disk_config;

struct virtio_blk {
    struct virtio_dev vdev;
    char path[256];
    int fd;
    int fd_buffered;   /* for unaligned buffers when fd is O_DIRECT, else -1 */
    uint64_t capacity; /* sectors */
    bool readonly;
    char serial[VIRTIO_BLK_ID_BYTES];
    struct virtio_blk_config config;
    struct virtio_blk_stats stats; /* updated atomically by the I/O threads */
    struct blk_queue *queues;
};

/* Create (not plugged) the index-th disk of the VM from its configuration. */
int virtio_blk_create(struct vm *vm, const struct disk_config *dc, int index,
                      struct virtio_blk **out);
void virtio_blk_destroy(struct virtio_blk *blk);
/* Append this disk's counters to the API's devices array. */
void virtio_blk_stats(struct virtio_blk *blk, json_object *devices);

#endif
