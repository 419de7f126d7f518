/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user backend core: one struct vu_dev per frontend connection. The
 * control thread feeds it messages (vu_dev_handle_readable); every message
 * is validated (header, payload size per request, fd count, indices,
 * addresses) and a misbehaving frontend gets an error return, after which
 * the owner disconnects it. Device types (net, later block) plug in through
 * struct vu_dev_ops.
 *
 * Rings are driven by the data plane: when a ring becomes runnable
 * (started by SET_VRING_KICK, enabled, addresses translated) the core calls
 * ops->queue_start; before it changes anything a running ring depends on
 * (memory table, call fd, log, GET_VRING_BASE, reset) it calls
 * ops->queue_stop, which must return only once the data plane has stopped
 * touching the ring.
 */
#ifndef QT_CARD_VHOST_USER_H
#define QT_CARD_VHOST_USER_H

#include "card/virtq.h"
#include "card/vu_mem.h"
#include "card/vu_proto.h"

#include <stdbool.h>
#include <stdint.h>

struct vu_dev;

struct vu_dev_ops {
    uint64_t features;          /* device + transport features offered */
    uint64_t protocol_features; /* offered when VHOST_USER_F_PROTOCOL_FEATURES is */
    uint16_t num_queues;        /* virtqueues the device can run, <= VU_MAX_QUEUES */
    uint64_t queue_num_reply;   /* GET_QUEUE_NUM answer (queue pairs for net) */
    /* Copy config space [offset, offset + size) into buf; -errno when out of range. */
    int (*get_config)(void *opaque, uint32_t offset, uint8_t *buf, uint32_t size);
    int (*set_config)(void *opaque, uint32_t offset, const uint8_t *buf, uint32_t size);
    /* Ring qidx is runnable / must stop being touched (see above). */
    void (*queue_start)(void *opaque, struct vu_dev *dev, unsigned qidx);
    void (*queue_stop)(void *opaque, struct vu_dev *dev, unsigned qidx);
    /* Device reset / features negotiated (optional). */
    void (*features_set)(void *opaque, struct vu_dev *dev, uint64_t features);
};

struct vu_vring {
    uint16_t num;
    uint32_t base; /* split: next avail index; packed: see vu_ring_map_packed() */
    struct vhost_user_vring_addr addr;
    bool addr_set;
    bool started; /* kick received, not yet stopped by GET_VRING_BASE */
    bool enabled;
    bool running; /* queue_start called and not yet queue_stop */
    int kick_fd;
    int call_fd;
    int err_fd;
    char name[96];
    struct virtq vq; /* data-plane state, owned by the data plane while running */
};

struct vu_dev {
    char name[64];
    int fd; /* connection, -1 when none */
    bool owner;
    bool features_acked;
    uint64_t features;
    uint64_t protocol_features;
    uint8_t status;
    struct vu_mem *mem;
    struct vu_log_area *log;
    void *inflight_addr;
    size_t inflight_size;
    int inflight_fd;
    uint16_t inflight_num_queues;
    uint16_t inflight_queue_size;
    struct vu_vring vr[VU_MAX_QUEUES];
    const struct vu_dev_ops *ops;
    void *opaque;
    uint64_t n_msgs;
};

void vu_dev_init(struct vu_dev *dev, const char *name, const struct vu_dev_ops *ops, void *opaque);
/* Attach a connected socket (frontend connection). */
void vu_dev_attach(struct vu_dev *dev, int fd);
/* Stop all rings, unmap memory, close fds and the connection; back to the initial state. */
void vu_dev_disconnect(struct vu_dev *dev);
/* Tell the frontend its rings are broken: signal every ring's error eventfd
 * (SET_VRING_ERR), e.g. before disconnecting it for a malformed ring. */
void vu_dev_signal_err(struct vu_dev *dev);

/*
 * Read one message from the connection and process it. Returns 0, or
 * -errno when the connection closed (-ECONNRESET) or the frontend
 * misbehaved (logged); the caller then calls vu_dev_disconnect.
 */
int vu_dev_handle_readable(struct vu_dev *dev);

/* Lower-level pieces, exposed for tests. */
int vu_msg_recv(int fd, struct vu_msg *msg, const char *who);
void vu_msg_close_fds(struct vu_msg *msg);
int vu_dev_process(struct vu_dev *dev, struct vu_msg *msg, struct vu_msg *reply, bool *has_reply);

static inline bool vu_dev_has_feature(const struct vu_dev *dev, unsigned bit)
{
    return dev->features & (1ull << bit);
}

static inline bool vu_dev_has_proto(const struct vu_dev *dev, unsigned bit)
{
    return dev->protocol_features & (1ull << bit);
}

#endif
