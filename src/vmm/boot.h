/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kernel loaders: Linux bzImage (x86 boot protocol >= 2.12, 64-bit entry) and
 * PVH ELF (XEN_ELFNOTE_PHYS32_ENTRY). They only write guest memory, so they
 * run on a plain buffer in unit tests; the vCPU code turns the result into
 * register state.
 */
#ifndef QT_VMM_BOOT_H
#define QT_VMM_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include "vmm/mem.h"

enum boot_kind { BOOT_PVH, BOOT_BZIMAGE };

struct boot_info {
    enum boot_kind kind;
    uint64_t entry;  /* PVH: 32-bit entry; bzImage: 64-bit entry (load address + 0x200) */
    uint64_t params; /* PVH: hvm_start_info (EBX); bzImage: boot_params (RSI) */
    uint64_t kernel_start, kernel_end; /* guest range the image occupies (incl. init_size) */
    uint64_t initrd_start, initrd_size;
};

struct boot_images {
    const uint8_t *kernel;
    size_t kernel_len;
    const uint8_t *initrd; /* may be NULL */
    size_t initrd_len;
    const char *cmdline; /* may be NULL */
    uint64_t rsdp;       /* ACPI RSDP guest address, 0 for none */
};

/* Segment selectors of the boot GDT written by the loaders. */
#define BOOT_GDT_CODE64  0x10
#define BOOT_GDT_DATA    0x18
#define BOOT_GDT_CODE32  0x20
#define BOOT_GDT_ENTRIES 5

/* Detect the image kind from its contents and load it. */
int boot_load(const struct guest_mem *gm, const struct boot_images *img, struct boot_info *out,
              char *err, size_t errlen);
int boot_load_pvh(const struct guest_mem *gm, const struct boot_images *img, struct boot_info *out,
                  char *err, size_t errlen);
int boot_load_bzimage(const struct guest_mem *gm, const struct boot_images *img,
                      struct boot_info *out, char *err, size_t errlen);

/* Layout of PVH's hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h). */
#define PVH_START_MAGIC 0x336ec578u
struct hvm_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;
    uint32_t memmap_entries;
    uint32_t reserved;
};
struct hvm_modlist_entry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr;
    uint64_t reserved;
};
struct hvm_memmap_table_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};

/* Offsets in struct boot_params (the "zero page") used by the bzImage loader. */
#define BP_ACPI_RSDP_ADDR    0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE  0x0c4
#define BP_EXT_CMD_LINE_PTR  0x0c8
#define BP_E820_ENTRIES      0x1e8
#define BP_HDR               0x1f1
#define BP_E820_TABLE        0x2d0
#define BP_E820_MAX          128
#define BP_SIZE              0x1000

#define SETUP_SETUP_SECTS     0x1f1
#define SETUP_SYSSIZE         0x1f4
#define SETUP_BOOT_FLAG       0x1fe
#define SETUP_HEADER_MAGIC    0x202
#define SETUP_VERSION         0x206
#define SETUP_TYPE_OF_LOADER  0x210
#define SETUP_LOADFLAGS       0x211
#define SETUP_RAMDISK_IMAGE   0x218
#define SETUP_RAMDISK_SIZE    0x21c
#define SETUP_HEAP_END_PTR    0x224
#define SETUP_CMD_LINE_PTR    0x228
#define SETUP_INITRD_ADDR_MAX 0x22c
#define SETUP_KERNEL_ALIGN    0x230
#define SETUP_RELOCATABLE     0x234
#define SETUP_XLOADFLAGS      0x236
#define SETUP_CMDLINE_SIZE    0x238
#define SETUP_PREF_ADDRESS    0x258
#define SETUP_INIT_SIZE       0x260
#define SETUP_HEADER_END      0x268

#define BZ_MIN_VERSION   0x020c /* 2.12: xloadflags, XLF_KERNEL_64 */
#define BZ_LOADED_HIGH   0x01
#define BZ_CAN_USE_HEAP  0x80
#define BZ_XLF_KERNEL_64 0x01

#endif
