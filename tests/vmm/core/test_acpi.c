/* SPDX-License-Identifier: Apache-2.0 */
/* ACPI tables: checksums, lengths, pointers, and the content parsed back. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "vmm/acpi.h"
#include "vmm/layout.h"
#include "vmm/vmm.h"

#define RAM_SIZE (5ull << 30) /* crosses the 32-bit hole */

struct fixture {
    uint8_t *ram;
    struct guest_mem gm;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    /* Only the low 1 MiB is touched: a sparse calloc keeps this cheap. */
    f->ram = calloc(1, 2 << 20);
    assert_int_equal(guest_mem_layout(&f->gm, RAM_SIZE, NULL), 0);
    f->gm.r[0].hva = f->ram;
    f->gm.r[0].size = 2 << 20; /* what the test buffer backs */
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

static const struct acpi_table_header *table_at(struct fixture *f, uint64_t gpa, const char *sig)
{
    const struct acpi_table_header *h = guest_mem_ptr(&f->gm, gpa, sizeof(*h));

    assert_non_null(h);
    assert_memory_equal(h->signature, sig, 4);
    assert_non_null(guest_mem_ptr(&f->gm, gpa, h->length));
    assert_true(gpa + h->length <= 0x100000);
    if (memcmp(sig, "FACS", 4) != 0)
        assert_int_equal(acpi_checksum(h, h->length), 0);
    return h;
}

/* Find a 4-character AML name in the DSDT body. */
static const uint8_t *aml_find(const struct acpi_table_header *dsdt, const char *name)
{
    const uint8_t *p = (const uint8_t *)dsdt + sizeof(*dsdt);
    size_t n = dsdt->length - sizeof(*dsdt);

    for (size_t i = 0; i + 4 <= n; i++)
        if (memcmp(p + i, name, 4) == 0)
            return p + i;
    return NULL;
}

/* Decode a PkgLength at p; returns the length and sets *hdr to its size. */
static uint32_t aml_pkglen(const uint8_t *p, int *hdr)
{
    int extra = p[0] >> 6;
    uint32_t len = extra ? p[0] & 0xf : p[0] & 0x3f;

    for (int i = 0; i < extra; i++)
        len |= (uint32_t)p[1 + i] << (4 + 8 * i);
    *hdr = 1 + extra;
    return len;
}

static void test_tables(void **state)
{
    struct fixture *f = *state;
    const struct acpi_rsdp *rsdp;
    const struct acpi_table_header *xsdt, *madt, *mcfg, *dsdt;
    const struct acpi_fadt *fadt;
    uint64_t entries[3];
    const uint8_t *p, *end;
    uint64_t addr, ecam;
    int n_lapic = 0, n_iso = 0, n_ioapic = 0;
    uint32_t eisa;

    assert_int_equal(acpi_build_tables(&f->gm, 3, &addr), 0);
    assert_int_equal(addr, LAYOUT_ACPI_RSDP);
    rsdp = guest_mem_ptr(&f->gm, addr, sizeof(*rsdp));
    assert_memory_equal(rsdp->signature, "RSD PTR ", 8);
    assert_int_equal(acpi_checksum(rsdp, 20), 0);
    assert_int_equal(acpi_checksum(rsdp, sizeof(*rsdp)), 0);
    assert_int_equal(rsdp->revision, 2);
    assert_int_equal(rsdp->length, 36);
    /* Linux finds it by scanning 0xe0000-0xfffff on 16-byte boundaries. */
    assert_true(addr >= 0xe0000 && addr < 0x100000 && addr % 16 == 0);

    xsdt = table_at(f, rsdp->xsdt_address, "XSDT");
    assert_int_equal(xsdt->length, sizeof(*xsdt) + 3 * 8);
    memcpy(entries, xsdt + 1, sizeof(entries)); /* XSDT entries are 4-byte aligned */
    fadt = (const struct acpi_fadt *)table_at(f, entries[0], "FACP");
    madt = table_at(f, entries[1], "APIC");
    mcfg = table_at(f, entries[2], "MCFG");

    /* FADT */
    assert_int_equal(fadt->hdr.length, 276);
    assert_int_equal(sizeof(struct acpi_fadt), 276);
    assert_int_equal(fadt->sci_int, IRQ_SCI);
    assert_int_equal(fadt->smi_cmd, 0);
    assert_int_equal(fadt->pm1a_evt_blk, PORT_ACPI_PM1A_EVT);
    assert_int_equal(fadt->pm1a_cnt_blk, PORT_ACPI_PM1A_CNT);
    assert_int_equal(fadt->pm_tmr_blk, PORT_ACPI_PM_TMR);
    assert_int_equal(fadt->pm1_evt_len, 4);
    assert_int_equal(fadt->pm1_cnt_len, 2);
    assert_int_equal(fadt->pm_tmr_len, 4);
    assert_int_equal(fadt->x_pm1a_cnt_blk.address, PORT_ACPI_PM1A_CNT);
    assert_int_equal(fadt->x_pm1a_cnt_blk.space_id, 1);
    assert_false(fadt->flags & (1u << 20)); /* not HW_REDUCED_ACPI */
    assert_false(fadt->flags & (1u << 4));  /* power button is a fixed feature */
    assert_true(fadt->flags & ACPI_FADT_RESET_REG_SUP);
    assert_int_equal(fadt->reset_reg.address, PORT_I8042_CMD);
    assert_int_equal(fadt->reset_value, 0xfe);
    assert_int_equal(fadt->x_dsdt, fadt->dsdt);
    table_at(f, fadt->firmware_ctrl, "FACS");
    assert_int_equal(fadt->firmware_ctrl % 64, 0);
    dsdt = table_at(f, fadt->x_dsdt, "DSDT");

    /* MADT: one enabled LAPIC per vCPU, one IOAPIC, two overrides, LINT1 NMI. */
    p = (const uint8_t *)madt + sizeof(*madt) + 8;
    end = (const uint8_t *)madt + madt->length;
    while (p < end) {
        assert_true(p[1] >= 2 && p + p[1] <= end);
        switch (p[0]) {
        case ACPI_MADT_LAPIC:
            assert_int_equal(p[3], n_lapic); /* APIC ID */
            assert_int_equal(p[4] & 1, 1);
            n_lapic++;
            break;
        case ACPI_MADT_IOAPIC: {
            uint32_t a;

            memcpy(&a, p + 4, 4);
            assert_int_equal(a, LAYOUT_IOAPIC);
            n_ioapic++;
            break;
        }
        case ACPI_MADT_ISO: {
            uint32_t gsi;
            uint16_t flags;

            memcpy(&gsi, p + 4, 4);
            memcpy(&flags, p + 8, 2);
            if (p[3] == 0)
                assert_int_equal(gsi, 2);
            else
                assert_true(p[3] == IRQ_SCI && gsi == IRQ_SCI && flags == 0xd);
            n_iso++;
            break;
        }
        case ACPI_MADT_LAPIC_NMI:
            assert_int_equal(p[5], 1);
            break;
        default:
            fail_msg("unexpected MADT entry type %u", p[0]);
        }
        p += p[1];
    }
    assert_int_equal(n_lapic, 3);
    assert_int_equal(n_ioapic, 1);
    assert_int_equal(n_iso, 2);

    /* MCFG: ECAM of bus 0. */
    assert_int_equal(mcfg->length, sizeof(*mcfg) + 8 + 16);
    memcpy(&ecam, (const uint8_t *)mcfg + sizeof(*mcfg) + 8, 8);
    assert_int_equal(ecam, LAYOUT_PCI_ECAM);
    assert_int_equal(((const uint8_t *)mcfg)[sizeof(*mcfg) + 8 + 11], 0); /* end bus */

    /* DSDT: \_S5 = Package(4){5, 5, 0, 0}; PCI0 is PNP0A08; COM1 is PNP0501. */
    p = aml_find(dsdt, "_S5_");
    assert_non_null(p);
    assert_int_equal(p[-1], '\\');
    assert_int_equal(p[-2], 0x08); /* NameOp */
    assert_int_equal(p[4], 0x12);  /* PackageOp */
    assert_int_equal(p[6], 4);     /* NumElements */
    assert_int_equal(p[7], 0x0a);  /* BytePrefix */
    assert_int_equal(p[8], ACPI_S5_SLP_TYP);
    p = aml_find(dsdt, "PCI0");
    assert_non_null(p);
    {
        /* ExtOpPrefix DeviceOp PkgLength(2 bytes: the body is > 63 bytes) "PCI0" */
        int hdr;
        uint32_t len = aml_pkglen(p - 2, &hdr);

        assert_int_equal(hdr, 2);
        assert_int_equal(p[-3], 0x82);
        assert_int_equal(p[-4], 0x5b);
        assert_true(len > 100 && p - 2 + len <= (const uint8_t *)dsdt + dsdt->length);
    }
    p = aml_find(dsdt, "_HID");
    assert_non_null(p);
    assert_int_equal(p[4], 0x0c);
    memcpy(&eisa, p + 5, 4);
    assert_int_equal(eisa, 0x080ad041); /* EisaId("PNP0A08") */
    assert_non_null(aml_find(dsdt, "COM1"));
    assert_non_null(aml_find(dsdt, "_CRS"));
}

/* The PCI0 _CRS declares the 64-bit window above RAM (here RAM ends at 6 GiB). */
static void test_mmio64_window(void **state)
{
    struct fixture *f = *state;
    const struct acpi_rsdp *rsdp;
    const struct acpi_fadt *fadt;
    const struct acpi_table_header *dsdt;
    uint64_t entries[1];
    const uint8_t *p, *end;
    uint64_t addr, min = 0, len = 0;
    bool found = false;

    assert_int_equal(acpi_build_tables(&f->gm, 1, &addr), 0);
    rsdp = guest_mem_ptr(&f->gm, addr, sizeof(*rsdp));
    memcpy(entries, guest_mem_ptr(&f->gm, rsdp->xsdt_address + 36, 8), 8);
    fadt = guest_mem_ptr(&f->gm, entries[0], sizeof(*fadt));
    dsdt = guest_mem_ptr(&f->gm, fadt->dsdt, 36);
    p = (const uint8_t *)dsdt + 36;
    end = (const uint8_t *)dsdt + dsdt->length;
    for (; p + 46 <= end; p++) {
        if (p[0] == 0x8a && p[1] == 43 && p[3] == 0) { /* QWord memory descriptor */
            memcpy(&min, p + 14, 8);
            memcpy(&len, p + 38, 8);
            found = true;
            break;
        }
    }
    assert_true(found);
    assert_int_equal(min, 6ull << 30);
    assert_int_equal(len, LAYOUT_MMIO64_SIZE);
}

static void test_errors(void **state)
{
    struct fixture *f = *state;
    uint64_t addr;
    struct guest_mem tiny;
    static uint8_t small[0x10000];

    assert_int_equal(acpi_build_tables(&f->gm, 0, &addr), -EINVAL);
    assert_int_equal(acpi_build_tables(&f->gm, 256, &addr), -EINVAL);
    /* 255 vCPUs still fit in the BIOS area. */
    assert_int_equal(acpi_build_tables(&f->gm, 255, &addr), 0);
    /* A memory map whose low region does not reach the BIOS area. */
    assert_int_equal(guest_mem_layout(&tiny, 2 << 20, small), 0);
    tiny.r[0].size = sizeof(small);
    assert_int_equal(acpi_build_tables(&tiny, 1, &addr), -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mmio64_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
