/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-rng through the transport on fake_vm. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fake_vm.h"
#include "vdrv.h"
#include "vmm/devices/virtio_rng.h"

static void test_rng_fills_buffers(void **state)
{
    struct vm *vm = fake_vm_new(16 << 20);
    struct pci_bus *bus;
    struct virtio_rng *rng;
    struct vdrv d;
    struct vdrv_buf bufs[2];
    uint64_t a, b;
    uint32_t len;
    int head, zeros = 0;

    assert_int_equal(pci_bus_create(vm, &bus), 0);
    assert_int_equal(virtio_rng_create(vm, &rng), 0);
    assert_int_equal(virtio_dev_plug(&rng->vdev, bus), 0);
    assert_int_equal(vdrv_open(&d, vm, 0x1044, 0), 0);
    assert_int_equal(vdrv_cfg_read(&d, 0x0a, 2), 0x00ff);
    assert_true(vdrv_negotiate(&d, 0) & 0x8);
    assert_int_equal(vdrv_setup_queue(&d, 0, 8, 0xffff), 0);
    vdrv_driver_ok(&d);

    a = vdrv_alloc(&d, 4096);
    b = vdrv_alloc(&d, 4096);
    bufs[0] = (struct vdrv_buf){a, 64, true};
    bufs[1] = (struct vdrv_buf){b, 4096, true};
    head = vdrv_submit(&d, 0, bufs, 2);
    vdrv_kick(&d, 0);
    assert_int_equal(vdrv_wait(&d, 0, &len, 10000), head);
    assert_int_equal(len, 64 + 4096);
    for (int i = 0; i < 4096; i++)
        zeros += fake_vm_ram(vm)[b + i] == 0;
    /* 4096 random bytes: about 16 zeroes expected, never hundreds. */
    assert_true(zeros < 100);
    assert_int_equal(rng->bytes, 64 + 4096);

    /* A readable buffer is not filled: chain with only a readable descriptor. */
    bufs[0] = (struct vdrv_buf){a, 64, false};
    head = vdrv_submit(&d, 0, bufs, 1);
    vdrv_kick(&d, 0);
    assert_int_equal(vdrv_wait(&d, 0, &len, 10000), head);
    assert_int_equal(len, 0);

    virtio_rng_destroy(rng);
    pci_bus_destroy(bus);
    fake_vm_free(vm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng_fills_buffers),
    };

    return cmocka_run_group_tests_name("virtio-rng", tests, NULL, NULL);
}
