/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Guest RAM as the loaders and the VM core see it: at most two regions (below
 * the 32-bit PCI hole and above 4 GiB) in one host mapping. Kept free of KVM
 * so that the loaders and the ACPI builder run in unit tests on a plain buffer.
 */
#ifndef QT_VMM_MEM_H
#define QT_VMM_MEM_H

#include <stddef.h>
#include <stdint.h>

#define GUEST_MEM_MAX_REGIONS 2

struct guest_mem_region {
    uint64_t gpa;
    uint64_t size;
    uint8_t *hva;
    uint64_t fd_offset; /* offset of this region in the backing memfd */
};

struct guest_mem {
    struct guest_mem_region r[GUEST_MEM_MAX_REGIONS];
    int n;
    uint64_t total; /* bytes of RAM */
    int fd;         /* memfd, -1 when the memory is a plain buffer (tests) */
};

/* Lay out ram_size bytes around the 32-bit hole; hva of region i = base + fd_offset. */
int guest_mem_layout(struct guest_mem *gm, uint64_t ram_size, uint8_t *base);
/* Host pointer for [gpa, gpa+len) if it lies in one region, else NULL (overflow-safe). */
void *guest_mem_ptr(const struct guest_mem *gm, uint64_t gpa, uint64_t len);
/* Copy into guest memory; -EFAULT when the range is not RAM. */
int guest_mem_write(const struct guest_mem *gm, uint64_t gpa, const void *src, uint64_t len);
/* End of RAM below the 32-bit hole. */
uint64_t guest_mem_low_end(const struct guest_mem *gm);
/* First address above all RAM. */
uint64_t guest_mem_top(const struct guest_mem *gm);

/* E820 memory map (the same entries go to boot_params and to PVH memmap). */
#define E820_RAM      1
#define E820_RESERVED 2
#define E820_ACPI     3
#define E820_MAX      16

struct e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
} __attribute__((packed));

/* Fill at most max entries; returns the count. */
int guest_mem_e820(const struct guest_mem *gm, struct e820_entry *out, int max);

#endif
