/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small virtio-pci driver for tests: it plays the guest against the device
 * models over fake_vm (config space through ECAM, BAR accesses through the
 * registered MMIO handlers, rings in the fake guest RAM).
 */
#ifndef QT_TESTS_VDRV_H
#define QT_TESTS_VDRV_H

#include <stdbool.h>
#include <stdint.h>

#include "fake_vm.h"

#define VDRV_MAX_QUEUES 4

struct vdrv_queue {
    uint16_t size;
    uint64_t desc, avail, used;
    uint16_t avail_idx;
    uint16_t last_used;
    uint16_t next_desc;
};

struct vdrv_buf {
    uint64_t addr;
    uint32_t len;
    bool write;
};

struct vdrv {
    struct vm *vm;
    int slot;
    uint64_t bar0;
    uint64_t msix;
    uint64_t features;
    uint64_t heap; /* bump allocator in guest RAM */
    struct vdrv_queue q[VDRV_MAX_QUEUES];
};

uint32_t vdrv_cfg_read(struct vdrv *d, uint32_t off, uint32_t len);
void vdrv_cfg_write(struct vdrv *d, uint32_t off, uint32_t len, uint32_t v);
/* Find the nth virtio device with this PCI device id; 0 or -ENODEV. */
int vdrv_open(struct vdrv *d, struct vm *vm, uint16_t device_id, int nth);
uint64_t vdrv_alloc(struct vdrv *d, uint64_t size);
uint64_t vdrv_device_features(struct vdrv *d);
/* Reset, negotiate want & offered | VERSION_1; returns the status read back. */
uint8_t vdrv_negotiate(struct vdrv *d, uint64_t want);
int vdrv_setup_queue(struct vdrv *d, uint16_t q, uint16_t size, uint16_t vector);
void vdrv_set_config_vector(struct vdrv *d, uint16_t vector);
/* Program MSI-X table entry vec with data and enable MSI-X. */
void vdrv_msix_vector(struct vdrv *d, uint16_t vec, uint32_t data);
void vdrv_driver_ok(struct vdrv *d);
void vdrv_reset(struct vdrv *d);
uint8_t vdrv_status(struct vdrv *d);
uint32_t vdrv_devcfg_read(struct vdrv *d, uint32_t off, uint32_t len);
/* Queue a chain (direct descriptors) and return its head. */
int vdrv_submit(struct vdrv *d, uint16_t q, const struct vdrv_buf *bufs, int n);
/* Publish raw descriptors/heads (hostile tests). */
void vdrv_publish(struct vdrv *d, uint16_t q, uint16_t head);
void vdrv_kick(struct vdrv *d, uint16_t q);
/* Wait up to timeout_ms for a used element; returns its id or -ETIMEDOUT. */
int vdrv_wait(struct vdrv *d, uint16_t q, uint32_t *len, int timeout_ms);

#endif
