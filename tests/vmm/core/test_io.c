/* SPDX-License-Identifier: Apache-2.0 */
/* The PIO/MMIO range table and the guest-address translation of vm.h. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "fake_vm.h"
#include "vmm/layout.h"

struct probe {
    int calls;
    uint64_t offset;
    uint32_t len;
    bool is_write;
    uint32_t value;
};

static void probe_io(void *opaque, uint64_t offset, void *data, uint32_t len, bool is_write)
{
    struct probe *p = opaque;

    p->calls++;
    p->offset = offset;
    p->len = len;
    p->is_write = is_write;
    if (is_write)
        memcpy(&p->value, data, len < 4 ? len : 4);
    else
        memcpy(data, &p->value, len < 4 ? len : 4);
}

static void test_register_dispatch(void **state)
{
    struct vm *vm = fake_vm_new(0, NULL);
    struct probe a = {.value = 0x11223344}, b = {0}, c = {0};
    uint32_t v = 0;

    (void)state;
    assert_int_equal(vm_io_register(vm, VM_IO_PIO, 0x3f8, 8, probe_io, &a), 0);
    assert_int_equal(vm_io_register(vm, VM_IO_PIO, 0x60, 1, probe_io, &b), 0);
    assert_int_equal(vm_io_register(vm, VM_IO_MMIO, 0xc0000000, 0x1000, probe_io, &c), 0);
    /* Overlaps are refused in the same space only. */
    assert_int_equal(vm_io_register(vm, VM_IO_PIO, 0x3fc, 8, probe_io, &b), -EEXIST);
    assert_int_equal(vm_io_register(vm, VM_IO_PIO, 0x3f0, 9, probe_io, &b), -EEXIST);
    assert_int_equal(vm_io_register(vm, VM_IO_MMIO, 0x3f8, 8, probe_io, &b), 0);
    /* Bad arguments. */
    assert_int_equal(vm_io_register(vm, VM_IO_PIO, 0xfff0, 0x20, probe_io, &b), -EINVAL);
    assert_int_equal(vm_io_register(vm, VM_IO_MMIO, UINT64_MAX - 4, 16, probe_io, &b), -EINVAL);
    assert_int_equal(vm_io_register(vm, VM_IO_PIO, 0x100, 0, probe_io, &b), -EINVAL);
    assert_int_equal(vm_io_register(vm, VM_IO_PIO, 0x100, 1, NULL, &b), -EINVAL);

    assert_true(vm_io_dispatch(vm, VM_IO_PIO, 0x3fd, &v, 1, false));
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.offset, 5);
    assert_int_equal(v, 0x44);
    v = 0xab;
    assert_true(vm_io_dispatch(vm, VM_IO_PIO, 0x3f8, &v, 1, true));
    assert_int_equal(a.value & 0xff, 0xab);
    assert_true(a.is_write);
    assert_true(vm_io_dispatch(vm, VM_IO_MMIO, 0xc0000ffc, &v, 4, false));
    assert_int_equal(c.offset, 0xffc);
    /* Misses: before, between, after, and an access straddling the end. */
    assert_false(vm_io_dispatch(vm, VM_IO_PIO, 0x5f, &v, 1, false));
    assert_false(vm_io_dispatch(vm, VM_IO_PIO, 0x61, &v, 1, false));
    assert_false(vm_io_dispatch(vm, VM_IO_PIO, 0x400, &v, 1, false));
    assert_false(vm_io_dispatch(vm, VM_IO_PIO, 0x3fe, &v, 4, false));
    assert_false(vm_io_dispatch(vm, VM_IO_MMIO, 0xc0000ffe, &v, 4, false));
    assert_int_equal(a.calls, 2);

    /* Move and unregister. */
    assert_int_equal(vm_io_move(vm, VM_IO_MMIO, 0xc0000000, 0xd0000000), 0);
    assert_false(vm_io_dispatch(vm, VM_IO_MMIO, 0xc0000000, &v, 4, false));
    assert_true(vm_io_dispatch(vm, VM_IO_MMIO, 0xd0000010, &v, 4, false));
    assert_int_equal(c.offset, 0x10);
    assert_int_equal(vm_io_move(vm, VM_IO_MMIO, 0xd0000000, 0x3f8), -EEXIST);
    assert_int_equal(vm_io_move(vm, VM_IO_MMIO, 0x12345, 0x0), -ENOENT);
    assert_int_equal(vm_io_unregister(vm, VM_IO_PIO, 0x3f8), 0);
    assert_false(vm_io_dispatch(vm, VM_IO_PIO, 0x3f8, &v, 1, false));
    assert_int_equal(vm_io_unregister(vm, VM_IO_PIO, 0x3f8), -ENOENT);
    assert_true(vm_io_dispatch(vm, VM_IO_PIO, 0x60, &v, 1, false));
    fake_vm_free(vm);
}

/* Many ranges, registered out of order: every lookup finds its own range. */
static void test_many_ranges(void **state)
{
    struct vm *vm = fake_vm_new(0, NULL);
    static struct probe p[200];
    uint8_t v;

    (void)state;
    for (int i = 0; i < 200; i++) {
        int k = (i * 37) % 200;

        p[k].value = (uint32_t)k;
        assert_int_equal(
            vm_io_register(vm, VM_IO_PIO, 0x1000 + 16u * (unsigned)k, 8, probe_io, &p[k]), 0);
    }
    for (int k = 0; k < 200; k++) {
        assert_true(vm_io_dispatch(vm, VM_IO_PIO, 0x1000 + 16u * (unsigned)k + 7, &v, 1, false));
        assert_int_equal(v, (uint8_t)k);
        assert_false(vm_io_dispatch(vm, VM_IO_PIO, 0x1000 + 16u * (unsigned)k + 8, &v, 1, false));
    }
    fake_vm_free(vm);
}

static void test_gpa_to_hva(void **state)
{
    static uint8_t ram[4 << 20];
    struct vm *vm = fake_vm_new(sizeof(ram), ram);
    struct vm_mem_region r[4];

    (void)state;
    assert_ptr_equal(vm_gpa_to_hva(vm, 0, 16), ram);
    assert_ptr_equal(vm_gpa_to_hva(vm, 0x1000, 0x1000), ram + 0x1000);
    assert_ptr_equal(vm_gpa_to_hva(vm, sizeof(ram) - 8, 8), ram + sizeof(ram) - 8);
    assert_null(vm_gpa_to_hva(vm, sizeof(ram) - 8, 9));
    assert_null(vm_gpa_to_hva(vm, sizeof(ram), 1));
    assert_null(vm_gpa_to_hva(vm, 8, UINT64_MAX));
    assert_null(vm_gpa_to_hva(vm, UINT64_MAX, 2));
    assert_null(vm_gpa_to_hva(vm, LAYOUT_RAM_HIGH_START, 1));
    assert_int_equal(vm_ram_size(vm), sizeof(ram));
    assert_int_equal(vm_mem_regions(vm, r, 4), 1);
    assert_int_equal(r[0].gpa, 0);
    assert_int_equal(r[0].size, sizeof(ram));
    assert_int_equal(vm_mem_regions(vm, r, 0), 0);
    fake_vm_free(vm);
}

/* RAM above the 32-bit hole continues at 4 GiB, backed by the same mapping. */
static void test_layout_high(void **state)
{
    struct guest_mem gm;
    uint8_t *base = (uint8_t *)0x10000000; /* never dereferenced */
    struct e820_entry e[8];

    (void)state;
    assert_int_equal(guest_mem_layout(&gm, 4ull << 30, base), 0);
    assert_int_equal(gm.n, 2);
    assert_int_equal(gm.r[0].size, LAYOUT_MMIO32_START);
    assert_int_equal(gm.r[1].gpa, LAYOUT_RAM_HIGH_START);
    assert_int_equal(gm.r[1].size, (4ull << 30) - LAYOUT_MMIO32_START);
    assert_int_equal(gm.r[1].fd_offset, LAYOUT_MMIO32_START);
    assert_ptr_equal(guest_mem_ptr(&gm, LAYOUT_RAM_HIGH_START + 5, 1),
                     base + LAYOUT_MMIO32_START + 5);
    assert_null(guest_mem_ptr(&gm, LAYOUT_MMIO32_START, 1)); /* the hole */
    assert_null(guest_mem_ptr(&gm, LAYOUT_MMIO32_START - 1, 2));
    assert_int_equal(guest_mem_top(&gm), (5ull << 30));
    assert_int_equal(guest_mem_e820(&gm, e, 8), 5);
    assert_int_equal(e[4].addr, LAYOUT_RAM_HIGH_START);
    assert_int_equal(e[4].type, E820_RAM);
    assert_int_equal(guest_mem_e820(&gm, e, 2), 2);
    assert_int_equal(guest_mem_layout(&gm, 4097, base), -EINVAL);
    assert_int_equal(guest_mem_layout(&gm, 1 << 20, base), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_dispatch),
        cmocka_unit_test(test_many_ranges),
        cmocka_unit_test(test_gpa_to_hva),
        cmocka_unit_test(test_layout_high),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
