/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A hostile guest: seeded random register writes and reads on every virtio
 * BAR, random config-space and MSI-X table writes, random ring contents and
 * kicks, against a live virtio-blk. Nothing may crash (run under ASan/UBSan
 * by make check), and after a reset the device must work normally again.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "fake_vm.h"
#include "vdrv.h"
#include "vmm/config.h"
#include "vmm/devices/virtio_blk.h"

#define RAM    (8u << 20)
#define ROUNDS 20000

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void fuzz_once(uint64_t seed)
{
    struct vm *vm = fake_vm_new(RAM);
    struct disk_config dc = {.queue_size = 8, .num_queues = 2};
    char path[] = "/tmp/qt-fuzz-blk-XXXXXX";
    int fd = mkstemp(path);
    struct virtio_blk *blk;
    struct pci_bus *bus;
    struct vdrv d;
    uint32_t bar0, bar1, cmd;
    uint64_t s = seed, ring_base = 0x1000;
    static const uint32_t lens[4] = {1, 2, 4, 8};

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    dc.path = path;
    assert_int_equal(pci_bus_create(vm, &bus), 0);
    assert_int_equal(virtio_blk_create(vm, &dc, 0, &blk), 0);
    assert_int_equal(virtio_dev_plug(&blk->vdev, bus), 0);
    assert_int_equal(vdrv_open(&d, vm, 0x1042, 0), 0);
    bar0 = vdrv_cfg_read(&d, 0x10, 4);
    bar1 = vdrv_cfg_read(&d, 0x14, 4);
    cmd = vdrv_cfg_read(&d, 0x04, 2);

    for (int i = 0; i < ROUNDS; i++) {
        uint64_t r = rnd(&s), v = rnd(&s);
        uint32_t len = lens[r & 3];
        uint64_t addr;

        switch ((r >> 2) % 8) {
        case 0: /* common config, biased towards real fields */
        case 1:
            addr = d.bar0 + ((r >> 8) % 0x40);
            break;
        case 2: /* device config, ISR, notify, and beyond */
            addr = d.bar0 + 0x1000 * ((r >> 8) % 4) + ((r >> 16) % 0x100);
            break;
        case 3: /* MSI-X table and PBA */
            addr = d.msix + ((r >> 8) % 0x1100);
            break;
        case 4: /* config space past the BARs (caps, MSI-X control) */
            if ((r >> 8) % 4 == 0) {
                uint32_t off = 0x34 + (uint32_t)((r >> 12) % 0xcc);

                vdrv_cfg_write(&d, off & ~(len > 4 ? 3u : len - 1), len > 4 ? 4 : len, (uint32_t)v);
            } else {
                vdrv_cfg_read(&d, (uint32_t)((r >> 12) % 0x1000) & ~3u, 4);
            }
            continue;
        case 5: /* scribble over the rings: bytes, plausible descriptors, avail entries */
            if ((r >> 8) % 3 == 0) {
                fake_vm_ram(vm)[ring_base + (v % 0xc00)] = (uint8_t)(v >> 32);
            } else if ((r >> 8) % 3 == 1) {
                struct virtq_desc desc = {.addr = (v >> 8) % (RAM + 0x2000),
                                          .len = (uint32_t)(v % 9000),
                                          .flags = (uint16_t)((v >> 40) & 7),
                                          .next = (uint16_t)((v >> 44) % 10)};

                memcpy(fake_vm_ram(vm) + ring_base + 16 * ((r >> 12) % 8), &desc, sizeof(desc));
            } else {
                uint16_t *avail = (uint16_t *)(fake_vm_ram(vm) + ring_base + 0x400);

                avail[2 + avail[1] % 8] = (uint16_t)(v % 9);
                avail[1] = (uint16_t)(avail[1] + 1 + ((v >> 20) % 64 == 0 ? v % 100 : 0));
            }
            continue;
        case 6: /* negotiate properly, point a queue somewhere and start the device */
            if ((r >> 8) & 1) {
                uint64_t feat;

                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x14, 1, 0);
                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x14, 1, 3);
                feat = vdrv_device_features(&d) & v;
                feat |= 1ull << VIRTIO_F_VERSION_1;
                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x08, 4, 0);
                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x0c, 4, (uint32_t)feat);
                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x08, 4, 1);
                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x0c, 4, (uint32_t)(feat >> 32));
                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x14, 1, 0xb);
            }
            for (uint16_t q = 0; q < 2; q++) {
                uint64_t base = (rnd(&s) % (2u << 20)) & ~0xfffull;

                if (q == 0)
                    ring_base = base;

                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x16, 2, q);
                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x18, 2, 1 + (r >> 12) % 8);
                /* Mostly plausible ring addresses, sometimes wild ones. */
                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x20, 8, (r >> 16) % 8 == 0 ? v : base);
                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x28, 8, base + 0x400);
                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x30, 8, base + 0x800);
                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x1a, 2, (r >> 20) % 4);
                fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x1c, 2, 1);
            }
            fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x14, 1, (r >> 24) & 1 ? 0xf : (r >> 24) & 0xff);
            continue;
        default: /* kick */
            fake_vm_write(vm, VM_IO_MMIO, d.bar0 + 0x3000 + 4 * ((r >> 8) % 3), 2, 0);
            continue;
        }
        if ((r >> 30) & 1)
            fake_vm_write(vm, VM_IO_MMIO, addr & ~(uint64_t)(len - 1), len, v);
        else
            fake_vm_read(vm, VM_IO_MMIO, addr & ~(uint64_t)(len - 1), len);
    }

    /* Put the BARs back the way firmware left them, then reset and use the disk. */
    vdrv_cfg_write(&d, 0x10, 4, bar0);
    vdrv_cfg_write(&d, 0x14, 4, bar1);
    vdrv_cfg_write(&d, 0x04, 2, cmd);
    vdrv_reset(&d);
    assert_int_equal(vdrv_status(&d), 0);
    assert_true(vdrv_negotiate(&d, vdrv_device_features(&d)) & 0x8);
    d.heap = 4u << 20;
    assert_int_equal(vdrv_setup_queue(&d, 0, 8, 0xffff), 0);
    vdrv_driver_ok(&d);
    assert_int_equal(vdrv_status(&d), 0xf);
    {
        struct virtio_blk_outhdr hdr = {.type = VIRTIO_BLK_T_IN, .sector = 3};
        uint64_t h = vdrv_alloc(&d, 4096), data = vdrv_alloc(&d, 4096), st = vdrv_alloc(&d, 16);
        struct vdrv_buf bufs[3] = {{h, 16, false}, {data, 512, true}, {st, 1, true}};
        int head;

        memcpy(fake_vm_ram(vm) + h, &hdr, sizeof(hdr));
        fake_vm_ram(vm)[st] = 0xee;
        head = vdrv_submit(&d, 0, bufs, 3);
        vdrv_kick(&d, 0);
        assert_int_equal(vdrv_wait(&d, 0, NULL, 10000), head);
        assert_int_equal(fake_vm_ram(vm)[st], VIRTIO_BLK_S_OK);
    }
    virtio_blk_destroy(blk);
    pci_bus_destroy(bus);
    fake_vm_free(vm);
    close(fd);
    unlink(path);
}

static void test_fuzz_seeds(void **state)
{
    for (uint64_t seed = 1; seed <= 8; seed++)
        fuzz_once(seed * 0x9e3779b97f4a7c15ull);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fuzz_seeds),
    };

    /* The hostile guest makes the device log a line per violation. */
    log_set_level(getenv("FUZZ_VERBOSE") ? LOG_LVL_INFO : LOG_LVL_ERROR);
    return cmocka_run_group_tests_name("virtio-fuzz", tests, NULL, NULL);
}
