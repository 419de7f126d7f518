/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-net on a tap device (virtio 1.2, section 5.1).
 *
 * The tap is opened with IFF_VNET_HDR and a 12-byte vnet header, which is
 * exactly struct virtio_net_hdr_v1, so transmit chains are written to the tap
 * as they are (one writev) and received frames carry the header the guest
 * expects. Offloads are offered only as far as the tap accepted them:
 * receive-side offloads (GUEST_CSUM/TSO) need the matching TUNSETOFFLOAD and
 * are switched on at DRIVER_OK for what the driver negotiated.
 *
 * One thread serves both queues: it polls the tap, the two kick eventfds and
 * a stop eventfd. It reads the tap only while the driver has posted receive
 * buffers, and stops writing it while the tap's queue is full.
 */
#include "vmm/devices/virtio_net.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/config.h"
#include "vmm/device.h"
#include "vmm/devices/devstate.h"

#define NET_RXQ           0
#define NET_TXQ           1
#define NET_BUDGET        256 /* packets per queue per wakeup */
#define NET_MAX_FRAME     (65535 + 14 + 4)
#define NET_RX_BUF_SIZE   (VIRTIO_NET_HDR_LEN + NET_MAX_FRAME)
#define NET_MAX_RX_CHAINS 64

static void net_stat_add(uint64_t *c, uint64_t v)
{
    __atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

static bool net_has(const struct virtio_net *net, unsigned bit)
{
    return net->vdev.guest_features & (1ull << bit);
}

/* ---- transmit ---- */

/* Returns true when the tap is full and transmission must wait for POLLOUT. */
static bool net_tx_process(struct virtio_net *net, bool *notify)
{
    struct virtq *vq = &net->vdev.queues[NET_TXQ].vq;
    struct virtq_elem *elem = net->tx_elem;

    for (int n = 0; n < NET_BUDGET; n++) {
        ssize_t w;

        if (virtq_pop(vq, elem) != 1)
            return false;
        if (elem->out_len < VIRTIO_NET_HDR_LEN || elem->out_len > NET_RX_BUF_SIZE) {
            log_debug("net '%s': dropping a transmit chain of %llu bytes", net->vdev.name,
                      (unsigned long long)elem->out_len);
            net_stat_add(&net->stats.tx_dropped, 1);
            virtq_push(vq, elem->head, 0);
            *notify = true;
            continue;
        }
        w = writev(net->tap_fd, elem->iov, (int)elem->out_num);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            virtq_unpop(vq, 1);
            return true;
        }
        if (w < 0) {
            /* The kernel refused the frame (bad GSO header, link down): drop it. */
            log_debug("net '%s': tap write failed (%s)", net->vdev.name, strerror(errno));
            net_stat_add(&net->stats.tx_dropped, 1);
        } else {
            net_stat_add(&net->stats.tx_packets, 1);
            net_stat_add(&net->stats.tx_bytes, elem->out_len - VIRTIO_NET_HDR_LEN);
        }
        virtq_push(vq, elem->head, 0);
        *notify = true;
    }
    return false;
}

/* ---- receive ---- */

/* Copy one frame (with its vnet header) into receive chains. false: dropped. */
static bool net_rx_deliver(struct virtio_net *net, const uint8_t *pkt, size_t len)
{
    struct virtq *vq = &net->vdev.queues[NET_RXQ].vq;
    bool mrg = net_has(net, VIRTIO_NET_F_MRG_RXBUF);
    uint16_t nbufs = 0;
    size_t off = 0;

    while (off < len) {
        struct virtq_elem *elem;
        size_t chunk;

        if (nbufs == NET_MAX_RX_CHAINS || (!mrg && nbufs == 1))
            goto drop;
        elem = net->rx_elem[nbufs];
        if (virtq_pop(vq, elem) != 1)
            goto drop;
        nbufs++;
        if (elem->out_num || elem->in_len < (nbufs == 1 ? VIRTIO_NET_HDR_LEN : 1)) {
            if (elem->out_num)
                virtq_fail(vq, "receive chain %u has device-readable buffers", elem->head);
            goto drop;
        }
        chunk = len - off < elem->in_len ? len - off : elem->in_len;
        virtq_elem_write(elem, 0, pkt + off, chunk);
        virtq_fill(vq, elem->head, (uint32_t)chunk, (uint16_t)(nbufs - 1));
        off += chunk;
    }
    /* num_buffers lives in the first chain's header. */
    virtq_elem_write(net->rx_elem[0], offsetof(struct virtio_net_hdr_v1, num_buffers), &nbufs,
                     sizeof(nbufs));
    virtq_flush(vq, nbufs);
    return true;
drop:
    if (!vq->broken)
        virtq_unpop(vq, nbufs);
    return false;
}

/* Returns false when the driver has no receive buffers (wait for its kick). */
static bool net_rx_process(struct virtio_net *net, bool *notify)
{
    struct virtq *vq = &net->vdev.queues[NET_RXQ].vq;

    for (int n = 0; n < NET_BUDGET; n++) {
        ssize_t r;

        if (vq->broken || virtq_avail_count(vq) == 0)
            return false;
        r = read(net->tap_fd, net->rx_buf, NET_RX_BUF_SIZE);
        if (r < 0)
            return true; /* EAGAIN: the tap is empty */
        if (r < VIRTIO_NET_HDR_LEN) {
            net_stat_add(&net->stats.rx_dropped, 1);
            continue;
        }
        if (!net_rx_deliver(net, net->rx_buf, (size_t)r)) {
            net_stat_add(&net->stats.rx_dropped, 1);
            continue;
        }
        net_stat_add(&net->stats.rx_packets, 1);
        net_stat_add(&net->stats.rx_bytes, (uint64_t)r - VIRTIO_NET_HDR_LEN);
        *notify = true;
    }
    return true;
}

static void net_drain(int fd)
{
    uint64_t v;

    if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_debug("net: reading an eventfd failed (%s)", strerror(errno));
}

static void *net_thread(void *arg)
{
    struct virtio_net *net = arg;
    bool rx_ready = true, tx_blocked = false;

    for (;;) {
        struct pollfd fds[4] = {
            {.fd = net->stop_fd, .events = POLLIN},
            {.fd = net->vdev.queues[NET_TXQ].kick_fd, .events = POLLIN},
            {.fd = net->vdev.queues[NET_RXQ].kick_fd, .events = POLLIN},
            {.fd = net->tap_fd,
             .events = (short)((rx_ready ? POLLIN : 0) | (tx_blocked ? POLLOUT : 0))},
        };
        bool rx_notify = false, tx_notify = false;

        if (net->vdev.queues[NET_TXQ].vq.ready && !tx_blocked)
            tx_blocked = net_tx_process(net, &tx_notify);
        if (net->vdev.queues[NET_RXQ].vq.ready && rx_ready)
            rx_ready = net_rx_process(net, &rx_notify);
        if (tx_notify)
            virtio_dev_notify_queue(&net->vdev, NET_TXQ);
        if (rx_notify)
            virtio_dev_notify_queue(&net->vdev, NET_RXQ);

        fds[3].events = (short)((rx_ready ? POLLIN : 0) | (tx_blocked ? POLLOUT : 0));
        if (poll(fds, 4, -1) < 0) {
            if (errno == EINTR)
                continue;
            log_err("net '%s': poll failed (%s)", net->vdev.name, strerror(errno));
            break;
        }
        if (fds[0].revents)
            break;
        if (fds[1].revents)
            net_drain(fds[1].fd);
        if (fds[2].revents) {
            net_drain(fds[2].fd);
            rx_ready = true;
        }
        if (fds[3].revents & POLLOUT)
            tx_blocked = false;
        if (fds[3].revents & (POLLERR | POLLHUP)) {
            log_err("net '%s': tap '%s' failed", net->vdev.name, net->tap_name);
            break;
        }
    }
    return NULL;
}

/* ---- device ops ---- */

static uint32_t net_offloads_for(const struct virtio_net *net)
{
    uint32_t f = 0;

    if (net_has(net, VIRTIO_NET_F_GUEST_CSUM)) {
        f |= TUN_F_CSUM;
        if (net_has(net, VIRTIO_NET_F_GUEST_TSO4))
            f |= TUN_F_TSO4;
        if (net_has(net, VIRTIO_NET_F_GUEST_TSO6))
            f |= TUN_F_TSO6;
    }
    return f;
}

static void net_free_buffers(struct virtio_net *net)
{
    for (int i = 0; i < NET_MAX_RX_CHAINS; i++) {
        free(net->rx_elem[i]);
        net->rx_elem[i] = NULL;
    }
    free(net->tx_elem);
    net->tx_elem = NULL;
    free(net->rx_buf);
    net->rx_buf = NULL;
}

static int net_activate(struct virtio_dev *vdev)
{
    struct virtio_net *net = vdev->priv;
    uint32_t offloads = net_offloads_for(net);
    int ret;

    if (ioctl(net->tap_fd, TUNSETOFFLOAD, offloads) < 0) {
        log_err("net '%s': tap '%s' refused offloads 0x%x (%s)", vdev->name, net->tap_name,
                offloads, strerror(errno));
        return -errno;
    }
    for (int i = 0; i < NET_MAX_RX_CHAINS; i++)
        if (!(net->rx_elem[i] = virtq_elem_alloc(vdev->queues[NET_RXQ].size)))
            goto nomem;
    net->tx_elem = virtq_elem_alloc(vdev->queues[NET_TXQ].size);
    net->rx_buf = malloc(NET_RX_BUF_SIZE);
    if (!net->tx_elem || !net->rx_buf)
        goto nomem;
    net->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (net->stop_fd < 0) {
        ret = -errno;
        goto fail;
    }
    ret = -pthread_create(&net->thread, NULL, net_thread, net);
    if (ret < 0) {
        close(net->stop_fd);
        net->stop_fd = -1;
        goto fail;
    }
    net->running = true;
    return 0;
nomem:
    ret = -ENOMEM;
fail:
    net_free_buffers(net);
    return ret;
}

static void net_reset(struct virtio_dev *vdev)
{
    struct virtio_net *net = vdev->priv;
    uint64_t one = 1;

    if (!net->running)
        return;
    if (write(net->stop_fd, &one, sizeof(one)) != sizeof(one))
        log_err("net '%s': cannot stop its thread", vdev->name);
    pthread_join(net->thread, NULL);
    net->running = false;
    close(net->stop_fd);
    net->stop_fd = -1;
    net_free_buffers(net);
}

static void net_config_read(struct virtio_dev *vdev, uint32_t off, void *data, uint32_t len)
{
    struct virtio_net *net = vdev->priv;

    memcpy(data, (const uint8_t *)&net->config + off, len);
}

static const struct virtio_dev_ops net_ops = {
    .activate = net_activate,
    .reset = net_reset,
    .config_read = net_config_read,
};

/* ---- creation ---- */

static int net_open_tap(struct virtio_net *net, const char *name)
{
    struct ifreq ifr = {0};
    unsigned int features = 0;
    int hdr = VIRTIO_NET_HDR_LEN, ret;

    net->tap_fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (net->tap_fd < 0) {
        ret = -errno;
        log_err("net tap '%s': cannot open /dev/net/tun (%s)", name, strerror(errno));
        return ret;
    }
    if (ioctl(net->tap_fd, TUNGETFEATURES, &features) < 0 || !(features & IFF_VNET_HDR)) {
        log_err("net tap '%s': the kernel's tun driver lacks IFF_VNET_HDR", name);
        return -ENOTSUP;
    }
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (ioctl(net->tap_fd, TUNSETIFF, &ifr) < 0) {
        ret = -errno;
        log_err("net tap '%s': TUNSETIFF failed (%s)", name, strerror(errno));
        return ret;
    }
    snprintf(net->tap_name, sizeof(net->tap_name), "%s", ifr.ifr_name);
    if (ioctl(net->tap_fd, TUNSETVNETHDRSZ, &hdr) < 0) {
        ret = -errno;
        log_err("net tap '%s': TUNSETVNETHDRSZ 12 failed (%s)", name, strerror(errno));
        return ret;
    }
    /* Probe which receive offloads the tap takes, then start with none. */
    if (ioctl(net->tap_fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) == 0)
        net->tap_offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    else if (ioctl(net->tap_fd, TUNSETOFFLOAD, TUN_F_CSUM) == 0)
        net->tap_offloads = TUN_F_CSUM;
    if (ioctl(net->tap_fd, TUNSETOFFLOAD, 0) < 0) {
        ret = -errno;
        log_err("net tap '%s': TUNSETOFFLOAD failed (%s)", name, strerror(errno));
        return ret;
    }
    return 0;
}

int virtio_net_create(struct vm *vm, const struct net_config *nc, int index,
                      struct virtio_net **out)
{
    struct virtio_net *net = calloc(1, sizeof(*net));
    uint16_t qsize = nc->queue_size ? (uint16_t)nc->queue_size : 256;
    uint64_t features;
    char name[32];
    int ret;

    if (!net)
        return -ENOMEM;
    net->tap_fd = net->stop_fd = -1;
    if (!nc->tap || (nc->num_queues && nc->num_queues != 2) || qsize < 4 || qsize > 1024) {
        log_err("net %d: need a tap name, one queue pair and a queue size of 4-1024", index);
        ret = -EINVAL;
        goto fail;
    }
    ret = net_open_tap(net, nc->tap);
    if (ret < 0)
        goto fail;
    if (nc->has_mac) {
        memcpy(net->config.mac, nc->mac, 6);
    } else {
        /* Locally administered unicast 52:54:00:xx:xx:xx. */
        net->config.mac[0] = 0x52;
        net->config.mac[1] = 0x54;
        if (getrandom(&net->config.mac[3], 3, 0) != 3)
            net->config.mac[5] = (uint8_t)index;
    }
    net->config.status = VIRTIO_NET_S_LINK_UP;
    net->config.max_virtqueue_pairs = 1;
    features = (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_STATUS) |
               (1ull << VIRTIO_NET_F_MRG_RXBUF);
    /*
     * Checksum and TSO in either direction only when the tap accepted the
     * matching TUNSETOFFLOAD: then it both completes what we write and can
     * hand us partial-checksum / GSO frames.
     */
    if (net->tap_offloads & TUN_F_CSUM)
        features |= (1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_GUEST_CSUM);
    if (net->tap_offloads & TUN_F_TSO4)
        features |= (1ull << VIRTIO_NET_F_HOST_TSO4) | (1ull << VIRTIO_NET_F_GUEST_TSO4);
    if (net->tap_offloads & TUN_F_TSO6)
        features |= (1ull << VIRTIO_NET_F_HOST_TSO6) | (1ull << VIRTIO_NET_F_GUEST_TSO6);
    snprintf(name, sizeof(name), "net%d", index);
    ret = virtio_dev_init(&net->vdev, vm, name, VIRTIO_ID_NET, 0x020000, features, 2, qsize,
                          sizeof(net->config), &net_ops, net);
    if (ret < 0)
        goto fail;
    *out = net;
    return 0;
fail:
    if (net->tap_fd >= 0)
        close(net->tap_fd);
    free(net);
    return ret;
}

void virtio_net_destroy(struct virtio_net *net)
{
    if (!net)
        return;
    virtio_dev_destroy(&net->vdev);
    close(net->tap_fd);
    free(net);
}

void virtio_net_stats(struct virtio_net *net, json_object *devices)
{
    json_object *o = json_object_new_object();
    char mac[18];

    snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", net->config.mac[0],
             net->config.mac[1], net->config.mac[2], net->config.mac[3], net->config.mac[4],
             net->config.mac[5]);
    json_object_object_add(o, "id", json_object_new_string(net->vdev.name));
    json_object_object_add(o, "type", json_object_new_string("virtio-net"));
    json_object_object_add(o, "tap", json_object_new_string(net->tap_name));
    json_object_object_add(o, "mac", json_object_new_string(mac));
    json_object_object_add(o, "pci_slot", json_object_new_int(net->vdev.pci.slot));
    json_object_object_add(o, "status", json_object_new_int(virtio_dev_status(&net->vdev)));
#define STAT(n)                                                                                    \
    json_object_object_add(                                                                        \
        o, #n, json_object_new_uint64(__atomic_load_n(&net->stats.n, __ATOMIC_RELAXED)))
    STAT(rx_packets);
    STAT(rx_bytes);
    STAT(rx_dropped);
    STAT(tx_packets);
    STAT(tx_bytes);
    STAT(tx_dropped);
#undef STAT
    json_object_array_add(devices, o);
}

/* ---- registration ---- */

struct net_list {
    int n;
    struct virtio_net *net[VM_MAX_NETS];
};

static void virtio_net_exit_all(struct vm *vm)
{
    struct net_list *list = devstate_get(vm, "virtio-net");

    if (!list)
        return;
    for (int i = list->n - 1; i >= 0; i--)
        virtio_net_destroy(list->net[i]);
    devstate_clear(vm, "virtio-net");
    free(list);
}

static int virtio_net_init_all(struct vm *vm, const struct vm_config *cfg)
{
    struct pci_bus *bus = pci_bus_of(vm);
    struct net_list *list;
    int ret;

    if (cfg->n_nets == 0)
        return 0;
    if (!bus) {
        log_err("virtio-net: no PCI bus");
        return -ENODEV;
    }
    list = calloc(1, sizeof(*list));
    if (!list)
        return -ENOMEM;
    ret = devstate_set(vm, "virtio-net", list);
    if (ret < 0) {
        free(list);
        return ret;
    }
    for (int i = 0; i < cfg->n_nets && i < VM_MAX_NETS; i++) {
        struct virtio_net *net;

        if (cfg->nets[i].vhost_socket)
            continue; /* vhost-user-net frontend */
        ret = virtio_net_create(vm, &cfg->nets[i], i, &net);
        if (ret < 0)
            goto fail;
        ret = virtio_dev_plug(&net->vdev, bus);
        if (ret < 0) {
            virtio_net_destroy(net);
            goto fail;
        }
        list->net[list->n++] = net;
        log_info("net: virtio-net %s on tap '%s', offloads from tap 0x%x", net->vdev.name,
                 net->tap_name, net->tap_offloads);
    }
    return 0;
fail:
    virtio_net_exit_all(vm);
    return ret;
}

static void virtio_net_stats_all(struct vm *vm, json_object *devices)
{
    struct net_list *list = devstate_get(vm, "virtio-net");

    for (int i = 0; list && i < list->n; i++)
        virtio_net_stats(list->net[i], devices);
}

VMM_DEVICE(virtio_net, DEV_LEVEL_VIRTIO, virtio_net_init_all, virtio_net_exit_all,
           virtio_net_stats_all)
