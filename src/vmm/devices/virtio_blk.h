/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-blk device on a raw file or block device, served through io_uring. */
#ifndef QT_VMM_DEVICES_VIRTIO_BLK_H
#define QT_VMM_DEVICES_VIRTIO_BLK_H

#include <json-c/json.h>
#include <stdint.h>

#include "common/virtio_defs.h"
#include "vmm/devices/virtio.h"

/* qtvmm's limits (the protocol definitions are in common/virtio_defs.h). */
#define VIRTIO_BLK_MAX_QUEUES          16
#define VIRTIO_BLK_MAX_DISCARD_SECTORS (1u << 22) /* 2 GiB per request */

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
