/* SPDX-License-Identifier: Apache-2.0 */
#include "vdrv.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "common/virtio_defs.h"
#include "vmm/devices/virtio.h"
#include "vmm/devices/virtq.h"
#include "vmm/layout.h"

static uint64_t ecam(struct vdrv *d, uint32_t off)
{
    return LAYOUT_PCI_ECAM + ((uint64_t)d->slot << 15) + off;
}

uint32_t vdrv_cfg_read(struct vdrv *d, uint32_t off, uint32_t len)
{
    return fake_vm_read(d->vm, VM_IO_MMIO, ecam(d, off), len);
}

void vdrv_cfg_write(struct vdrv *d, uint32_t off, uint32_t len, uint32_t v)
{
    fake_vm_write(d->vm, VM_IO_MMIO, ecam(d, off), len, v);
}

static uint32_t rd(struct vdrv *d, uint32_t off, uint32_t len)
{
    return fake_vm_read(d->vm, VM_IO_MMIO, d->bar0 + off, len);
}

static void wr(struct vdrv *d, uint32_t off, uint32_t len, uint64_t v)
{
    fake_vm_write(d->vm, VM_IO_MMIO, d->bar0 + off, len, v);
}

int vdrv_open(struct vdrv *d, struct vm *vm, uint16_t device_id, int nth)
{
    memset(d, 0, sizeof(*d));
    d->vm = vm;
    d->heap = 0x100000;
    for (int s = 0; s < 32; s++) {
        d->slot = s;
        if (vdrv_cfg_read(d, 0, 4) != (VIRTIO_PCI_VENDOR | (uint32_t)device_id << 16) || nth-- > 0)
            continue;
        d->bar0 = vdrv_cfg_read(d, 0x10, 4) & ~15u;
        d->msix = vdrv_cfg_read(d, 0x14, 4) & ~15u;
        return 0;
    }
    return -ENODEV;
}

uint64_t vdrv_alloc(struct vdrv *d, uint64_t size)
{
    uint64_t a = (d->heap + 4095) & ~4095ull;

    d->heap = a + size;
    memset(fake_vm_ram(d->vm) + a, 0, size);
    return a;
}

uint8_t vdrv_status(struct vdrv *d)
{
    return (uint8_t)rd(d, VIRTIO_PCI_COMMON_STATUS, 1);
}

void vdrv_reset(struct vdrv *d)
{
    wr(d, VIRTIO_PCI_COMMON_STATUS, 1, 0);
    for (int q = 0; q < VDRV_MAX_QUEUES; q++)
        d->q[q] = (struct vdrv_queue){0};
}

uint64_t vdrv_device_features(struct vdrv *d)
{
    uint64_t f;

    wr(d, VIRTIO_PCI_COMMON_DFSELECT, 4, 0);
    f = rd(d, VIRTIO_PCI_COMMON_DF, 4);
    wr(d, VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
    return f | (uint64_t)rd(d, VIRTIO_PCI_COMMON_DF, 4) << 32;
}

uint8_t vdrv_negotiate(struct vdrv *d, uint64_t want)
{
    uint64_t f;

    vdrv_reset(d);
    wr(d, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE);
    wr(d, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    f = (want & vdrv_device_features(d)) | (1ull << VIRTIO_F_VERSION_1);
    wr(d, VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
    wr(d, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)f);
    wr(d, VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
    wr(d, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)(f >> 32));
    wr(d, VIRTIO_PCI_COMMON_STATUS, 1,
       VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    d->features = f;
    return vdrv_status(d);
}

int vdrv_setup_queue(struct vdrv *d, uint16_t q, uint16_t size, uint16_t vector)
{
    struct vdrv_queue *vq = &d->q[q];

    wr(d, VIRTIO_PCI_COMMON_Q_SELECT, 2, q);
    if (rd(d, VIRTIO_PCI_COMMON_Q_SIZE, 2) < size)
        return -EINVAL;
    wr(d, VIRTIO_PCI_COMMON_Q_SIZE, 2, size);
    vq->size = size;
    vq->desc = vdrv_alloc(d, 16u * size);
    vq->avail = vdrv_alloc(d, 6u + 2u * size);
    vq->used = vdrv_alloc(d, 6u + 8u * size);
    wr(d, VIRTIO_PCI_COMMON_Q_DESC, 4, (uint32_t)vq->desc);
    wr(d, VIRTIO_PCI_COMMON_Q_DESC + 4, 4, vq->desc >> 32);
    wr(d, VIRTIO_PCI_COMMON_Q_DRIVER, 8, vq->avail);
    wr(d, VIRTIO_PCI_COMMON_Q_DEVICE, 8, vq->used);
    wr(d, VIRTIO_PCI_COMMON_Q_MSIX, 2, vector);
    wr(d, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
    return rd(d, VIRTIO_PCI_COMMON_Q_MSIX, 2) == vector ? 0 : -ENOSPC;
}

void vdrv_set_config_vector(struct vdrv *d, uint16_t vector)
{
    wr(d, VIRTIO_PCI_COMMON_MSIX, 2, vector);
}

void vdrv_msix_vector(struct vdrv *d, uint16_t vec, uint32_t data)
{
    uint16_t cap = (uint16_t)vdrv_cfg_read(d, 0x34, 1);

    while (cap && vdrv_cfg_read(d, cap, 1) != 0x11)
        cap = (uint16_t)vdrv_cfg_read(d, cap + 1, 1);
    fake_vm_write(d->vm, VM_IO_MMIO, d->msix + 16 * vec, 4, 0xfee00000);
    fake_vm_write(d->vm, VM_IO_MMIO, d->msix + 16 * vec + 4, 4, 0);
    fake_vm_write(d->vm, VM_IO_MMIO, d->msix + 16 * vec + 8, 4, data);
    fake_vm_write(d->vm, VM_IO_MMIO, d->msix + 16 * vec + 12, 4, 0);
    vdrv_cfg_write(d, cap, 4, vdrv_cfg_read(d, cap, 4) | 0x80000000u);
}

void vdrv_driver_ok(struct vdrv *d)
{
    wr(d, VIRTIO_PCI_COMMON_STATUS, 1, vdrv_status(d) | VIRTIO_STATUS_DRIVER_OK);
}

uint32_t vdrv_devcfg_read(struct vdrv *d, uint32_t off, uint32_t len)
{
    return rd(d, VIRTIO_BAR_DEVICE + off, len);
}

void vdrv_publish(struct vdrv *d, uint16_t q, uint16_t head)
{
    struct vdrv_queue *vq = &d->q[q];
    uint16_t *avail = (uint16_t *)(fake_vm_ram(d->vm) + vq->avail);

    avail[2 + vq->avail_idx % vq->size] = head;
    vq->avail_idx++;
    __atomic_store_n(&avail[1], vq->avail_idx, __ATOMIC_RELEASE);
}

int vdrv_submit(struct vdrv *d, uint16_t q, const struct vdrv_buf *bufs, int n)
{
    struct vdrv_queue *vq = &d->q[q];
    struct virtq_desc *desc = (struct virtq_desc *)(fake_vm_ram(d->vm) + vq->desc);
    uint16_t head = vq->next_desc % vq->size;

    for (int i = 0; i < n; i++) {
        uint16_t idx = (uint16_t)((head + i) % vq->size);

        desc[idx] =
            (struct virtq_desc){.addr = bufs[i].addr,
                                .len = bufs[i].len,
                                .flags = (uint16_t)((bufs[i].write ? VIRTQ_DESC_F_WRITE : 0) |
                                                    (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)),
                                .next = (uint16_t)((idx + 1) % vq->size)};
    }
    vq->next_desc = (uint16_t)((head + n) % vq->size);
    vdrv_publish(d, q, head);
    return head;
}

void vdrv_kick(struct vdrv *d, uint16_t q)
{
    wr(d, VIRTIO_BAR_NOTIFY + VIRTIO_NOTIFY_MULT * q, 2, q);
}

int vdrv_wait(struct vdrv *d, uint16_t q, uint32_t *len, int timeout_ms)
{
    struct vdrv_queue *vq = &d->q[q];
    volatile uint16_t *used = (uint16_t *)(fake_vm_ram(d->vm) + vq->used);
    struct timespec ts = {0, 100000};

    for (int i = 0; i < timeout_ms * 10; i++) {
        if (__atomic_load_n(&used[1], __ATOMIC_ACQUIRE) != vq->last_used) {
            uint32_t *elem =
                (uint32_t *)(fake_vm_ram(d->vm) + vq->used + 4 + 8u * (vq->last_used % vq->size));

            vq->last_used++;
            if (len)
                *len = elem[1];
            return (int)elem[0];
        }
        nanosleep(&ts, NULL);
    }
    return -ETIMEDOUT;
}
