/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-rng (virtio 1.2, section 5.4): fills the driver's writable buffers
 * with getrandom() bytes. Requests are small and rare, so the queue is served
 * by one thread polling the kick eventfd rather than by io_uring.
 */
#include "vmm/devices/virtio_rng.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/config.h"
#include "vmm/device.h"
#include "vmm/devices/devstate.h"

#define RNG_QUEUE_SIZE  64
#define RNG_MAX_REQUEST (64u * 1024) /* bytes served per request at most */

/* Fill one request; returns the bytes written. */
static uint32_t rng_fill(struct virtio_rng *rng, struct virtq_elem *elem)
{
    uint32_t done = 0;

    for (uint32_t i = elem->out_num; i < elem->out_num + elem->in_num; i++) {
        uint8_t *p = elem->iov[i].iov_base;
        size_t left = elem->iov[i].iov_len;

        while (left && done < RNG_MAX_REQUEST) {
            size_t want = left < RNG_MAX_REQUEST - done ? left : RNG_MAX_REQUEST - done;
            ssize_t n = getrandom(p, want, 0);

            if (n < 0) {
                if (errno == EINTR)
                    continue;
                log_warn("virtio-rng '%s': getrandom failed (%s)", rng->vdev.name, strerror(errno));
                return done;
            }
            p += n;
            left -= (size_t)n;
            done += (uint32_t)n;
        }
    }
    return done;
}

static void rng_process(struct virtio_rng *rng)
{
    struct virtq *vq = &rng->vdev.queues[0].vq;
    bool pushed = false;

    while (virtq_pop(vq, rng->elem) == 1) {
        uint32_t n = rng_fill(rng, rng->elem);

        __atomic_fetch_add(&rng->requests, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&rng->bytes, n, __ATOMIC_RELAXED);
        virtq_push(vq, rng->elem->head, n);
        pushed = true;
    }
    if (pushed)
        virtio_dev_notify_queue(&rng->vdev, 0);
}

static void *rng_thread(void *arg)
{
    struct virtio_rng *rng = arg;
    struct pollfd fds[2] = {{.fd = rng->vdev.queues[0].kick_fd, .events = POLLIN},
                            {.fd = rng->stop_fd, .events = POLLIN}};

    rng_process(rng);
    for (;;) {
        uint64_t v;

        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[1].revents)
            break;
        if (read(fds[0].fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
            break;
        rng_process(rng);
    }
    return NULL;
}

static int rng_activate(struct virtio_dev *vdev)
{
    struct virtio_rng *rng = vdev->priv;
    int ret;

    if (!vdev->queues[0].enabled)
        return 0;
    rng->elem = virtq_elem_alloc(vdev->queues[0].size);
    rng->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!rng->elem || rng->stop_fd < 0) {
        ret = rng->elem ? -errno : -ENOMEM;
        goto fail;
    }
    ret = -pthread_create(&rng->thread, NULL, rng_thread, rng);
    if (ret < 0)
        goto fail;
    rng->running = true;
    return 0;
fail:
    free(rng->elem);
    rng->elem = NULL;
    if (rng->stop_fd >= 0)
        close(rng->stop_fd);
    rng->stop_fd = -1;
    return ret;
}

static void rng_reset(struct virtio_dev *vdev)
{
    struct virtio_rng *rng = vdev->priv;
    uint64_t one = 1;

    if (!rng->running)
        return;
    if (write(rng->stop_fd, &one, sizeof(one)) != sizeof(one))
        log_err("virtio-rng '%s': cannot stop its thread", vdev->name);
    pthread_join(rng->thread, NULL);
    rng->running = false;
    close(rng->stop_fd);
    rng->stop_fd = -1;
    free(rng->elem);
    rng->elem = NULL;
}

static const struct virtio_dev_ops rng_ops = {
    .activate = rng_activate,
    .reset = rng_reset,
};

int virtio_rng_create(struct vm *vm, struct virtio_rng **out)
{
    struct virtio_rng *rng = calloc(1, sizeof(*rng));
    int ret;

    if (!rng)
        return -ENOMEM;
    rng->stop_fd = -1;
    ret = virtio_dev_init(&rng->vdev, vm, "rng0", VIRTIO_ID_RNG, 0x00ff00, 0, 1, RNG_QUEUE_SIZE, 0,
                          &rng_ops, rng);
    if (ret < 0) {
        free(rng);
        return ret;
    }
    *out = rng;
    return 0;
}

void virtio_rng_destroy(struct virtio_rng *rng)
{
    if (!rng)
        return;
    virtio_dev_destroy(&rng->vdev);
    free(rng);
}

void virtio_rng_stats(struct virtio_rng *rng, json_object *devices)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "id", json_object_new_string(rng->vdev.name));
    json_object_object_add(o, "type", json_object_new_string("virtio-rng"));
    json_object_object_add(o, "pci_slot", json_object_new_int(rng->vdev.pci.slot));
    json_object_object_add(o, "status", json_object_new_int(virtio_dev_status(&rng->vdev)));
    json_object_object_add(
        o, "requests", json_object_new_uint64(__atomic_load_n(&rng->requests, __ATOMIC_RELAXED)));
    json_object_object_add(o, "bytes",
                           json_object_new_uint64(__atomic_load_n(&rng->bytes, __ATOMIC_RELAXED)));
    json_object_array_add(devices, o);
}

static int virtio_rng_init(struct vm *vm, const struct vm_config *cfg)
{
    struct pci_bus *bus = pci_bus_of(vm);
    struct virtio_rng *rng;
    int ret;

    if (!cfg->rng)
        return 0;
    if (!bus) {
        log_err("virtio-rng: no PCI bus");
        return -ENODEV;
    }
    ret = virtio_rng_create(vm, &rng);
    if (ret < 0)
        return ret;
    ret = virtio_dev_plug(&rng->vdev, bus);
    if (ret == 0)
        ret = devstate_set(vm, "virtio-rng", rng);
    if (ret < 0)
        virtio_rng_destroy(rng);
    return ret;
}

static void virtio_rng_exit(struct vm *vm)
{
    struct virtio_rng *rng = devstate_get(vm, "virtio-rng");

    devstate_clear(vm, "virtio-rng");
    virtio_rng_destroy(rng);
}

static void virtio_rng_stats_all(struct vm *vm, json_object *devices)
{
    struct virtio_rng *rng = devstate_get(vm, "virtio-rng");

    if (rng)
        virtio_rng_stats(rng, devices);
}

VMM_DEVICE(virtio_rng, DEV_LEVEL_VIRTIO, virtio_rng_init, virtio_rng_exit, virtio_rng_stats_all)
