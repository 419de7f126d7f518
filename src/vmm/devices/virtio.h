/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-pci modern transport (virtio 1.2, section 4.1), device side.
 *
 * A device model (virtio-blk, -net, -rng, vhost-user frontends) embeds a
 * struct virtio_dev, describes itself with virtio_dev_init() and a table of
 * ops, and plugs it on the PCI bus. The transport owns feature negotiation,
 * the device status machine, queue configuration, MSI-X vectors, the
 * per-queue kick eventfds (registered as ioeventfds on the notify addresses)
 * and reset.
 *
 * BAR 0 (32-bit memory, 16 KiB):  0x0000 common cfg, 0x1000 ISR,
 *                                  0x2000 device cfg, 0x3000 notify (4 bytes/queue)
 * BAR 1 (32-bit memory):           MSI-X table and PBA (num_queues + 1 vectors)
 */
#ifndef QT_VMM_DEVICES_VIRTIO_H
#define QT_VMM_DEVICES_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/virtio_defs.h"
#include "vmm/devices/pci.h"
#include "vmm/devices/virtq.h"

#define VIRTIO_MAX_QUEUES 64

/* BAR 0 layout. */
#define VIRTIO_BAR_COMMON     0x0000
#define VIRTIO_BAR_ISR        0x1000
#define VIRTIO_BAR_DEVICE     0x2000
#define VIRTIO_BAR_NOTIFY     0x3000
#define VIRTIO_BAR_SIZE       0x4000
#define VIRTIO_NOTIFY_MULT    4
#define VIRTIO_DEVICE_CFG_MAX 0x1000

struct virtio_dev;

struct virtio_dev_ops {
    /*
     * DRIVER_OK: the enabled queues are set up (vdev->queues[i].vq ready);
     * start serving them. A negative return marks the device NEEDS_RESET.
     */
    int (*activate)(struct virtio_dev *vdev);
    /* Device reset by the driver (or teardown): stop serving, forget requests. */
    void (*reset)(struct virtio_dev *vdev);
    /* Device config space; off + len <= config_len is guaranteed. */
    void (*config_read)(struct virtio_dev *vdev, uint32_t off, void *data, uint32_t len);
    void (*config_write)(struct virtio_dev *vdev, uint32_t off, const void *data, uint32_t len);
    /* Optional veto on the driver's feature choice at FEATURES_OK. */
    bool (*features_ok)(struct virtio_dev *vdev, uint64_t features);
};

struct virtio_queue {
    struct virtq vq;
    uint16_t max_size;
    uint16_t size;
    uint16_t msix_vector;
    bool enabled;
    uint64_t desc, avail, used;
    int kick_fd;    /* eventfd: the queue's ioeventfd, vhost-user kick fd */
    bool ioeventfd; /* kick_fd registered at ioeventfd_addr */
    uint64_t ioeventfd_addr;
};

struct virtio_dev {
    struct pci_dev pci;
    struct vm *vm;
    char name[32];
    uint16_t device_id;
    const struct virtio_dev_ops *ops;
    void *priv;

    pthread_mutex_t lock; /* transport registers; never held while calling ops->reset */
    uint64_t host_features;
    uint64_t guest_features;
    uint32_t dfselect, gfselect;
    uint8_t status; /* accessed atomically: NEEDS_RESET is set from I/O threads */
    uint8_t config_generation;
    uint8_t isr; /* accessed atomically */
    uint16_t msix_config;
    uint16_t queue_select;
    uint16_t num_queues;
    uint32_t config_len;
    bool active;
    struct virtio_queue queues[VIRTIO_MAX_QUEUES];
};

/*
 * Describe a device: features are the device-specific bits; the transport adds
 * VERSION_1, RING_INDIRECT_DESC and RING_EVENT_IDX. Creates the kick eventfds
 * and the PCI function (not yet plugged).
 */
int virtio_dev_init(struct virtio_dev *vdev, struct vm *vm, const char *name, uint16_t device_id,
                    uint32_t class_code, uint64_t features, uint16_t num_queues,
                    uint16_t queue_size, uint32_t config_len, const struct virtio_dev_ops *ops,
                    void *priv);
/* Plug the function on the VM's PCI bus. */
int virtio_dev_plug(struct virtio_dev *vdev, struct pci_bus *bus);
/* Reset (stopping the device), unplug and free the transport's resources. */
void virtio_dev_destroy(struct virtio_dev *vdev);

/* Interrupt the driver for queue q if it asked for one (event idx / flags). */
void virtio_dev_notify_queue(struct virtio_dev *vdev, uint16_t q);
/* Interrupt for queue q unconditionally (vhost-user: the backend decides). */
void virtio_dev_signal_queue(struct virtio_dev *vdev, uint16_t q);
/* Bump the config generation and raise a configuration-change interrupt. */
void virtio_dev_config_changed(struct virtio_dev *vdev);
/* Mark DEVICE_NEEDS_RESET and raise a configuration-change interrupt. */
void virtio_dev_set_needs_reset(struct virtio_dev *vdev);
uint8_t virtio_dev_status(struct virtio_dev *vdev);
/* MSI-X eventfd of queue q's vector, or -1 when it has none. */
int virtio_dev_queue_call_fd(struct virtio_dev *vdev, uint16_t q);

#endif
