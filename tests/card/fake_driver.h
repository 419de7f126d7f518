/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A minimal virtio-net driver + vhost-user frontend, in process, for tests
 * and benchmarks of qtcard: guest memory is a memfd, one queue pair, split
 * or packed (FDRV_F_PACKED) rings, optional mergeable receive buffers / event
 * idx / guest checksum.
 */
#ifndef QT_TESTS_CARD_FAKE_DRIVER_H
#define QT_TESTS_CARD_FAKE_DRIVER_H

#include "card/card.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FDRV_RING 256

struct fdrv_vq {
    struct virtq_desc *desc;
    struct virtq_avail *avail;
    struct virtq_used *used;
    /* Packed: slots run 0..FDRV_RING-1 in avail_idx / last_used, with wrap counters. */
    struct pvirtq_desc *pdesc;
    struct pvirtq_event *drv_ev, *dev_ev;
    bool avail_wrap, used_wrap;
    uint16_t posted[FDRV_RING]; /* packed receive: buffer id made available in each slot */
    uint64_t desc_gpa, avail_gpa, used_gpa;
    uint16_t avail_idx; /* next avail slot */
    uint16_t last_used;
    int kick_fd, call_fd;
};

struct fdrv {
    int sock;
    int memfd;
    uint8_t *mem;
    size_t size;
    uint64_t features;
    uint32_t rx_buf_size;
    unsigned hdr_len;
    struct fdrv_vq vq[2]; /* 0: receive, 1: transmit */
    uint64_t calls_seen;
    unsigned tx_inflight; /* packed: transmit buffers not yet used */
    /* With VIRTIO_F_IN_ORDER: used entries whose id was not the next one made available. */
    unsigned order_errors;
    /* FDRV_F_INFLIGHT: the region the device made (GET_INFLIGHT_FD), handed back to it. */
    int inflight_fd;
    uint8_t *inflight;
    uint64_t inflight_size;
};

#define FDRV_F_MRG       (1ull << VIRTIO_NET_F_MRG_RXBUF)
#define FDRV_F_EVENT_IDX (1ull << VIRTIO_RING_F_EVENT_IDX)
#define FDRV_F_CSUM      ((1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_GUEST_CSUM))
#define FDRV_F_HOST_TSO  ((1ull << VIRTIO_NET_F_HOST_TSO4) | (1ull << VIRTIO_NET_F_HOST_TSO6))
#define FDRV_F_IN_ORDER  (1ull << VIRTIO_F_IN_ORDER)
#define FDRV_F_PACKED    (1ull << VIRTIO_F_RING_PACKED)
#define FDRV_F_HOST_USO  (1ull << 56)
#define FDRV_F_GUEST_USO ((1ull << 54) | (1ull << 55))
#define FDRV_F_GUEST_TSO ((1ull << VIRTIO_NET_F_GUEST_TSO4) | (1ull << VIRTIO_NET_F_GUEST_TSO6))
/* Not a virtio feature: negotiate VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD and set up the
 * inflight region (GET_INFLIGHT_FD, SET_INFLIGHT_FD) as QEMU's vhost-user-blk does. */
#define FDRV_F_INFLIGHT (1ull << 63)

/* Connect to a qtcard port socket and bring the queue pair up with the given
 * extra features (VERSION_1 and PROTOCOL_FEATURES always). Receive buffers of
 * rx_buf_size bytes are posted. 0 or -errno. */
int fdrv_connect(struct fdrv *d, const char *path, uint64_t features, uint32_t rx_buf_size);
void fdrv_close(struct fdrv *d);

/* Queue one frame for transmission (virtio-net header hdr may be NULL) and kick. Frames
 * up to 10 KiB use the ring slot's buffer; one larger frame (up to 68 KiB: a GSO frame)
 * may be in flight at a time (reclaim it before sending the next). */
int fdrv_send(struct fdrv *d, const void *frame, uint32_t len, const struct virtio_net_hdr_v1 *hdr);
/* Several frames, one kick. */
int fdrv_send_burst(struct fdrv *d, const void *frame, uint32_t len, unsigned n);
/* Different frames published together (one avail index update, one kick), so the
 * switch takes them in one burst; returns how many were queued. */
int fdrv_send_frames(struct fdrv *d, const uint8_t *const *frames, const uint32_t *lens,
                     unsigned n);
/* Like fdrv_send_burst, without the kick: for a device that polls (benchmarks). */
int fdrv_queue_burst(struct fdrv *d, const void *frame, uint32_t len, unsigned n);
/* Hand every used receive buffer back to the device without reading it; returns how many
 * frames arrived (one per buffer: for drivers without mergeable buffers). */
unsigned fdrv_rx_recycle(struct fdrv *d);
/* Reclaim completed transmit buffers; returns how many. */
unsigned fdrv_tx_reclaim(struct fdrv *d);

/* Wait up to timeout_ms for a received frame. Returns its length (frame only,
 * header stripped into *hdr when non-NULL), 0 on timeout, -errno on error. The
 * buffers are posted again. nbufs receives num_buffers when non-NULL. */
int fdrv_recv(struct fdrv *d, uint8_t *buf, uint32_t cap, struct virtio_net_hdr_v1 *hdr,
              unsigned *nbufs, int timeout_ms);
/* The receive buffer of descriptor id (rx_buf_size bytes), e.g. to fill it before use. */
uint8_t *fdrv_rx_buf(struct fdrv *d, uint16_t id);
/* Drop everything received so far; returns the number of frames. */
unsigned fdrv_drain(struct fdrv *d);
/* With FDRV_F_INFLIGHT (packed rings), once the device is idle: each queue's inflight region is set
 * up and consistent (nothing in flight, every entry on the free list once, at a consistent point)
 * and recorded chains (some entry has a counter). Waits up to timeout_ms for the device to finish
 * what it is doing. 0, or -1 after printing what is wrong. 0 without a region. */
int fdrv_inflight_check(const struct fdrv *d, int timeout_ms);
/* Read the call eventfd: notifications since the last call. */
uint64_t fdrv_calls(struct fdrv *d);

#endif
