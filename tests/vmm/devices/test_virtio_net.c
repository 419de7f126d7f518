/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-net against a real peer: the Linux kernel behind a tap in a private
 * network namespace. The test plays the guest driver on fake_vm, sends an ARP
 * request for the namespace's address and expects the kernel's ARP reply on
 * the receive queue. Needs root and /dev/net/tun; skips (77) otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_vm.h"
#include "vdrv.h"
#include "vmm/config.h"
#include "vmm/devices/virtio_net.h"

static char netns[32], tap[16];

__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...)
{
    char cmd[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static const uint8_t our_mac[6] = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};

static size_t build_arp_request(uint8_t *p)
{
    static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t hdr[8] = {0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01};
    static const uint8_t sip[4] = {10, 98, 0, 2}, tip[4] = {10, 98, 0, 1};

    memset(p, 0, VIRTIO_NET_HDR_LEN);
    p += VIRTIO_NET_HDR_LEN;
    memcpy(p, bcast, 6);
    memcpy(p + 6, our_mac, 6);
    p[12] = 0x08;
    p[13] = 0x06;
    memcpy(p + 14, hdr, 8);
    memcpy(p + 22, our_mac, 6);
    memcpy(p + 28, sip, 4);
    memset(p + 32, 0, 6);
    memcpy(p + 38, tip, 4);
    return VIRTIO_NET_HDR_LEN + 42;
}

static void test_arp_through_tap(void **state)
{
    struct vm *vm = fake_vm_new(16 << 20);
    struct net_config nc = {.tap = tap, .has_mac = true, .queue_size = 16};
    struct pci_bus *bus;
    struct virtio_net *net;
    struct vdrv d;
    uint64_t rxbuf[8], txbuf, want;
    int got_reply = 0;

    memcpy(nc.mac, our_mac, 6);
    assert_int_equal(pci_bus_create(vm, &bus), 0);
    assert_int_equal(virtio_net_create(vm, &nc, 0, &net), 0);
    assert_int_equal(virtio_dev_plug(&net->vdev, bus), 0);
    assert_int_equal(vdrv_open(&d, vm, 0x1041, 0), 0);
    /* MAC in config space, link up. */
    for (int i = 0; i < 6; i++)
        assert_int_equal(vdrv_devcfg_read(&d, (uint32_t)i, 1), our_mac[i]);
    assert_int_equal(vdrv_devcfg_read(&d, 6, 2), VIRTIO_NET_S_LINK_UP);
    /* Offloads are offered exactly as far as the tap took them. */
    {
        uint64_t feat = vdrv_device_features(&d);

        assert_int_equal(!!(feat & (1ull << VIRTIO_NET_F_GUEST_CSUM)),
                         !!(net->tap_offloads & TUN_F_CSUM));
        assert_int_equal(!!(feat & (1ull << VIRTIO_NET_F_CSUM)),
                         !!(net->tap_offloads & TUN_F_CSUM));
        assert_int_equal(!!(feat & (1ull << VIRTIO_NET_F_GUEST_TSO4)),
                         !!(net->tap_offloads & TUN_F_TSO4));
        assert_int_equal(!!(feat & (1ull << VIRTIO_NET_F_HOST_TSO6)),
                         !!(net->tap_offloads & TUN_F_TSO6));
        assert_true(feat & (1ull << VIRTIO_NET_F_MRG_RXBUF));
    }
    want = (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_MRG_RXBUF) |
           (1ull << VIRTIO_NET_F_STATUS) | (1ull << VIRTIO_NET_F_CSUM);
    assert_true(vdrv_negotiate(&d, want) & 0x8);
    assert_int_equal(vdrv_setup_queue(&d, 0, 16, 0xffff), 0);
    assert_int_equal(vdrv_setup_queue(&d, 1, 16, 0xffff), 0);
    for (int i = 0; i < 8; i++) {
        struct vdrv_buf b;

        rxbuf[i] = vdrv_alloc(&d, 2048);
        b = (struct vdrv_buf){rxbuf[i], 2048, true};
        vdrv_submit(&d, 0, &b, 1);
    }
    vdrv_driver_ok(&d);
    vdrv_kick(&d, 0);

    /* A transmit chain shorter than the vnet header is dropped, not fatal. */
    txbuf = vdrv_alloc(&d, 4096);
    {
        struct vdrv_buf b = {txbuf, 4, false};
        int head = vdrv_submit(&d, 1, &b, 1);

        vdrv_kick(&d, 1);
        assert_int_equal(vdrv_wait(&d, 1, NULL, 10000), head);
        assert_int_equal(net->stats.tx_dropped, 1);
    }
    /* ARP request, header and frame split over two descriptors. */
    {
        uint8_t *p = fake_vm_ram(vm) + txbuf;
        size_t len = build_arp_request(p);
        struct vdrv_buf b[2] = {
            {txbuf, VIRTIO_NET_HDR_LEN, false},
            {txbuf + VIRTIO_NET_HDR_LEN, (uint32_t)len - VIRTIO_NET_HDR_LEN, false}};
        int head = vdrv_submit(&d, 1, b, 2);

        vdrv_kick(&d, 1);
        assert_int_equal(vdrv_wait(&d, 1, NULL, 10000), head);
        assert_int_equal(net->stats.tx_packets, 1);
    }
    /* The kernel answers; skip anything else it sends (IPv6 ND and such). */
    for (int n = 0; n < 64 && !got_reply; n++) {
        uint32_t len;
        int id = vdrv_wait(&d, 0, &len, 10000);
        uint8_t *pkt;
        uint16_t nbufs;
        struct vdrv_buf again;

        assert_true(id >= 0);
        assert_true(len >= VIRTIO_NET_HDR_LEN + 42);
        pkt = fake_vm_ram(vm) + rxbuf[id % 8];
        memcpy(&nbufs, pkt + 10, 2);
        assert_int_equal(nbufs, 1);
        pkt += VIRTIO_NET_HDR_LEN;
        if (pkt[12] == 0x08 && pkt[13] == 0x06 && pkt[21] == 2) {
            assert_memory_equal(pkt, our_mac, 6);      /* to us */
            assert_memory_equal(pkt + 32, our_mac, 6); /* target hw address */
            assert_int_equal(pkt[28], 10);
            assert_int_equal(pkt[31], 1); /* sender 10.98.0.1 */
            got_reply = 1;
        }
        /* Re-post the buffer once read (the ring hands out descriptors in order). */
        again = (struct vdrv_buf){rxbuf[id % 8], 2048, true};
        vdrv_submit(&d, 0, &again, 1);
        vdrv_kick(&d, 0);
    }
    assert_true(got_reply);
    assert_true(net->stats.rx_packets >= 1);

    virtio_net_destroy(net);
    pci_bus_destroy(bus);
    fake_vm_free(vm);
}

static void test_rx_readable_buffer_breaks_queue(void **state)
{
    struct vm *vm = fake_vm_new(16 << 20);
    struct net_config nc = {.tap = tap, .has_mac = true, .queue_size = 16};
    struct pci_bus *bus;
    struct virtio_net *net;
    struct vdrv d;
    uint64_t rx, tx;

    memcpy(nc.mac, our_mac, 6);
    assert_int_equal(pci_bus_create(vm, &bus), 0);
    assert_int_equal(virtio_net_create(vm, &nc, 0, &net), 0);
    assert_int_equal(virtio_dev_plug(&net->vdev, bus), 0);
    assert_int_equal(vdrv_open(&d, vm, 0x1041, 0), 0);
    assert_true(vdrv_negotiate(&d, 1ull << VIRTIO_NET_F_MAC) & 0x8);
    assert_int_equal(vdrv_setup_queue(&d, 0, 16, 0xffff), 0);
    assert_int_equal(vdrv_setup_queue(&d, 1, 16, 0xffff), 0);
    /* A receive buffer the device may only read: the driver is broken. */
    rx = vdrv_alloc(&d, 2048);
    {
        struct vdrv_buf b = {rx, 2048, false};

        vdrv_submit(&d, 0, &b, 1);
    }
    vdrv_driver_ok(&d);
    tx = vdrv_alloc(&d, 4096);
    {
        size_t len = build_arp_request(fake_vm_ram(vm) + tx);
        struct vdrv_buf b = {tx, (uint32_t)len, false};

        vdrv_submit(&d, 1, &b, 1);
        vdrv_kick(&d, 1);
    }
    for (int i = 0; i < 10000 && !(vdrv_status(&d) & 0x40); i++)
        usleep(1000);
    assert_true(vdrv_status(&d) & 0x40);
    assert_int_equal(net->stats.rx_packets, 0);
    virtio_net_destroy(net);
    pci_bus_destroy(bus);
    fake_vm_free(vm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arp_through_tap),
        cmocka_unit_test(test_rx_readable_buffer_breaks_queue),
    };
    int fd, ret;

    if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0) {
        printf("skip: needs root and /dev/net/tun\n");
        return 77;
    }
    snprintf(netns, sizeof(netns), "qtdev-%d", getpid());
    snprintf(tap, sizeof(tap), "qtdt%d", getpid() % 100000);
    if (sh("ip netns add %s", netns) != 0) {
        printf("skip: cannot create a network namespace\n");
        return 77;
    }
    /* No IPv6 on the tap: its router solicitations would crowd the receive queue. */
    if (sh("ip netns exec %s sh -c 'ip link set lo up && "
           "sysctl -qw net.ipv6.conf.default.disable_ipv6=1 2>/dev/null; "
           "ip tuntap add dev %s mode tap && "
           "ip addr add 10.98.0.1/24 dev %s && ip link set %s up'",
           netns, tap, tap, tap) != 0) {
        sh("ip netns del %s", netns);
        printf("skip: cannot create tap '%s'\n", tap);
        return 77;
    }
    {
        char path[64];

        snprintf(path, sizeof(path), "/run/netns/%s", netns);
        fd = open(path, O_RDONLY);
        if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
            sh("ip netns del %s", netns);
            printf("skip: cannot enter namespace %s\n", netns);
            return 77;
        }
        close(fd);
    }
    ret = cmocka_run_group_tests_name("virtio-net", tests, NULL, NULL);
    sh("ip netns del %s", netns);
    return ret;
}
