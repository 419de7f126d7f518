/* SPDX-License-Identifier: Apache-2.0 */
#include "vmm/mem.h"
#include "vmm/layout.h"

#include <errno.h>
#include <string.h>

int guest_mem_layout(struct guest_mem *gm, uint64_t ram_size, uint8_t *base)
{
    uint64_t low = ram_size < LAYOUT_MMIO32_START ? ram_size : LAYOUT_MMIO32_START;

    memset(gm, 0, sizeof(*gm));
    gm->fd = -1;
    if (ram_size < LAYOUT_HIGH_RAM * 2 || ram_size % 4096)
        return -EINVAL;
    gm->total = ram_size;
    gm->r[0] = (struct guest_mem_region){.gpa = 0, .size = low, .hva = base, .fd_offset = 0};
    gm->n = 1;
    if (ram_size > low) {
        gm->r[1] = (struct guest_mem_region){.gpa = LAYOUT_RAM_HIGH_START,
                                             .size = ram_size - low,
                                             .hva = base ? base + low : NULL,
                                             .fd_offset = low};
        gm->n = 2;
    }
    return 0;
}

void *guest_mem_ptr(const struct guest_mem *gm, uint64_t gpa, uint64_t len)
{
    for (int i = 0; i < gm->n; i++) {
        const struct guest_mem_region *r = &gm->r[i];

        /* gpa - r->gpa cannot wrap once gpa >= r->gpa; compare lengths, not ends. */
        if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
            return r->hva + (gpa - r->gpa);
    }
    return NULL;
}

int guest_mem_write(const struct guest_mem *gm, uint64_t gpa, const void *src, uint64_t len)
{
    void *dst = guest_mem_ptr(gm, gpa, len);

    if (!dst)
        return -EFAULT;
    memcpy(dst, src, len);
    return 0;
}

uint64_t guest_mem_low_end(const struct guest_mem *gm)
{
    return gm->r[0].size;
}

uint64_t guest_mem_top(const struct guest_mem *gm)
{
    const struct guest_mem_region *r = &gm->r[gm->n - 1];

    return r->gpa + r->size;
}

int guest_mem_e820(const struct guest_mem *gm, struct e820_entry *out, int max)
{
    struct e820_entry e[6];
    int n = 0;

    e[n++] = (struct e820_entry){0, LAYOUT_EBDA_START, E820_RAM};
    /* EBDA, VGA hole, option ROMs and the BIOS area holding the ACPI tables. */
    e[n++] =
        (struct e820_entry){LAYOUT_EBDA_START, LAYOUT_HIGH_RAM - LAYOUT_EBDA_START, E820_RESERVED};
    e[n++] = (struct e820_entry){LAYOUT_HIGH_RAM, gm->r[0].size - LAYOUT_HIGH_RAM, E820_RAM};
    e[n++] = (struct e820_entry){LAYOUT_PCI_ECAM, LAYOUT_PCI_ECAM_SIZE, E820_RESERVED};
    if (gm->n > 1)
        e[n++] = (struct e820_entry){gm->r[1].gpa, gm->r[1].size, E820_RAM};
    if (n > max)
        n = max;
    memcpy(out, e, (size_t)n * sizeof(e[0]));
    return n;
}
