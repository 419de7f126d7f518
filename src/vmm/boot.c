/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kernel loaders. Everything a file supplies is checked before it is used:
 * a bad image is refused with a message naming the field, never loaded half.
 */
#include "vmm/boot.h"
#include "vmm/layout.h"

#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define PAGE_SIZE_4K             4096ull

static int boot_error(char *err, size_t errlen, int ret, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int boot_error(char *err, size_t errlen, int ret, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return ret;
}

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

static void wr32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static void wr64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* Flat GDT: null, null, 64-bit code, data, 32-bit code (Linux uses 0x10/0x18). */
static int boot_write_gdt(const struct guest_mem *gm)
{
    static const uint64_t gdt[BOOT_GDT_ENTRIES] = {0, 0, 0x00af9b000000ffffull,
                                                   0x00cf93000000ffffull, 0x00cf9b000000ffffull};

    return guest_mem_write(gm, LAYOUT_GDT_ADDR, gdt, sizeof(gdt));
}

/* Identity map of the first 4 GiB with 2 MiB pages for the 64-bit entry. */
static int boot_write_page_tables(const struct guest_mem *gm)
{
    uint64_t *pml4 = guest_mem_ptr(gm, LAYOUT_PML4, PAGE_SIZE_4K);
    uint64_t *pdpt = guest_mem_ptr(gm, LAYOUT_PDPT, PAGE_SIZE_4K);
    uint64_t *pd = guest_mem_ptr(gm, LAYOUT_PD, 4 * PAGE_SIZE_4K);

    if (!pml4 || !pdpt || !pd)
        return -EFAULT;
    memset(pml4, 0, PAGE_SIZE_4K);
    memset(pdpt, 0, PAGE_SIZE_4K);
    pml4[0] = LAYOUT_PDPT | 0x3; /* present, writable */
    for (uint64_t i = 0; i < 4; i++)
        pdpt[i] = (LAYOUT_PD + i * PAGE_SIZE_4K) | 0x3;
    for (uint64_t i = 0; i < 4 * 512; i++)
        pd[i] = (i << 21) | 0x83; /* present, writable, 2 MiB page */
    return 0;
}

static int boot_write_cmdline(const struct guest_mem *gm, const char *cmdline, uint64_t max,
                              char *err, size_t errlen)
{
    const char *s = cmdline ? cmdline : "";
    size_t len = strlen(s);

    if (len + 1 > max)
        return boot_error(err, errlen, -E2BIG,
                          "cmdline: %zu bytes, the kernel accepts at most %llu", len,
                          (unsigned long long)(max - 1));
    return guest_mem_write(gm, LAYOUT_CMDLINE, s, len + 1);
}

/*
 * Place the initramfs as high as possible below limit (exclusive), page
 * aligned, above the kernel image.
 */
static int boot_place_initrd(const struct guest_mem *gm, const struct boot_images *img,
                             uint64_t limit, struct boot_info *bi, char *err, size_t errlen)
{
    uint64_t start;

    bi->initrd_start = bi->initrd_size = 0;
    if (!img->initrd)
        return 0;
    if (limit > guest_mem_low_end(gm))
        limit = guest_mem_low_end(gm);
    if (img->initrd_len == 0)
        return boot_error(err, errlen, -EINVAL, "initramfs: file is empty");
    if (img->initrd_len > limit)
        goto too_big;
    start = (limit - img->initrd_len) & ~(PAGE_SIZE_4K - 1);
    if (start < bi->kernel_end ||
        ranges_overlap(start, img->initrd_len, bi->kernel_start, bi->kernel_end - bi->kernel_start))
        goto too_big;
    if (guest_mem_write(gm, start, img->initrd, img->initrd_len) < 0)
        goto too_big;
    bi->initrd_start = start;
    bi->initrd_size = img->initrd_len;
    return 0;
too_big:
    return boot_error(err, errlen, -ENOMEM,
                      "initramfs: %zu bytes do not fit between the kernel end 0x%llx and 0x%llx "
                      "without overlapping it (too little memory?)",
                      img->initrd_len, (unsigned long long)bi->kernel_end,
                      (unsigned long long)limit);
}

/* ---- PVH ELF ---------------------------------------------------------- */

struct elf_phdr_view {
    uint32_t type;
    uint64_t offset, paddr, filesz, memsz;
};

static void elf_read_phdr(const uint8_t *p, bool is64, struct elf_phdr_view *ph)
{
    if (is64) {
        const Elf64_Phdr *h = (const void *)p;
        Elf64_Phdr c;

        memcpy(&c, h, sizeof(c));
        *ph = (struct elf_phdr_view){c.p_type, c.p_offset, c.p_paddr, c.p_filesz, c.p_memsz};
    } else {
        Elf32_Phdr c;

        memcpy(&c, p, sizeof(c));
        *ph = (struct elf_phdr_view){c.p_type, c.p_offset, c.p_paddr, c.p_filesz, c.p_memsz};
    }
}

/* Find the PHYS32_ENTRY note in one PT_NOTE segment; 1 found, 0 not, <0 malformed. */
static int elf_find_pvh_note(const uint8_t *p, uint64_t len, uint64_t *entry, char *err,
                             size_t errlen)
{
    uint64_t off = 0;

    while (len - off >= 12) {
        uint32_t namesz = rd32(p + off), descsz = rd32(p + off + 4), type = rd32(p + off + 8);
        uint64_t name_off = off + 12;
        uint64_t desc_off = name_off + ((namesz + 3ull) & ~3ull);
        uint64_t next = desc_off + ((descsz + 3ull) & ~3ull);

        if (next > len)
            return boot_error(err, errlen, -EINVAL,
                              "kernel: ELF note at offset %llu runs past its segment",
                              (unsigned long long)off);
        if (namesz == 4 && memcmp(p + name_off, "Xen", 4) == 0 &&
            type == XEN_ELFNOTE_PHYS32_ENTRY) {
            if (descsz == 4)
                *entry = rd32(p + desc_off);
            else if (descsz == 8)
                *entry = rd64(p + desc_off);
            else
                return boot_error(err, errlen, -EINVAL,
                                  "kernel: PVH entry note has a %u-byte value", descsz);
            return 1;
        }
        off = next;
    }
    return 0;
}

int boot_load_pvh(const struct guest_mem *gm, const struct boot_images *img, struct boot_info *out,
                  char *err, size_t errlen)
{
    const uint8_t *k = img->kernel;
    uint64_t klen = img->kernel_len, phoff, entry = 0, lo = UINT64_MAX, hi = 0;
    uint16_t phnum, phentsize, machine;
    bool is64, found = false;
    struct hvm_start_info si;
    struct hvm_modlist_entry mod;
    struct hvm_memmap_table_entry mm[E820_MAX];
    struct e820_entry e820[E820_MAX];
    int ret, n;

    memset(out, 0, sizeof(*out));
    if (klen < EI_NIDENT || memcmp(k, ELFMAG, SELFMAG) != 0)
        return boot_error(err, errlen, -EINVAL, "kernel: not an ELF file");
    if (k[EI_DATA] != ELFDATA2LSB || (k[EI_CLASS] != ELFCLASS32 && k[EI_CLASS] != ELFCLASS64))
        return boot_error(err, errlen, -EINVAL, "kernel: ELF class/byte order not supported");
    is64 = k[EI_CLASS] == ELFCLASS64;
    if (klen < (is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr)))
        return boot_error(err, errlen, -EINVAL, "kernel: file shorter than the ELF header");
    if (is64) {
        Elf64_Ehdr eh;

        memcpy(&eh, k, sizeof(eh));
        phoff = eh.e_phoff;
        phnum = eh.e_phnum;
        phentsize = eh.e_phentsize;
        machine = eh.e_machine;
    } else {
        Elf32_Ehdr eh;

        memcpy(&eh, k, sizeof(eh));
        phoff = eh.e_phoff;
        phnum = eh.e_phnum;
        phentsize = eh.e_phentsize;
        machine = eh.e_machine;
    }
    if (machine != EM_X86_64 && machine != EM_386)
        return boot_error(err, errlen, -EINVAL, "kernel: ELF machine %u is not x86", machine);
    if (phentsize != (is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr)) || phnum == 0 ||
        phoff > klen || (uint64_t)phnum * phentsize > klen - phoff)
        return boot_error(err, errlen, -EINVAL,
                          "kernel: ELF program headers (offset %llu, %u x %u bytes) lie outside "
                          "the %llu-byte file",
                          (unsigned long long)phoff, phnum, phentsize, (unsigned long long)klen);

    /* Pass 1: validate every segment and find the entry note; nothing is written yet. */
    for (unsigned i = 0; i < phnum; i++) {
        struct elf_phdr_view ph;

        elf_read_phdr(k + phoff + (uint64_t)i * phentsize, is64, &ph);
        if (ph.type != PT_LOAD && ph.type != PT_NOTE)
            continue;
        if (ph.offset > klen || ph.filesz > klen - ph.offset)
            return boot_error(err, errlen, -EINVAL,
                              "kernel: segment %u (offset %llu, %llu bytes) runs past the end of "
                              "the %llu-byte file (truncated?)",
                              i, (unsigned long long)ph.offset, (unsigned long long)ph.filesz,
                              (unsigned long long)klen);
        if (ph.type == PT_NOTE) {
            if (!found) {
                ret = elf_find_pvh_note(k + ph.offset, ph.filesz, &entry, err, errlen);
                if (ret < 0)
                    return ret;
                found = ret == 1;
            }
            continue;
        }
        if (ph.filesz > ph.memsz)
            return boot_error(err, errlen, -EINVAL,
                              "kernel: segment %u has file size %llu > memory size %llu", i,
                              (unsigned long long)ph.filesz, (unsigned long long)ph.memsz);
        if (ph.paddr < LAYOUT_HIGH_RAM)
            return boot_error(err, errlen, -EINVAL,
                              "kernel: segment %u at 0x%llx overlaps the boot area below 1 MiB", i,
                              (unsigned long long)ph.paddr);
        if (!guest_mem_ptr(gm, ph.paddr, ph.memsz))
            return boot_error(err, errlen, -ENOMEM,
                              "kernel: segment %u [0x%llx, +0x%llx) lies outside guest RAM", i,
                              (unsigned long long)ph.paddr, (unsigned long long)ph.memsz);
        if (ph.paddr < lo)
            lo = ph.paddr;
        if (ph.paddr + ph.memsz > hi)
            hi = ph.paddr + ph.memsz;
    }
    if (!found)
        return boot_error(err, errlen, -EINVAL,
                          "kernel: ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
    if (hi == 0)
        return boot_error(err, errlen, -EINVAL, "kernel: ELF has no loadable segment");
    if (entry < lo || entry >= hi || entry > UINT32_MAX)
        return boot_error(err, errlen, -EINVAL,
                          "kernel: PVH entry 0x%llx is outside the loaded image [0x%llx, 0x%llx)",
                          (unsigned long long)entry, (unsigned long long)lo,
                          (unsigned long long)hi);
    out->kind = BOOT_PVH;
    out->entry = entry;
    out->kernel_start = lo;
    out->kernel_end = hi;
    ret = boot_place_initrd(gm, img, UINT64_MAX, out, err, errlen);
    if (ret)
        return ret;
    ret = boot_write_cmdline(gm, img->cmdline, LAYOUT_CMDLINE_MAX, err, errlen);
    if (ret)
        return ret;

    /* Pass 2: load. */
    for (unsigned i = 0; i < phnum; i++) {
        struct elf_phdr_view ph;
        uint8_t *dst;

        elf_read_phdr(k + phoff + (uint64_t)i * phentsize, is64, &ph);
        if (ph.type != PT_LOAD)
            continue;
        dst = guest_mem_ptr(gm, ph.paddr, ph.memsz);
        memcpy(dst, k + ph.offset, ph.filesz);
        memset(dst + ph.filesz, 0, ph.memsz - ph.filesz);
    }
    /* A segment may have overwritten the initramfs: refuse overlapping layouts. */
    if (out->initrd_size && ranges_overlap(out->initrd_start, out->initrd_size, lo, hi - lo))
        return boot_error(err, errlen, -EINVAL, "initramfs overlaps the kernel image");

    n = guest_mem_e820(gm, e820, E820_MAX);
    for (int i = 0; i < n; i++)
        mm[i] = (struct hvm_memmap_table_entry){e820[i].addr, e820[i].size, e820[i].type, 0};
    memset(&si, 0, sizeof(si));
    si.magic = PVH_START_MAGIC;
    si.version = 1;
    si.cmdline_paddr = LAYOUT_CMDLINE;
    si.rsdp_paddr = img->rsdp;
    si.memmap_paddr = LAYOUT_PVH_MEMMAP;
    si.memmap_entries = (uint32_t)n;
    if (out->initrd_size) {
        mod = (struct hvm_modlist_entry){out->initrd_start, out->initrd_size, 0, 0};
        si.nr_modules = 1;
        si.modlist_paddr = LAYOUT_PVH_MODLIST;
        if (guest_mem_write(gm, LAYOUT_PVH_MODLIST, &mod, sizeof(mod)) < 0)
            return -EFAULT;
    }
    if (guest_mem_write(gm, LAYOUT_PVH_MEMMAP, mm, (uint64_t)n * sizeof(mm[0])) < 0 ||
        guest_mem_write(gm, LAYOUT_BOOT_PARAMS, &si, sizeof(si)) < 0 || boot_write_gdt(gm) < 0)
        return boot_error(err, errlen, -EFAULT, "boot: low memory is not RAM");
    out->params = LAYOUT_BOOT_PARAMS;
    return 0;
}

/* ---- Linux bzImage ---------------------------------------------------- */

int boot_load_bzimage(const struct guest_mem *gm, const struct boot_images *img,
                      struct boot_info *out, char *err, size_t errlen)
{
    const uint8_t *k = img->kernel;
    uint64_t klen = img->kernel_len, setup_size, payload, syssize, init_size, load, need;
    uint64_t initrd_max;
    uint32_t cmdline_size;
    uint16_t version;
    uint8_t *bp;
    size_t hdr_len;
    struct e820_entry e820[E820_MAX];
    int n, ret;

    memset(out, 0, sizeof(*out));
    if (klen < SETUP_HEADER_END)
        return boot_error(err, errlen, -EINVAL,
                          "kernel: %llu bytes is too short for a bzImage setup header",
                          (unsigned long long)klen);
    if (rd16(k + SETUP_BOOT_FLAG) != 0xaa55 || memcmp(k + SETUP_HEADER_MAGIC, "HdrS", 4) != 0)
        return boot_error(err, errlen, -EINVAL, "kernel: no bzImage magic (0xAA55, \"HdrS\")");
    version = rd16(k + SETUP_VERSION);
    if (version < BZ_MIN_VERSION)
        return boot_error(err, errlen, -ENOTSUP,
                          "kernel: boot protocol %u.%02u is older than the 2.12 qtvmm needs",
                          version >> 8, version & 0xff);
    if (!(k[SETUP_LOADFLAGS] & BZ_LOADED_HIGH))
        return boot_error(err, errlen, -ENOTSUP, "kernel: zImage (not LOADED_HIGH) unsupported");
    if (!(rd16(k + SETUP_XLOADFLAGS) & BZ_XLF_KERNEL_64))
        return boot_error(err, errlen, -ENOTSUP,
                          "kernel: no 64-bit entry point (XLF_KERNEL_64 is clear)");
    setup_size = ((uint64_t)(k[SETUP_SETUP_SECTS] ? k[SETUP_SETUP_SECTS] : 4) + 1) * 512;
    if (setup_size >= klen)
        return boot_error(err, errlen, -EINVAL,
                          "kernel: setup (%llu bytes) is not shorter than the %llu-byte file",
                          (unsigned long long)setup_size, (unsigned long long)klen);
    payload = klen - setup_size;
    syssize = (uint64_t)rd32(k + SETUP_SYSSIZE) * 16;
    if (syssize == 0 || syssize > payload)
        return boot_error(err, errlen, -EINVAL,
                          "kernel: header claims %llu bytes of protected-mode code, the file has "
                          "%llu (truncated?)",
                          (unsigned long long)syssize, (unsigned long long)payload);
    init_size = rd32(k + SETUP_INIT_SIZE);
    need = init_size > payload ? init_size : payload;
    load = LAYOUT_HIGH_RAM; /* relocatable kernels move themselves to pref_address */
    if (!guest_mem_ptr(gm, load, need))
        return boot_error(err, errlen, -ENOMEM,
                          "kernel: needs [0x%llx, +0x%llx) of RAM (init_size), guest RAM is "
                          "smaller",
                          (unsigned long long)load, (unsigned long long)need);
    cmdline_size = rd32(k + SETUP_CMDLINE_SIZE);
    if (cmdline_size == 0)
        cmdline_size = 255;
    out->kind = BOOT_BZIMAGE;
    out->kernel_start = load;
    out->kernel_end = load + need;
    out->entry = load + 0x200;
    out->params = LAYOUT_BOOT_PARAMS;
    initrd_max = (uint64_t)rd32(k + SETUP_INITRD_ADDR_MAX) + 1;
    ret = boot_place_initrd(gm, img, initrd_max, out, err, errlen);
    if (ret)
        return ret;
    ret = boot_write_cmdline(gm, img->cmdline,
                             (uint64_t)cmdline_size + 1 < LAYOUT_CMDLINE_MAX
                                 ? (uint64_t)cmdline_size + 1
                                 : LAYOUT_CMDLINE_MAX,
                             err, errlen);
    if (ret)
        return ret;

    if (guest_mem_write(gm, load, k + setup_size, payload) < 0)
        return -EFAULT;
    bp = guest_mem_ptr(gm, LAYOUT_BOOT_PARAMS, BP_SIZE);
    if (!bp)
        return -EFAULT;
    memset(bp, 0, BP_SIZE);
    /* The setup header runs from 0x1f1 to 0x202 + the jump offset at 0x201. */
    hdr_len = 0x202 + k[0x201] - BP_HDR;
    if (BP_HDR + hdr_len > setup_size)
        hdr_len = setup_size - BP_HDR;
    if (BP_HDR + hdr_len > BP_E820_TABLE)
        hdr_len = BP_E820_TABLE - BP_HDR;
    memcpy(bp + BP_HDR, k + BP_HDR, hdr_len);
    bp[SETUP_TYPE_OF_LOADER] = 0xff;
    bp[SETUP_LOADFLAGS] |= BZ_CAN_USE_HEAP;
    wr16(bp + SETUP_HEAP_END_PTR, 0xfe00);
    wr32(bp + SETUP_CMD_LINE_PTR, (uint32_t)LAYOUT_CMDLINE);
    wr32(bp + BP_EXT_CMD_LINE_PTR, (uint32_t)(LAYOUT_CMDLINE >> 32));
    wr32(bp + SETUP_RAMDISK_IMAGE, (uint32_t)out->initrd_start);
    wr32(bp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(out->initrd_start >> 32));
    wr32(bp + SETUP_RAMDISK_SIZE, (uint32_t)out->initrd_size);
    wr32(bp + BP_EXT_RAMDISK_SIZE, (uint32_t)(out->initrd_size >> 32));
    wr64(bp + BP_ACPI_RSDP_ADDR, img->rsdp);
    n = guest_mem_e820(gm, e820, E820_MAX);
    bp[BP_E820_ENTRIES] = (uint8_t)n;
    memcpy(bp + BP_E820_TABLE, e820, (size_t)n * sizeof(e820[0]));
    if (boot_write_gdt(gm) < 0 || boot_write_page_tables(gm) < 0)
        return boot_error(err, errlen, -EFAULT, "boot: low memory is not RAM");
    return 0;
}

int boot_load(const struct guest_mem *gm, const struct boot_images *img, struct boot_info *out,
              char *err, size_t errlen)
{
    if (img->kernel_len >= SELFMAG && memcmp(img->kernel, ELFMAG, SELFMAG) == 0)
        return boot_load_pvh(gm, img, out, err, errlen);
    if (img->kernel_len >= SETUP_HEADER_MAGIC + 4 &&
        memcmp(img->kernel + SETUP_HEADER_MAGIC, "HdrS", 4) == 0)
        return boot_load_bzimage(gm, img, out, err, errlen);
    return boot_error(err, errlen, -EINVAL,
                      "kernel: neither a bzImage (\"HdrS\") nor an ELF file with a PVH note");
}
