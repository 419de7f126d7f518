/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Split virtqueues (virtio 1.2, section 2.7), device side.
 *
 * Everything in the rings is guest-controlled. The rings themselves are
 * translated once, when the queue is set up, through vm_gpa_to_hva() with
 * their full size; every descriptor is copied out of guest memory once and
 * then validated (address and length inside guest RAM, no overflow, chain
 * length bounded by the queue size, no loops, indirect tables well formed,
 * device-writable buffers after device-readable ones). A violation marks the
 * queue broken and reports it through the queue's error callback, which the
 * transport turns into DEVICE_NEEDS_RESET.
 *
 * A queue is driven by one thread at a time (the device's I/O thread).
 */
#ifndef QT_VMM_DEVICES_VIRTQ_H
#define QT_VMM_DEVICES_VIRTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/virtio_defs.h"

struct vm;

struct virtq;
/* Called once when the queue breaks; reason is a complete sentence fragment. */
typedef void (*virtq_error_fn)(void *opaque, struct virtq *vq, const char *reason);

struct virtq {
    struct vm *vm;
    const char *name; /* device name, for messages */
    uint16_t index;
    uint16_t size;
    bool event_idx;
    bool indirect;
    bool ready;
    bool broken;

    volatile struct virtq_desc *desc;
    volatile uint16_t *avail; /* flags, idx, ring[size], used_event */
    volatile uint16_t *used;  /* flags, idx, then used elements, then avail_event */
    volatile struct virtq_used_elem *used_ring;

    uint16_t last_avail_idx;
    uint16_t used_idx;       /* our copy of used->idx */
    uint16_t signalled_used; /* used idx at the last interrupt */
    bool signalled_used_valid;

    virtq_error_fn on_error;
    void *opaque;
};

/*
 * One popped descriptor chain. iov[0, out_num) are device-readable buffers,
 * iov[out_num, out_num + in_num) device-writable ones.
 */
struct virtq_elem {
    uint16_t head;
    uint32_t out_num;
    uint32_t in_num;
    uint64_t out_len;
    uint64_t in_len;
    uint32_t iov_cap;
    struct iovec iov[];
};

/* Allocate an element able to hold a chain of up to max descriptors. */
struct virtq_elem *virtq_elem_alloc(uint32_t max);

/*
 * Translate and check the rings of a queue of 'size' entries; features are the
 * negotiated feature bits (INDIRECT_DESC / EVENT_IDX). last_avail_idx and
 * used_idx start at the values in guest memory's used->idx (0 after reset).
 * Returns 0, or -EINVAL with a message in the log when the guest gave bad
 * addresses (the queue is then not usable).
 */
int virtq_setup(struct virtq *vq, struct vm *vm, const char *name, uint16_t index, uint16_t size,
                uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa, uint64_t features);
void virtq_set_error_handler(struct virtq *vq, virtq_error_fn fn, void *opaque);
void virtq_reset(struct virtq *vq);

/*
 * Pop the next available chain into elem. Returns 1 when an element was
 * popped, 0 when the queue is empty, -EIO when the queue is (now) broken.
 */
int virtq_pop(struct virtq *vq, struct virtq_elem *elem);
/* Number of chains the driver has made available and we have not popped. */
int virtq_avail_count(struct virtq *vq);
/* Return a chain to the driver with 'len' bytes written to its buffers. */
void virtq_push(struct virtq *vq, uint16_t head, uint32_t len);
/*
 * Batched form: fill used entry 'pos' (0-based after the last published one)
 * without publishing, then publish n filled entries at once (virtio-net's
 * mergeable receive buffers must appear together).
 */
void virtq_fill(struct virtq *vq, uint16_t head, uint32_t len, uint16_t pos);
void virtq_flush(struct virtq *vq, uint16_t n);
/* Give back the last n popped chains, not yet pushed (device ran out of room). */
void virtq_unpop(struct virtq *vq, uint16_t n);
/*
 * Whether the driver wants an interrupt for what was pushed since the last
 * call that returned true (honours EVENT_IDX and VIRTQ_AVAIL_F_NO_INTERRUPT).
 */
bool virtq_should_notify(struct virtq *vq);
/* Mark the queue broken (the device found a bad request); logs once. */
void virtq_fail(struct virtq *vq, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Helpers over an element's buffers. */
/* Copy up to len bytes starting at byte 'off' of the readable buffers. */
size_t virtq_elem_read(const struct virtq_elem *elem, size_t off, void *buf, size_t len);
/* Copy len bytes to byte 'off' of the writable buffers; returns bytes copied. */
size_t virtq_elem_write(const struct virtq_elem *elem, size_t off, const void *buf, size_t len);

/*
 * Build in 'out' (capacity max) the iovec covering bytes [off, off + len) of
 * the iovec array 'iov' of n entries. Returns the number of entries, or
 * -EINVAL when the range does not fit.
 */
int virtq_iov_slice(const struct iovec *iov, uint32_t n, size_t off, size_t len, struct iovec *out,
                    uint32_t max);

#endif
