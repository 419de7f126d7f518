/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user-blk front-end against a real back-end: qemu-storage-daemon
 * exporting a raw image. The test plays the guest on fake_vm (guest RAM is a
 * memfd the daemon maps), puts requests in the ring, kicks through the
 * notify ioeventfd and checks the data in the image file. Skips (77) when
 * qemu-storage-daemon is not installed.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_vm.h"
#include "vdrv.h"
#include "vmm/config.h"
#include "vmm/devices/vhost_user_dev.h"
#include "vmm/devices/virtio_blk.h"

#define IMG_SIZE (4u << 20)
#define TIMEOUT  10000

static char dir[64], img[96], sock[96];
static pid_t qsd = -1;

static int start_daemon(void)
{
    char blockdev[160], exp[200];

    snprintf(blockdev, sizeof(blockdev), "driver=file,node-name=f,filename=%s", img);
    snprintf(exp, sizeof(exp),
             "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=%s,writable=on,"
             "num-queues=2",
             sock);
    qsd = fork();
    if (qsd == 0) {
        execlp("qemu-storage-daemon", "qemu-storage-daemon", "--blockdev", blockdev, "--export",
               exp, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {
        struct stat st;
        int status;

        if (stat(sock, &st) == 0)
            return 0;
        if (waitpid(qsd, &status, WNOHANG) == qsd) {
            qsd = -1;
            return -1;
        }
        usleep(10000);
    }
    return -1;
}

static void stop_daemon(void)
{
    if (qsd > 0) {
        kill(qsd, SIGTERM);
        waitpid(qsd, NULL, 0);
        qsd = -1;
    }
}

struct fixture {
    struct vm *vm;
    struct pci_bus *bus;
    struct vhost_user_dev *dev;
    struct vdrv d;
    uint64_t hdr, data, status;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct disk_config dc = {.vhost_socket = sock, .num_queues = 2, .queue_size = 32};

    f->vm = fake_vm_new(32 << 20);
    assert_int_equal(pci_bus_create(f->vm, &f->bus), 0);
    assert_int_equal(vhost_user_blk_create(f->vm, &dc, 0, &f->dev), 0);
    assert_int_equal(virtio_dev_plug(&f->dev->vdev, f->bus), 0);
    assert_int_equal(vdrv_open(&f->d, f->vm, 0x1042, 0), 0);
    f->hdr = vdrv_alloc(&f->d, 4096);
    f->data = vdrv_alloc(&f->d, 65536);
    f->status = vdrv_alloc(&f->d, 4096);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    vhost_user_dev_destroy(f->dev);
    pci_bus_destroy(f->bus);
    fake_vm_free(f->vm);
    free(f);
    return 0;
}

static void start(struct fixture *f)
{
    uint64_t feat = vdrv_device_features(&f->d);

    assert_true(vdrv_negotiate(&f->d, feat) & 0x8);
    for (uint16_t q = 0; q < 2; q++)
        assert_int_equal(vdrv_setup_queue(&f->d, q, 32, q + 1), 0);
    vdrv_set_config_vector(&f->d, 0);
    for (uint16_t v = 0; v < 3; v++)
        vdrv_msix_vector(&f->d, v, 0x50 + v);
    vdrv_driver_ok(&f->d);
    assert_int_equal(vdrv_status(&f->d), 0xf);
}

static int request(struct fixture *f, uint16_t q, uint32_t type, uint64_t sector, uint32_t len,
                   bool data_write)
{
    struct virtio_blk_outhdr hdr = {.type = type, .sector = sector};
    uint8_t *ram = fake_vm_ram(f->vm);
    struct vdrv_buf bufs[3];
    int n = 0, head;

    memcpy(ram + f->hdr, &hdr, sizeof(hdr));
    ram[f->status] = 0xee;
    bufs[n++] = (struct vdrv_buf){f->hdr, sizeof(hdr), false};
    if (len)
        bufs[n++] = (struct vdrv_buf){f->data, len, data_write};
    bufs[n++] = (struct vdrv_buf){f->status, 1, true};
    head = vdrv_submit(&f->d, q, bufs, n);
    vdrv_kick(&f->d, q);
    assert_int_equal(vdrv_wait(&f->d, q, NULL, TIMEOUT), head);
    return ram[f->status];
}

static void test_config_from_backend(void **state)
{
    struct fixture *f = *state;
    uint64_t feat = vdrv_device_features(&f->d);

    assert_int_equal(vdrv_devcfg_read(&f->d, 0, 4), IMG_SIZE / 512);
    assert_int_equal(vdrv_devcfg_read(&f->d, 34, 2), 2);
    assert_true(feat & (1ull << VIRTIO_F_VERSION_1));
    assert_true(feat & (1ull << VIRTIO_BLK_F_MQ));
    assert_false(feat & (1ull << VHOST_USER_F_PROTOCOL_FEATURES));
}

static void test_write_read_through_backend(void **state)
{
    struct fixture *f = *state;
    uint8_t *ram = fake_vm_ram(f->vm), buf[4096];
    int fd = open(img, O_RDONLY);

    start(f);
    for (int i = 0; i < 4096; i++)
        ram[f->data + i] = (uint8_t)(i * 7 + 3);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_OUT, 8, 4096, false), VIRTIO_BLK_S_OK);
    assert_int_equal(request(f, 1, VIRTIO_BLK_T_FLUSH, 0, 0, false), VIRTIO_BLK_S_OK);
    assert_int_equal(pread(fd, buf, 4096, 8 * 512), 4096);
    assert_memory_equal(buf, ram + f->data, 4096);

    /* Read what was in the image before (sector 100 of the initial pattern) on queue 1. */
    memset(ram + f->data, 0, 4096);
    assert_int_equal(request(f, 1, VIRTIO_BLK_T_IN, 100, 512, true), VIRTIO_BLK_S_OK);
    assert_int_equal(pread(fd, buf, 512, 100 * 512), 512);
    assert_memory_equal(buf, ram + f->data, 512);
    /* Out of range: the back-end answers with an error status. */
    assert_int_not_equal(request(f, 0, VIRTIO_BLK_T_IN, IMG_SIZE / 512, 512, true),
                         VIRTIO_BLK_S_OK);
    /* Completions were signalled through the MSI-X irqfds the back-end got. */
    for (int i = 0; i < 10000 && fake_vm_msi_count(f->vm, 0x51) == 0; i++)
        usleep(100);
    assert_true(fake_vm_msi_count(f->vm, 0x51) >= 1);
    assert_true(fake_vm_msi_count(f->vm, 0x52) >= 1);
    close(fd);
}

static void test_reset_and_restart(void **state)
{
    struct fixture *f = *state;

    start(f);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_IN, 0, 512, true), VIRTIO_BLK_S_OK);
    vdrv_reset(&f->d);
    assert_int_equal(vdrv_status(&f->d), 0);
    start(f);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_IN, 1, 512, true), VIRTIO_BLK_S_OK);
}

static void test_backend_death_and_reconnect(void **state)
{
    struct fixture *f = *state;

    start(f);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_IN, 0, 512, true), VIRTIO_BLK_S_OK);
    /* The back-end goes away: the device must tell the driver, not hang. */
    stop_daemon();
    for (int i = 0; i < 10000 && !(vdrv_status(&f->d) & 0x40); i++)
        usleep(1000);
    assert_true(vdrv_status(&f->d) & 0x40);
    for (int i = 0; i < 10000 && fake_vm_msi_count(f->vm, 0x50) == 0; i++)
        usleep(100);
    assert_int_equal(fake_vm_msi_count(f->vm, 0x50), 1); /* config-change interrupt */

    /* A restarted back-end is picked up when the driver resets the device. */
    unlink(sock);
    assert_int_equal(start_daemon(), 0);
    vdrv_reset(&f->d);
    start(f);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_IN, 2, 512, true), VIRTIO_BLK_S_OK);
}

static void test_connect_refused(void **state)
{
    struct vm *vm = fake_vm_new(1 << 20);
    struct disk_config dc = {.vhost_socket = "/nonexistent/qt.sock"};
    struct vhost_user_dev *dev = NULL;

    assert_true(vhost_user_blk_create(vm, &dc, 0, &dev) < 0);
    assert_null(dev);
    fake_vm_free(vm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_from_backend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_read_through_backend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_and_restart, setup, teardown),
        cmocka_unit_test(test_connect_refused),
        /* Last: it restarts the daemon. */
        cmocka_unit_test_setup_teardown(test_backend_death_and_reconnect, setup, teardown),
    };
    uint8_t *pattern;
    int fd, ret;

    if (system("command -v qemu-storage-daemon >/dev/null 2>&1") != 0) {
        printf("skip: qemu-storage-daemon is not installed\n");
        return 77;
    }
    strcpy(dir, "/tmp/qt-vu-blk-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    snprintf(img, sizeof(img), "%s/disk.img", dir);
    snprintf(sock, sizeof(sock), "%s/vu.sock", dir);
    fd = open(img, O_RDWR | O_CREAT, 0600);
    pattern = malloc(IMG_SIZE);
    for (uint32_t i = 0; i < IMG_SIZE; i++)
        pattern[i] = (uint8_t)(i ^ (i >> 9));
    if (fd < 0 || pwrite(fd, pattern, IMG_SIZE, 0) != IMG_SIZE)
        return 1;
    free(pattern);
    close(fd);
    if (start_daemon() < 0) {
        printf("qemu-storage-daemon did not start\n");
        return 1;
    }
    ret = cmocka_run_group_tests_name("vhost-user-blk", tests, NULL, NULL);
    stop_daemon();
    unlink(sock);
    unlink(img);
    rmdir(dir);
    return ret;
}
