/* SPDX-License-Identifier: Apache-2.0 */
/* PVH ELF and bzImage loaders on a plain buffer standing in for guest RAM. */
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "vmm/boot.h"
#include "vmm/layout.h"

#define RAM_SIZE (64ull << 20)

struct fixture {
    uint8_t *ram;
    struct guest_mem gm;
    char err[256];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    f->ram = calloc(1, RAM_SIZE);
    assert_int_equal(guest_mem_layout(&f->gm, RAM_SIZE, f->ram), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    free(f->ram);
    free(f);
    return 0;
}

/* ---- crafted PVH ELF -------------------------------------------------- */

#define ELF_CODE_OFF 0x200
#define ELF_NOTE_OFF 0x180
#define ELF_LOAD     0x200000ull

struct elf_spec {
    bool is64;
    uint64_t paddr, filesz, memsz, entry;
    uint32_t note_type;
    bool no_note;
};

static size_t make_elf(uint8_t *buf, const struct elf_spec *s)
{
    uint8_t *note = buf + ELF_NOTE_OFF;
    size_t total = ELF_CODE_OFF + s->filesz;

    memset(buf, 0, total);
    for (uint64_t i = 0; i < s->filesz; i++)
        buf[ELF_CODE_OFF + i] = (uint8_t)(i * 7 + 1);
    /* note: namesz 4, descsz 4, type, "Xen\0", entry */
    memcpy(note, &(uint32_t){4}, 4);
    memcpy(note + 4, &(uint32_t){4}, 4);
    memcpy(note + 8, &s->note_type, 4);
    memcpy(note + 12, "Xen", 4);
    memcpy(note + 16, &(uint32_t){(uint32_t)s->entry}, 4);
    if (s->is64) {
        Elf64_Ehdr eh = {0};
        Elf64_Phdr ph[2] = {0};

        memcpy(eh.e_ident, ELFMAG, SELFMAG);
        eh.e_ident[EI_CLASS] = ELFCLASS64;
        eh.e_ident[EI_DATA] = ELFDATA2LSB;
        eh.e_machine = EM_X86_64;
        eh.e_phoff = sizeof(eh);
        eh.e_phentsize = sizeof(Elf64_Phdr);
        eh.e_phnum = s->no_note ? 1 : 2;
        ph[0] = (Elf64_Phdr){.p_type = PT_LOAD,
                             .p_offset = ELF_CODE_OFF,
                             .p_paddr = s->paddr,
                             .p_filesz = s->filesz,
                             .p_memsz = s->memsz};
        ph[1] = (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = ELF_NOTE_OFF, .p_filesz = 20};
        memcpy(buf, &eh, sizeof(eh));
        memcpy(buf + sizeof(eh), ph, sizeof(ph));
    } else {
        Elf32_Ehdr eh = {0};
        Elf32_Phdr ph[2] = {0};

        memcpy(eh.e_ident, ELFMAG, SELFMAG);
        eh.e_ident[EI_CLASS] = ELFCLASS32;
        eh.e_ident[EI_DATA] = ELFDATA2LSB;
        eh.e_machine = EM_386;
        eh.e_phoff = sizeof(eh);
        eh.e_phentsize = sizeof(Elf32_Phdr);
        eh.e_phnum = s->no_note ? 1 : 2;
        ph[0] = (Elf32_Phdr){.p_type = PT_LOAD,
                             .p_offset = ELF_CODE_OFF,
                             .p_paddr = (uint32_t)s->paddr,
                             .p_filesz = (uint32_t)s->filesz,
                             .p_memsz = (uint32_t)s->memsz};
        ph[1] = (Elf32_Phdr){.p_type = PT_NOTE, .p_offset = ELF_NOTE_OFF, .p_filesz = 20};
        memcpy(buf, &eh, sizeof(eh));
        memcpy(buf + sizeof(eh), ph, sizeof(ph));
    }
    return total;
}

static struct elf_spec good_elf(bool is64)
{
    return (struct elf_spec){.is64 = is64,
                             .paddr = ELF_LOAD,
                             .filesz = 0x300,
                             .memsz = 0x2000,
                             .entry = ELF_LOAD + 0x10,
                             .note_type = 18};
}

static void check_pvh_loaded(struct fixture *f, const struct boot_info *bi, const char *cmdline)
{
    const struct hvm_start_info *si = (const void *)(f->ram + LAYOUT_BOOT_PARAMS);
    const struct hvm_memmap_table_entry *mm = (const void *)(f->ram + si->memmap_paddr);

    assert_int_equal(bi->kind, BOOT_PVH);
    assert_int_equal(bi->entry, ELF_LOAD + 0x10);
    assert_int_equal(bi->params, LAYOUT_BOOT_PARAMS);
    for (uint64_t i = 0; i < 0x300; i++)
        assert_int_equal(f->ram[ELF_LOAD + i], (uint8_t)(i * 7 + 1));
    for (uint64_t i = 0x300; i < 0x2000; i++)
        assert_int_equal(f->ram[ELF_LOAD + i], 0);
    assert_int_equal(si->magic, PVH_START_MAGIC);
    assert_int_equal(si->version, 1);
    assert_int_equal(si->rsdp_paddr, 0xe0000);
    assert_string_equal((const char *)f->ram + si->cmdline_paddr, cmdline);
    assert_int_equal(si->memmap_entries, 4);
    assert_int_equal(mm[0].addr, 0);
    assert_int_equal(mm[0].type, 1);
    assert_int_equal(mm[2].addr, 0x100000);
    assert_int_equal(mm[2].addr + mm[2].size, RAM_SIZE);
    assert_int_equal(mm[2].type, 1);
    assert_int_equal(mm[3].addr, LAYOUT_PCI_ECAM);
    assert_int_equal(mm[3].type, 2);
}

static void test_pvh_good(void **state)
{
    struct fixture *f = *state;
    static uint8_t elf[0x1000], initrd[5000];
    struct elf_spec s = good_elf(true);
    struct boot_images img = {.kernel = elf, .cmdline = "console=ttyS0", .rsdp = 0xe0000};
    struct boot_info bi;
    const struct hvm_start_info *si = (const void *)(f->ram + LAYOUT_BOOT_PARAMS);
    const struct hvm_modlist_entry *mod;

    img.kernel_len = make_elf(elf, &s);
    memset(initrd, 0xab, sizeof(initrd));
    img.initrd = initrd;
    img.initrd_len = sizeof(initrd);
    assert_int_equal(boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err)), 0);
    check_pvh_loaded(f, &bi, "console=ttyS0");
    assert_int_equal(si->nr_modules, 1);
    mod = (const void *)(f->ram + si->modlist_paddr);
    assert_int_equal(mod->size, sizeof(initrd));
    assert_int_equal(mod->paddr % 4096, 0);
    assert_true(mod->paddr + mod->size <= RAM_SIZE);
    assert_true(mod->paddr >= ELF_LOAD + 0x2000);
    assert_memory_equal(f->ram + mod->paddr, initrd, sizeof(initrd));

    /* The same image as ELF32. */
    memset(f->ram, 0, RAM_SIZE);
    s = good_elf(false);
    img.kernel_len = make_elf(elf, &s);
    img.initrd = NULL;
    img.initrd_len = 0;
    assert_int_equal(boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err)), 0);
    check_pvh_loaded(f, &bi, "console=ttyS0");
    assert_int_equal(si->nr_modules, 0);
}

static void expect_pvh_error(struct fixture *f, const struct elf_spec *s, size_t cut,
                             const char *needle)
{
    static uint8_t elf[0x10000];
    struct boot_images img = {.kernel = elf};
    struct boot_info bi;
    int ret;

    img.kernel_len = make_elf(elf, s) - cut;
    memset(f->ram + ELF_LOAD, 0x5a, 16);
    ret = boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err));
    if (ret >= 0 || !strstr(f->err, needle))
        fail_msg("expected failure with '%s', got %d '%s'", needle, ret, f->err);
    /* Refused before anything was loaded. */
    assert_int_equal(f->ram[ELF_LOAD], 0x5a);
}

static void test_pvh_bad(void **state)
{
    struct fixture *f = *state;
    struct elf_spec s;

    s = good_elf(true);
    s.note_type = 17;
    expect_pvh_error(f, &s, 0, "no PVH entry note");
    s = good_elf(true);
    s.no_note = true;
    expect_pvh_error(f, &s, 0, "no PVH entry note");
    s = good_elf(true);
    s.paddr = RAM_SIZE - 0x1000; /* memsz 0x2000 runs past RAM */
    s.entry = s.paddr;
    expect_pvh_error(f, &s, 0, "outside guest RAM");
    s = good_elf(true);
    s.paddr = 0x8000;
    s.entry = 0x8000;
    expect_pvh_error(f, &s, 0, "below 1 MiB");
    s = good_elf(true);
    expect_pvh_error(f, &s, 0x100, "truncated");
    s = good_elf(false);
    s.filesz = 0x3000; /* filesz > memsz */
    expect_pvh_error(f, &s, 0, "file size");
    s = good_elf(true);
    s.entry = 0x900000;
    expect_pvh_error(f, &s, 0, "outside the loaded image");
    s = good_elf(true);
    s.paddr = 0xffffffffffff0000ull; /* wraps around */
    s.entry = 0;
    expect_pvh_error(f, &s, 0, "outside guest RAM");
}

static void test_pvh_malformed_headers(void **state)
{
    struct fixture *f = *state;
    static uint8_t elf[0x1000];
    struct elf_spec s = good_elf(true);
    struct boot_images img = {.kernel = elf};
    struct boot_info bi;
    Elf64_Ehdr *eh = (Elf64_Ehdr *)elf;

    img.kernel_len = make_elf(elf, &s);
    eh->e_phoff = 0xfff0; /* program headers past the end */
    assert_int_equal(boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err)), -EINVAL);
    assert_non_null(strstr(f->err, "program headers"));
    img.kernel_len = make_elf(elf, &s);
    eh->e_machine = EM_AARCH64;
    assert_int_equal(boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err)), -EINVAL);
    assert_non_null(strstr(f->err, "not x86"));
    img.kernel_len = 30; /* shorter than the ELF header */
    assert_int_equal(boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err)), -EINVAL);
    img.kernel_len = make_elf(elf, &s);
    memcpy(elf + ELF_NOTE_OFF, &(uint32_t){0x7fffffff}, 4); /* namesz runs past the note */
    assert_int_equal(boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err)), -EINVAL);
    assert_non_null(strstr(f->err, "note"));
    memcpy(elf, "JUNKJUNK", 8);
    assert_int_equal(boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err)), -EINVAL);
    assert_non_null(strstr(f->err, "neither a bzImage"));
}

static void test_pvh_initrd_too_big(void **state)
{
    struct fixture *f = *state;
    static uint8_t elf[0x1000];
    struct elf_spec s = good_elf(true);
    struct boot_images img = {.kernel = elf};
    struct boot_info bi;
    uint8_t *big = malloc(RAM_SIZE - 0x100000);

    img.kernel_len = make_elf(elf, &s);
    img.initrd = big;
    img.initrd_len = RAM_SIZE - 0x100000; /* cannot fit above the kernel at 2 MiB */
    assert_int_equal(boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err)), -ENOMEM);
    assert_non_null(strstr(f->err, "initramfs"));
    free(big);
}

/* ---- crafted bzImage -------------------------------------------------- */

#define BZ_SETUP_SECTS 4
#define BZ_SETUP_SIZE  ((BZ_SETUP_SECTS + 1) * 512)
#define BZ_PAYLOAD     0x3000

struct bz_spec {
    uint16_t version;
    uint16_t xloadflags;
    uint32_t syssize; /* in 16-byte units */
    uint32_t init_size;
    uint32_t initrd_addr_max;
    uint32_t cmdline_size;
};

static size_t make_bzimage(uint8_t *buf, const struct bz_spec *s)
{
    size_t total = BZ_SETUP_SIZE + BZ_PAYLOAD;

    memset(buf, 0, total);
    buf[SETUP_SETUP_SECTS] = BZ_SETUP_SECTS;
    memcpy(buf + SETUP_SYSSIZE, &s->syssize, 4);
    memcpy(buf + SETUP_BOOT_FLAG, &(uint16_t){0xaa55}, 2);
    buf[0x200] = 0xeb;
    buf[0x201] = 0x66; /* jump over the header: it ends at 0x268 */
    memcpy(buf + SETUP_HEADER_MAGIC, "HdrS", 4);
    memcpy(buf + SETUP_VERSION, &s->version, 2);
    buf[SETUP_LOADFLAGS] = BZ_LOADED_HIGH;
    memcpy(buf + SETUP_INITRD_ADDR_MAX, &s->initrd_addr_max, 4);
    memcpy(buf + SETUP_KERNEL_ALIGN, &(uint32_t){0x200000}, 4);
    buf[SETUP_RELOCATABLE] = 1;
    memcpy(buf + SETUP_XLOADFLAGS, &s->xloadflags, 2);
    memcpy(buf + SETUP_CMDLINE_SIZE, &s->cmdline_size, 4);
    memcpy(buf + SETUP_INIT_SIZE, &s->init_size, 4);
    for (size_t i = 0; i < BZ_PAYLOAD; i++)
        buf[BZ_SETUP_SIZE + i] = (uint8_t)(i ^ 0x5c);
    return total;
}

static struct bz_spec good_bz(void)
{
    return (struct bz_spec){.version = 0x020f,
                            .xloadflags = BZ_XLF_KERNEL_64,
                            .syssize = BZ_PAYLOAD / 16,
                            .init_size = 0x100000,
                            .initrd_addr_max = 0x7fffffff,
                            .cmdline_size = 2047};
}

static void test_bzimage_good(void **state)
{
    struct fixture *f = *state;
    static uint8_t bz[BZ_SETUP_SIZE + BZ_PAYLOAD], initrd[8192];
    struct bz_spec s = good_bz();
    struct boot_images img = {.kernel = bz, .cmdline = "root=/dev/vda", .rsdp = 0xe0000};
    struct boot_info bi;
    uint8_t *bp = f->ram + LAYOUT_BOOT_PARAMS;
    uint32_t ramdisk, ramdisk_size, cmd_ptr;
    uint64_t rsdp, pml4, pdpt, pd1;
    const struct e820_entry *e820 = (const void *)(bp + BP_E820_TABLE);

    img.kernel_len = make_bzimage(bz, &s);
    memset(initrd, 0x77, sizeof(initrd));
    img.initrd = initrd;
    img.initrd_len = sizeof(initrd);
    assert_int_equal(boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err)), 0);
    assert_int_equal(bi.kind, BOOT_BZIMAGE);
    assert_int_equal(bi.entry, 0x100200);
    assert_int_equal(bi.params, LAYOUT_BOOT_PARAMS);
    assert_memory_equal(f->ram + 0x100000, bz + BZ_SETUP_SIZE, BZ_PAYLOAD);
    assert_memory_equal(bp + 0x202, "HdrS", 4);
    assert_int_equal(bp[SETUP_TYPE_OF_LOADER], 0xff);
    assert_true(bp[SETUP_LOADFLAGS] & BZ_CAN_USE_HEAP);
    memcpy(&cmd_ptr, bp + SETUP_CMD_LINE_PTR, 4);
    assert_string_equal((char *)f->ram + cmd_ptr, "root=/dev/vda");
    memcpy(&ramdisk, bp + SETUP_RAMDISK_IMAGE, 4);
    memcpy(&ramdisk_size, bp + SETUP_RAMDISK_SIZE, 4);
    assert_int_equal(ramdisk_size, sizeof(initrd));
    assert_int_equal(ramdisk % 4096, 0);
    assert_true(ramdisk >= 0x200000); /* above kernel + init_size */
    assert_true(ramdisk + ramdisk_size <= RAM_SIZE);
    assert_memory_equal(f->ram + ramdisk, initrd, sizeof(initrd));
    memcpy(&rsdp, bp + BP_ACPI_RSDP_ADDR, 8);
    assert_int_equal(rsdp, 0xe0000);
    assert_int_equal(bp[BP_E820_ENTRIES], 4);
    assert_int_equal(e820[1].addr, LAYOUT_EBDA_START);
    assert_int_equal(e820[1].type, 2);
    assert_int_equal(e820[2].addr + e820[2].size, RAM_SIZE);
    /* Identity page tables for the 64-bit entry: 2 MiB page 1 maps 0x200000. */
    memcpy(&pml4, f->ram + LAYOUT_PML4, 8);
    memcpy(&pdpt, f->ram + LAYOUT_PDPT, 8);
    memcpy(&pd1, f->ram + LAYOUT_PD + 8, 8);
    assert_int_equal(pml4 & ~0xfffull, LAYOUT_PDPT);
    assert_int_equal(pdpt & ~0xfffull, LAYOUT_PD);
    assert_int_equal(pd1, 0x200000 | 0x83);
}

static void expect_bz_error(struct fixture *f, const struct bz_spec *s, size_t cut,
                            const char *cmdline, const char *needle)
{
    static uint8_t bz[BZ_SETUP_SIZE + BZ_PAYLOAD];
    struct boot_images img = {.kernel = bz, .cmdline = cmdline};
    struct boot_info bi;
    int ret;

    img.kernel_len = make_bzimage(bz, s) - cut;
    memset(f->ram + 0x100000, 0x5a, 16);
    ret = boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err));
    if (ret >= 0 || !strstr(f->err, needle))
        fail_msg("expected failure with '%s', got %d '%s'", needle, ret, f->err);
    assert_int_equal(f->ram[0x100000], 0x5a);
}

static void test_bzimage_bad(void **state)
{
    struct fixture *f = *state;
    struct bz_spec s;
    static char longcmd[300];

    s = good_bz();
    s.version = 0x0209;
    expect_bz_error(f, &s, 0, NULL, "older than the 2.12");
    s = good_bz();
    s.xloadflags = 0;
    expect_bz_error(f, &s, 0, NULL, "XLF_KERNEL_64");
    s = good_bz();
    expect_bz_error(f, &s, 0x100, NULL, "truncated");
    s = good_bz();
    s.syssize = 0;
    expect_bz_error(f, &s, 0, NULL, "truncated");
    s = good_bz();
    s.init_size = (uint32_t)RAM_SIZE; /* 1 MiB + init_size > RAM */
    expect_bz_error(f, &s, 0, NULL, "init_size");
    s = good_bz();
    s.cmdline_size = 255;
    memset(longcmd, 'a', sizeof(longcmd) - 1);
    expect_bz_error(f, &s, 0, longcmd, "cmdline");
    s = good_bz();
    expect_bz_error(f, &s, BZ_PAYLOAD + 1000, NULL, "setup");
}

static void test_bzimage_initrd_limits(void **state)
{
    struct fixture *f = *state;
    static uint8_t bz[BZ_SETUP_SIZE + BZ_PAYLOAD], initrd[0x10000];
    struct bz_spec s = good_bz();
    struct boot_images img = {.kernel = bz, .initrd = initrd, .initrd_len = sizeof(initrd)};
    struct boot_info bi;
    uint32_t ramdisk;

    /* initrd_addr_max honoured: the image ends at or below 16 MiB. */
    s.initrd_addr_max = (16 << 20) - 1;
    img.kernel_len = make_bzimage(bz, &s);
    assert_int_equal(boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err)), 0);
    memcpy(&ramdisk, f->ram + LAYOUT_BOOT_PARAMS + SETUP_RAMDISK_IMAGE, 4);
    assert_true(ramdisk + sizeof(initrd) <= (16u << 20));
    /* A limit inside the kernel: the initramfs would overlap it. */
    s.initrd_addr_max = 0x1fffff;
    img.kernel_len = make_bzimage(bz, &s);
    assert_int_equal(boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err)), -ENOMEM);
    assert_non_null(strstr(f->err, "overlapping"));
}

/*
 * Hostile images: thousands of seeded mutations of the good ELF and bzImage
 * (header bytes flipped, lengths truncated). The loaders must never crash or
 * write outside RAM (ASan checks in make check), and whatever they accept
 * must describe an entry and boot structures inside guest RAM.
 */
static uint64_t mutate_rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_mutations(void **state)
{
    struct fixture *f = *state;
    static uint8_t good_elf_buf[0x1000], good_bz_buf[BZ_SETUP_SIZE + BZ_PAYLOAD];
    static uint8_t img_buf[BZ_SETUP_SIZE + BZ_PAYLOAD], initrd[3000];
    struct elf_spec es = good_elf(true);
    struct bz_spec bs = good_bz();
    size_t elf_len = make_elf(good_elf_buf, &es), bz_len = make_bzimage(good_bz_buf, &bs);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int accepted = 0;

    for (int iter = 0; iter < 20000; iter++) {
        bool use_bz = iter & 1;
        const uint8_t *src = use_bz ? good_bz_buf : good_elf_buf;
        size_t len = use_bz ? bz_len : elf_len;
        size_t hdr = use_bz ? SETUP_HEADER_END : ELF_CODE_OFF;
        struct boot_images img = {.kernel = img_buf, .cmdline = "x", .rsdp = 0xe0000};
        struct boot_info bi;
        int flips = 1 + (int)(mutate_rng(&seed) % 6);

        memcpy(img_buf, src, len);
        for (int k = 0; k < flips; k++)
            img_buf[mutate_rng(&seed) % hdr] = (uint8_t)mutate_rng(&seed);
        if (mutate_rng(&seed) % 4 == 0)
            len = mutate_rng(&seed) % (len + 1);
        img.kernel_len = len;
        if (mutate_rng(&seed) % 3 == 0) {
            img.initrd = initrd;
            img.initrd_len = sizeof(initrd);
        }
        if (boot_load(&f->gm, &img, &bi, f->err, sizeof(f->err)) == 0) {
            accepted++;
            assert_non_null(guest_mem_ptr(&f->gm, bi.entry, 1));
            assert_non_null(guest_mem_ptr(&f->gm, bi.params, 1));
            assert_true(bi.kernel_start >= 0x100000 && bi.kernel_end <= RAM_SIZE);
            if (bi.initrd_size)
                assert_true(bi.initrd_start >= bi.kernel_end &&
                            bi.initrd_start + bi.initrd_size <= RAM_SIZE);
        } else {
            assert_true(f->err[0] != 0); /* every refusal says why */
        }
        f->err[0] = 0;
    }
    /* Some mutations hit harmless bytes: the good paths were exercised too. */
    assert_true(accepted > 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pvh_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pvh_bad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pvh_malformed_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pvh_initrd_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bzimage_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bzimage_bad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bzimage_initrd_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mutations, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
