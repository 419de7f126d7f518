/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user wire protocol (QEMU docs/interop/vhost-user.rst): message
 * header, request codes, payload layouts and feature bits. Native byte
 * order, as the protocol specifies.
 */
#ifndef QT_CARD_VU_PROTO_H
#define QT_CARD_VU_PROTO_H

#include <stdint.h>

#include "common/virtio_defs.h"

#define VU_VERSION           0x1u
#define VU_FLAG_VERSION_MASK 0x3u
#define VU_FLAG_REPLY        (1u << 2)
#define VU_FLAG_NEED_REPLY   (1u << 3)

#define VU_MAX_FDS         8
#define VU_MAX_MEM_REGIONS 8
#define VU_MAX_CONFIG_SIZE 256
#define VU_MAX_QUEUES      16 /* virtqueues per device */
#define VU_VRING_IDX_MASK  0xffu
#define VU_VRING_NOFD      (1u << 8)

enum vu_request {
    VU_REQ_NONE = 0,
    VU_REQ_GET_FEATURES = 1,
    VU_REQ_SET_FEATURES = 2,
    VU_REQ_SET_OWNER = 3,
    VU_REQ_RESET_OWNER = 4,
    VU_REQ_SET_MEM_TABLE = 5,
    VU_REQ_SET_LOG_BASE = 6,
    VU_REQ_SET_LOG_FD = 7,
    VU_REQ_SET_VRING_NUM = 8,
    VU_REQ_SET_VRING_ADDR = 9,
    VU_REQ_SET_VRING_BASE = 10,
    VU_REQ_GET_VRING_BASE = 11,
    VU_REQ_SET_VRING_KICK = 12,
    VU_REQ_SET_VRING_CALL = 13,
    VU_REQ_SET_VRING_ERR = 14,
    VU_REQ_GET_PROTOCOL_FEATURES = 15,
    VU_REQ_SET_PROTOCOL_FEATURES = 16,
    VU_REQ_GET_QUEUE_NUM = 17,
    VU_REQ_SET_VRING_ENABLE = 18,
    VU_REQ_SEND_RARP = 19,
    VU_REQ_NET_SET_MTU = 20,
    VU_REQ_GET_CONFIG = 24,
    VU_REQ_SET_CONFIG = 25,
    VU_REQ_GET_INFLIGHT_FD = 31,
    VU_REQ_SET_INFLIGHT_FD = 32,
    VU_REQ_RESET_DEVICE = 34,
    VU_REQ_GET_MAX_MEM_SLOTS = 36,
    VU_REQ_ADD_MEM_REG = 37,
    VU_REQ_REM_MEM_REG = 38,
    VU_REQ_SET_STATUS = 39,
    VU_REQ_GET_STATUS = 40,
    VU_REQ_MAX = 41,
};

/* Protocol feature bits. */
#define VU_PROTO_F_MQ                  0
#define VU_PROTO_F_LOG_SHMFD           1
#define VU_PROTO_F_RARP                2
#define VU_PROTO_F_REPLY_ACK           3
#define VU_PROTO_F_MTU                 4
#define VU_PROTO_F_CONFIG              9
#define VU_PROTO_F_INFLIGHT_SHMFD      12
#define VU_PROTO_F_RESET_DEVICE        13
#define VU_PROTO_F_CONFIGURE_MEM_SLOTS 15
#define VU_PROTO_F_STATUS              16

/* vhost feature bits (the virtio ones are in common/virtio_defs.h). */
#define VHOST_F_LOG_ALL                26
#define VHOST_USER_F_PROTOCOL_FEATURES 30

#define VHOST_VRING_F_LOG 0 /* vring addr flag: log used ring writes */

struct vu_hdr {
    uint32_t request;
    uint32_t flags;
    uint32_t size;
} __attribute__((packed));

struct vu_vring_state {
    uint32_t index;
    uint32_t num;
} __attribute__((packed));

struct vu_vring_addr {
    uint32_t index;
    uint32_t flags;
    uint64_t desc_user_addr;
    uint64_t used_user_addr;
    uint64_t avail_user_addr;
    uint64_t log_guest_addr;
} __attribute__((packed));

struct vu_mem_region {
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t mmap_offset;
} __attribute__((packed));

struct vu_mem_table {
    uint32_t nregions;
    uint32_t padding;
    struct vu_mem_region regions[VU_MAX_MEM_REGIONS];
} __attribute__((packed));

struct vu_mem_single {
    uint64_t padding;
    struct vu_mem_region region;
} __attribute__((packed));

struct vu_log {
    uint64_t mmap_size;
    uint64_t mmap_offset;
} __attribute__((packed));

struct vu_config {
    uint32_t offset;
    uint32_t size;
    uint32_t flags;
    uint8_t region[VU_MAX_CONFIG_SIZE];
} __attribute__((packed));

#define VU_CONFIG_HDR_SIZE 12u

struct vu_inflight {
    uint64_t mmap_size;
    uint64_t mmap_offset;
    uint16_t num_queues;
    uint16_t queue_size;
} __attribute__((packed));

union vu_payload {
    uint64_t u64;
    struct vu_vring_state state;
    struct vu_vring_addr addr;
    struct vu_mem_table mem;
    struct vu_mem_single mem_one;
    struct vu_log log;
    struct vu_config config;
    struct vu_inflight inflight;
};

struct vu_msg {
    struct vu_hdr hdr;
    union vu_payload p;
    int fds[VU_MAX_FDS];
    unsigned nfds;
};

#define VU_MAX_PAYLOAD ((uint32_t)sizeof(union vu_payload))

/*
 * Inflight tracking region for split rings (vhost-user.rst, "Inflight I/O
 * tracking"): one queue region per virtqueue, 64-byte aligned.
 */
struct vu_inflight_desc {
    uint8_t inflight;
    uint8_t padding[5];
    uint16_t next;
    uint64_t counter;
};

struct vu_inflight_queue {
    uint64_t features;
    uint16_t version;
    uint16_t desc_num;
    uint16_t last_batch_head;
    uint16_t used_idx;
    struct vu_inflight_desc desc[];
};

const char *vu_request_name(uint32_t req);

#endif
