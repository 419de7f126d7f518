/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-blk over the virtio-pci transport, driven by a test driver on fake_vm. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_vm.h"
#include "vdrv.h"
#include "vmm/config.h"
#include "vmm/devices/virtio_blk.h"

#define DISK_SIZE (1u << 20)
#define TIMEOUT   10000

struct fixture {
    struct vm *vm;
    struct pci_bus *bus;
    struct virtio_blk *blk;
    struct vdrv d;
    char path[64];
    int fd;
    uint64_t hdr, data, status;
};

static int setup_disk(void **state, bool readonly, uint32_t nq)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct disk_config dc = {0};
    uint8_t *pattern = malloc(DISK_SIZE);

    strcpy(f->path, "/tmp/qt-test-blk-XXXXXX");
    f->fd = mkstemp(f->path);
    assert_true(f->fd >= 0);
    for (uint32_t i = 0; i < DISK_SIZE; i++)
        pattern[i] = (uint8_t)(i / 512 + i);
    assert_int_equal(pwrite(f->fd, pattern, DISK_SIZE, 0), DISK_SIZE);
    free(pattern);
    f->vm = fake_vm_new(16 << 20);
    assert_int_equal(pci_bus_create(f->vm, &f->bus), 0);
    dc.path = f->path;
    dc.serial = "qt-serial-0123456789xyz";
    dc.readonly = readonly;
    dc.num_queues = nq;
    dc.queue_size = 16;
    assert_int_equal(virtio_blk_create(f->vm, &dc, 0, &f->blk), 0);
    assert_int_equal(virtio_dev_plug(&f->blk->vdev, f->bus), 0);
    assert_int_equal(vdrv_open(&f->d, f->vm, 0x1042, 0), 0);
    f->hdr = vdrv_alloc(&f->d, 4096);
    f->data = vdrv_alloc(&f->d, 65536);
    f->status = vdrv_alloc(&f->d, 4096);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_disk(state, false, 1);
}

static int setup_ro(void **state)
{
    return setup_disk(state, true, 1);
}

static int setup_mq(void **state)
{
    return setup_disk(state, false, 2);
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    virtio_blk_destroy(f->blk);
    pci_bus_destroy(f->bus);
    fake_vm_free(f->vm);
    close(f->fd);
    unlink(f->path);
    free(f);
    return 0;
}

static void start(struct fixture *f, uint16_t nq)
{
    assert_true(vdrv_negotiate(&f->d, vdrv_device_features(&f->d)) & 0x8);
    for (uint16_t q = 0; q < nq; q++)
        assert_int_equal(vdrv_setup_queue(&f->d, q, 16, q + 1), 0);
    vdrv_set_config_vector(&f->d, 0);
    for (uint16_t v = 0; v <= nq; v++)
        vdrv_msix_vector(&f->d, v, 0x30 + v);
    vdrv_driver_ok(&f->d);
    assert_int_equal(vdrv_status(&f->d), 0xf);
}

static uint8_t *ram(struct fixture *f, uint64_t gpa)
{
    return fake_vm_ram(f->vm) + gpa;
}

/* One request: header, optional data, status. Returns the status byte. */
static int blk_request_q(struct fixture *f, uint16_t q, uint32_t type, uint64_t sector,
                         uint32_t len, bool data_write, uint32_t *used_len)
{
    struct virtio_blk_outhdr hdr = {.type = type, .sector = sector};
    struct vdrv_buf bufs[3];
    int n = 0, head, id;

    memcpy(ram(f, f->hdr), &hdr, sizeof(hdr));
    *ram(f, f->status) = 0xee;
    bufs[n++] = (struct vdrv_buf){f->hdr, sizeof(hdr), false};
    if (len)
        bufs[n++] = (struct vdrv_buf){f->data, len, data_write};
    bufs[n++] = (struct vdrv_buf){f->status, 1, true};
    head = vdrv_submit(&f->d, q, bufs, n);
    vdrv_kick(&f->d, q);
    id = vdrv_wait(&f->d, q, used_len, TIMEOUT);
    assert_int_equal(id, head);
    return *ram(f, f->status);
}

static int blk_request(struct fixture *f, uint32_t type, uint64_t sector, uint32_t len,
                       bool data_write, uint32_t *used_len)
{
    return blk_request_q(f, 0, type, sector, len, data_write, used_len);
}

static void test_config_and_features(void **state)
{
    struct fixture *f = *state;
    uint64_t feat = vdrv_device_features(&f->d);

    assert_true(feat & (1ull << VIRTIO_F_VERSION_1));
    assert_true(feat & (1ull << VIRTIO_BLK_F_FLUSH));
    assert_true(feat & (1ull << VIRTIO_BLK_F_DISCARD));
    assert_true(feat & (1ull << VIRTIO_BLK_F_WRITE_ZEROES));
    assert_false(feat & (1ull << VIRTIO_BLK_F_RO));
    assert_false(feat & (1ull << VIRTIO_BLK_F_MQ));
    assert_int_equal(vdrv_devcfg_read(&f->d, 0, 4), DISK_SIZE / 512);
    assert_int_equal(vdrv_devcfg_read(&f->d, 4, 4), 0);
    assert_int_equal(vdrv_devcfg_read(&f->d, 12, 4), 14); /* seg_max */
    assert_int_equal(vdrv_devcfg_read(&f->d, 20, 4), 512);
    assert_int_equal(vdrv_devcfg_read(&f->d, 34, 2), 1);
    assert_int_equal(vdrv_devcfg_read(&f->d, 40, 4), 1); /* max_discard_seg */
    /* Out-of-range config reads return zeroes, not other memory. */
    assert_int_equal(vdrv_devcfg_read(&f->d, 0x800, 4), 0);
}

static void test_features_refused(void **state)
{
    struct fixture *f = *state;

    /* A driver accepting a feature that was not offered does not get FEATURES_OK. */
    vdrv_reset(&f->d);
    fake_vm_write(f->vm, VM_IO_MMIO, f->d.bar0 + 0x14, 1, 3);
    fake_vm_write(f->vm, VM_IO_MMIO, f->d.bar0 + 0x08, 4, 0);
    fake_vm_write(f->vm, VM_IO_MMIO, f->d.bar0 + 0x0c, 4, 1u << VIRTIO_BLK_F_RO);
    fake_vm_write(f->vm, VM_IO_MMIO, f->d.bar0 + 0x08, 4, 1);
    fake_vm_write(f->vm, VM_IO_MMIO, f->d.bar0 + 0x0c, 4, 1);
    fake_vm_write(f->vm, VM_IO_MMIO, f->d.bar0 + 0x14, 1, 0xb);
    assert_false(vdrv_status(&f->d) & 0x8);
    /* Nor does one without VERSION_1. */
    vdrv_reset(&f->d);
    fake_vm_write(f->vm, VM_IO_MMIO, f->d.bar0 + 0x14, 1, 3);
    fake_vm_write(f->vm, VM_IO_MMIO, f->d.bar0 + 0x14, 1, 0xb);
    assert_false(vdrv_status(&f->d) & 0x8);
}

static void test_write_read_back(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[1024];
    uint32_t used;

    start(f, 1);
    for (int i = 0; i < 1024; i++)
        ram(f, f->data)[i] = (uint8_t)(0xa5 ^ i);
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_OUT, 10, 1024, false, &used), VIRTIO_BLK_S_OK);
    assert_int_equal(used, 1);
    assert_int_equal(pread(f->fd, buf, sizeof(buf), 10 * 512), sizeof(buf));
    assert_memory_equal(buf, ram(f, f->data), sizeof(buf));

    memset(ram(f, f->data), 0, 4096);
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_IN, 9, 2048, true, &used), VIRTIO_BLK_S_OK);
    assert_int_equal(used, 2049);
    assert_int_equal(pread(f->fd, buf, 512, 9 * 512), 512);
    assert_memory_equal(ram(f, f->data), buf, 512);
    assert_int_equal(ram(f, f->data)[512], 0xa5);
    /* The last sector of the disk is readable. */
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_IN, DISK_SIZE / 512 - 1, 512, true, NULL),
                     VIRTIO_BLK_S_OK);
    assert_int_equal(f->blk->stats.reads, 2);
    assert_int_equal(f->blk->stats.writes, 1);
    assert_int_equal(f->blk->stats.write_bytes, 1024);
}

static void test_bad_requests(void **state)
{
    struct fixture *f = *state;

    start(f, 1);
    /* Past the end, straddling the end, huge sector, odd length. */
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_IN, DISK_SIZE / 512, 512, true, NULL),
                     VIRTIO_BLK_S_IOERR);
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_OUT, DISK_SIZE / 512 - 1, 1024, false, NULL),
                     VIRTIO_BLK_S_IOERR);
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_IN, UINT64_MAX - 1, 1024, true, NULL),
                     VIRTIO_BLK_S_IOERR);
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_IN, 0, 100, true, NULL), VIRTIO_BLK_S_IOERR);
    assert_int_equal(blk_request(f, 0x1234, 0, 0, false, NULL), VIRTIO_BLK_S_UNSUPP);
    assert_int_equal(f->blk->stats.errors, 5);
    /* The device still works. */
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_IN, 0, 512, true, NULL), VIRTIO_BLK_S_OK);
    assert_int_equal(vdrv_status(&f->d), 0xf);
}

static void test_flush_get_id(void **state)
{
    struct fixture *f = *state;
    uint32_t used;

    start(f, 1);
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_FLUSH, 0, 0, false, NULL), VIRTIO_BLK_S_OK);
    assert_int_equal(f->blk->stats.flushes, 1);
    memset(ram(f, f->data), 0, 64);
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_GET_ID, 0, 20, true, &used), VIRTIO_BLK_S_OK);
    assert_int_equal(used, 21);
    assert_memory_equal(ram(f, f->data), "qt-serial-0123456789", 20);
}

static void test_discard_write_zeroes(void **state)
{
    struct fixture *f = *state;
    struct virtio_blk_discard_write_zeroes seg = {.sector = 16, .num_sectors = 8, .flags = 0};
    uint8_t buf[4096], zero[4096] = {0};

    start(f, 1);
    memcpy(ram(f, f->data), &seg, sizeof(seg));
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_WRITE_ZEROES, 0, sizeof(seg), false, NULL),
                     VIRTIO_BLK_S_OK);
    assert_int_equal(pread(f->fd, buf, 4096, 16 * 512), 4096);
    assert_memory_equal(buf, zero, 4096);
    /* The sectors around were not touched. */
    assert_int_equal(pread(f->fd, buf, 1, 15 * 512 + 511), 1);
    assert_int_not_equal(buf[0], 0);

    seg = (struct virtio_blk_discard_write_zeroes){.sector = 64, .num_sectors = 8};
    memcpy(ram(f, f->data), &seg, sizeof(seg));
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_DISCARD, 0, sizeof(seg), false, NULL),
                     VIRTIO_BLK_S_OK);
    assert_int_equal(pread(f->fd, buf, 4096, 64 * 512), 4096);
    assert_memory_equal(buf, zero, 4096);
    /* Out of range and unmap-flag discard are refused. */
    seg = (struct virtio_blk_discard_write_zeroes){.sector = DISK_SIZE / 512 - 4, .num_sectors = 8};
    memcpy(ram(f, f->data), &seg, sizeof(seg));
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_DISCARD, 0, sizeof(seg), false, NULL),
                     VIRTIO_BLK_S_IOERR);
    seg = (struct virtio_blk_discard_write_zeroes){.sector = 0, .num_sectors = 8, .flags = 1};
    memcpy(ram(f, f->data), &seg, sizeof(seg));
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_DISCARD, 0, sizeof(seg), false, NULL),
                     VIRTIO_BLK_S_UNSUPP);
    assert_int_equal(f->blk->stats.discards, 1);
    assert_int_equal(f->blk->stats.write_zeroes, 1);
}

static void test_readonly(void **state)
{
    struct fixture *f = *state;
    uint8_t before[512], after[512];

    assert_true(vdrv_device_features(&f->d) & (1ull << VIRTIO_BLK_F_RO));
    assert_false(vdrv_device_features(&f->d) & (1ull << VIRTIO_BLK_F_DISCARD));
    start(f, 1);
    assert_int_equal(pread(f->fd, before, 512, 0), 512);
    memset(ram(f, f->data), 0x11, 512);
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_OUT, 0, 512, false, NULL), VIRTIO_BLK_S_IOERR);
    assert_int_equal(pread(f->fd, after, 512, 0), 512);
    assert_memory_equal(before, after, 512);
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_IN, 0, 512, true, NULL), VIRTIO_BLK_S_OK);
}

static void test_interrupts(void **state)
{
    struct fixture *f = *state;

    start(f, 1);
    assert_int_equal(fake_vm_msi_count(f->vm, 0x31), 0);
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_IN, 0, 512, true, NULL), VIRTIO_BLK_S_OK);
    /* The interrupt is sent after the used ring update; allow the thread to get there. */
    for (int i = 0; i < 10000 && fake_vm_msi_count(f->vm, 0x31) == 0; i++)
        usleep(100);
    assert_int_equal(fake_vm_msi_count(f->vm, 0x31), 1);
    assert_int_equal(fake_vm_msi_count(f->vm, 0x30), 0); /* no config interrupt */
}

static void test_hostile_request_needs_reset(void **state)
{
    struct fixture *f = *state;
    struct vdrv_buf bufs[1] = {{0, 16, false}};

    start(f, 1);
    /* Header only, no writable status byte: the device cannot answer it. */
    bufs[0].addr = f->hdr;
    vdrv_submit(&f->d, 0, bufs, 1);
    vdrv_kick(&f->d, 0);
    for (int i = 0; i < 10000 && !(vdrv_status(&f->d) & 0x40); i++)
        usleep(100);
    assert_true(vdrv_status(&f->d) & 0x40);
    for (int i = 0; i < 10000 && fake_vm_msi_count(f->vm, 0x30) == 0; i++)
        usleep(100);
    assert_int_equal(fake_vm_msi_count(f->vm, 0x30), 1); /* config-change interrupt */
    /* Reset brings it back. */
    vdrv_reset(&f->d);
    assert_int_equal(vdrv_status(&f->d), 0);
    start(f, 1);
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_IN, 0, 512, true, NULL), VIRTIO_BLK_S_OK);
}

static void test_hostile_ring_loop(void **state)
{
    struct fixture *f = *state;
    struct virtq_desc *desc;

    start(f, 1);
    desc = (struct virtq_desc *)ram(f, f->d.q[0].desc);
    desc[0] = (struct virtq_desc){f->hdr, 16, VIRTQ_DESC_F_NEXT, 1};
    desc[1] = (struct virtq_desc){f->status, 1, VIRTQ_DESC_F_NEXT, 0};
    vdrv_publish(&f->d, 0, 0);
    vdrv_kick(&f->d, 0);
    for (int i = 0; i < 10000 && !(vdrv_status(&f->d) & 0x40); i++)
        usleep(100);
    assert_true(vdrv_status(&f->d) & 0x40);
    /* The driver cannot clear NEEDS_RESET by writing status. */
    fake_vm_write(f->vm, VM_IO_MMIO, f->d.bar0 + 0x14, 1, 0xf);
    assert_true(vdrv_status(&f->d) & 0x40);
}

static void test_multiqueue(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[512];

    assert_true(vdrv_device_features(&f->d) & (1ull << VIRTIO_BLK_F_MQ));
    assert_int_equal(vdrv_devcfg_read(&f->d, 34, 2), 2);
    start(f, 2);
    memset(ram(f, f->data), 0x77, 512);
    assert_int_equal(blk_request_q(f, 1, VIRTIO_BLK_T_OUT, 100, 512, false, NULL), VIRTIO_BLK_S_OK);
    assert_int_equal(pread(f->fd, buf, 512, 100 * 512), 512);
    assert_int_equal(buf[0], 0x77);
    assert_int_equal(blk_request_q(f, 0, VIRTIO_BLK_T_IN, 100, 512, true, NULL), VIRTIO_BLK_S_OK);
}

static void test_stats_json(void **state)
{
    struct fixture *f = *state;
    json_object *arr = json_object_new_array(), *o, *v;

    start(f, 1);
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_IN, 0, 4096, true, NULL), VIRTIO_BLK_S_OK);
    virtio_blk_stats(f->blk, arr);
    assert_int_equal(json_object_array_length(arr), 1);
    o = json_object_array_get_idx(arr, 0);
    assert_true(json_object_object_get_ex(o, "read_bytes", &v));
    assert_int_equal(json_object_get_uint64(v), 4096);
    assert_true(json_object_object_get_ex(o, "type", &v));
    assert_string_equal(json_object_get_string(v), "virtio-blk");
    json_object_put(arr);
}

static void test_pci_cfg_window(void **state)
{
    struct fixture *f = *state;
    uint16_t cap = (uint16_t)vdrv_cfg_read(&f->d, 0x34, 1);

    /* Find the VIRTIO_PCI_CAP_PCI_CFG capability (vendor cap, cfg_type 5). */
    while (cap && !(vdrv_cfg_read(&f->d, cap, 1) == 0x09 && vdrv_cfg_read(&f->d, cap + 3, 1) == 5))
        cap = (uint16_t)vdrv_cfg_read(&f->d, cap + 1, 1);
    assert_int_not_equal(cap, 0);
    /* Read the capacity (device cfg at BAR 0 + 0x2000) through the window. */
    vdrv_cfg_write(&f->d, cap + 4, 1, 0);
    vdrv_cfg_write(&f->d, cap + 8, 4, 0x2000);
    vdrv_cfg_write(&f->d, cap + 12, 4, 4);
    assert_int_equal(vdrv_cfg_read(&f->d, cap + 16, 4), DISK_SIZE / 512);
    /* Write device status through it, read it back directly. */
    vdrv_cfg_write(&f->d, cap + 8, 4, 0x14);
    vdrv_cfg_write(&f->d, cap + 12, 4, 1);
    vdrv_cfg_write(&f->d, cap + 16, 1, 1);
    assert_int_equal(vdrv_status(&f->d), 1);
    /* A window outside BAR 0 or of a bad size reads zero and does nothing. */
    vdrv_cfg_write(&f->d, cap + 8, 4, 0x10000);
    vdrv_cfg_write(&f->d, cap + 12, 4, 4);
    assert_int_equal(vdrv_cfg_read(&f->d, cap + 16, 4), 0);
    vdrv_cfg_write(&f->d, cap + 8, 4, 0);
    vdrv_cfg_write(&f->d, cap + 12, 4, 3);
    assert_int_equal(vdrv_cfg_read(&f->d, cap + 16, 4), 0);
}

static void test_bar_move_keeps_ioeventfds(void **state)
{
    struct fixture *f = *state;
    uint64_t new_bar = 0xd0000000;
    int before = fake_vm_ioeventfd_count(f->vm);

    assert_int_equal(before, 1); /* one queue, one notify ioeventfd */
    vdrv_cfg_write(&f->d, 0x04, 2, 0);
    assert_int_equal(fake_vm_ioeventfd_count(f->vm), 0);
    vdrv_cfg_write(&f->d, 0x10, 4, (uint32_t)new_bar);
    vdrv_cfg_write(&f->d, 0x04, 2, 0x6);
    assert_int_equal(fake_vm_ioeventfd_count(f->vm), 1);
    f->d.bar0 = new_bar;
    start(f, 1);
    assert_int_equal(blk_request(f, VIRTIO_BLK_T_IN, 0, 512, true, NULL), VIRTIO_BLK_S_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_and_features, setup, teardown),
        cmocka_unit_test_setup_teardown(test_features_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_get_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_discard_write_zeroes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readonly, setup_ro, teardown),
        cmocka_unit_test_setup_teardown(test_interrupts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_request_needs_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_ring_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multiqueue, setup_mq, teardown),
        cmocka_unit_test_setup_teardown(test_stats_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pci_cfg_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bar_move_keeps_ioeventfds, setup, teardown),
    };

    return cmocka_run_group_tests_name("virtio-blk", tests, NULL, NULL);
}
