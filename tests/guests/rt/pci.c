/* SPDX-License-Identifier: Apache-2.0 */
/* PCI configuration access (CF8/CFC and ECAM from the MCFG), bus 0 scan, BARs. */
#include "rt.h"
#include "io.h"

#define PCI_CF8_ENABLE  0x80000000u
#define PCI_MMIO_WINDOW 0xc0000000ull /* qtvmm's 32-bit BAR window, for BARs left at 0 */
#define PCI_MMIO_END    0xe0000000ull

static uint64_t pci_ecam_base; /* 0 until looked up; 1 = none */
static uint64_t pci_mmio_next = PCI_MMIO_WINDOW;

static uint32_t pci_cf8_addr(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off)
{
    return PCI_CF8_ENABLE | ((uint32_t)bus << 16) | ((uint32_t)(dev & 31) << 11) |
           ((uint32_t)(fn & 7) << 8) | (off & 0xfc);
}

uint32_t pci_cf8_read32(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off)
{
    outl(0xcf8, pci_cf8_addr(bus, dev, fn, off));
    return inl(0xcfc);
}

void pci_cf8_write32(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off, uint32_t v)
{
    outl(0xcf8, pci_cf8_addr(bus, dev, fn, off));
    outl(0xcfc, v);
}

static uint64_t pci_ecam(void)
{
    uint8_t s, e;
    uint64_t base;

    if (!pci_ecam_base)
        pci_ecam_base = acpi_mcfg_ecam(&base, &s, &e) == 0 && s == 0 ? base : 1;
    return pci_ecam_base == 1 ? 0 : pci_ecam_base;
}

static uint64_t pci_ecam_addr(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off)
{
    return pci_ecam() + ((uint64_t)bus << 20) + ((uint64_t)(dev & 31) << 15) +
           ((uint64_t)(fn & 7) << 12) + (off & 0xfff);
}

uint32_t pci_read32(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off)
{
    if (pci_ecam())
        return mmio_read32(pci_ecam_addr(bus, dev, fn, off & ~3));
    return pci_cf8_read32(bus, dev, fn, off);
}

uint16_t pci_read16(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off)
{
    return (uint16_t)(pci_read32(bus, dev, fn, off & ~3) >> ((off & 2) * 8));
}

uint8_t pci_read8(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off)
{
    return (uint8_t)(pci_read32(bus, dev, fn, off & ~3) >> ((off & 3) * 8));
}

void pci_write32(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off, uint32_t v)
{
    if (pci_ecam())
        mmio_write32(pci_ecam_addr(bus, dev, fn, off & ~3), v);
    else
        pci_cf8_write32(bus, dev, fn, off, v);
}

void pci_write16(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off, uint16_t v)
{
    uint32_t old = pci_read32(bus, dev, fn, off & ~3);
    unsigned shift = (off & 2) * 8;

    old &= ~(0xffffu << shift);
    pci_write32(bus, dev, fn, off & ~3, old | ((uint32_t)v << shift));
}

int pci_scan_bus0(struct pci_dev *out, int max)
{
    int n = 0;

    for (uint8_t dev = 0; dev < 32; dev++) {
        uint8_t nfn = 1;

        for (uint8_t fn = 0; fn < nfn; fn++) {
            uint32_t id = pci_read32(0, dev, fn, 0);

            if ((id & 0xffff) == 0xffff)
                continue;
            if (fn == 0 && (pci_read8(0, dev, 0, 0x0e) & 0x80))
                nfn = 8;
            if (n < max) {
                out[n].bus = 0;
                out[n].dev = dev;
                out[n].fn = fn;
                out[n].vendor = (uint16_t)id;
                out[n].device = (uint16_t)(id >> 16);
                out[n].class_rev = pci_read32(0, dev, fn, 0x08);
            }
            n++;
        }
    }
    return n < max ? n : max;
}

void pci_enable(const struct pci_dev *d)
{
    uint16_t cmd = pci_read16(d->bus, d->dev, d->fn, 0x04);

    /* memory space, bus master; INTx disabled (we poll) */
    pci_write16(d->bus, d->dev, d->fn, 0x04, (uint16_t)(cmd | 0x2 | 0x4 | 0x400));
}

int pci_bar_address(const struct pci_dev *d, int bar, uint64_t *addr)
{
    uint16_t off = (uint16_t)(0x10 + bar * 4);
    uint32_t lo, hi = 0, size_lo, size_hi = 0xffffffff;
    bool is64;
    uint64_t size, base;

    if (bar < 0 || bar > 5)
        return -EINVAL;
    lo = pci_read32(d->bus, d->dev, d->fn, off);
    if (lo & 1)
        return -ENOTSUP; /* I/O BAR */
    is64 = ((lo >> 1) & 3) == 2;
    if (is64) {
        if (bar == 5)
            return -EINVAL;
        hi = pci_read32(d->bus, d->dev, d->fn, off + 4);
    }
    base = ((uint64_t)hi << 32) | (lo & ~0xfull);
    if (base) {
        *addr = base;
        return 0;
    }
    /* Unassigned: size it and place it in the 32-bit window. */
    pci_write32(d->bus, d->dev, d->fn, off, 0xffffffff);
    size_lo = pci_read32(d->bus, d->dev, d->fn, off) & ~0xfu;
    if (is64) {
        pci_write32(d->bus, d->dev, d->fn, off + 4, 0xffffffff);
        size_hi = pci_read32(d->bus, d->dev, d->fn, off + 4);
    }
    size = ~(((uint64_t)size_hi << 32) | size_lo) + 1;
    if (!size_lo && !size_hi)
        return -ENODEV; /* BAR not implemented */
    base = ALIGN_UP(pci_mmio_next, size);
    if (base + size > PCI_MMIO_END)
        return -ENOSPC;
    pci_mmio_next = base + size;
    pci_write32(d->bus, d->dev, d->fn, off, (uint32_t)base);
    if (is64)
        pci_write32(d->bus, d->dev, d->fn, off + 4, 0);
    printf("pci %02x:%02x.%x: BAR%d assigned at 0x%lx (size 0x%lx)\n", d->bus, d->dev, d->fn, bar,
           base, size);
    *addr = base;
    return 0;
}
