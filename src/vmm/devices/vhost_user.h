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

#include "common/vhost_user_defs.h"

struct vm;

struct vhost_user {
    int fd;
    bool dead; /* the connection broke; no more messages are sent */
    char path[108];
    char name[32];
    uint64_t features;          /* offered by the back-end */
    uint64_t protocol_features; /* negotiated */
    pthread_mutex_t lock;       /* one request/reply exchange at a time */
};

/* Connect to the back-end at path (name is for messages): 0 or -errno, which the caller
 * reports. */
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
