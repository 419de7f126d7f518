/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Split (virtio 1.2 section 2.7) and packed (2.8) virtqueues, device side: pop
 * descriptor chains with full validation (address translation, chain length,
 * loops, indirect tables, readable-before-writable), push used entries,
 * notification suppression both ways (event idx; packed event suppression),
 * dirty logging of every guest write and inflight tracking (vhost-user
 * INFLIGHT_SHMFD) for both layouts. The data path calls the same functions for both
 * layouts; the split ring's stay inline, the packed ring's are out of line.
 *
 * A virtqueue is driven by exactly one thread at a time (the worker that
 * owns it, or a caller holding the queue's lock).
 */
#ifndef QT_CARD_VIRTQ_H
#define QT_CARD_VIRTQ_H

#include "card/vu_mem.h"
#include "common/virtio_defs.h"

#include <stdbool.h>
#include <stdint.h>

#define VIRTQ_MAX_IOV 64

struct virtq_iov {
    uint8_t *base;
    uint32_t len;
    uint64_t gpa; /* for dirty logging of device writes */
};

/* One popped chain: device-readable segments first, then writable ones. */
struct virtq_elem {
    uint16_t head;    /* split: the head descriptor; packed: the buffer ID */
    uint16_t n_descs; /* packed: ring slots the chain took */
    uint16_t n_out;   /* device-readable segments: iov[0 .. n_out) */
    uint16_t n_in;    /* device-writable segments: iov[n_out .. n_out + n_in) */
    uint16_t islot;   /* packed, inflight tracked: the chain's head entry in the region */
    uint32_t out_len;
    uint32_t in_len;
    struct virtq_iov iov[VIRTQ_MAX_IOV];
};

struct virtq {
    /* Ring layout, valid while the queue runs. */
    uint16_t num;
    struct virtq_desc *desc;
    struct virtq_avail *avail;
    struct virtq_used *used;
    const struct vu_mem *mem;
    struct vu_log_area *log; /* non-NULL while dirty logging is on */
    uint64_t used_gpa;       /* guest-physical address of the used ring */
    bool log_used;           /* VHOST_VRING_F_LOG */
    bool event_idx;
    bool in_order; /* VIRTIO_F_IN_ORDER: the driver uses descriptors in ring order */
    /* Packed layout (VIRTIO_F_RING_PACKED): see the packed-only fields at the end; the
     * indices below run 0..num-1 with a wrap counter each, shadow_avail_idx is unused. */
    bool packed;
    bool avail_wrap, used_wrap;
    uint16_t next_head; /* the descriptor after the last chain popped (a guess, for prefetch) */
    /* Device-side indices. */
    uint16_t last_avail_idx;
    uint16_t shadow_avail_idx; /* the driver's avail->idx when last read */
    uint16_t used_idx;
    uint16_t signalled_used;
    bool signalled_valid;
    int call_fd;
    struct vhost_user_inflight_queue *inflight;
    uint64_t inflight_counter;
    /* Counters (read by the control thread without locks; monotonic). */
    uint64_t n_calls;
    uint64_t n_chains;
    const char *name; /* "port 'vm1' queue 1", for logs */
    /* Packed only (after the split ring's hot fields, which keep their cache lines). */
    struct pvirtq_desc *pdesc;
    struct pvirtq_event *driver_ev, *device_ev;
    uint64_t desc_gpa, device_ev_gpa; /* for dirty logging */
    /* The first used descriptor pushed since the last flush has its flags held back,
     * which keeps the whole batch invisible until virtq_flush writes them. */
    bool used_held;
    uint16_t used_held_slot, used_held_flags;
    /* Inflight tracking (NULL: off). Chains pushed since the last flush wait on a private
     * list (linked through their last entries) and go back to the region's free list
     * when the flush publishes them, so that a crash before it leaves them in flight. */
    struct vhost_user_inflight_queue_packed *pinflight;
    uint16_t pinf_pend_head, pinf_pend_tail, pinf_pend_n;
};

/* Set up a running ring from translated pointers. */
void virtq_init(struct virtq *vq, uint16_t num, struct virtq_desc *desc, struct virtq_avail *avail,
                struct virtq_used *used, const struct vu_mem *mem, bool event_idx);
/* The same for a packed ring: last_avail_idx/avail_wrap and used_idx/used_wrap are set by
 * the caller (from the vring base). */
void virtq_init_packed(struct virtq *vq, uint16_t num, struct pvirtq_desc *desc,
                       struct pvirtq_event *driver_ev, struct pvirtq_event *device_ev,
                       const struct vu_mem *mem, bool event_idx);

/* Packed: whether the descriptor at our position is available. */
static inline bool virtq_packed_avail(const struct virtq *vq)
{
    uint16_t f = __atomic_load_n(&vq->pdesc[vq->last_avail_idx].flags, __ATOMIC_ACQUIRE);
    return !!(f & PVIRTQ_DESC_F_AVAIL) == vq->avail_wrap &&
           !!(f & PVIRTQ_DESC_F_USED) != vq->avail_wrap;
}

/* Entries the driver made available that the device has not popped yet (packed: 1 when
 * there is at least one, the count is not known without walking the ring). */
static inline uint16_t virtq_avail_count(const struct virtq *vq)
{
    if (__builtin_expect(vq->packed, 0))
        return virtq_packed_avail(vq);
    uint16_t idx = __atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE);
    return (uint16_t)(idx - vq->last_avail_idx);
}

/*
 * Like virtq_avail_count, and remembers the index read, so that the pops that
 * follow do not read the driver's index (a cache line the driver keeps
 * writing) once per chain.
 */
static inline uint16_t virtq_avail_refresh(struct virtq *vq)
{
    if (__builtin_expect(vq->packed, 0))
        return virtq_packed_avail(vq);
    vq->shadow_avail_idx = __atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE);
    return (uint16_t)(vq->shadow_avail_idx - vq->last_avail_idx);
}

/*
 * Pop the next chain. Returns 1 with *e filled, 0 when the ring is empty,
 * -EINVAL (after logging why) when the driver put a malformed chain or index
 * in the ring; the queue must then be considered broken.
 */
int virtq_pop(struct virtq *vq, struct virtq_elem *e);

/*
 * Hint the CPU to fetch what the next `max` pops will touch: the descriptors of
 * the chains made available (as of the last virtq_avail_refresh) and the first
 * bytes of their buffers (for writing when `for_write`). The driver wrote all
 * of these from another CPU; fetching them together overlaps the transfers
 * instead of taking one after the other. Only hints: nothing is validated or
 * consumed here, virtq_pop does that. With for_write, the first read_first bytes
 * of each buffer are fetched for reading only when they lie in a cache line of
 * their own (a header compared before it is written: see dp.c vnet_hdr_store).
 */
void virtq_prefetch(const struct virtq *vq, unsigned max, bool for_write, unsigned read_first);

/*
 * Before reading the driver's avail index: start fetching, alongside it, the avail ring
 * entry at our position and, when the driver uses descriptors in ring order (IN_ORDER),
 * the descriptors of the next n chains. Without it the index, the ring entry, the
 * descriptor and the buffer are fetched one after the other, each a transfer from the
 * driver's CPU. Hints only; call it when the queue is likely to have work (a guessed
 * line the driver is still writing would be pulled away from it for nothing).
 */
static inline void virtq_prefetch_ahead(const struct virtq *vq, unsigned n)
{
    if (__builtin_expect(vq->packed, 0)) {
        for (unsigned k = 0; k < n && vq->last_avail_idx + k < vq->num; k += 4)
            __builtin_prefetch(&vq->pdesc[vq->last_avail_idx + k]);
        return;
    }
    __builtin_prefetch(&vq->avail->ring[vq->last_avail_idx & (vq->num - 1)]);
    if (vq->in_order)
        for (unsigned k = 0; k < n; k += 4)
            __builtin_prefetch(&vq->desc[(vq->next_head + k) & (vq->num - 1)]);
}

/* Undo the last n pops, whose elements are e[0..n) in pop order (buffers not consumed,
 * e.g. packet did not fit). */
void virtq_unpop(struct virtq *vq, const struct virtq_elem *e, uint16_t n);

void virtq_push_packed(struct virtq *vq, const struct virtq_elem *e, uint32_t len);
void virtq_flush_packed(struct virtq *vq);

/* Record a used entry for popped element e (not visible to the driver before
 * virtq_flush). */
static inline void virtq_push(struct virtq *vq, const struct virtq_elem *e, uint32_t len)
{
    uint16_t head = e->head;
    if (__builtin_expect(vq->packed, 0)) {
        virtq_push_packed(vq, e, len);
        return;
    }
    struct virtq_used_elem *u = &vq->used->ring[vq->used_idx & (vq->num - 1)];
    u->id = head;
    u->len = len;
    if (vq->log)
        vu_log_write(vq->log,
                     vq->used_gpa + 4 + (uint64_t)(vq->used_idx & (vq->num - 1)) * sizeof(*u),
                     sizeof(*u));
    if (vq->inflight && head < vq->num)
        vq->inflight->desc[head].inflight = 0;
    vq->used_idx++;
}

/* Publish pushed entries to the driver. */
static inline void virtq_flush(struct virtq *vq)
{
    if (vq->packed) {
        virtq_flush_packed(vq);
        return;
    }
    __atomic_store_n(&vq->used->idx, vq->used_idx, __ATOMIC_RELEASE);
    if (vq->log)
        vu_log_write(vq->log, vq->used_gpa + 2, 2);
    if (vq->inflight)
        vq->inflight->used_idx = vq->used_idx;
}

/* Whether the driver asked to be notified of the entries published since the last call. */
bool virtq_need_notify(struct virtq *vq);
/* Signal the call eventfd if the driver wants it. Returns true when signalled. */
bool virtq_notify(struct virtq *vq);
/* Signal unconditionally (coalescing timer expiry etc). */
void virtq_signal(struct virtq *vq);

/*
 * Ask the driver for kicks again before sleeping. Returns true when entries
 * became available meanwhile (the caller must not sleep).
 */
bool virtq_enable_kicks(struct virtq *vq);
/* Tell the driver no kicks are needed while we poll. */
void virtq_disable_kicks(struct virtq *vq);

/* Mark device writes to the guest buffers of e (first `len` writable bytes) dirty. */
void virtq_log_elem_write(struct virtq *vq, const struct virtq_elem *e, uint32_t len);

/* Inflight-region helpers. Region size for a queue of `num` entries (64-byte multiple), split and
 * packed layouts. */
uint64_t virtq_inflight_queue_size(uint16_t num);
uint64_t virtq_inflight_queue_size_packed(uint16_t num);
/* Number of descriptors the region says were in flight. */
unsigned virtq_inflight_pending(const struct vhost_user_inflight_queue *q, uint16_t num);
/* Packed: a fresh region for a ring of `num` entries whose device will write used at slot
 * used_idx with wrap counter used_wrap (nothing in flight). */
void virtq_inflight_init_packed(struct vhost_user_inflight_queue_packed *q, uint16_t num,
                                uint16_t used_idx, bool used_wrap);
/*
 * Packed, after a reconnect: the region as the last device run left it, read next to the
 * descriptor ring `ring`. Completes or rolls back the update a crash interrupted (the
 * descriptor at old_used_idx says whether its used flags went out), then reports where
 * the device is to write used next (*used_idx, *used_wrap) and returns the number of chains
 * that were in flight (popped, not published as used): qtcard completes chains in order,
 * so each of them lies from that slot on and is popped again from there. -EINVAL when the
 * region is inconsistent (indices beyond the ring, a free list that loops): the frontend
 * wrote it, it is not to be trusted.
 */
int virtq_inflight_recover_packed(struct vhost_user_inflight_queue_packed *q, uint16_t num,
                                  const struct pvirtq_desc *ring, uint16_t *used_idx,
                                  bool *used_wrap);

#endif
