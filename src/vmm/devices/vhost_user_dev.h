/* SPDX-License-Identifier: Apache-2.0 */
/* vhost-user-blk and vhost-user-net front-end devices. */
#ifndef QT_VMM_DEVICES_VHOST_USER_DEV_H
#define QT_VMM_DEVICES_VHOST_USER_DEV_H

#include <json-c/json.h>
#include <pthread.h>

#include "vmm/devices/vhost_user.h"
#include "vmm/devices/virtio.h"

struct disk_config;
struct net_config;

struct vhost_user_dev {
    struct virtio_dev vdev;
    struct vhost_user vu;
    int type; /* VIRTIO_ID_BLOCK or VIRTIO_ID_NET */
    uint8_t config[VHOST_USER_MAX_CONFIG_SIZE];
    uint32_t config_len;
    bool started[VIRTIO_MAX_QUEUES];
    int err_fd[VIRTIO_MAX_QUEUES]; /* SET_VRING_ERR eventfds, -1 when none */
    uint64_t acked;                /* features set at DRIVER_OK (replayed on reconnect) */
    /* Watches the error eventfds and the socket while the device runs. */
    pthread_t monitor;
    bool monitor_running;
    int stop_fd;
};

/* Connect and handshake with the back-end; the device is not yet plugged. */
int vhost_user_blk_create(struct vm *vm, const struct disk_config *dc, int index,
                          struct vhost_user_dev **out);
int vhost_user_net_create(struct vm *vm, const struct net_config *nc, int index,
                          struct vhost_user_dev **out);
void vhost_user_dev_destroy(struct vhost_user_dev *d);
void vhost_user_dev_stats(struct vhost_user_dev *d, json_object *devices);

#endif
