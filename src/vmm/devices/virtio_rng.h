/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-rng: entropy from getrandom(). */
#ifndef QT_VMM_DEVICES_VIRTIO_RNG_H
#define QT_VMM_DEVICES_VIRTIO_RNG_H

#include <json-c/json.h>
#include <pthread.h>

#include "vmm/devices/virtio.h"

struct virtio_rng {
    struct virtio_dev vdev;
    pthread_t thread;
    bool running;
    int stop_fd;
    struct virtq_elem *elem;
    uint64_t requests, bytes; /* updated atomically */
};

int virtio_rng_create(struct vm *vm, struct virtio_rng **out);
void virtio_rng_destroy(struct virtio_rng *rng);
void virtio_rng_stats(struct virtio_rng *rng, json_object *devices);

#endif
