/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user front-end side of the protocol (QEMU docs/interop/vhost-user.rst):
 * messages over a unix stream socket, file descriptors as SCM_RIGHTS. Every
 * reply is checked (flags, request number, size) before it is used; a broken
 * or silent back-end yields an error, never a hang (socket timeouts).
 */
#ifndef QT_VMM_DEVICES_VHOST_USER_H
#define QT_VMM_DEVICES_VHOST_USER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct vm;

enum vhost_user_request {
    VHOST_USER_GET_FEATURES = 1,
    VHOST_USER_SET_FEATURES = 2,
    VHOST_USER_SET_OWNER = 3,
    VHOST_USER_RESET_OWNER = 4,
    VHOST_USER_SET_MEM_TABLE = 5,
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
    VHOST_USER_GET_CONFIG = 24,
};

#define VHOST_USER_VERSION             0x1
#define VHOST_USER_FLAG_REPLY          (1u << 2)
#define VHOST_USER_FLAG_NEED_REPLY     (1u << 3)
#define VHOST_USER_F_PROTOCOL_FEATURES 30

#define VHOST_USER_PROTOCOL_F_MQ        0
#define VHOST_USER_PROTOCOL_F_REPLY_ACK 3
#define VHOST_USER_PROTOCOL_F_CONFIG    9

#define VHOST_USER_VRING_NOFD      (1ull << 8)
#define VHOST_USER_MAX_REGIONS     8
#define VHOST_USER_MAX_CONFIG_SIZE 256

struct vhost_user {
    int fd;
    bool dead; /* the connection broke; no more messages are sent */
    char path[108];
    char name[32];
    uint64_t features;          /* offered by the back-end */
    uint64_t protocol_features; /* negotiated */
    pthread_mutex_t lock;       /* one request/reply exchange at a time */
};

/* Connect to the back-end at path; name is for messages. */
int vhost_user_connect(struct vhost_user *vu, const char *path, const char *name);
void vhost_user_close(struct vhost_user *vu);

/*
 * The handshake: SET_OWNER, GET_FEATURES, and (when offered)
 * GET/SET_PROTOCOL_FEATURES with 'wanted' & offered. Fills vu->features and
 * vu->protocol_features.
 */
int vhost_user_handshake(struct vhost_user *vu, uint64_t wanted_protocol);
int vhost_user_set_features(struct vhost_user *vu, uint64_t features);
int vhost_user_get_queue_num(struct vhost_user *vu, uint64_t *num);
/* Share guest RAM: every region of vm_mem_regions() with its memfd. */
int vhost_user_set_mem_table(struct vhost_user *vu, struct vm *vm);
int vhost_user_set_vring_num(struct vhost_user *vu, uint32_t index, uint32_t num);
int vhost_user_set_vring_base(struct vhost_user *vu, uint32_t index, uint32_t base);
int vhost_user_get_vring_base(struct vhost_user *vu, uint32_t index, uint32_t *base);
/* Ring addresses are front-end virtual addresses (translated guest addresses). */
int vhost_user_set_vring_addr(struct vhost_user *vu, uint32_t index, uint64_t desc, uint64_t used,
                              uint64_t avail);
/* fd < 0 sends the "no file descriptor" flag. */
int vhost_user_set_vring_kick(struct vhost_user *vu, uint32_t index, int fd);
int vhost_user_set_vring_call(struct vhost_user *vu, uint32_t index, int fd);
int vhost_user_set_vring_err(struct vhost_user *vu, uint32_t index, int fd);
int vhost_user_set_vring_enable(struct vhost_user *vu, uint32_t index, bool enable);
/* Read len bytes of the device config space at off (needs PROTOCOL_F_CONFIG). */
int vhost_user_get_config(struct vhost_user *vu, uint32_t off, void *buf, uint32_t len);

#endif
