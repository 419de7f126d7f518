/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user-net front-end against a real back-end: dpdk-testpmd with DPDK's
 * vhost PMD (net_vhost, server side) in macswap forwarding mode. The test
 * plays the guest on fake_vm: a frame sent on the transmit queue must come
 * back on the receive queue with its MAC addresses swapped by DPDK. Skips
 * (77) when dpdk-testpmd is not installed.
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
#include "vmm/devices/virtio_net.h"

static char dir[64], sock[96];
static pid_t pmd = -1;

static const uint8_t our_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
static const uint8_t peer_mac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};

static int start_testpmd(void)
{
    char vdev[160], prefix[32];

    snprintf(vdev, sizeof(vdev), "net_vhost0,iface=%s,queues=1", sock);
    snprintf(prefix, sizeof(prefix), "qtvu%d", getpid());
    pmd = fork();
    if (pmd == 0) {
        int null = open("/dev/null", O_WRONLY);

        dup2(null, 1);
        dup2(null, 2);
        /* No hugepages needed: DPDK's vhost PMD only maps our memfd. */
        execlp("dpdk-testpmd", "dpdk-testpmd", "--no-huge", "-m", "256", "--no-pci",
               "--file-prefix", prefix, "--lcores=0@1,1@1", "--vdev", vdev, "--",
               "--forward-mode=macswap", "--auto-start", "--stats-period", "60", "--nb-cores=1",
               "--total-num-mbufs=4096", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 2000; i++) {
        struct stat st;
        int status;

        if (stat(sock, &st) == 0)
            return 0;
        if (waitpid(pmd, &status, WNOHANG) == pmd) {
            pmd = -1;
            return -1;
        }
        usleep(10000);
    }
    return -1;
}

static void stop_testpmd(void)
{
    if (pmd > 0) {
        kill(pmd, SIGINT);
        for (int i = 0; i < 300 && waitpid(pmd, NULL, WNOHANG) != pmd; i++)
            usleep(10000);
        kill(pmd, SIGKILL);
        waitpid(pmd, NULL, 0);
        pmd = -1;
    }
}

struct nfx {
    struct vm *vm;
    struct pci_bus *bus;
    struct vhost_user_dev *dev;
    struct vdrv d;
    uint64_t rxbuf[16], tx;
};

/* Plug the device, negotiate, post 16 receive buffers, DRIVER_OK. */
static void net_up(struct nfx *f)
{
    struct net_config nc = {.vhost_socket = sock, .has_mac = true, .queue_size = 64};
    uint64_t feat;

    f->vm = fake_vm_new(32 << 20);
    memcpy(nc.mac, our_mac, 6);
    assert_int_equal(pci_bus_create(f->vm, &f->bus), 0);
    assert_int_equal(vhost_user_net_create(f->vm, &nc, 0, &f->dev), 0);
    assert_int_equal(virtio_dev_plug(&f->dev->vdev, f->bus), 0);
    assert_int_equal(vdrv_open(&f->d, f->vm, 0x1041, 0), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(vdrv_devcfg_read(&f->d, (uint32_t)i, 1), our_mac[i]);
    feat = vdrv_device_features(&f->d);
    assert_true(feat & (1ull << VIRTIO_NET_F_MAC));
    assert_true(feat & (1ull << VIRTIO_F_VERSION_1));
    assert_true(
        vdrv_negotiate(&f->d, (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_MRG_RXBUF)) & 0x8);
    assert_int_equal(vdrv_setup_queue(&f->d, 0, 64, 1), 0);
    assert_int_equal(vdrv_setup_queue(&f->d, 1, 64, 2), 0);
    for (uint16_t v = 0; v < 3; v++)
        vdrv_msix_vector(&f->d, v, 0x60 + v);
    for (int i = 0; i < 16; i++) {
        struct vdrv_buf b;

        f->rxbuf[i] = vdrv_alloc(&f->d, 2048);
        b = (struct vdrv_buf){f->rxbuf[i], 2048, true};
        vdrv_submit(&f->d, 0, &b, 1);
    }
    vdrv_driver_ok(&f->d);
    assert_int_equal(vdrv_status(&f->d), 0xf);
    vdrv_kick(&f->d, 0);
    f->tx = vdrv_alloc(&f->d, 4096);
}

static void net_down(struct nfx *f)
{
    vdrv_reset(&f->d);
    assert_int_equal(vdrv_status(&f->d), 0);
    vhost_user_dev_destroy(f->dev);
    pci_bus_destroy(f->bus);
    fake_vm_free(f->vm);
}

/* One frame out on the transmit queue must come back with its MACs swapped (the payload
 * pattern depends on seed); kicks for up to tries x 200 ms until the back-end answers. */
static void round_trip(struct nfx *f, uint8_t seed, int tries)
{
    uint8_t *ram = fake_vm_ram(f->vm), *frame = ram + f->tx + VIRTIO_NET_HDR_LEN;
    struct vdrv_buf b = {f->tx, VIRTIO_NET_HDR_LEN + 128, false};
    int head, got = 0;

    memset(ram + f->tx, 0, VIRTIO_NET_HDR_LEN);
    memcpy(frame, peer_mac, 6);
    memcpy(frame + 6, our_mac, 6);
    frame[12] = 0x88;
    frame[13] = 0xb5; /* local experimental ethertype */
    for (int i = 14; i < 128; i++)
        frame[i] = (uint8_t)(i * 3 + seed);
    head = vdrv_submit(&f->d, 1, &b, 1);
    /* The back-end may attach its rings a moment after DRIVER_OK: kick until it answers. */
    for (int t = 0; t < tries && !got; t++) {
        uint32_t len;
        int id;

        vdrv_kick(&f->d, 1);
        id = vdrv_wait(&f->d, 0, &len, 200);
        if (id < 0)
            continue;
        assert_int_equal(len, VIRTIO_NET_HDR_LEN + 128);
        frame = ram + f->rxbuf[id % 16] + VIRTIO_NET_HDR_LEN;
        assert_memory_equal(frame, our_mac, 6); /* MACs swapped by DPDK */
        assert_memory_equal(frame + 6, peer_mac, 6);
        for (int i = 14; i < 128; i++)
            assert_int_equal(frame[i], (uint8_t)(i * 3 + seed));
        got = 1;
    }
    assert_true(got);
    assert_int_equal(vdrv_wait(&f->d, 1, NULL, 5000), head); /* transmit buffer returned */
}

static void test_frame_round_trip(void **state)
{
    struct nfx f;
    (void)state;

    net_up(&f);
    round_trip(&f, 0, 50);
    /* The back-end signalled the receive queue's MSI-X vector. */
    for (int i = 0; i < 10000 && fake_vm_msi_count(f.vm, 0x61) == 0; i++)
        usleep(100);
    assert_true(fake_vm_msi_count(f.vm, 0x61) >= 1);
    net_down(&f);
}

/* The back-end crashes (SIGKILL) and a new one comes up on the same socket: the device
 * reconnects by itself and frames flow again, the driver never asked to reset it. */
static void test_backend_restart(void **state)
{
    struct nfx f;
    (void)state;

    net_up(&f);
    round_trip(&f, 1, 50);
    kill(pmd, SIGKILL);
    waitpid(pmd, NULL, 0);
    pmd = -1;
    unlink(sock);
    usleep(300000); /* the device notices and retries every 100 ms meanwhile */
    assert_int_equal(start_testpmd(), 0);
    round_trip(&f, 2, 100);
    round_trip(&f, 3, 50);
    assert_int_equal(vdrv_status(&f.d), 0xf); /* no DEVICE_NEEDS_RESET (0x40) */
    net_down(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_round_trip),
        /* Last: it restarts testpmd. */
        cmocka_unit_test(test_backend_restart),
    };
    int ret;

    if (system("command -v dpdk-testpmd >/dev/null 2>&1") != 0) {
        printf("skip: dpdk-testpmd is not installed\n");
        return 77;
    }
    strcpy(dir, "/tmp/qt-vu-net-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    snprintf(sock, sizeof(sock), "%s/vhost.sock", dir);
    if (start_testpmd() < 0) {
        printf("skip: dpdk-testpmd did not start (no memory for its mbuf pool?)\n");
        rmdir(dir);
        return 77;
    }
    ret = cmocka_run_group_tests_name("vhost-user-net", tests, NULL, NULL);
    stop_testpmd();
    unlink(sock);
    rmdir(dir);
    return ret;
}
