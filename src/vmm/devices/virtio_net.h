/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-net on a Linux tap device (one queue pair, no control queue). */
#ifndef QT_VMM_DEVICES_VIRTIO_NET_H
#define QT_VMM_DEVICES_VIRTIO_NET_H

#include <json-c/json.h>
#include <pthread.h>
#include <stdint.h>

#include "common/virtio_defs.h"
#include "vmm/devices/virtio.h"

struct virtio_net_stats {
    uint64_t rx_packets, rx_bytes, rx_dropped;
    uint64_t tx_packets, tx_bytes, tx_dropped;
};

struct net_config;

struct virtio_net {
    struct virtio_dev vdev;
    char tap_name[16];
    int tap_fd;
    uint32_t tap_offloads; /* TUN_F_* the tap accepted when probed */
    struct virtio_net_config config;
    struct virtio_net_stats stats; /* updated atomically */
    pthread_t thread;
    bool running;
    int stop_fd;
    struct virtq_elem *rx_elem[64]; /* chains of one mergeable packet */
    struct virtq_elem *tx_elem;
    uint8_t *rx_buf;
};

/* Open (or create) the tap and describe the device; not yet plugged. */
int virtio_net_create(struct vm *vm, const struct net_config *nc, int index,
                      struct virtio_net **out);
void virtio_net_destroy(struct virtio_net *net);
void virtio_net_stats(struct virtio_net *net, json_object *devices);

#endif
