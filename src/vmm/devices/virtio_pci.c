/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-pci modern transport. See virtio.h. */
#include "vmm/devices/virtio.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"

/* The common configuration we implement: up to queue_device (no NOTIFICATION_DATA / RING_RESET). */
#define CC_SIZE 0x38

#define TRANSPORT_FEATURES                                                                         \
    ((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) |                        \
     (1ull << VIRTIO_RING_F_EVENT_IDX))

uint8_t virtio_dev_status(struct virtio_dev *vdev)
{
    return __atomic_load_n(&vdev->status, __ATOMIC_ACQUIRE);
}

static void virtio_raise_config_irq(struct virtio_dev *vdev)
{
    uint16_t vec = __atomic_load_n(&vdev->msix_config, __ATOMIC_ACQUIRE);

    __atomic_fetch_or(&vdev->isr, VIRTIO_PCI_ISR_CONFIG, __ATOMIC_SEQ_CST);
    if (vec != VIRTIO_MSI_NO_VECTOR)
        pci_msix_notify(&vdev->pci, vec);
}

void virtio_dev_set_needs_reset(struct virtio_dev *vdev)
{
    uint8_t old = __atomic_fetch_or(&vdev->status, VIRTIO_STATUS_NEEDS_RESET, __ATOMIC_SEQ_CST);

    if (old & VIRTIO_STATUS_NEEDS_RESET)
        return;
    /* Only a driver that completed negotiation is told (virtio 1.2, 2.1.2). */
    if (old & VIRTIO_STATUS_DRIVER_OK)
        virtio_raise_config_irq(vdev);
}

void virtio_dev_config_changed(struct virtio_dev *vdev)
{
    pthread_mutex_lock(&vdev->lock);
    vdev->config_generation++;
    pthread_mutex_unlock(&vdev->lock);
    if (virtio_dev_status(vdev) & VIRTIO_STATUS_DRIVER_OK)
        virtio_raise_config_irq(vdev);
}

void virtio_dev_signal_queue(struct virtio_dev *vdev, uint16_t q)
{
    uint16_t vec;

    if (q >= vdev->num_queues)
        return;
    vec = __atomic_load_n(&vdev->queues[q].msix_vector, __ATOMIC_ACQUIRE);
    __atomic_fetch_or(&vdev->isr, VIRTIO_PCI_ISR_QUEUE, __ATOMIC_SEQ_CST);
    if (vec != VIRTIO_MSI_NO_VECTOR)
        pci_msix_notify(&vdev->pci, vec);
}

void virtio_dev_notify_queue(struct virtio_dev *vdev, uint16_t q)
{
    if (q < vdev->num_queues && virtq_should_notify(&vdev->queues[q].vq))
        virtio_dev_signal_queue(vdev, q);
}

int virtio_dev_queue_call_fd(struct virtio_dev *vdev, uint16_t q)
{
    uint16_t vec;

    if (q >= vdev->num_queues)
        return -1;
    vec = __atomic_load_n(&vdev->queues[q].msix_vector, __ATOMIC_ACQUIRE);
    return vec == VIRTIO_MSI_NO_VECTOR ? -1 : pci_msix_vector_fd(&vdev->pci, vec);
}

static void virtio_queue_error(void *opaque, struct virtq *vq, const char *reason)
{
    virtio_dev_set_needs_reset(opaque);
}

/* Reset the device. Called without vdev->lock: ops->reset joins I/O threads. */
static void virtio_dev_reset(struct virtio_dev *vdev)
{
    bool was_active;

    pthread_mutex_lock(&vdev->lock);
    was_active = vdev->active;
    vdev->active = false;
    pthread_mutex_unlock(&vdev->lock);
    if (was_active && vdev->ops->reset)
        vdev->ops->reset(vdev);

    pthread_mutex_lock(&vdev->lock);
    vdev->guest_features = 0;
    vdev->dfselect = vdev->gfselect = 0;
    vdev->queue_select = 0;
    __atomic_store_n(&vdev->msix_config, VIRTIO_MSI_NO_VECTOR, __ATOMIC_RELEASE);
    __atomic_store_n(&vdev->isr, 0, __ATOMIC_RELEASE);
    for (uint16_t q = 0; q < vdev->num_queues; q++) {
        struct virtio_queue *vq = &vdev->queues[q];
        uint64_t drain;

        virtq_reset(&vq->vq);
        vq->size = vq->max_size;
        __atomic_store_n(&vq->msix_vector, VIRTIO_MSI_NO_VECTOR, __ATOMIC_RELEASE);
        vq->enabled = false;
        vq->desc = vq->avail = vq->used = 0;
        if (read(vq->kick_fd, &drain, sizeof(drain)) < 0 && errno != EAGAIN)
            log_debug("virtio device '%s': draining kick fd of queue %u failed", vdev->name, q);
    }
    __atomic_store_n(&vdev->status, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&vdev->lock);
}

/* DRIVER_OK: set up the enabled queues and start the device. Lock held. */
static void virtio_dev_activate(struct virtio_dev *vdev)
{
    int ret;

    for (uint16_t q = 0; q < vdev->num_queues; q++) {
        struct virtio_queue *vq = &vdev->queues[q];

        if (!vq->enabled)
            continue;
        ret = virtq_setup(&vq->vq, vdev->vm, vdev->name, q, vq->size, vq->desc, vq->avail, vq->used,
                          vdev->guest_features);
        if (ret < 0) {
            virtio_dev_set_needs_reset(vdev);
            return;
        }
        virtq_set_error_handler(&vq->vq, virtio_queue_error, vdev);
    }
    ret = vdev->ops->activate ? vdev->ops->activate(vdev) : 0;
    if (ret < 0) {
        log_warn("virtio device '%s': activation failed (%d); device needs reset", vdev->name, ret);
        virtio_dev_set_needs_reset(vdev);
        return;
    }
    vdev->active = true;
}

static void virtio_status_write(struct virtio_dev *vdev, uint8_t val)
{
    uint8_t old = virtio_dev_status(vdev);
    uint8_t set;

    /* Only a write of 0 (reset) clears status bits (virtio 1.2, 2.1.1). */
    val |= old;
    set = val & ~old;

    if ((set & VIRTIO_STATUS_FEATURES_OK)) {
        uint64_t f = vdev->guest_features;
        bool ok = !(f & ~vdev->host_features) && (f & (1ull << VIRTIO_F_VERSION_1)) &&
                  (!vdev->ops->features_ok || vdev->ops->features_ok(vdev, f));

        if (!ok) {
            log_info("virtio device '%s': refusing driver features 0x%llx (offered 0x%llx)",
                     vdev->name, (unsigned long long)f, (unsigned long long)vdev->host_features);
            val &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
        }
    }
    if ((set & VIRTIO_STATUS_DRIVER_OK) && !(val & VIRTIO_STATUS_FEATURES_OK)) {
        log_info("virtio device '%s': DRIVER_OK without FEATURES_OK; device needs reset",
                 vdev->name);
        val &= (uint8_t)~VIRTIO_STATUS_DRIVER_OK;
        val |= VIRTIO_STATUS_NEEDS_RESET;
    }
    /* NEEDS_RESET belongs to the device: the driver cannot clear it. */
    val |= old & VIRTIO_STATUS_NEEDS_RESET;
    __atomic_store_n(&vdev->status, val, __ATOMIC_RELEASE);
    if ((set & VIRTIO_STATUS_DRIVER_OK) && !(val & VIRTIO_STATUS_NEEDS_RESET) && !vdev->active)
        virtio_dev_activate(vdev);
}

static void virtio_common_image(struct virtio_dev *vdev, uint8_t *img)
{
    struct virtio_queue *vq =
        vdev->queue_select < vdev->num_queues ? &vdev->queues[vdev->queue_select] : NULL;
    uint32_t df = vdev->dfselect < 2 ? (uint32_t)(vdev->host_features >> (32 * vdev->dfselect)) : 0;
    uint32_t gf =
        vdev->gfselect < 2 ? (uint32_t)(vdev->guest_features >> (32 * vdev->gfselect)) : 0;
    uint16_t v16;

    memset(img, 0, CC_SIZE);
    memcpy(img + VIRTIO_PCI_COMMON_DFSELECT, &vdev->dfselect, 4);
    memcpy(img + VIRTIO_PCI_COMMON_DF, &df, 4);
    memcpy(img + VIRTIO_PCI_COMMON_GFSELECT, &vdev->gfselect, 4);
    memcpy(img + VIRTIO_PCI_COMMON_GF, &gf, 4);
    memcpy(img + VIRTIO_PCI_COMMON_MSIX, &vdev->msix_config, 2);
    memcpy(img + VIRTIO_PCI_COMMON_NUMQ, &vdev->num_queues, 2);
    img[VIRTIO_PCI_COMMON_STATUS] = virtio_dev_status(vdev);
    img[VIRTIO_PCI_COMMON_CFGGEN] = vdev->config_generation;
    memcpy(img + VIRTIO_PCI_COMMON_Q_SELECT, &vdev->queue_select, 2);
    if (!vq)
        return;
    memcpy(img + VIRTIO_PCI_COMMON_Q_SIZE, &vq->size, 2);
    memcpy(img + VIRTIO_PCI_COMMON_Q_MSIX, &vq->msix_vector, 2);
    v16 = vq->enabled;
    memcpy(img + VIRTIO_PCI_COMMON_Q_ENABLE, &v16, 2);
    memcpy(img + VIRTIO_PCI_COMMON_Q_NOFF, &vdev->queue_select, 2);
    memcpy(img + VIRTIO_PCI_COMMON_Q_DESC, &vq->desc, 8);
    memcpy(img + VIRTIO_PCI_COMMON_Q_DRIVER, &vq->avail, 8);
    memcpy(img + VIRTIO_PCI_COMMON_Q_DEVICE, &vq->used, 8);
}

static bool field_hit(uint64_t off, uint32_t len, uint32_t field, uint32_t flen)
{
    return off < field + flen && field < off + len;
}

static uint16_t virtio_valid_vector(struct virtio_dev *vdev, uint16_t v)
{
    return v < vdev->pci.msix.nvec ? v : VIRTIO_MSI_NO_VECTOR;
}

/* Returns true when the write asked for a reset (performed by the caller unlocked). */
static bool virtio_common_write(struct virtio_dev *vdev, uint64_t off, const void *data,
                                uint32_t len)
{
    struct virtio_queue *vq =
        vdev->queue_select < vdev->num_queues ? &vdev->queues[vdev->queue_select] : NULL;
    uint8_t img[CC_SIZE];
    uint16_t v16;
    uint32_t v32;
    uint64_t v64;

    virtio_common_image(vdev, img);
    memcpy(img + off, data, len);
    if (field_hit(off, len, VIRTIO_PCI_COMMON_DFSELECT, 4))
        memcpy(&vdev->dfselect, img + VIRTIO_PCI_COMMON_DFSELECT, 4);
    if (field_hit(off, len, VIRTIO_PCI_COMMON_GFSELECT, 4))
        memcpy(&vdev->gfselect, img + VIRTIO_PCI_COMMON_GFSELECT, 4);
    if (field_hit(off, len, VIRTIO_PCI_COMMON_GF, 4) && vdev->gfselect < 2 &&
        !(virtio_dev_status(vdev) & VIRTIO_STATUS_FEATURES_OK)) {
        uint64_t mask = 0xffffffffull << (32 * vdev->gfselect);

        memcpy(&v32, img + VIRTIO_PCI_COMMON_GF, 4);
        vdev->guest_features =
            (vdev->guest_features & ~mask) | ((uint64_t)v32 << (32 * vdev->gfselect));
    }
    if (field_hit(off, len, VIRTIO_PCI_COMMON_MSIX, 2)) {
        memcpy(&v16, img + VIRTIO_PCI_COMMON_MSIX, 2);
        __atomic_store_n(&vdev->msix_config, virtio_valid_vector(vdev, v16), __ATOMIC_RELEASE);
    }
    if (field_hit(off, len, VIRTIO_PCI_COMMON_STATUS, 1)) {
        if (img[VIRTIO_PCI_COMMON_STATUS] == 0)
            return true;
        virtio_status_write(vdev, img[VIRTIO_PCI_COMMON_STATUS]);
    }
    if (field_hit(off, len, VIRTIO_PCI_COMMON_Q_SELECT, 2)) {
        memcpy(&vdev->queue_select, img + VIRTIO_PCI_COMMON_Q_SELECT, 2);
        return false;
    }
    if (!vq)
        return false;
    if (field_hit(off, len, VIRTIO_PCI_COMMON_Q_MSIX, 2)) {
        memcpy(&v16, img + VIRTIO_PCI_COMMON_Q_MSIX, 2);
        __atomic_store_n(&vq->msix_vector, virtio_valid_vector(vdev, v16), __ATOMIC_RELEASE);
    }
    /* Queue layout is frozen once the queue is enabled (virtio 1.2, 4.1.4.3.2). */
    if (vq->enabled)
        return false;
    if (field_hit(off, len, VIRTIO_PCI_COMMON_Q_SIZE, 2)) {
        memcpy(&v16, img + VIRTIO_PCI_COMMON_Q_SIZE, 2);
        if (v16 && v16 <= vq->max_size)
            vq->size = v16;
        else
            log_debug("virtio device '%s': queue %u size %u refused (max %u)", vdev->name,
                      vdev->queue_select, v16, vq->max_size);
    }
    if (field_hit(off, len, VIRTIO_PCI_COMMON_Q_DESC, 8)) {
        memcpy(&v64, img + VIRTIO_PCI_COMMON_Q_DESC, 8);
        vq->desc = v64;
    }
    if (field_hit(off, len, VIRTIO_PCI_COMMON_Q_DRIVER, 8)) {
        memcpy(&v64, img + VIRTIO_PCI_COMMON_Q_DRIVER, 8);
        vq->avail = v64;
    }
    if (field_hit(off, len, VIRTIO_PCI_COMMON_Q_DEVICE, 8)) {
        memcpy(&v64, img + VIRTIO_PCI_COMMON_Q_DEVICE, 8);
        vq->used = v64;
    }
    if (field_hit(off, len, VIRTIO_PCI_COMMON_Q_ENABLE, 2)) {
        memcpy(&v16, img + VIRTIO_PCI_COMMON_Q_ENABLE, 2);
        if (v16 == 1)
            vq->enabled = true;
    }
    return false;
}

static void virtio_bar_access(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write)
{
    struct virtio_dev *vdev = opaque;
    bool reset = false;

    if (off >= VIRTIO_BAR_NOTIFY) {
        uint64_t q = (off - VIRTIO_BAR_NOTIFY) / VIRTIO_NOTIFY_MULT, one = 1;

        /* Reached only when the ioeventfd is not in place: kick by hand. */
        if (is_write && q < vdev->num_queues &&
            write(vdev->queues[q].kick_fd, &one, sizeof(one)) != sizeof(one))
            log_debug("virtio device '%s': kick of queue %llu failed", vdev->name,
                      (unsigned long long)q);
        return;
    }
    if (off >= VIRTIO_BAR_DEVICE) {
        uint64_t o = off - VIRTIO_BAR_DEVICE;

        if (o + len > vdev->config_len)
            return;
        if (is_write && vdev->ops->config_write)
            vdev->ops->config_write(vdev, (uint32_t)o, data, len);
        else if (!is_write && vdev->ops->config_read)
            vdev->ops->config_read(vdev, (uint32_t)o, data, len);
        return;
    }
    if (off >= VIRTIO_BAR_ISR) {
        /* Reading the ISR acknowledges it. */
        if (!is_write && off == VIRTIO_BAR_ISR)
            *(uint8_t *)data = __atomic_exchange_n(&vdev->isr, 0, __ATOMIC_SEQ_CST);
        return;
    }
    if (off + len > CC_SIZE)
        return;
    pthread_mutex_lock(&vdev->lock);
    if (is_write) {
        reset = virtio_common_write(vdev, off, data, len);
    } else {
        uint8_t img[CC_SIZE];

        virtio_common_image(vdev, img);
        memcpy(data, img + off, len);
    }
    pthread_mutex_unlock(&vdev->lock);
    if (reset)
        virtio_dev_reset(vdev);
}

/* BAR 0 moved: re-register the queues' ioeventfds at the new notify addresses. */
static void virtio_bar_remap(struct pci_dev *dev, int bar, bool mapped, uint64_t addr)
{
    struct virtio_dev *vdev = dev->owner;

    if (bar != 0)
        return;
    for (uint16_t q = 0; q < vdev->num_queues; q++) {
        struct virtio_queue *vq = &vdev->queues[q];
        int ret;

        if (vq->ioeventfd) {
            vm_ioeventfd(vdev->vm, VM_IO_MMIO, vq->ioeventfd_addr, 2, vq->kick_fd, false, 0, false);
            vq->ioeventfd = false;
        }
        if (!mapped)
            continue;
        vq->ioeventfd_addr = addr + VIRTIO_BAR_NOTIFY + (uint64_t)q * VIRTIO_NOTIFY_MULT;
        ret =
            vm_ioeventfd(vdev->vm, VM_IO_MMIO, vq->ioeventfd_addr, 2, vq->kick_fd, false, 0, true);
        if (ret < 0)
            log_debug("virtio device '%s': no ioeventfd for queue %u (%d); kicks exit to the VMM",
                      vdev->name, q, ret);
        else
            vq->ioeventfd = true;
    }
}

/* The VIRTIO_PCI_CAP_PCI_CFG window: BAR access through config space. */
static bool virtio_cfg_access(struct pci_dev *dev, uint32_t off, void *data, uint32_t len,
                              bool is_write)
{
    struct virtio_dev *vdev = dev->owner;
    uint16_t cap = 0;
    uint32_t boff, blen;

    /* Find our PCI_CFG capability (the last one added). */
    for (uint16_t p = dev->cfg[PCI_CAPABILITY_LIST]; p; p = dev->cfg[p + 1])
        if (dev->cfg[p] == PCI_CAP_ID_VNDR && dev->cfg[p + 3] == VIRTIO_PCI_CAP_PCI_CFG)
            cap = p;
    if (!cap || off < cap + 16u || off >= cap + 20u)
        return false;
    memcpy(&boff, &dev->cfg[cap + 8], 4);
    memcpy(&blen, &dev->cfg[cap + 12], 4);
    /* Only naturally aligned 1/2/4-byte windows into BAR 0 are meaningful. */
    if (dev->cfg[cap + 4] != 0 || (blen != 1 && blen != 2 && blen != 4) || (boff & (blen - 1)) ||
        boff + blen > VIRTIO_BAR_SIZE || off != cap + 16u || len < blen) {
        if (!is_write)
            memset(data, 0, len);
        return true;
    }
    if (!is_write)
        memset(data, 0, len);
    virtio_bar_access(vdev, boff, data, blen, is_write);
    return true;
}

static const struct pci_dev_ops virtio_pci_ops = {
    .bar_remap = virtio_bar_remap,
    .cfg_access = virtio_cfg_access,
};

static int virtio_add_cap(struct virtio_dev *vdev, uint8_t type, uint32_t offset, uint32_t length,
                          const void *extra, uint8_t extra_len)
{
    uint8_t buf[24];
    struct virtio_pci_cap cap = {.cap_vndr = PCI_CAP_ID_VNDR,
                                 .cap_len = (uint8_t)(sizeof(cap) + extra_len),
                                 .cfg_type = type,
                                 .bar = 0,
                                 .offset = offset,
                                 .length = length};

    memcpy(buf, &cap, sizeof(cap));
    if (extra_len)
        memcpy(buf + sizeof(cap), extra, extra_len);
    return pci_dev_add_cap(&vdev->pci, buf, cap.cap_len);
}

int virtio_dev_init(struct virtio_dev *vdev, struct vm *vm, const char *name, uint16_t device_id,
                    uint32_t class_code, uint64_t features, uint16_t num_queues,
                    uint16_t queue_size, uint32_t config_len, const struct virtio_dev_ops *ops,
                    void *priv)
{
    uint32_t mult = VIRTIO_NOTIFY_MULT, zero = 0;
    int ret, off;

    if (num_queues == 0 || num_queues > VIRTIO_MAX_QUEUES || queue_size == 0 ||
        queue_size > VIRTQ_MAX_SIZE || config_len > VIRTIO_DEVICE_CFG_MAX) {
        log_err("virtio device '%s': %u queues of %u entries not supported", name, num_queues,
                queue_size);
        return -EINVAL;
    }
    memset(vdev, 0, sizeof(*vdev));
    pthread_mutex_init(&vdev->lock, NULL);
    vdev->vm = vm;
    snprintf(vdev->name, sizeof(vdev->name), "%s", name);
    vdev->device_id = device_id;
    vdev->ops = ops;
    vdev->priv = priv;
    vdev->host_features = features | TRANSPORT_FEATURES;
    vdev->num_queues = num_queues;
    vdev->config_len = config_len;
    vdev->msix_config = VIRTIO_MSI_NO_VECTOR;
    for (uint16_t q = 0; q < VIRTIO_MAX_QUEUES; q++)
        vdev->queues[q].kick_fd = -1;
    for (uint16_t q = 0; q < num_queues; q++) {
        struct virtio_queue *vq = &vdev->queues[q];

        vq->max_size = vq->size = queue_size;
        vq->msix_vector = VIRTIO_MSI_NO_VECTOR;
        vq->vq.name = vdev->name;
        vq->vq.index = q;
        vq->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (vq->kick_fd < 0) {
            ret = -errno;
            goto fail;
        }
    }

    pci_dev_init(&vdev->pci, name, VIRTIO_PCI_VENDOR, VIRTIO_PCI_DEVICE_BASE + device_id,
                 class_code, 1, VIRTIO_PCI_VENDOR, VIRTIO_PCI_DEVICE_BASE + device_id);
    vdev->pci.ops = &virtio_pci_ops;
    vdev->pci.owner = vdev;
    ret = pci_dev_add_bar(&vdev->pci, 0, PCI_BAR_MEM32, VIRTIO_BAR_SIZE, virtio_bar_access, vdev);
    if (ret < 0)
        goto fail;
    if ((ret = virtio_add_cap(vdev, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_BAR_COMMON, CC_SIZE, NULL,
                              0)) < 0 ||
        (ret = virtio_add_cap(vdev, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_BAR_NOTIFY,
                              VIRTIO_NOTIFY_MULT * num_queues, &mult, 4)) < 0 ||
        (ret = virtio_add_cap(vdev, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_BAR_ISR, 1, NULL, 0)) < 0 ||
        (config_len && (ret = virtio_add_cap(vdev, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_BAR_DEVICE,
                                             config_len, NULL, 0)) < 0))
        goto fail_pci;
    off = virtio_add_cap(vdev, VIRTIO_PCI_CAP_PCI_CFG, 0, 0, &zero, 4);
    if (off < 0) {
        ret = off;
        goto fail_pci;
    }
    /* PCI_CFG window: bar, offset and length are driver-writable. */
    vdev->pci.wmask[off + 4] = 0xff;
    memset(&vdev->pci.wmask[off + 8], 0xff, 8);
    ret = pci_msix_init(&vdev->pci, (uint16_t)(num_queues + 1), 1);
    if (ret < 0)
        goto fail_pci;
    return 0;
fail_pci:
    pci_dev_remove(&vdev->pci);
fail:
    log_err("virtio device '%s': transport setup failed (%d)", name, ret);
    for (uint16_t q = 0; q < num_queues; q++)
        if (vdev->queues[q].kick_fd >= 0)
            close(vdev->queues[q].kick_fd);
    pthread_mutex_destroy(&vdev->lock);
    return ret;
}

int virtio_dev_plug(struct virtio_dev *vdev, struct pci_bus *bus)
{
    return pci_bus_add_dev(bus, &vdev->pci);
}

void virtio_dev_destroy(struct virtio_dev *vdev)
{
    virtio_dev_reset(vdev);
    pci_dev_remove(&vdev->pci);
    for (uint16_t q = 0; q < vdev->num_queues; q++) {
        if (vdev->queues[q].kick_fd >= 0)
            close(vdev->queues[q].kick_fd);
        vdev->queues[q].kick_fd = -1;
    }
    pthread_mutex_destroy(&vdev->lock);
}
