/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-net on a Linux tap device (one queue pair, no control queue). */
#ifndef QT_VMM_DEVICES_VIRTIO_NET_H
#define QT_VMM_DEVICES_VIRTIO_NET_H

#include <json-c/json.h>
#include <pthread.h>
#include <stdint.h>

#include "vmm/devices/virtio.h"

#define VIRTIO_NET_F_CSUM       0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MAC        5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_HOST_TSO4  11
#define VIRTIO_NET_F_HOST_TSO6  12
#define VIRTIO_NET_F_MRG_RXBUF  15
#define VIRTIO_NET_F_STATUS     16

#define VIRTIO_NET_S_LINK_UP 1
#define VIRTIO_NET_HDR_LEN   12 /* struct virtio_net_hdr_v1 */

struct virtio_net_hdr_v1 {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
    uint16_t num_buffers;
};

struct virtio_net_config {
    uint8_t mac[6];
    uint16_t status;
    uint16_t max_virtqueue_pairs;
    uint16_t mtu;
} __attribute__((packed));

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
