/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user wire protocol (QEMU docs/interop/vhost-user.rst), shared by the
 * front-end in qtvmm and the back-end in qtcard: message header and flags,
 * request numbers, feature and protocol-feature bits, payload layouts and
 * the inflight regions of split and packed rings. Native byte order, as the protocol says.
 * Only the protocol lives here; each side keeps its own limits (payload
 * buffer size, queue counts, timeouts) and message framing.
 */
#ifndef QT_COMMON_VHOST_USER_DEFS_H
#define QT_COMMON_VHOST_USER_DEFS_H

#include <stdint.h>

/* Header flags: version in bits 0-1, then reply / need-reply. */
#define VHOST_USER_VERSION           0x1u
#define VHOST_USER_FLAG_VERSION_MASK 0x3u
#define VHOST_USER_FLAG_REPLY        (1u << 2)
#define VHOST_USER_FLAG_NEED_REPLY   (1u << 3)

#define VHOST_USER_MAX_FDS         8   /* file descriptors in one message */
#define VHOST_USER_MAX_MEM_REGIONS 8   /* SET_MEM_TABLE regions */
#define VHOST_USER_MAX_CONFIG_SIZE 256 /* GET/SET_CONFIG payload */
#define VHOST_USER_VRING_IDX_MASK  0xffu
#define VHOST_USER_VRING_NOFD      (1u << 8) /* SET_VRING_KICK/CALL/ERR without an fd */
#define VHOST_USER_HDR_SIZE        12u
#define VHOST_USER_CONFIG_HDR_SIZE 12u /* offset, size, flags before the config bytes */

/* Front-end requests (the ones qingtian sends or serves). */
enum vhost_user_request {
    VHOST_USER_NONE = 0,
    VHOST_USER_GET_FEATURES = 1,
    VHOST_USER_SET_FEATURES = 2,
    VHOST_USER_SET_OWNER = 3,
    VHOST_USER_RESET_OWNER = 4,
    VHOST_USER_SET_MEM_TABLE = 5,
    VHOST_USER_SET_LOG_BASE = 6,
    VHOST_USER_SET_LOG_FD = 7,
    VHOST_USER_SET_VRING_NUM = 8,
    VHOST_USER_SET_VRING_ADDR = 9,
    VHOST_USER_SET_VRING_BASE = 10,
    VHOST_USER_GET_VRING_BASE = 11,
    VHOST_USER_SET_VRING_KICK = 12,
    VHOST_USER_SET_VRING_CALL = 13,
    VHOST_USER_SET_VRING_ERR = 14,
    VHOST_USER_GET_PROTOCOL_FEATURES = 15,
    VHOST_USER_SET_PROTOCOL_FEATURES = 16,
    VHOST_USER_GET_QUEUE_NUM = 17,
    VHOST_USER_SET_VRING_ENABLE = 18,
    VHOST_USER_SEND_RARP = 19,
    VHOST_USER_NET_SET_MTU = 20,
    VHOST_USER_GET_CONFIG = 24,
    VHOST_USER_SET_CONFIG = 25,
    VHOST_USER_GET_INFLIGHT_FD = 31,
    VHOST_USER_SET_INFLIGHT_FD = 32,
    VHOST_USER_RESET_DEVICE = 34,
    VHOST_USER_GET_MAX_MEM_SLOTS = 36,
    VHOST_USER_ADD_MEM_REG = 37,
    VHOST_USER_REM_MEM_REG = 38,
    VHOST_USER_SET_STATUS = 39,
    VHOST_USER_GET_STATUS = 40,
    VHOST_USER_REQUEST_MAX = 41, /* one past the last request above */
};

/* Feature bits of GET/SET_FEATURES that belong to vhost, not to virtio. */
#define VHOST_F_LOG_ALL                26
#define VHOST_USER_F_PROTOCOL_FEATURES 30

/* Protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
#define VHOST_USER_PROTOCOL_F_MQ                  0
#define VHOST_USER_PROTOCOL_F_LOG_SHMFD           1
#define VHOST_USER_PROTOCOL_F_RARP                2
#define VHOST_USER_PROTOCOL_F_REPLY_ACK           3
#define VHOST_USER_PROTOCOL_F_MTU                 4
#define VHOST_USER_PROTOCOL_F_CONFIG              9
#define VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD      12
#define VHOST_USER_PROTOCOL_F_RESET_DEVICE        13
#define VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS 15
#define VHOST_USER_PROTOCOL_F_STATUS              16

/* SET_VRING_ADDR flags bit: log writes to the used ring. */
#define VHOST_VRING_F_LOG 0

struct vhost_user_hdr {
    uint32_t request;
    uint32_t flags;
    uint32_t size; /* payload bytes after the header */
} __attribute__((packed));

/* SET_VRING_NUM / SET_VRING_BASE / GET_VRING_BASE / SET_VRING_ENABLE. */
struct vhost_user_vring_state {
    uint32_t index;
    uint32_t num;
} __attribute__((packed));

/* SET_VRING_ADDR: ring addresses in the front-end's virtual address space. */
struct vhost_user_vring_addr {
    uint32_t index;
    uint32_t flags;
    uint64_t desc_user_addr;
    uint64_t used_user_addr;
    uint64_t avail_user_addr;
    uint64_t log_guest_addr;
} __attribute__((packed));

struct vhost_user_mem_region {
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t mmap_offset;
} __attribute__((packed));

/* SET_MEM_TABLE: one fd per region. */
struct vhost_user_mem_table {
    uint32_t nregions;
    uint32_t padding;
    struct vhost_user_mem_region regions[VHOST_USER_MAX_MEM_REGIONS];
} __attribute__((packed));

/* ADD_MEM_REG / REM_MEM_REG. */
struct vhost_user_mem_single {
    uint64_t padding;
    struct vhost_user_mem_region region;
} __attribute__((packed));

/* SET_LOG_BASE. */
struct vhost_user_log {
    uint64_t mmap_size;
    uint64_t mmap_offset;
} __attribute__((packed));

/* GET_CONFIG / SET_CONFIG: VHOST_USER_CONFIG_HDR_SIZE + size bytes on the wire. */
struct vhost_user_config {
    uint32_t offset;
    uint32_t size;
    uint32_t flags;
    uint8_t payload[VHOST_USER_MAX_CONFIG_SIZE];
} __attribute__((packed));

/* GET_INFLIGHT_FD / SET_INFLIGHT_FD. */
struct vhost_user_inflight {
    uint64_t mmap_size;
    uint64_t mmap_offset;
    uint16_t num_queues;
    uint16_t queue_size;
} __attribute__((packed));

/*
 * Inflight I/O tracking region for split rings: one queue region per
 * virtqueue (a header, then one entry per descriptor), each 64-byte aligned.
 */
struct vhost_user_inflight_desc {
    uint8_t inflight;
    uint8_t padding[5];
    uint16_t next;
    uint64_t counter;
};

struct vhost_user_inflight_queue {
    uint64_t features;
    uint16_t version;
    uint16_t desc_num;
    uint16_t last_batch_head;
    uint16_t used_idx;
    struct vhost_user_inflight_desc desc[];
};

/*
 * The same for packed rings: every ring descriptor of a chain popped is copied into an
 * entry taken from a free list; the chain's first entry (its head) carries the count,
 * the order (counter) and the in-flight flag, and names its last entry. The old_* fields
 * are the state as of the last consistent point, to roll back to after a crash.
 */
struct vhost_user_inflight_desc_packed {
    uint8_t inflight;
    uint8_t padding;
    uint16_t next; /* next free entry (desc_num: none) */
    uint16_t last; /* head only: the chain's last entry */
    uint16_t num;  /* head only: the chain's ring descriptors */
    uint64_t counter;
    uint16_t id;
    uint16_t flags;
    uint32_t len;
    uint64_t addr;
};

struct vhost_user_inflight_queue_packed {
    uint64_t features;
    uint16_t version;
    uint16_t desc_num;
    uint16_t free_head;
    uint16_t old_free_head;
    uint16_t used_idx;
    uint16_t old_used_idx;
    uint8_t used_wrap_counter;
    uint8_t old_used_wrap_counter;
    uint8_t padding[7];
    struct vhost_user_inflight_desc_packed desc[];
};

_Static_assert(sizeof(struct vhost_user_hdr) == VHOST_USER_HDR_SIZE, "vhost-user header size");
_Static_assert(sizeof(struct vhost_user_vring_addr) == 40, "vring address payload size");
_Static_assert(sizeof(struct vhost_user_mem_region) == 32, "memory region size");
_Static_assert(sizeof(struct vhost_user_config) ==
                   VHOST_USER_CONFIG_HDR_SIZE + VHOST_USER_MAX_CONFIG_SIZE,
               "config payload size");
_Static_assert(sizeof(struct vhost_user_inflight) == 20, "inflight payload size");
_Static_assert(sizeof(struct vhost_user_inflight_desc) == 16, "inflight descriptor size");
_Static_assert(sizeof(struct vhost_user_inflight_queue) == 16, "inflight queue header size");
_Static_assert(sizeof(struct vhost_user_inflight_desc_packed) == 32, "packed inflight entry size");
_Static_assert(sizeof(struct vhost_user_inflight_queue_packed) == 32,
               "packed inflight queue header size");

/* "GET_FEATURES", ..., or "UNKNOWN": for messages. */
static inline const char *vhost_user_request_name(uint32_t req)
{
    static const char *const names[VHOST_USER_REQUEST_MAX] = {
        [VHOST_USER_GET_FEATURES] = "GET_FEATURES",
        [VHOST_USER_SET_FEATURES] = "SET_FEATURES",
        [VHOST_USER_SET_OWNER] = "SET_OWNER",
        [VHOST_USER_RESET_OWNER] = "RESET_OWNER",
        [VHOST_USER_SET_MEM_TABLE] = "SET_MEM_TABLE",
        [VHOST_USER_SET_LOG_BASE] = "SET_LOG_BASE",
        [VHOST_USER_SET_LOG_FD] = "SET_LOG_FD",
        [VHOST_USER_SET_VRING_NUM] = "SET_VRING_NUM",
        [VHOST_USER_SET_VRING_ADDR] = "SET_VRING_ADDR",
        [VHOST_USER_SET_VRING_BASE] = "SET_VRING_BASE",
        [VHOST_USER_GET_VRING_BASE] = "GET_VRING_BASE",
        [VHOST_USER_SET_VRING_KICK] = "SET_VRING_KICK",
        [VHOST_USER_SET_VRING_CALL] = "SET_VRING_CALL",
        [VHOST_USER_SET_VRING_ERR] = "SET_VRING_ERR",
        [VHOST_USER_GET_PROTOCOL_FEATURES] = "GET_PROTOCOL_FEATURES",
        [VHOST_USER_SET_PROTOCOL_FEATURES] = "SET_PROTOCOL_FEATURES",
        [VHOST_USER_GET_QUEUE_NUM] = "GET_QUEUE_NUM",
        [VHOST_USER_SET_VRING_ENABLE] = "SET_VRING_ENABLE",
        [VHOST_USER_SEND_RARP] = "SEND_RARP",
        [VHOST_USER_NET_SET_MTU] = "NET_SET_MTU",
        [VHOST_USER_GET_CONFIG] = "GET_CONFIG",
        [VHOST_USER_SET_CONFIG] = "SET_CONFIG",
        [VHOST_USER_GET_INFLIGHT_FD] = "GET_INFLIGHT_FD",
        [VHOST_USER_SET_INFLIGHT_FD] = "SET_INFLIGHT_FD",
        [VHOST_USER_RESET_DEVICE] = "RESET_DEVICE",
        [VHOST_USER_GET_MAX_MEM_SLOTS] = "GET_MAX_MEM_SLOTS",
        [VHOST_USER_ADD_MEM_REG] = "ADD_MEM_REG",
        [VHOST_USER_REM_MEM_REG] = "REM_MEM_REG",
        [VHOST_USER_SET_STATUS] = "SET_STATUS",
        [VHOST_USER_GET_STATUS] = "GET_STATUS",
    };

    if (req < VHOST_USER_REQUEST_MAX && names[req])
        return names[req];
    return "UNKNOWN";
}

#endif
