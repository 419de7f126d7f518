/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user front-end devices: virtio-blk and virtio-net whose queues are
 * served by an external back-end (qtcard, qemu-storage-daemon, DPDK). The
 * guest talks to our virtio-pci transport; at DRIVER_OK we hand the back-end
 * guest RAM (memfd regions), the ring addresses, the queue's kick eventfd
 * (the ioeventfd on the notify address) and the call eventfd (the MSI-X
 * vector's irqfd), so the data path never passes through the VMM.
 */
#include "vmm/devices/vhost_user_dev.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/config.h"
#include "vmm/device.h"
#include "vmm/devices/devstate.h"
#include "vmm/devices/virtio_blk.h"
#include "vmm/devices/virtio_net.h"

#define VU_TRANSPORT_FEATURES                                                                      \
    ((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) |                        \
     (1ull << VIRTIO_RING_F_EVENT_IDX))

/* Device features a back-end may offer through us (no config writes: no CONFIG_WCE). */
#define VU_BLK_FEATURES                                                                            \
    ((1ull << VIRTIO_BLK_F_SIZE_MAX) | (1ull << VIRTIO_BLK_F_SEG_MAX) |                            \
     (1ull << VIRTIO_BLK_F_GEOMETRY) | (1ull << VIRTIO_BLK_F_RO) |                                 \
     (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_FLUSH) |                              \
     (1ull << VIRTIO_BLK_F_TOPOLOGY) | (1ull << VIRTIO_BLK_F_MQ) |                                 \
     (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES))
#define VU_NET_FEATURES                                                                            \
    ((1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_GUEST_CSUM) |                             \
     (1ull << VIRTIO_NET_F_GUEST_TSO4) | (1ull << VIRTIO_NET_F_GUEST_TSO6) |                       \
     (1ull << VIRTIO_NET_F_HOST_TSO4) | (1ull << VIRTIO_NET_F_HOST_TSO6) |                         \
     (1ull << VIRTIO_NET_F_MRG_RXBUF))
/* Features the front-end implements itself (config space it owns). */
#define VU_NET_LOCAL_FEATURES ((1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_STATUS))

#define VU_PROTOCOL_WANTED                                                                         \
    ((1ull << VHOST_USER_PROTOCOL_F_MQ) | (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) |              \
     (1ull << VHOST_USER_PROTOCOL_F_CONFIG))

static void vu_config_read(struct virtio_dev *vdev, uint32_t off, void *data, uint32_t len)
{
    struct vhost_user_dev *d = vdev->priv;

    memcpy(data, d->config + off, len);
}

static int vu_start_queue(struct vhost_user_dev *d, uint16_t q, uint16_t base);
static int vu_reconnect(struct vhost_user_dev *d);

static uint64_t vu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The running device's state to the back-end: the features the guest acked, guest memory,
 * and each queue in run[] started at ring position 0 (DRIVER_OK) or, after a reconnect
 * (from_used), where the guest saw the old back-end stop: its used index. */
static int vu_send_state(struct vhost_user_dev *d, const bool *run, bool from_used)
{
    int ret = vhost_user_set_features(&d->vu, d->acked);

    if (ret == 0)
        ret = vhost_user_set_mem_table(&d->vu, d->vdev.vm);
    for (uint16_t q = 0; ret == 0 && q < d->vdev.num_queues; q++) {
        uint16_t base = 0;

        if (!run[q])
            continue;
        if (from_used) {
            uint16_t *used_idx = vm_gpa_to_hva(d->vdev.vm, d->vdev.queues[q].used + 2, 2);
            if (!used_idx)
                return -EINVAL;
            base = __atomic_load_n(used_idx, __ATOMIC_ACQUIRE);
        }
        ret = vu_start_queue(d, q, base);
    }
    return ret;
}

/* After a reconnect: the old connection's queues are gone, the state goes again. */
static int vu_replay(struct vhost_user_dev *d, const bool *was)
{
    for (uint16_t q = 0; q < d->vdev.num_queues; q++) {
        d->started[q] = false;
        if (d->err_fd[q] >= 0)
            close(d->err_fd[q]);
        d->err_fd[q] = -1;
    }
    return vu_send_state(d, was, true);
}

/*
 * Net only: the back-end went away (qtcard restarted or crashed). Connect again every
 * 100 ms and replay the device's state, so that the guest's NIC carries on without a
 * reset; frames sent meanwhile wait in the rings or are lost, as on a cable pulled and
 * plugged back. Chains the old back-end popped but did not complete are taken again
 * from the used index (net back-ends complete in order). 1 when the back-end is back, 0
 * when the device is stopping (stop_fd), -1 when the new back-end cannot serve the
 * device (it lacks a feature the guest may use).
 */
static int vu_recover(struct vhost_user_dev *d)
{
    uint64_t t0 = vu_now_ms();
    unsigned tries = 0;
    int last = 0;
    bool was[VIRTIO_MAX_QUEUES]; /* the queues running when the back-end went */

    memcpy(was, d->started, sizeof(was));
    log_warn("vhost-user '%s': back-end '%s' closed the connection; reconnecting (the guest's "
             "device keeps running)",
             d->vdev.name, d->vu.path);
    for (;;) {
        struct pollfd p = {.fd = d->stop_fd, .events = POLLIN};
        int ret;

        if (poll(&p, 1, tries ? 100 : 0) > 0)
            return 0;
        tries++;
        ret = vu_reconnect(d);
        if (ret == 0)
            ret = vu_replay(d, was);
        if (ret == 0) {
            log_info("vhost-user '%s': back-end back after %llu ms (%u attempts); rings resumed",
                     d->vdev.name, (unsigned long long)(vu_now_ms() - t0), tries);
            return 1;
        }
        if (ret == -EPROTO && d->vu.dead)
            return -1;   /* features missing: logged by vu_reconnect */
        if (ret != last) /* each new reason once */
            log_warn("vhost-user '%s': reconnecting to '%s': %s", d->vdev.name, d->vu.path,
                     strerror(-ret));
        last = ret;
        if (tries % 100 == 0)
            log_warn("vhost-user '%s': no back-end at '%s' for %llu s; still trying", d->vdev.name,
                     d->vu.path, (unsigned long long)(vu_now_ms() - t0) / 1000);
    }
}

/*
 * The back-end reports ring errors on the error eventfds (the guest must reset the device)
 * and goes away by closing the socket: a vhost-user-net back-end is reconnected
 * (vu_recover), a blk one needs the guest to reset the device (requests it had in flight
 * may have completed out of order: only the guest can tell).
 */
static void *vu_monitor(void *arg)
{
    struct vhost_user_dev *d = arg;
    struct pollfd fds[VIRTIO_MAX_QUEUES + 2];
    uint64_t recovered_at = 0;
    int n;

rebuild:
    n = 0;
    fds[n++] = (struct pollfd){.fd = d->stop_fd, .events = POLLIN};
    /* POLLRDHUP only: replies on the socket belong to the vCPU thread. */
    fds[n++] = (struct pollfd){.fd = d->vu.fd, .events = POLLRDHUP};
    for (uint16_t q = 0; q < d->vdev.num_queues; q++)
        if (d->err_fd[q] >= 0)
            fds[n++] = (struct pollfd){.fd = d->err_fd[q], .events = POLLIN};
    for (;;) {
        if (poll(fds, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[0].revents)
            break;
        /* Ring errors first: a back-end that reports one and hangs up (qtcard does for a
         * malformed ring) must not be reconnected to the same broken rings. */
        for (int i = 2; i < n; i++) {
            uint64_t v;

            if (!fds[i].revents)
                continue;
            if (read(fds[i].fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                continue;
            log_err("vhost-user '%s': back-end reported a ring error; device needs reset",
                    d->vdev.name);
            virtio_dev_set_needs_reset(&d->vdev);
        }
        if (fds[1].revents) {
            /* Not after a ring error, nor when the last reconnect was under 2 s ago (a
             * back-end that keeps hanging up on these rings): then the guest resets. */
            bool again = d->type == VIRTIO_ID_NET &&
                         !(virtio_dev_status(&d->vdev) & VIRTIO_STATUS_NEEDS_RESET) &&
                         (!recovered_at || vu_now_ms() - recovered_at >= 2000);
            int r = again ? vu_recover(d) : -1;
            if (r > 0) {
                recovered_at = vu_now_ms();
                goto rebuild;
            }
            if (r < 0) {
                log_err("vhost-user '%s': back-end '%s' closed the connection; device needs "
                        "reset",
                        d->vdev.name, d->vu.path);
                virtio_dev_set_needs_reset(&d->vdev);
            }
            break;
        }
    }
    return NULL;
}

static void vu_monitor_stop(struct vhost_user_dev *d)
{
    uint64_t one = 1;

    if (d->monitor_running) {
        if (write(d->stop_fd, &one, sizeof(one)) != sizeof(one))
            log_err("vhost-user '%s': cannot stop the monitor thread", d->vdev.name);
        pthread_join(d->monitor, NULL);
        d->monitor_running = false;
    }
    if (d->stop_fd >= 0)
        close(d->stop_fd);
    d->stop_fd = -1;
    for (uint16_t q = 0; q < VIRTIO_MAX_QUEUES; q++) {
        if (d->err_fd[q] >= 0)
            close(d->err_fd[q]);
        d->err_fd[q] = -1;
    }
}

static void vu_stop_queues(struct vhost_user_dev *d)
{
    bool proto;

    /* The monitor first: it may be reconnecting, and the socket is ours alone after. */
    vu_monitor_stop(d);
    proto = d->vu.features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES);
    for (uint16_t q = 0; q < d->vdev.num_queues; q++) {
        uint32_t base;

        if (!d->started[q])
            continue;
        if (proto)
            vhost_user_set_vring_enable(&d->vu, q, false);
        /* GET_VRING_BASE stops the ring in the back-end. */
        if (vhost_user_get_vring_base(&d->vu, q, &base) == 0)
            log_debug("vhost-user '%s': queue %u stopped at %u", d->vdev.name, q, base);
        d->started[q] = false;
    }
}

/* Start queue q at ring position base (0 at DRIVER_OK; the used index after a reconnect). */
static int vu_start_queue(struct vhost_user_dev *d, uint16_t q, uint16_t base)
{
    struct virtio_queue *vq = &d->vdev.queues[q];
    struct vm *vm = d->vdev.vm;
    void *desc = vm_gpa_to_hva(vm, vq->desc, 16ull * vq->size);
    void *avail = vm_gpa_to_hva(vm, vq->avail, 6ull + 2ull * vq->size);
    void *used = vm_gpa_to_hva(vm, vq->used, 6ull + 8ull * vq->size);
    int ret;

    if (!desc || !avail || !used) {
        log_warn("vhost-user '%s': queue %u rings are outside guest RAM", d->vdev.name, q);
        return -EINVAL;
    }
    if ((ret = vhost_user_set_vring_num(&d->vu, q, vq->size)) < 0 ||
        (ret = vhost_user_set_vring_base(&d->vu, q, base)) < 0 ||
        (ret = vhost_user_set_vring_addr(&d->vu, q, (uint64_t)(uintptr_t)desc,
                                         (uint64_t)(uintptr_t)used, (uint64_t)(uintptr_t)avail)) <
            0 ||
        (ret = vhost_user_set_vring_kick(&d->vu, q, vq->kick_fd)) < 0 ||
        (ret = vhost_user_set_vring_call(&d->vu, q, virtio_dev_queue_call_fd(&d->vdev, q))) < 0)
        return ret;
    d->err_fd[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->err_fd[q] < 0)
        return -errno;
    ret = vhost_user_set_vring_err(&d->vu, q, d->err_fd[q]);
    if (ret < 0)
        return ret;
    d->started[q] = true;
    if (d->vu.features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES)) {
        ret = vhost_user_set_vring_enable(&d->vu, q, true);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/*
 * The back-end went away (restarted qtcard, qemu-storage-daemon): connect
 * again when the driver restarts the device, provided the new back-end still
 * offers everything the driver may have negotiated.
 */
static int vu_reconnect(struct vhost_user_dev *d)
{
    char path[sizeof(d->vu.path)], name[sizeof(d->vu.name)];
    uint64_t offered = d->vdev.host_features & ~VU_NET_LOCAL_FEATURES;
    int ret;

    snprintf(path, sizeof(path), "%s", d->vu.path);
    snprintf(name, sizeof(name), "%s", d->vu.name);
    vhost_user_close(&d->vu);
    ret = vhost_user_connect(&d->vu, path, name);
    if (ret == 0)
        ret = vhost_user_handshake(&d->vu, VU_PROTOCOL_WANTED);
    if (ret == 0 && (offered & ~d->vu.features)) {
        log_err("vhost-user '%s': the back-end at '%s' no longer offers features 0x%llx", name,
                path, (unsigned long long)(offered & ~d->vu.features));
        d->vu.dead = true;
        ret = -EPROTO;
    }
    if (ret == 0)
        log_info("vhost-user '%s': reconnected to '%s'", name, path);
    return ret;
}

static int vu_activate(struct virtio_dev *vdev)
{
    struct vhost_user_dev *d = vdev->priv;
    bool run[VIRTIO_MAX_QUEUES];
    int ret;

    if (d->vu.dead || d->vu.fd < 0) {
        ret = vu_reconnect(d);
        if (ret < 0)
            return ret;
    }
    d->acked = vdev->guest_features & d->vu.features;
    d->acked |= d->vu.features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES);
    for (uint16_t q = 0; q < vdev->num_queues; q++)
        run[q] = vdev->queues[q].enabled;
    ret = vu_send_state(d, run, false);
    if (ret == 0) {
        d->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        ret = d->stop_fd < 0 ? -errno : -pthread_create(&d->monitor, NULL, vu_monitor, d);
        d->monitor_running = ret == 0;
    }
    if (ret < 0) {
        log_err("vhost-user '%s': starting the back-end at '%s' failed (%d)", vdev->name,
                d->vu.path, ret);
        vu_stop_queues(d);
    }
    return ret;
}

static void vu_reset(struct virtio_dev *vdev)
{
    vu_stop_queues(vdev->priv);
}

static const struct virtio_dev_ops vu_ops = {
    .activate = vu_activate,
    .reset = vu_reset,
    .config_read = vu_config_read,
};

static int vu_create(struct vm *vm, int type, const char *socket, const char *name,
                     uint32_t want_queues, uint32_t queue_size, const struct net_config *nc,
                     struct vhost_user_dev **out)
{
    struct vhost_user_dev *d = calloc(1, sizeof(*d));
    uint64_t backend_queues = 1, features;
    uint16_t nq;
    int ret;

    if (!d)
        return -ENOMEM;
    d->type = type;
    d->stop_fd = -1;
    for (uint16_t q = 0; q < VIRTIO_MAX_QUEUES; q++)
        d->err_fd[q] = -1;
    ret = vhost_user_connect(&d->vu, socket, name);
    if (ret < 0) {
        log_err("vhost-user '%s': cannot connect to the back-end at '%s' (%s)", name, socket,
                strerror(-ret));
        goto fail_free;
    }
    ret = vhost_user_handshake(&d->vu, VU_PROTOCOL_WANTED);
    if (ret < 0)
        goto fail;
    if (!(d->vu.features & (1ull << VIRTIO_F_VERSION_1))) {
        log_err("vhost-user '%s': back-end at '%s' does not offer VIRTIO_F_VERSION_1", name,
                socket);
        ret = -ENOTSUP;
        goto fail;
    }
    if (d->vu.protocol_features & (1ull << VHOST_USER_PROTOCOL_F_MQ)) {
        ret = vhost_user_get_queue_num(&d->vu, &backend_queues);
        if (ret < 0)
            goto fail;
    }
    if (type == VIRTIO_ID_BLOCK) {
        struct virtio_blk_config bc;

        nq = (uint16_t)(want_queues ? want_queues : 1);
        if (nq > backend_queues || nq > VIRTIO_BLK_MAX_QUEUES) {
            log_err("vhost-user '%s': %u queues asked, the back-end serves %" PRIu64, name, nq,
                    backend_queues);
            ret = -EINVAL;
            goto fail;
        }
        ret = vhost_user_get_config(&d->vu, 0, &bc, sizeof(bc));
        if (ret < 0) {
            log_err("vhost-user '%s': cannot read the disk's configuration (%d)", name, ret);
            goto fail;
        }
        bc.num_queues = nq;
        memcpy(d->config, &bc, sizeof(bc));
        d->config_len = sizeof(bc);
        features = d->vu.features & VU_BLK_FEATURES;
        if (nq == 1)
            features &= ~(1ull << VIRTIO_BLK_F_MQ);
    } else {
        struct virtio_net_config ncfg = {.status = VIRTIO_NET_S_LINK_UP, .max_virtqueue_pairs = 1};

        nq = 2;
        if (nc && nc->has_mac) {
            memcpy(ncfg.mac, nc->mac, 6);
        } else {
            ncfg.mac[0] = 0x52;
            ncfg.mac[1] = 0x54;
            if (getrandom(&ncfg.mac[3], 3, 0) != 3)
                ncfg.mac[5] = 1;
        }
        memcpy(d->config, &ncfg, sizeof(ncfg));
        d->config_len = sizeof(ncfg);
        features = (d->vu.features & VU_NET_FEATURES) | VU_NET_LOCAL_FEATURES;
    }
    ret = virtio_dev_init(&d->vdev, vm, name, (uint16_t)type,
                          type == VIRTIO_ID_BLOCK ? 0x018000 : 0x020000, features, nq,
                          (uint16_t)(queue_size ? queue_size : 256), d->config_len, &vu_ops, d);
    if (ret < 0)
        goto fail;
    /* Only the transport features the back-end implements. */
    d->vdev.host_features = features | (d->vu.features & VU_TRANSPORT_FEATURES);
    *out = d;
    return 0;
fail:
    vhost_user_close(&d->vu);
fail_free:
    free(d);
    return ret;
}

int vhost_user_blk_create(struct vm *vm, const struct disk_config *dc, int index,
                          struct vhost_user_dev **out)
{
    char name[32];

    snprintf(name, sizeof(name), "vhost-blk%d", index);
    return vu_create(vm, VIRTIO_ID_BLOCK, dc->vhost_socket, name, dc->num_queues, dc->queue_size,
                     NULL, out);
}

int vhost_user_net_create(struct vm *vm, const struct net_config *nc, int index,
                          struct vhost_user_dev **out)
{
    char name[32];

    snprintf(name, sizeof(name), "vhost-net%d", index);
    return vu_create(vm, VIRTIO_ID_NET, nc->vhost_socket, name, 2, nc->queue_size, nc, out);
}

void vhost_user_dev_destroy(struct vhost_user_dev *d)
{
    if (!d)
        return;
    virtio_dev_destroy(&d->vdev);
    vhost_user_close(&d->vu);
    free(d);
}

void vhost_user_dev_stats(struct vhost_user_dev *d, json_object *devices)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "id", json_object_new_string(d->vdev.name));
    json_object_object_add(
        o, "type",
        json_object_new_string(d->type == VIRTIO_ID_BLOCK ? "vhost-user-blk" : "vhost-user-net"));
    json_object_object_add(o, "socket", json_object_new_string(d->vu.path));
    json_object_object_add(o, "pci_slot", json_object_new_int(d->vdev.pci.slot));
    json_object_object_add(o, "status", json_object_new_int(virtio_dev_status(&d->vdev)));
    json_object_object_add(o, "backend_features", json_object_new_uint64(d->vu.features));
    json_object_array_add(devices, o);
}

/* ---- registration ---- */

struct vu_list {
    int n;
    struct vhost_user_dev *dev[VM_MAX_DISKS + VM_MAX_NETS];
};

static void vhost_user_exit_all(struct vm *vm)
{
    struct vu_list *list = devstate_get(vm, "vhost-user");

    if (!list)
        return;
    for (int i = list->n - 1; i >= 0; i--)
        vhost_user_dev_destroy(list->dev[i]);
    devstate_clear(vm, "vhost-user");
    free(list);
}

static int vhost_user_init_all(struct vm *vm, const struct vm_config *cfg)
{
    struct pci_bus *bus = pci_bus_of(vm);
    struct vu_list *list;
    int ret = 0;

    list = calloc(1, sizeof(*list));
    if (!list)
        return -ENOMEM;
    ret = devstate_set(vm, "vhost-user", list);
    if (ret < 0) {
        free(list);
        return ret;
    }
    for (int i = 0; i < cfg->n_disks + cfg->n_nets; i++) {
        bool is_disk = i < cfg->n_disks;
        int idx = is_disk ? i : i - cfg->n_disks;
        struct vhost_user_dev *d;

        if (is_disk ? !cfg->disks[idx].vhost_socket : !cfg->nets[idx].vhost_socket)
            continue;
        if (!bus) {
            log_err("vhost-user: no PCI bus");
            ret = -ENODEV;
            goto fail;
        }
        ret = is_disk ? vhost_user_blk_create(vm, &cfg->disks[idx], idx, &d)
                      : vhost_user_net_create(vm, &cfg->nets[idx], idx, &d);
        if (ret < 0)
            goto fail;
        ret = virtio_dev_plug(&d->vdev, bus);
        if (ret < 0) {
            vhost_user_dev_destroy(d);
            goto fail;
        }
        list->dev[list->n++] = d;
        log_info("vhost-user '%s': back-end '%s', features 0x%" PRIx64 ", protocol 0x%" PRIx64,
                 d->vdev.name, d->vu.path, d->vu.features, d->vu.protocol_features);
    }
    return 0;
fail:
    vhost_user_exit_all(vm);
    return ret;
}

static void vhost_user_stats_all(struct vm *vm, json_object *devices)
{
    struct vu_list *list = devstate_get(vm, "vhost-user");

    for (int i = 0; list && i < list->n; i++)
        vhost_user_dev_stats(list->dev[i], devices);
}

VMM_DEVICE(vhost_user, DEV_LEVEL_VIRTIO, vhost_user_init_all, vhost_user_exit_all,
           vhost_user_stats_all)
