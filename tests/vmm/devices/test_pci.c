/* SPDX-License-Identifier: Apache-2.0 */
/* PCI bus: config mechanisms, BAR sizing/moves, decode bits, MSI-X masking. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fake_vm.h"
#include "vmm/devices/pci.h"
#include "vmm/layout.h"

struct fixture {
    struct vm *vm;
    struct pci_bus *bus;
    struct pci_dev dev;
    int bar_hits;
    uint64_t last_off;
    int remaps;
};

static void bar_access(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write)
{
    struct fixture *f = opaque;

    f->bar_hits++;
    f->last_off = off;
    if (!is_write)
        memset(data, 0x42, len);
}

static void bar_remap(struct pci_dev *dev, int bar, bool mapped, uint64_t addr)
{
    struct fixture *f = dev->owner;

    f->remaps++;
}

static const struct pci_dev_ops test_ops = {.bar_remap = bar_remap};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    f->vm = fake_vm_new(64 << 20);
    assert_int_equal(pci_bus_create(f->vm, &f->bus), 0);
    pci_dev_init(&f->dev, "testdev", 0x1af4, 0x1042, 0x018000, 1, 0x1af4, 0x0002);
    f->dev.ops = &test_ops;
    f->dev.owner = f;
    assert_int_equal(pci_dev_add_bar(&f->dev, 0, PCI_BAR_MEM32, 0x3000, bar_access, f), 0);
    assert_int_equal(pci_dev_add_bar(&f->dev, 2, PCI_BAR_MEM64, 0x4000, bar_access, f), 0);
    assert_int_equal(pci_msix_init(&f->dev, 3, 4), 0);
    assert_int_equal(pci_bus_add_dev(f->bus, &f->dev), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    pci_dev_remove(&f->dev);
    pci_bus_destroy(f->bus);
    fake_vm_free(f->vm);
    free(f);
    return 0;
}

static uint32_t cf8_read(struct fixture *f, int slot, uint32_t reg, uint32_t len)
{
    fake_vm_write(f->vm, VM_IO_PIO, PORT_PCI_ADDR, 4, 0x80000000u | slot << 11 | (reg & 0xfc));
    return fake_vm_read(f->vm, VM_IO_PIO, PORT_PCI_DATA + (reg & 3), len);
}

static void cf8_write(struct fixture *f, int slot, uint32_t reg, uint32_t len, uint32_t v)
{
    fake_vm_write(f->vm, VM_IO_PIO, PORT_PCI_ADDR, 4, 0x80000000u | slot << 11 | (reg & 0xfc));
    fake_vm_write(f->vm, VM_IO_PIO, PORT_PCI_DATA + (reg & 3), len, v);
}

static uint64_t ecam(int slot, uint32_t reg)
{
    return LAYOUT_PCI_ECAM + ((uint64_t)slot << 15) + reg;
}

static void test_host_bridge_and_absent_slots(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(cf8_read(f, 0, 0, 2), 0x1b36);
    assert_int_equal(cf8_read(f, 0, 0x0a, 2), 0x0600); /* class: host bridge */
    assert_int_equal(cf8_read(f, 5, 0, 4), 0xffffffffu);
    assert_int_equal(fake_vm_read(f->vm, VM_IO_MMIO, ecam(7, 0), 4), 0xffffffffu);
    /* Disabled CF8 and other buses read as absent. */
    fake_vm_write(f->vm, VM_IO_PIO, PORT_PCI_ADDR, 4, 0);
    assert_int_equal(fake_vm_read(f->vm, VM_IO_PIO, PORT_PCI_DATA, 4), 0xffffffffu);
    fake_vm_write(f->vm, VM_IO_PIO, PORT_PCI_ADDR, 4, 0x80010000u);
    assert_int_equal(fake_vm_read(f->vm, VM_IO_PIO, PORT_PCI_DATA, 4), 0xffffffffu);
}

static void test_ids_both_mechanisms(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(f->dev.slot, 1);
    assert_int_equal(cf8_read(f, 1, 0, 4), 0x10421af4);
    assert_int_equal(cf8_read(f, 1, 2, 2), 0x1042);
    assert_int_equal(cf8_read(f, 1, 0x2e, 2), 0x0002);
    assert_int_equal(fake_vm_read(f->vm, VM_IO_MMIO, ecam(1, 0), 4), 0x10421af4);
    assert_int_equal(fake_vm_read(f->vm, VM_IO_MMIO, ecam(1, 0x0b), 1), 0x01);
    /* Read-only registers ignore writes. */
    cf8_write(f, 1, 0, 4, 0);
    assert_int_equal(cf8_read(f, 1, 0, 4), 0x10421af4);
}

static void test_capability_list(void **state)
{
    struct fixture *f = *state;
    uint32_t status = cf8_read(f, 1, PCI_STATUS, 2);
    uint32_t ptr = cf8_read(f, 1, PCI_CAPABILITY_LIST, 1);
    int found = 0;

    assert_true(status & PCI_STATUS_CAP_LIST);
    for (int n = 0; ptr && n < 48; n++) {
        if (cf8_read(f, 1, ptr, 1) == PCI_CAP_ID_MSIX) {
            found = 1;
            assert_int_equal(cf8_read(f, 1, ptr + 2, 2) & 0x7ff, 2); /* 3 vectors */
            assert_int_equal(cf8_read(f, 1, ptr + 4, 4) & 7, 4);     /* table in BAR 4 */
        }
        ptr = cf8_read(f, 1, ptr + 1, 1);
    }
    assert_true(found);
}

static void test_bar_sizing_and_move(void **state)
{
    struct fixture *f = *state;
    uint32_t bar0 = cf8_read(f, 1, PCI_BAR0, 4);
    uint64_t addr = bar0 & ~15u, new_addr;

    assert_true(addr >= LAYOUT_MMIO32_START && addr < LAYOUT_MMIO32_START + LAYOUT_MMIO32_SIZE);
    assert_int_equal(addr & 0x3fff, 0); /* 0x3000 rounds up to 16 KiB, aligned */
    assert_true(cf8_read(f, 1, PCI_COMMAND, 2) & PCI_COMMAND_MEMORY);
    assert_true(fake_vm_io_mapped(f->vm, VM_IO_MMIO, addr));
    fake_vm_read(f->vm, VM_IO_MMIO, addr + 0x10, 4);
    assert_int_equal(f->bar_hits, 1);
    assert_int_equal(f->last_off, 0x10);

    /* Linux-style sizing: decode off, write all ones, read the mask, restore. */
    cf8_write(f, 1, PCI_COMMAND, 2, 0);
    assert_false(fake_vm_io_mapped(f->vm, VM_IO_MMIO, addr));
    cf8_write(f, 1, PCI_BAR0, 4, 0xffffffffu);
    assert_int_equal(cf8_read(f, 1, PCI_BAR0, 4), 0xffffc000u);
    /* Reprogram to a new address and enable decode: the range moves there. */
    new_addr = LAYOUT_MMIO32_START + 0x1000000;
    cf8_write(f, 1, PCI_BAR0, 4, (uint32_t)new_addr);
    cf8_write(f, 1, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    assert_true(fake_vm_io_mapped(f->vm, VM_IO_MMIO, new_addr));
    assert_false(fake_vm_io_mapped(f->vm, VM_IO_MMIO, addr));
    fake_vm_read(f->vm, VM_IO_MMIO, new_addr + 0x20, 4);
    assert_int_equal(f->bar_hits, 2);
    assert_int_equal(f->last_off, 0x20);
    /* Moving while decoding (vm_io_move path). */
    cf8_write(f, 1, PCI_BAR0, 4, (uint32_t)(new_addr + 0x100000));
    assert_true(fake_vm_io_mapped(f->vm, VM_IO_MMIO, new_addr + 0x100000));
    assert_false(fake_vm_io_mapped(f->vm, VM_IO_MMIO, new_addr));
    assert_true(f->remaps >= 3);
    /* Unused BARs stay zero. */
    cf8_write(f, 1, PCI_BAR0 + 4, 4, 0xffffffffu);
    assert_int_equal(cf8_read(f, 1, PCI_BAR0 + 4, 4), 0);
}

static void test_bar64(void **state)
{
    struct fixture *f = *state;
    uint32_t lo = cf8_read(f, 1, PCI_BAR0 + 8, 4), hi = cf8_read(f, 1, PCI_BAR0 + 12, 4);
    uint64_t addr = ((uint64_t)hi << 32) | (lo & ~15u);

    assert_int_equal(lo & 0x6, 0x4);            /* 64-bit memory BAR */
    assert_true(addr >= LAYOUT_RAM_HIGH_START); /* above RAM */
    assert_int_equal(addr % GiB, 0);
    assert_true(fake_vm_io_mapped(f->vm, VM_IO_MMIO, addr));
    /* Size both halves. */
    cf8_write(f, 1, PCI_COMMAND, 2, 0);
    cf8_write(f, 1, PCI_BAR0 + 8, 4, 0xffffffffu);
    cf8_write(f, 1, PCI_BAR0 + 12, 4, 0xffffffffu);
    assert_int_equal(cf8_read(f, 1, PCI_BAR0 + 8, 4), 0xffffc004u);
    assert_int_equal(cf8_read(f, 1, PCI_BAR0 + 12, 4), 0xffffffffu);
    /* Probe pattern is never mapped, even with decode on. */
    cf8_write(f, 1, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    assert_false(fake_vm_io_mapped(f->vm, VM_IO_MMIO, 0xffffffffffffc000ull));
    /* 64-bit address written via ECAM halves. */
    fake_vm_write(f->vm, VM_IO_MMIO, ecam(1, PCI_BAR0 + 8), 4, 0x40000000);
    fake_vm_write(f->vm, VM_IO_MMIO, ecam(1, PCI_BAR0 + 12), 4, 0x2);
    assert_true(fake_vm_io_mapped(f->vm, VM_IO_MMIO, 0x240000000ull));
}

static void test_bar_overlap_left_unmapped(void **state)
{
    struct fixture *f = *state;
    uint64_t bar0 = cf8_read(f, 1, PCI_BAR0, 4) & ~15u;
    uint64_t msix = cf8_read(f, 1, PCI_BAR0 + 16, 4) & ~15u;

    /* Point BAR 0 at the MSI-X BAR: the move is refused, nothing crashes. */
    cf8_write(f, 1, PCI_BAR0, 4, (uint32_t)msix);
    assert_false(fake_vm_io_mapped(f->vm, VM_IO_MMIO, bar0));
    fake_vm_read(f->vm, VM_IO_MMIO, msix, 4);
    assert_int_equal(f->bar_hits, 0);
}

static uint64_t msix_base(struct fixture *f)
{
    return cf8_read(f, 1, PCI_BAR0 + 16, 4) & ~15u;
}

static uint16_t msix_cap(struct fixture *f)
{
    return f->dev.msix.cap;
}

static void program_vector(struct fixture *f, int v, uint32_t data, bool masked)
{
    uint64_t e = msix_base(f) + 16 * v;

    fake_vm_write(f->vm, VM_IO_MMIO, e, 4, 0xfee00000);
    fake_vm_write(f->vm, VM_IO_MMIO, e + 4, 4, 0);
    fake_vm_write(f->vm, VM_IO_MMIO, e + 8, 4, data);
    fake_vm_write(f->vm, VM_IO_MMIO, e + 12, 4, masked);
}

static void test_msix_delivery_and_masking(void **state)
{
    struct fixture *f = *state;
    uint64_t pba = msix_base(f) + f->dev.msix.pba_offset;

    /* Table entries start masked. */
    assert_int_equal(fake_vm_read(f->vm, VM_IO_MMIO, msix_base(f) + 12, 4), 1);
    program_vector(f, 0, 0x41, false);
    program_vector(f, 1, 0x42, false);
    /* MSI-X not enabled yet: the signal stays pending. */
    assert_int_equal(pci_msix_notify(&f->dev, 0), 0);
    assert_int_equal(fake_vm_msi_count(f->vm, 0x41), 0);
    assert_int_equal(fake_vm_read(f->vm, VM_IO_MMIO, pba, 4) & 1, 1);
    /* Enable: the pending vector is delivered when its irqfd attaches. */
    cf8_write(f, 1, msix_cap(f) + 2, 2, PCI_MSIX_FLAGS_ENABLE);
    assert_true(pci_msix_enabled(&f->dev));
    assert_int_equal(fake_vm_msi_count(f->vm, 0x41), 1);
    assert_int_equal(fake_vm_read(f->vm, VM_IO_MMIO, pba, 4), 0);
    assert_int_equal(fake_vm_irqfd_count(f->vm), 2);
    assert_int_equal(pci_msix_notify(&f->dev, 1), 0);
    assert_int_equal(fake_vm_msi_count(f->vm, 0x42), 1);

    /* Mask vector 1: signals go to the PBA, unmasking delivers them. */
    fake_vm_write(f->vm, VM_IO_MMIO, msix_base(f) + 16 + 12, 4, 1);
    assert_int_equal(pci_msix_notify(&f->dev, 1), 0);
    assert_int_equal(fake_vm_msi_count(f->vm, 0x42), 1);
    assert_int_equal(fake_vm_read(f->vm, VM_IO_MMIO, pba, 4), 0x2);
    fake_vm_write(f->vm, VM_IO_MMIO, msix_base(f) + 16 + 12, 4, 0);
    assert_int_equal(fake_vm_msi_count(f->vm, 0x42), 2);
    assert_int_equal(fake_vm_read(f->vm, VM_IO_MMIO, pba, 4), 0);

    /* Function mask holds every vector. */
    cf8_write(f, 1, msix_cap(f) + 2, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    assert_int_equal(fake_vm_irqfd_count(f->vm), 0);
    pci_msix_notify(&f->dev, 0);
    assert_int_equal(fake_vm_msi_count(f->vm, 0x41), 1);
    cf8_write(f, 1, msix_cap(f) + 2, 2, PCI_MSIX_FLAGS_ENABLE);
    assert_int_equal(fake_vm_msi_count(f->vm, 0x41), 2);

    /* Re-targeting an unmasked vector updates its route. */
    fake_vm_write(f->vm, VM_IO_MMIO, msix_base(f) + 8, 4, 0x77);
    pci_msix_notify(&f->dev, 0);
    assert_int_equal(fake_vm_msi_count(f->vm, 0x77), 1);
    assert_int_equal(fake_vm_msi_count(f->vm, 0x41), 2);

    /* Bad vectors and odd accesses are refused without harm. */
    assert_int_equal(pci_msix_notify(&f->dev, 3), -EINVAL);
    fake_vm_write(f->vm, VM_IO_MMIO, msix_base(f) + 1, 2, 0xffff);
    fake_vm_write(f->vm, VM_IO_MMIO, msix_base(f) + 0x3000, 4, 0xffff);
    assert_int_equal(fake_vm_read(f->vm, VM_IO_MMIO, msix_base(f) + 8, 4), 0x77);
}

static void test_reset_port_cf9(void **state)
{
    struct fixture *f = *state;

    /* Only a byte write to 0xcf9 with RST_CPU (bit 2) resets; other values and widths don't. */
    fake_vm_write(f->vm, VM_IO_PIO, PORT_PCI_ADDR + 1, 1, 0x02);
    fake_vm_write(f->vm, VM_IO_PIO, PORT_PCI_ADDR, 4, 0x80000000u);
    assert_int_equal(fake_vm_reset_count(f->vm), 0);
    fake_vm_write(f->vm, VM_IO_PIO, PORT_PCI_ADDR + 1, 1, 0x06);
    assert_int_equal(fake_vm_reset_count(f->vm), 1);
    /* The config address register is untouched by it. */
    assert_int_equal(fake_vm_read(f->vm, VM_IO_PIO, PORT_PCI_ADDR, 4), 0x80000000u);
}

static void test_cfg_bounds(void **state)
{
    struct fixture *f = *state;

    /* Misaligned or out-of-range accesses read as all ones and do nothing. */
    assert_int_equal(fake_vm_read(f->vm, VM_IO_MMIO, ecam(1, 0xfff), 2), 0xffff);
    assert_int_equal(fake_vm_read(f->vm, VM_IO_MMIO, ecam(1, 1), 2), 0xffff);
    uint32_t v = 0xffffffff;
    pci_bus_cfg_access(f->bus, 1, 0, 4096, &v, 4, false);
    assert_int_equal(v, 0xffffffffu);
    pci_bus_cfg_access(f->bus, 40, 0, 0, &v, 4, false);
    assert_int_equal(v, 0xffffffffu);
    pci_bus_cfg_access(f->bus, 1, 3, 0, &v, 4, false);
    assert_int_equal(v, 0xffffffffu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_host_bridge_and_absent_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ids_both_mechanisms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capability_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bar_sizing_and_move, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bar64, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bar_overlap_left_unmapped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msix_delivery_and_masking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_port_cf9, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cfg_bounds, setup, teardown),
    };

    return cmocka_run_group_tests_name("pci", tests, NULL, NULL);
}
