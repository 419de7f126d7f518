/* SPDX-License-Identifier: Apache-2.0 */
/* Polling virtio-pci modern transport and split virtqueues (virtio 1.2, 2.7 and 4.1). */
#include "virtio.h"
#include "io.h"

#define PCI_CAP_ID_VNDR       0x09
#define VIRTIO_PCI_CAP_COMMON 1
#define VIRTIO_PCI_CAP_NOTIFY 2
#define VIRTIO_PCI_CAP_ISR    3
#define VIRTIO_PCI_CAP_DEVICE 4

/* struct virtio_pci_common_cfg offsets */
#define COMMON_DFSELECT 0
#define COMMON_DF       4
#define COMMON_GFSELECT 8
#define COMMON_GF       12
#define COMMON_MSIX     16
#define COMMON_NUMQ     18
#define COMMON_STATUS   20
#define COMMON_CFGGEN   21
#define COMMON_Q_SELECT 22
#define COMMON_Q_SIZE   24
#define COMMON_Q_MSIX   26
#define COMMON_Q_ENABLE 28
#define COMMON_Q_NOFF   30
#define COMMON_Q_DESC   32
#define COMMON_Q_AVAIL  40
#define COMMON_Q_USED   48

#define VIRTIO_MSI_NO_VECTOR 0xffff
#define RT_POOL_SIZE         (4u << 20)

/* Not zeroed at start-up (rt_alloc zeroes what it hands out). */
static uint8_t rt_pool[RT_POOL_SIZE] __attribute__((aligned(4096), section(".noinit")));
static size_t rt_pool_used;

void *rt_alloc(size_t size, size_t align)
{
    size_t off = ALIGN_UP(rt_pool_used, align);

    if (off + size > sizeof(rt_pool))
        panic("rt_alloc: pool exhausted (%lu bytes requested, %lu used)", size, rt_pool_used);
    rt_pool_used = off + size;
    memset(rt_pool + off, 0, size);
    return rt_pool + off;
}

static int virtio_parse_caps(struct virtio_dev *vd)
{
    const struct pci_dev *d = &vd->pci;
    uint64_t bars[6] = {0};
    uint8_t ptr;
    int guard = 0;

    if (!(pci_read16(d->bus, d->dev, d->fn, 0x06) & 0x10))
        return -ENODEV; /* no capability list */
    ptr = pci_read8(d->bus, d->dev, d->fn, 0x34) & 0xfc;
    while (ptr && guard++ < 48) {
        uint8_t id = pci_read8(d->bus, d->dev, d->fn, ptr);
        uint8_t next = pci_read8(d->bus, d->dev, d->fn, ptr + 1) & 0xfc;
        uint8_t type = pci_read8(d->bus, d->dev, d->fn, ptr + 3);
        uint8_t bar = pci_read8(d->bus, d->dev, d->fn, ptr + 4);
        uint32_t off = pci_read32(d->bus, d->dev, d->fn, ptr + 8);
        uint32_t len = pci_read32(d->bus, d->dev, d->fn, ptr + 12);
        uint64_t addr;
        int ret;

        if (id != PCI_CAP_ID_VNDR || type < VIRTIO_PCI_CAP_COMMON || type > VIRTIO_PCI_CAP_DEVICE ||
            bar > 5)
            goto next;
        if (!bars[bar]) {
            ret = pci_bar_address(d, bar, &bars[bar]);
            if (ret < 0) {
                printf("virtio %02x:%02x.%x: BAR%u unusable (%d)\n", d->bus, d->dev, d->fn, bar,
                       ret);
                goto next;
            }
        }
        addr = bars[bar] + off;
        switch (type) {
        case VIRTIO_PCI_CAP_COMMON:
            if (!vd->common && len >= 56)
                vd->common = addr;
            break;
        case VIRTIO_PCI_CAP_NOTIFY:
            if (!vd->notify_base) {
                vd->notify_base = addr;
                vd->notify_mult = pci_read32(d->bus, d->dev, d->fn, ptr + 16);
            }
            break;
        case VIRTIO_PCI_CAP_ISR:
            if (!vd->isr)
                vd->isr = addr;
            break;
        case VIRTIO_PCI_CAP_DEVICE:
            if (!vd->device_cfg) {
                vd->device_cfg = addr;
                vd->device_cfg_len = len;
            }
            break;
        }
    next:
        ptr = next;
    }
    if (!vd->common || !vd->notify_base)
        return -ENODEV;
    return 0;
}

int virtio_find(uint16_t type, int nth, struct virtio_dev *vd)
{
    struct pci_dev devs[64];
    int n = pci_scan_bus0(devs, ARRAY_SIZE(devs));

    for (int i = 0; i < n; i++) {
        const struct pci_dev *d = &devs[i];
        uint16_t subsys;
        int ret;

        if (d->vendor != VIRTIO_PCI_VENDOR)
            continue;
        subsys = pci_read16(d->bus, d->dev, d->fn, 0x2e);
        if (d->device != 0x1040 + type && !(d->device == 0x1000 + type - 1 && subsys == type))
            continue;
        if (nth-- > 0)
            continue;
        memset(vd, 0, sizeof(*vd));
        vd->pci = *d;
        ret = virtio_parse_caps(vd);
        if (ret < 0) {
            printf("virtio %02x:%02x.%x: no usable modern capabilities (%d)\n", d->bus, d->dev,
                   d->fn, ret);
            return ret;
        }
        pci_enable(d);
        return 0;
    }
    return -ENODEV;
}

uint8_t virtio_status(const struct virtio_dev *vd)
{
    return mmio_read8(vd->common + COMMON_STATUS);
}

static void virtio_set_status(struct virtio_dev *vd, uint8_t s)
{
    mmio_write8(vd->common + COMMON_STATUS, s);
}

void virtio_reset(struct virtio_dev *vd)
{
    virtio_set_status(vd, 0);
    /* The reset completes when the device reads back 0 (virtio 1.2, 4.1.4.3.2). */
    for (int i = 0; i < 1000000 && virtio_status(vd) != 0; i++)
        cpu_relax();
    for (int q = 0; q < VIRTIO_MAX_QUEUES; q++) {
        vd->vq[q].avail_idx = 0;
        vd->vq[q].last_used = 0;
    }
    vd->n_queues = 0;
}

uint64_t virtio_offered_features(const struct virtio_dev *vd)
{
    uint64_t f;

    mmio_write32(vd->common + COMMON_DFSELECT, 0);
    f = mmio_read32(vd->common + COMMON_DF);
    mmio_write32(vd->common + COMMON_DFSELECT, 1);
    f |= (uint64_t)mmio_read32(vd->common + COMMON_DF) << 32;
    return f;
}

int virtio_init(struct virtio_dev *vd, uint64_t want)
{
    uint64_t offered, f;

    virtio_reset(vd);
    virtio_set_status(vd, VIRTIO_STATUS_ACKNOWLEDGE);
    virtio_set_status(vd, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    offered = virtio_offered_features(vd);
    if (!((offered >> VIRTIO_F_VERSION_1) & 1)) {
        printf("virtio %02x:%02x.%x: device does not offer VERSION_1 (features 0x%lx)\n",
               vd->pci.bus, vd->pci.dev, vd->pci.fn, offered);
        virtio_set_status(vd, VIRTIO_STATUS_FAILED);
        return -ENOTSUP;
    }
    f = (want & offered) | (1ull << VIRTIO_F_VERSION_1);
    mmio_write32(vd->common + COMMON_GFSELECT, 0);
    mmio_write32(vd->common + COMMON_GF, (uint32_t)f);
    mmio_write32(vd->common + COMMON_GFSELECT, 1);
    mmio_write32(vd->common + COMMON_GF, (uint32_t)(f >> 32));
    virtio_set_status(vd,
                      VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    if (!(virtio_status(vd) & VIRTIO_STATUS_FEATURES_OK)) {
        printf("virtio %02x:%02x.%x: device rejected features 0x%lx\n", vd->pci.bus, vd->pci.dev,
               vd->pci.fn, f);
        virtio_set_status(vd, VIRTIO_STATUS_FAILED);
        return -EPROTO;
    }
    vd->features = f;
    return 0;
}

int virtq_setup(struct virtio_dev *vd, uint16_t q, uint16_t max_size)
{
    struct virtq *vq;
    uint16_t size, noff;
    size_t desc_sz, avail_sz;
    uint8_t *mem;

    if (q >= VIRTIO_MAX_QUEUES)
        return -EINVAL;
    if (q >= mmio_read16(vd->common + COMMON_NUMQ))
        return -ENOENT;
    vq = &vd->vq[q];
    mmio_write16(vd->common + COMMON_Q_SELECT, q);
    size = mmio_read16(vd->common + COMMON_Q_SIZE);
    if (!size)
        return -ENOENT;
    if (max_size > VIRTQ_MAX_SIZE)
        max_size = VIRTQ_MAX_SIZE;
    if (size > max_size)
        size = max_size;
    /* Split rings need not be a power of two in 1.x, but keep it one for the device's sake. */
    while (size & (size - 1))
        size &= size - 1;
    desc_sz = 16u * size;
    avail_sz = 6u + 2u * size;
    if (!vq->mem || vq->size != size)
        vq->mem = rt_alloc(2 * 4096 + desc_sz + avail_sz + 6 + 8u * size, 4096);
    mem = vq->mem;
    memset(mem, 0, 2 * 4096 + desc_sz + avail_sz + 6 + 8u * size);
    vq->index = q;
    vq->size = size;
    vq->desc = (struct virtq_desc *)mem;
    vq->avail = (volatile struct virtq_avail *)(mem + desc_sz);
    vq->used = (volatile struct virtq_used *)(mem + ALIGN_UP(desc_sz + avail_sz, 4096));
    vq->avail_idx = 0;
    vq->last_used = 0;
    vq->free_head = 0;
    vq->num_free = size;
    for (uint16_t i = 0; i < size; i++)
        vq->desc[i].next = (uint16_t)(i + 1);
    vq->avail->flags = VRING_AVAIL_F_NO_INTERRUPT;

    mmio_write16(vd->common + COMMON_Q_SIZE, size);
    mmio_write16(vd->common + COMMON_Q_MSIX, VIRTIO_MSI_NO_VECTOR);
    mmio_write64_split(vd->common + COMMON_Q_DESC, (uint64_t)vq->desc);
    mmio_write64_split(vd->common + COMMON_Q_AVAIL, (uint64_t)vq->avail);
    mmio_write64_split(vd->common + COMMON_Q_USED, (uint64_t)vq->used);
    noff = mmio_read16(vd->common + COMMON_Q_NOFF);
    vq->notify_addr = vd->notify_base + (uint64_t)noff * vd->notify_mult;
    mmio_write16(vd->common + COMMON_Q_ENABLE, 1);
    if (q >= vd->n_queues)
        vd->n_queues = q + 1;
    return 0;
}

void virtio_driver_ok(struct virtio_dev *vd)
{
    virtio_set_status(vd, virtio_status(vd) | VIRTIO_STATUS_DRIVER_OK);
}

uint8_t virtio_cfg_read8(const struct virtio_dev *vd, uint32_t off)
{
    return mmio_read8(vd->device_cfg + off);
}

uint16_t virtio_cfg_read16(const struct virtio_dev *vd, uint32_t off)
{
    return mmio_read16(vd->device_cfg + off);
}

uint32_t virtio_cfg_read32(const struct virtio_dev *vd, uint32_t off)
{
    return mmio_read32(vd->device_cfg + off);
}

uint64_t virtio_cfg_read64(const struct virtio_dev *vd, uint32_t off)
{
    uint8_t gen;
    uint64_t v;

    /* Re-read until the config generation is stable (virtio 1.2, 2.5.1). */
    do {
        gen = mmio_read8(vd->common + COMMON_CFGGEN);
        v = mmio_read32(vd->device_cfg + off) | (uint64_t)mmio_read32(vd->device_cfg + off + 4)
                                                    << 32;
    } while (gen != mmio_read8(vd->common + COMMON_CFGGEN));
    return v;
}

int virtq_add(struct virtq *vq, const struct virtq_buf *bufs, int n)
{
    uint16_t head, idx, prev = 0;

    if (n <= 0 || n > vq->num_free)
        return -ENOSPC;
    head = idx = vq->free_head;
    for (int i = 0; i < n; i++) {
        struct virtq_desc *d = &vq->desc[idx];

        d->addr = bufs[i].addr;
        d->len = bufs[i].len;
        d->flags = (uint16_t)((bufs[i].write ? VIRTQ_DESC_F_WRITE : 0) |
                              (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
        prev = idx;
        idx = d->next;
    }
    (void)prev;
    vq->free_head = idx;
    vq->num_free = (uint16_t)(vq->num_free - n);
    vq->chain_len[head] = (uint16_t)n;
    virtq_publish(vq, head);
    return head;
}

void virtq_publish(struct virtq *vq, uint16_t head)
{
    vq->avail->ring[vq->avail_idx % vq->size] = head;
    barrier(); /* ring entry before idx; x86 keeps stores in order */
    vq->avail_idx++;
    vq->avail->idx = vq->avail_idx;
}

void virtq_kick(struct virtio_dev *vd, struct virtq *vq)
{
    (void)vd;
    mb(); /* idx store visible before we read the device's flags */
    if (!(vq->used->flags & VRING_USED_F_NO_NOTIFY))
        mmio_write16(vq->notify_addr, vq->index);
}

int virtq_poll(struct virtq *vq, uint32_t *len)
{
    uint16_t id, n, tail;

    if (vq->used->idx == vq->last_used)
        return -EBUSY;
    barrier(); /* idx before the element */
    id = (uint16_t)vq->used->ring[vq->last_used % vq->size].id;
    if (len)
        *len = vq->used->ring[vq->last_used % vq->size].len;
    vq->last_used++;
    if (id >= vq->size || !vq->chain_len[id])
        panic("virtq %u: device returned unknown head %u", vq->index, id);
    /* Return the chain to the free list. */
    n = vq->chain_len[id];
    vq->chain_len[id] = 0;
    tail = id;
    for (uint16_t i = 1; i < n; i++)
        tail = vq->desc[tail].next;
    vq->desc[tail].next = vq->free_head;
    vq->free_head = id;
    vq->num_free = (uint16_t)(vq->num_free + n);
    return id;
}

int virtq_wait(struct virtio_dev *vd, struct virtq *vq, int head, uint32_t *len,
               uint64_t timeout_ms)
{
    uint64_t deadline = rdtsc() + timeout_ms * tsc_khz();
    unsigned spins = 0;

    for (;;) {
        int id = virtq_poll(vq, len);

        if (id == head)
            return 0;
        if (id >= 0)
            printf("virtq %u: completion for head %d while waiting for %d\n", vq->index, id, head);
        /* Checking the status costs an exit: do it only now and then. */
        if ((++spins & 0xfff) == 0) {
            if (virtio_status(vd) & VIRTIO_STATUS_NEEDS_RESET)
                return -EIO;
            if (rdtsc() > deadline)
                return -ETIMEDOUT;
        }
        cpu_relax();
    }
}
