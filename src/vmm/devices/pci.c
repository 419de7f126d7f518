/* SPDX-License-Identifier: Apache-2.0 */
/* PCI bus 0, host bridge, BARs and MSI-X. See pci.h. */
#include "vmm/devices/pci.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/device.h"
#include "vmm/devices/devstate.h"
#include "vmm/layout.h"

#define PCI_IO_WINDOW_START 0xc000ull
#define PCI_IO_WINDOW_END   0x10000ull
#define PCI_HOST_VENDOR     0x1b36 /* Red Hat, Inc. */
#define PCI_HOST_DEVICE     0x0008 /* PCIe host bridge */

static uint16_t cfg_rd16(const struct pci_dev *dev, uint32_t off)
{
    return (uint16_t)(dev->cfg[off] | dev->cfg[off + 1] << 8);
}

static uint32_t cfg_rd32(const struct pci_dev *dev, uint32_t off)
{
    return (uint32_t)cfg_rd16(dev, off) | (uint32_t)cfg_rd16(dev, off + 2) << 16;
}

static void cfg_wr16(struct pci_dev *dev, uint32_t off, uint16_t v)
{
    dev->cfg[off] = (uint8_t)v;
    dev->cfg[off + 1] = (uint8_t)(v >> 8);
}

static void cfg_wr32(struct pci_dev *dev, uint32_t off, uint32_t v)
{
    cfg_wr16(dev, off, (uint16_t)v);
    cfg_wr16(dev, off + 2, (uint16_t)(v >> 16));
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

static uint64_t pow2_roundup(uint64_t v)
{
    uint64_t p = 1;

    while (p < v)
        p <<= 1;
    return p;
}

void pci_dev_init(struct pci_dev *dev, const char *name, uint16_t vendor, uint16_t device,
                  uint32_t class_code, uint8_t revision, uint16_t subsys_vendor, uint16_t subsys_id)
{
    memset(dev, 0, sizeof(*dev));
    pthread_mutex_init(&dev->lock, NULL);
    snprintf(dev->name, sizeof(dev->name), "%s", name);
    dev->slot = -1;
    cfg_wr16(dev, PCI_VENDOR_ID, vendor);
    cfg_wr16(dev, PCI_DEVICE_ID, device);
    dev->cfg[PCI_REVISION_ID] = revision;
    dev->cfg[PCI_CLASS_PROG] = (uint8_t)class_code;
    cfg_wr16(dev, PCI_CLASS_PROG + 1, (uint16_t)(class_code >> 8));
    dev->cfg[PCI_HEADER_TYPE] = 0;
    cfg_wr16(dev, PCI_SUBSYSTEM_VID, subsys_vendor);
    cfg_wr16(dev, PCI_SUBSYSTEM_ID, subsys_id);
    /* No INTx: devices interrupt through MSI-X only. */
    dev->cfg[PCI_INTERRUPT_PIN] = 0;
    cfg_wr16(dev, PCI_COMMAND, 0);
    /* Writable: IO, MEMORY, MASTER, INTX_DISABLE; interrupt line is scratch. */
    dev->wmask[PCI_COMMAND] = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    dev->wmask[PCI_COMMAND + 1] = PCI_COMMAND_INTX_DISABLE >> 8;
    dev->wmask[PCI_INTERRUPT_LINE] = 0xff;
    dev->cap_end = 0x40;
}

int pci_dev_add_bar(struct pci_dev *dev, int idx, enum pci_bar_type type, uint64_t size,
                    vm_io_fn fn, void *opaque)
{
    if (idx < 0 || idx >= PCI_NUM_BARS || dev->bars[idx].type != PCI_BAR_NONE ||
        (idx > 0 && dev->bars[idx - 1].type == PCI_BAR_MEM64) || size == 0 ||
        (type == PCI_BAR_MEM64 && idx == PCI_NUM_BARS - 1) ||
        (type == PCI_BAR_MEM32 && size > LAYOUT_MMIO32_SIZE / 2) ||
        (type == PCI_BAR_IO && size > 256))
        return -EINVAL;
    if (type == PCI_BAR_MEM64 && dev->bars[idx + 1].type != PCI_BAR_NONE)
        return -EINVAL;
    size = pow2_roundup(size);
    if (type != PCI_BAR_IO && size < 4096)
        size = 4096;
    if (type == PCI_BAR_IO && size < 4)
        size = 4;
    dev->bars[idx] = (struct pci_bar){.type = type, .size = size, .fn = fn, .opaque = opaque};
    return 0;
}

int pci_dev_add_cap(struct pci_dev *dev, const void *cap, uint8_t len)
{
    uint16_t off = (uint16_t)align_up(dev->cap_end, 4);

    if (len < 2 || off + len > 0x100)
        return -ENOSPC;
    memcpy(&dev->cfg[off], cap, len);
    dev->cfg[off + 1] = 0;
    if (dev->cap_last)
        dev->cfg[dev->cap_last + 1] = (uint8_t)off;
    else
        dev->cfg[PCI_CAPABILITY_LIST] = (uint8_t)off;
    cfg_wr16(dev, PCI_STATUS, cfg_rd16(dev, PCI_STATUS) | PCI_STATUS_CAP_LIST);
    dev->cap_last = off;
    dev->cap_end = off + len;
    return off;
}

/* ---- MSI-X ---- */

static bool msix_vector_active(struct pci_dev *dev, uint16_t v)
{
    uint16_t ctrl = cfg_rd16(dev, dev->msix.cap + 2);
    uint32_t vctrl;

    memcpy(&vctrl, dev->msix.table + v * PCI_MSIX_ENTRY_SIZE + 12, 4);
    return (ctrl & PCI_MSIX_FLAGS_ENABLE) && !(ctrl & PCI_MSIX_FLAGS_MASKALL) &&
           !(vctrl & PCI_MSIX_ENTRY_CTRL_MASK);
}

/* Attach or detach vector v's irqfd to match the table and control bits. Lock held. */
static void msix_vector_update(struct pci_dev *dev, uint16_t v)
{
    struct pci_msix_vector *vec = &dev->msix.vec[v];
    struct vm *vm = dev->bus->vm;
    uint32_t lo, hi, data;
    uint64_t addr;
    int ret;

    if (!msix_vector_active(dev, v)) {
        if (vec->irqfd) {
            ret = vm_irqfd(vm, vec->fd, vec->gsi, false);
            if (ret < 0)
                log_warn("pci device '%s': detaching MSI-X vector %u failed (%d)", dev->name, v,
                         ret);
            vec->irqfd = false;
        }
        return;
    }
    memcpy(&lo, dev->msix.table + v * PCI_MSIX_ENTRY_SIZE, 4);
    memcpy(&hi, dev->msix.table + v * PCI_MSIX_ENTRY_SIZE + 4, 4);
    memcpy(&data, dev->msix.table + v * PCI_MSIX_ENTRY_SIZE + 8, 4);
    addr = (uint64_t)hi << 32 | lo;
    if (!vec->has_route) {
        ret = vm_msi_route_alloc(vm, addr, data, &vec->gsi);
        if (ret < 0) {
            log_warn("pci device '%s': no MSI route for vector %u (%d)", dev->name, v, ret);
            return;
        }
        vec->has_route = true;
    } else if (vec->route_addr != addr || vec->route_data != data) {
        ret = vm_msi_route_update(vm, vec->gsi, addr, data);
        if (ret < 0) {
            log_warn("pci device '%s': updating MSI route of vector %u failed (%d)", dev->name, v,
                     ret);
            return;
        }
    }
    vec->route_addr = addr;
    vec->route_data = data;
    if (!vec->irqfd) {
        ret = vm_irqfd(vm, vec->fd, vec->gsi, true);
        if (ret < 0) {
            log_warn("pci device '%s': attaching MSI-X vector %u failed (%d)", dev->name, v, ret);
            return;
        }
        vec->irqfd = true;
    }
}

static void msix_update_all(struct pci_dev *dev)
{
    for (uint16_t v = 0; v < dev->msix.nvec; v++)
        msix_vector_update(dev, v);
}

bool pci_msix_pending(struct pci_dev *dev, uint16_t vec)
{
    struct pollfd p;

    if (!dev->msix.cap || vec >= dev->msix.nvec || dev->msix.vec[vec].irqfd)
        return false;
    p = (struct pollfd){.fd = dev->msix.vec[vec].fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void msix_bar_access(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write)
{
    struct pci_dev *dev = opaque;
    struct pci_msix *m = &dev->msix;
    uint64_t table_len = (uint64_t)m->nvec * PCI_MSIX_ENTRY_SIZE;

    /* The spec allows aligned DWORD and QWORD accesses only. */
    if ((len != 4 && len != 8) || (off & (len - 1)))
        return;
    pthread_mutex_lock(&dev->lock);
    if (off + len <= table_len) {
        if (is_write) {
            uint16_t first = (uint16_t)(off / PCI_MSIX_ENTRY_SIZE);

            memcpy(m->table + off, data, len);
            msix_vector_update(dev, first);
        } else {
            memcpy(data, m->table + off, len);
        }
    } else if (off >= m->pba_offset && off + len <= m->pba_offset + align_up(m->nvec, 64) / 8) {
        if (!is_write) {
            uint64_t bits = 0;
            uint32_t first = (uint32_t)(off - m->pba_offset) * 8;

            for (uint32_t i = 0; i < len * 8 && first + i < m->nvec; i++)
                if (pci_msix_pending(dev, (uint16_t)(first + i)))
                    bits |= 1ull << i;
            memcpy(data, &bits, len);
        }
    }
    pthread_mutex_unlock(&dev->lock);
}

int pci_msix_init(struct pci_dev *dev, uint16_t nvec, int bar_idx)
{
    uint8_t cap[12] = {PCI_CAP_ID_MSIX, 0};
    uint32_t table_len = (uint32_t)nvec * PCI_MSIX_ENTRY_SIZE, pba_off;
    uint16_t ctrl = (uint16_t)(nvec - 1);
    int off, ret;

    if (nvec == 0 || nvec > PCI_MSIX_MAX || dev->msix.cap)
        return -EINVAL;
    pba_off = (uint32_t)align_up(table_len, 4096);
    ret = pci_dev_add_bar(dev, bar_idx, PCI_BAR_MEM32, pba_off + align_up(nvec, 64) / 8,
                          msix_bar_access, dev);
    if (ret < 0)
        return ret;
    dev->msix.table = calloc(nvec, PCI_MSIX_ENTRY_SIZE);
    dev->msix.vec = calloc(nvec, sizeof(*dev->msix.vec));
    if (!dev->msix.table || !dev->msix.vec) {
        ret = -ENOMEM;
        goto fail;
    }
    for (uint16_t v = 0; v < nvec; v++)
        dev->msix.vec[v].fd = -1;
    for (uint16_t v = 0; v < nvec; v++) {
        uint32_t mask = PCI_MSIX_ENTRY_CTRL_MASK;

        dev->msix.vec[v].fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (dev->msix.vec[v].fd < 0) {
            ret = -errno;
            goto fail;
        }
        memcpy(dev->msix.table + v * PCI_MSIX_ENTRY_SIZE + 12, &mask, 4);
    }
    memcpy(&cap[2], &ctrl, 2);
    uint32_t table_bir = (uint32_t)bar_idx, pba_bir = pba_off | (uint32_t)bar_idx;
    memcpy(&cap[4], &table_bir, 4);
    memcpy(&cap[8], &pba_bir, 4);
    off = pci_dev_add_cap(dev, cap, sizeof(cap));
    if (off < 0) {
        ret = off;
        goto fail;
    }
    dev->wmask[off + 3] = (PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL) >> 8;
    dev->msix.cap = (uint16_t)off;
    dev->msix.nvec = nvec;
    dev->msix.bar = bar_idx;
    dev->msix.pba_offset = pba_off;
    return 0;
fail:
    if (dev->msix.vec)
        for (uint16_t v = 0; v < nvec; v++)
            if (dev->msix.vec[v].fd >= 0)
                close(dev->msix.vec[v].fd);
    free(dev->msix.table);
    free(dev->msix.vec);
    dev->msix.table = NULL;
    dev->msix.vec = NULL;
    dev->bars[bar_idx] = (struct pci_bar){0};
    return ret;
}

int pci_msix_notify(struct pci_dev *dev, uint16_t vec)
{
    uint64_t one = 1;

    if (!dev->msix.cap || vec >= dev->msix.nvec)
        return -EINVAL;
    if (write(dev->msix.vec[vec].fd, &one, sizeof(one)) != sizeof(one))
        return -errno;
    return 0;
}

int pci_msix_vector_fd(struct pci_dev *dev, uint16_t vec)
{
    if (!dev->msix.cap || vec >= dev->msix.nvec)
        return -1;
    return dev->msix.vec[vec].fd;
}

bool pci_msix_enabled(struct pci_dev *dev)
{
    bool en;

    if (!dev->msix.cap)
        return false;
    pthread_mutex_lock(&dev->lock);
    en = cfg_rd16(dev, dev->msix.cap + 2) & PCI_MSIX_FLAGS_ENABLE;
    pthread_mutex_unlock(&dev->lock);
    return en;
}

/* ---- BARs ---- */

static uint32_t bar_flags(enum pci_bar_type type)
{
    switch (type) {
    case PCI_BAR_IO:
        return 0x1;
    case PCI_BAR_MEM64:
        return 0x4;
    default:
        return 0;
    }
}

/* Register, move or unregister BAR i so that it matches the config space. Lock held. */
static void bar_update_mapping(struct pci_dev *dev, int i)
{
    struct pci_bar *bar = &dev->bars[i];
    enum vm_io_space space = bar->type == PCI_BAR_IO ? VM_IO_PIO : VM_IO_MMIO;
    uint16_t cmd = cfg_rd16(dev, PCI_COMMAND);
    uint64_t limit = bar->type == PCI_BAR_MEM64 ? UINT64_MAX
                     : bar->type == PCI_BAR_IO  ? PCI_IO_WINDOW_END
                                                : 1ull << 32;
    uint32_t lo_mask = (uint32_t) ~(bar->size - 1) & (bar->type == PCI_BAR_IO ? ~3u : ~15u);
    bool decode = bar->type == PCI_BAR_IO ? cmd & PCI_COMMAND_IO : cmd & PCI_COMMAND_MEMORY;
    bool probing = (uint32_t)bar->addr == lo_mask;
    bool want = decode && bar->addr && !probing && bar->addr <= limit - bar->size;
    struct vm *vm = dev->bus->vm;
    int ret;

    if (bar->type == PCI_BAR_NONE || (want && bar->is_mapped && bar->mapped == bar->addr))
        return;
    if (bar->is_mapped && want) {
        ret = vm_io_move(vm, space, bar->mapped, bar->addr);
        if (ret == 0) {
            bar->mapped = bar->addr;
            goto notify;
        }
        log_warn("pci device '%s': BAR %d cannot move to 0x%llx (%d); left unmapped", dev->name, i,
                 (unsigned long long)bar->addr, ret);
        want = false;
    }
    if (bar->is_mapped) {
        vm_io_unregister(vm, space, bar->mapped);
        bar->is_mapped = false;
    }
    if (want) {
        ret = vm_io_register(vm, space, bar->addr, bar->size, bar->fn, bar->opaque);
        if (ret < 0) {
            log_warn("pci device '%s': BAR %d at 0x%llx size 0x%llx cannot be mapped (%d)",
                     dev->name, i, (unsigned long long)bar->addr, (unsigned long long)bar->size,
                     ret);
            goto notify;
        }
        bar->is_mapped = true;
        bar->mapped = bar->addr;
    }
notify:
    if (dev->ops && dev->ops->bar_remap)
        dev->ops->bar_remap(dev, i, bar->is_mapped, bar->mapped);
}

/* Rebuild BAR i's registers from a written value (sizing masks applied). */
static void bar_reg_write(struct pci_dev *dev, int reg, uint32_t v)
{
    uint32_t off = PCI_BAR0 + 4 * reg;
    struct pci_bar *bar;
    int i = reg;
    bool high = false;

    if (reg > 0 && dev->bars[reg - 1].type == PCI_BAR_MEM64) {
        i = reg - 1;
        high = true;
    }
    bar = &dev->bars[i];
    if (bar->type == PCI_BAR_NONE) {
        cfg_wr32(dev, off, 0);
        return;
    }
    if (high) {
        uint32_t mask = (uint32_t)(~(bar->size - 1) >> 32);

        cfg_wr32(dev, off, v & mask);
    } else {
        uint32_t lo_mask = (uint32_t) ~(bar->size - 1) & (bar->type == PCI_BAR_IO ? ~3u : ~15u);

        cfg_wr32(dev, off, (v & lo_mask) | bar_flags(bar->type));
    }
    bar->addr = cfg_rd32(dev, PCI_BAR0 + 4 * i) & (bar->type == PCI_BAR_IO ? ~3u : ~15u);
    if (bar->type == PCI_BAR_MEM64)
        bar->addr |= (uint64_t)cfg_rd32(dev, PCI_BAR0 + 4 * i + 4) << 32;
    bar_update_mapping(dev, i);
}

static void bar_set_addr(struct pci_dev *dev, int i, uint64_t addr)
{
    struct pci_bar *bar = &dev->bars[i];

    bar->addr = addr;
    cfg_wr32(dev, PCI_BAR0 + 4 * i, (uint32_t)addr | bar_flags(bar->type));
    if (bar->type == PCI_BAR_MEM64)
        cfg_wr32(dev, PCI_BAR0 + 4 * i + 4, (uint32_t)(addr >> 32));
}

/* ---- config space ---- */

static bool ranges_overlap(uint32_t a, uint32_t alen, uint32_t b, uint32_t blen)
{
    return a < b + blen && b < a + alen;
}

static void pci_dev_cfg_read(struct pci_dev *dev, uint32_t off, void *data, uint32_t len)
{
    if (dev->ops && dev->ops->cfg_access && dev->ops->cfg_access(dev, off, data, len, false))
        return;
    memcpy(data, &dev->cfg[off], len);
}

static void pci_dev_cfg_write(struct pci_dev *dev, uint32_t off, const void *data, uint32_t len)
{
    const uint8_t *b = data;
    uint16_t old_cmd = cfg_rd16(dev, PCI_COMMAND);

    if (dev->ops && dev->ops->cfg_access && dev->ops->cfg_access(dev, off, (void *)data, len, true))
        return;
    if (ranges_overlap(off, len, PCI_BAR0, 4 * PCI_NUM_BARS)) {
        /* Merge the written bytes into each affected 32-bit BAR register. */
        for (int reg = 0; reg < PCI_NUM_BARS; reg++) {
            uint32_t roff = PCI_BAR0 + 4 * reg;
            uint8_t v[4];

            if (!ranges_overlap(off, len, roff, 4))
                continue;
            memcpy(v, &dev->cfg[roff], 4);
            for (uint32_t k = 0; k < len; k++)
                if (off + k >= roff && off + k < roff + 4)
                    v[off + k - roff] = b[k];
            bar_reg_write(dev, reg, (uint32_t)v[0] | v[1] << 8 | v[2] << 16 | (uint32_t)v[3] << 24);
        }
        return;
    }
    for (uint32_t k = 0; k < len; k++)
        dev->cfg[off + k] =
            (dev->cfg[off + k] & ~dev->wmask[off + k]) | (b[k] & dev->wmask[off + k]);
    if (ranges_overlap(off, len, PCI_COMMAND, 2) &&
        (cfg_rd16(dev, PCI_COMMAND) ^ old_cmd) & (PCI_COMMAND_IO | PCI_COMMAND_MEMORY))
        for (int i = 0; i < PCI_NUM_BARS; i++)
            bar_update_mapping(dev, i);
    if (dev->msix.cap && ranges_overlap(off, len, dev->msix.cap + 2, 2))
        msix_update_all(dev);
}

void pci_bus_cfg_access(struct pci_bus *bus, unsigned slot, unsigned func, uint32_t off, void *data,
                        uint32_t len, bool is_write)
{
    struct pci_dev *dev;

    if (!is_write)
        memset(data, 0xff, len);
    if ((len != 1 && len != 2 && len != 4) || (off & (len - 1)) || off + len > PCI_CFG_SIZE)
        return;
    pthread_mutex_lock(&bus->lock);
    dev = (slot < PCI_MAX_SLOTS && func == 0) ? bus->slots[slot] : NULL;
    if (dev) {
        pthread_mutex_lock(&dev->lock);
        if (is_write)
            pci_dev_cfg_write(dev, off, data, len);
        else
            pci_dev_cfg_read(dev, off, data, len);
        pthread_mutex_unlock(&dev->lock);
    }
    pthread_mutex_unlock(&bus->lock);
}

/* Ports 0xCF8 (address) and 0xCFC-0xCFF (data), configuration mechanism #1. */
static void pci_cf8_access(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write)
{
    struct pci_bus *bus = opaque;
    uint32_t addr;

    if (off < 4) {
        /* 0xcf9 is the PIIX/ICH reset control register: RST_CPU (bit 2) resets the machine. */
        if (off == 1 && len == 1 && is_write && (*(uint8_t *)data & 0x04)) {
            log_info("pci: reset requested through port 0xcf9");
            vm_request_reset(bus->vm);
            return;
        }
        if (off != 0 || len != 4)
            return; /* other byte accesses to 0xcf8-0xcfb are not config cycles */
        pthread_mutex_lock(&bus->lock);
        if (is_write)
            memcpy(&bus->cf8, data, 4);
        else
            memcpy(data, &bus->cf8, 4);
        pthread_mutex_unlock(&bus->lock);
        return;
    }
    pthread_mutex_lock(&bus->lock);
    addr = bus->cf8;
    pthread_mutex_unlock(&bus->lock);
    if (!(addr & 0x80000000u) || ((addr >> 16) & 0xff) != 0) {
        if (!is_write)
            memset(data, 0xff, len);
        return;
    }
    pci_bus_cfg_access(bus, (addr >> 11) & 0x1f, (addr >> 8) & 7,
                       (addr & 0xfc) + (uint32_t)(off - 4), data, len, is_write);
}

/* ECAM: bus 0 only, offset = slot << 15 | func << 12 | register. */
static void pci_ecam_access(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write)
{
    struct pci_bus *bus = opaque;

    if (len == 8) {
        pci_ecam_access(opaque, off, data, 4, is_write);
        pci_ecam_access(opaque, off + 4, (uint8_t *)data + 4, 4, is_write);
        return;
    }
    pci_bus_cfg_access(bus, (off >> 15) & 0x1f, (off >> 12) & 7, off & 0xfff, data, len, is_write);
}

int pci_bus_add_dev(struct pci_bus *bus, struct pci_dev *dev)
{
    int slot = -1, ret = 0;
    uint16_t cmd = 0;

    pthread_mutex_lock(&bus->lock);
    for (int s = 0; s < PCI_MAX_SLOTS; s++) {
        if (!bus->slots[s]) {
            slot = s;
            break;
        }
    }
    if (slot < 0) {
        log_err("pci device '%s': no free slot on bus 0", dev->name);
        ret = -ENOSPC;
        goto out;
    }
    pthread_mutex_lock(&dev->lock);
    dev->bus = bus;
    dev->slot = slot;
    /*
     * Assign addresses as firmware would, then enable decoding so that guests
     * without a PCI resource allocator can use the device right away.
     */
    for (int i = 0; i < PCI_NUM_BARS; i++) {
        struct pci_bar *bar = &dev->bars[i];
        uint64_t *next = bar->type == PCI_BAR_IO      ? &bus->io_next
                         : bar->type == PCI_BAR_MEM64 ? &bus->mmio64_next
                                                      : &bus->mmio32_next;
        uint64_t addr;

        if (bar->type == PCI_BAR_NONE)
            continue;
        addr = align_up(*next, bar->size);
        if ((bar->type == PCI_BAR_MEM32 && addr + bar->size > bus->mmio32_end) ||
            (bar->type == PCI_BAR_MEM64 && addr + bar->size > bus->mmio64_end) ||
            (bar->type == PCI_BAR_IO && addr + bar->size > bus->io_end)) {
            log_err("pci device '%s': BAR %d of 0x%llx bytes does not fit the PCI window",
                    dev->name, i, (unsigned long long)bar->size);
            ret = -ENOSPC;
            break;
        }
        *next = addr + bar->size;
        bar_set_addr(dev, i, addr);
        cmd |= bar->type == PCI_BAR_IO ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
    }
    if (ret == 0) {
        cfg_wr16(dev, PCI_COMMAND, cmd);
        for (int i = 0; i < PCI_NUM_BARS; i++)
            bar_update_mapping(dev, i);
        bus->slots[slot] = dev;
        log_info("pci: %s at 00:%02x.0", dev->name, slot);
    } else {
        dev->slot = -1;
    }
    pthread_mutex_unlock(&dev->lock);
out:
    pthread_mutex_unlock(&bus->lock);
    return ret;
}

void pci_dev_remove(struct pci_dev *dev)
{
    struct pci_bus *bus = dev->bus;

    if (bus) {
        pthread_mutex_lock(&bus->lock);
        if (dev->slot >= 0 && bus->slots[dev->slot] == dev)
            bus->slots[dev->slot] = NULL;
        pthread_mutex_unlock(&bus->lock);
        pthread_mutex_lock(&dev->lock);
        cfg_wr16(dev, PCI_COMMAND, 0);
        for (int i = 0; i < PCI_NUM_BARS; i++)
            bar_update_mapping(dev, i);
        for (uint16_t v = 0; v < dev->msix.nvec; v++) {
            struct pci_msix_vector *vec = &dev->msix.vec[v];

            if (vec->irqfd)
                vm_irqfd(bus->vm, vec->fd, vec->gsi, false);
            if (vec->has_route)
                vm_msi_route_free(bus->vm, vec->gsi);
            vec->irqfd = vec->has_route = false;
        }
        pthread_mutex_unlock(&dev->lock);
    }
    for (uint16_t v = 0; v < dev->msix.nvec; v++)
        if (dev->msix.vec[v].fd >= 0)
            close(dev->msix.vec[v].fd);
    free(dev->msix.table);
    free(dev->msix.vec);
    dev->msix = (struct pci_msix){0};
    dev->slot = -1;
    dev->bus = NULL;
    pthread_mutex_destroy(&dev->lock);
}

/* ---- bus and host bridge ---- */

int pci_bus_create(struct vm *vm, struct pci_bus **out)
{
    struct pci_bus *bus = calloc(1, sizeof(*bus));
    uint64_t ram = vm_ram_size(vm), ram_top;
    int ret;

    if (!bus)
        return -ENOMEM;
    bus->vm = vm;
    pthread_mutex_init(&bus->lock, NULL);
    bus->mmio32_next = LAYOUT_MMIO32_START;
    bus->mmio32_end = LAYOUT_MMIO32_START + LAYOUT_MMIO32_SIZE;
    ram_top = ram <= LAYOUT_MMIO32_START ? LAYOUT_RAM_HIGH_START
                                         : LAYOUT_RAM_HIGH_START + (ram - LAYOUT_MMIO32_START);
    /* The window the DSDT declares for PCI0 (see layout.h). */
    bus->mmio64_next = align_up(ram_top, LAYOUT_MMIO64_ALIGN);
    bus->mmio64_end = bus->mmio64_next + LAYOUT_MMIO64_SIZE;
    bus->io_next = PCI_IO_WINDOW_START;
    bus->io_end = PCI_IO_WINDOW_END;

    pci_dev_init(&bus->host, "host-bridge", PCI_HOST_VENDOR, PCI_HOST_DEVICE, 0x060000, 0,
                 PCI_HOST_VENDOR, 0x1100);
    ret = pci_bus_add_dev(bus, &bus->host);
    if (ret < 0)
        goto fail;
    ret = vm_io_register(vm, VM_IO_PIO, PORT_PCI_ADDR, 8, pci_cf8_access, bus);
    if (ret < 0) {
        log_err("pci: cannot register ports 0x%x-0x%x (%d)", PORT_PCI_ADDR, PORT_PCI_DATA + 3, ret);
        goto fail;
    }
    ret =
        vm_io_register(vm, VM_IO_MMIO, LAYOUT_PCI_ECAM, LAYOUT_PCI_ECAM_SIZE, pci_ecam_access, bus);
    if (ret < 0) {
        log_err("pci: cannot register ECAM at 0x%llx (%d)", (unsigned long long)LAYOUT_PCI_ECAM,
                ret);
        vm_io_unregister(vm, VM_IO_PIO, PORT_PCI_ADDR);
        goto fail;
    }
    *out = bus;
    return 0;
fail:
    pthread_mutex_destroy(&bus->lock);
    free(bus);
    return ret;
}

void pci_bus_destroy(struct pci_bus *bus)
{
    if (!bus)
        return;
    vm_io_unregister(bus->vm, VM_IO_MMIO, LAYOUT_PCI_ECAM);
    vm_io_unregister(bus->vm, VM_IO_PIO, PORT_PCI_ADDR);
    pci_dev_remove(&bus->host);
    pthread_mutex_destroy(&bus->lock);
    free(bus);
}

struct pci_bus *pci_bus_of(struct vm *vm)
{
    return devstate_get(vm, "pci");
}

static int pci_host_init(struct vm *vm, const struct vm_config *cfg)
{
    struct pci_bus *bus;
    int ret = pci_bus_create(vm, &bus);

    if (ret < 0)
        return ret;
    ret = devstate_set(vm, "pci", bus);
    if (ret < 0)
        pci_bus_destroy(bus);
    return ret;
}

static void pci_host_exit(struct vm *vm)
{
    struct pci_bus *bus = pci_bus_of(vm);

    devstate_clear(vm, "pci");
    pci_bus_destroy(bus);
}

VMM_DEVICE(pci, DEV_LEVEL_PCI, pci_host_init, pci_host_exit, NULL)
