/* SPDX-License-Identifier: Apache-2.0 */
#include "card/virtq.h"
#include "common/log.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/*
 * Full barrier between our stores (used ring) and our loads of the driver's
 * flags / event index. On x86-64 a locked add to the stack orders the same
 * as MFENCE for normal memory and costs a fraction of it (Linux's smp_mb()
 * and DPDK's rte_smp_mb() do the same).
 */
static inline void virtq_full_barrier(void)
{
#if defined(__x86_64__)
    __asm__ volatile("lock addl $0, -128(%%rsp)" ::: "memory", "cc");
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

void virtq_init(struct virtq *vq, uint16_t num, struct virtq_desc *desc, struct virtq_avail *avail,
                struct virtq_used *used, const struct vu_mem *mem, bool event_idx)
{
    vq->num = num;
    vq->desc = desc;
    vq->avail = avail;
    vq->used = used;
    vq->mem = mem;
    vq->event_idx = event_idx;
    vq->signalled_valid = false;
    vq->shadow_avail_idx = vq->last_avail_idx;
}

void virtq_init_packed(struct virtq *vq, uint16_t num, struct pvirtq_desc *desc,
                       struct pvirtq_event *driver_ev, struct pvirtq_event *device_ev,
                       const struct vu_mem *mem, bool event_idx)
{
    vq->packed = true;
    vq->num = num;
    vq->pdesc = desc;
    vq->driver_ev = driver_ev;
    vq->device_ev = device_ev;
    vq->mem = mem;
    vq->event_idx = event_idx;
    vq->signalled_valid = false;
}

static int virtq_add_seg(struct virtq *vq, struct virtq_elem *e, uint64_t gpa, uint32_t len,
                         bool writable)
{
    uint64_t remaining = len;

    while (remaining) {
        uint64_t l = remaining;
        uint8_t *p = vu_mem_gpa_ptr(vq->mem, gpa, &l);
        unsigned n = e->n_out + e->n_in;

        if (!p) {
            log_err("%s: descriptor buffer gpa 0x%llx len %u is not in guest memory", vq->name,
                    (unsigned long long)gpa, len);
            return -EINVAL;
        }
        if (n >= VIRTQ_MAX_IOV) {
            log_err("%s: chain at head %u has more than %u segments", vq->name, e->head,
                    VIRTQ_MAX_IOV);
            return -EINVAL;
        }
        e->iov[n].base = p;
        e->iov[n].len = (uint32_t)l;
        e->iov[n].gpa = gpa;
        if (writable) {
            e->n_in++;
            e->in_len += (uint32_t)l;
        } else {
            e->n_out++;
            e->out_len += (uint32_t)l;
        }
        gpa += l;
        remaining -= l;
    }
    return 0;
}

/* The fast path of both layouts, the usual packet: one direct descriptor inside one memory
 * region fills e (n_out/n_in and lengths zero on entry). False for anything else, which
 * takes the full walk (it reads the descriptor again and checks everything). */
static inline bool virtq_one_desc(const struct virtq *vq, struct virtq_elem *e, uint64_t addr,
                                  uint32_t len, uint16_t flags)
{
    uint64_t l = len;
    uint8_t *p;

    if ((flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) || !len || len > (1u << 30))
        return false;
    p = vu_mem_gpa_ptr(vq->mem, addr, &l);
    if (!p || l != len)
        return false;
    e->iov[0].base = p;
    e->iov[0].len = len;
    e->iov[0].gpa = addr;
    if (flags & VIRTQ_DESC_F_WRITE) {
        e->n_in = 1;
        e->in_len = len;
    } else {
        e->n_out = 1;
        e->out_len = len;
    }
    return true;
}

static int virtq_walk_chain(struct virtq *vq, struct virtq_elem *e, uint16_t head)
{
    const struct virtq_desc *tbl = vq->desc;
    uint32_t tbl_size = vq->num;
    uint32_t i = head, count = 0;
    bool indirect = false;
    uint64_t total = 0;

    e->head = head;
    e->n_out = e->n_in = 0;
    e->out_len = e->in_len = 0;
    {
        struct virtq_desc d; /* fast path (virtq_one_desc) */
        memcpy(&d, (const void *)&tbl[head], sizeof(d));
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        if (virtq_one_desc(vq, e, d.addr, d.len, d.flags))
            return 0;
    }
    for (;;) {
        struct virtq_desc d;

        if (i >= tbl_size) {
            log_err("%s: chain at head %u: descriptor index %u out of range (%u)", vq->name, head,
                    i, tbl_size);
            return -EINVAL;
        }
        if (++count > tbl_size) {
            log_err("%s: chain at head %u loops or exceeds %u descriptors", vq->name, head,
                    tbl_size);
            return -EINVAL;
        }
        /* One read of the driver-owned descriptor: no re-reads after checks. */
        memcpy(&d, (const void *)&tbl[i], sizeof(d));
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            if (indirect || (d.flags & VIRTQ_DESC_F_NEXT)) {
                log_err("%s: chain at head %u: %s indirect descriptor", vq->name, head,
                        indirect ? "nested" : "chained");
                return -EINVAL;
            }
            if (d.len == 0 || d.len % sizeof(struct virtq_desc) ||
                d.len / sizeof(struct virtq_desc) > VIRTQ_MAX_SIZE) {
                log_err("%s: chain at head %u: indirect table length %u invalid", vq->name, head,
                        d.len);
                return -EINVAL;
            }
            tbl = vu_mem_gpa_range(vq->mem, d.addr, d.len);
            if (!tbl || ((uintptr_t)tbl % _Alignof(struct virtq_desc))) {
                log_err("%s: chain at head %u: indirect table gpa 0x%llx len %u not mapped",
                        vq->name, head, (unsigned long long)d.addr, d.len);
                return -EINVAL;
            }
            if (e->n_out + e->n_in) {
                log_err("%s: chain at head %u: indirect descriptor after direct ones", vq->name,
                        head);
                return -EINVAL;
            }
            indirect = true;
            tbl_size = d.len / sizeof(struct virtq_desc);
            i = 0;
            count = 0;
            continue;
        }
        if (!(d.flags & VIRTQ_DESC_F_WRITE) && e->n_in) {
            log_err("%s: chain at head %u: device-readable descriptor after a writable one",
                    vq->name, head);
            return -EINVAL;
        }
        total += d.len;
        if (total > (1u << 30)) {
            log_err("%s: chain at head %u longer than 1 GiB", vq->name, head);
            return -EINVAL;
        }
        if (d.len) {
            int ret = virtq_add_seg(vq, e, d.addr, d.len, d.flags & VIRTQ_DESC_F_WRITE);
            if (ret)
                return ret;
        }
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            return 0;
        i = d.next;
    }
}

/* One descriptor of a packed chain (ring or indirect table) into e. */
static int virtq_packed_seg(struct virtq *vq, struct virtq_elem *e, const struct pvirtq_desc *d,
                            uint64_t *total)
{
    if (!(d->flags & VIRTQ_DESC_F_WRITE) && e->n_in) {
        log_err("%s: chain of buffer %u: device-readable descriptor after a writable one", vq->name,
                d->id);
        return -EINVAL;
    }
    *total += d->len;
    if (*total > (1u << 30)) {
        log_err("%s: chain of buffer %u longer than 1 GiB", vq->name, d->id);
        return -EINVAL;
    }
    return d->len ? virtq_add_seg(vq, e, d->addr, d->len, d->flags & VIRTQ_DESC_F_WRITE) : 0;
}

/* Packed inflight tracking off for this queue: the frontend wrote nonsense in the region
 * (it is shared memory). The ring itself keeps running. */
static void pinf_bad(struct virtq *vq, const char *what, unsigned v)
{
    log_err("%s: inflight region: %s %u beyond the ring (%u); inflight tracking off", vq->name,
            what, v, vq->num);
    vq->pinflight = NULL;
}

/* Record the chain just popped (ring slots from `slot`, e->n_descs of them) as the
 * vhost-user spec's packed inflight procedure does: copies of its descriptors in entries
 * taken from the free list, the head entry in flight with the next counter value. */
__attribute__((noinline)) static void pinf_record(struct virtq *vq, struct virtq_elem *e,
                                                  uint16_t slot)
{
    struct vhost_user_inflight_queue_packed *q = vq->pinflight;
    uint16_t h = q->free_head, f = h, last = h;

    if (h >= vq->num) {
        pinf_bad(vq, "free list head", h);
        return;
    }
    q->desc[h].num = 0;
    q->desc[h].counter = ++vq->inflight_counter;
    q->desc[h].inflight = 1;
    for (unsigned k = 0; k < e->n_descs; k++) {
        struct pvirtq_desc d;
        if (f >= vq->num) {
            pinf_bad(vq, "free list entry", f);
            return;
        }
        memcpy(&d, (const void *)&vq->pdesc[slot], sizeof(d));
        q->desc[f].addr = d.addr;
        q->desc[f].len = d.len;
        q->desc[f].id = d.id;
        q->desc[f].flags = d.flags;
        q->desc[h].num++;
        last = f;
        f = q->desc[f].next;
        if (++slot == vq->num)
            slot = 0;
    }
    q->desc[h].last = last;
    /* A crash is this process dying: its stores stay in the region in program order, so
     * only the compiler must keep them in the spec's order. */
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    q->free_head = f;
    q->old_free_head = f;
    e->islot = h;
}

/* Packed: the chain at our position, its descriptors in consecutive slots (2.8.6), or one
 * indirect descriptor whose table is the chain (2.8.7). The driver writes the first
 * descriptor's flags last, so once that one is seen available (acquire) the rest of the
 * chain is complete. */
__attribute__((noinline)) static int virtq_pop_packed(struct virtq *vq, struct virtq_elem *e)
{
    uint16_t i = vq->last_avail_idx;
    bool wrap = vq->avail_wrap;
    uint64_t total = 0;
    unsigned count = 0;
    int ret;

    if (!virtq_packed_avail(vq))
        return 0;
    e->n_out = e->n_in = 0;
    e->out_len = e->in_len = 0;
    {
        struct pvirtq_desc d; /* fast path (virtq_one_desc) */
        memcpy(&d, (const void *)&vq->pdesc[i], sizeof(d));
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        if (virtq_one_desc(vq, e, d.addr, d.len, d.flags)) {
            e->head = d.id;
            e->n_descs = 1;
            if (vq->pinflight)
                pinf_record(vq, e, i);
            if (++i == vq->num) {
                i = 0;
                vq->avail_wrap = !vq->avail_wrap;
            }
            vq->last_avail_idx = i;
            vq->n_chains++;
            return 1;
        }
    }
    for (;;) {
        struct pvirtq_desc d;

        /* One read of the driver-owned descriptor: no re-reads after checks. */
        memcpy(&d, (const void *)&vq->pdesc[i], sizeof(d));
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        if (++count > vq->num) {
            log_err("%s: chain at slot %u is longer than the ring (%u)", vq->name,
                    vq->last_avail_idx, vq->num);
            return -EINVAL;
        }
        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            const struct pvirtq_desc *tbl;
            uint32_t n = d.len / sizeof(struct pvirtq_desc);

            if (count != 1 || (d.flags & VIRTQ_DESC_F_NEXT)) {
                log_err("%s: chain at slot %u: indirect descriptor %s", vq->name,
                        vq->last_avail_idx, count != 1 ? "after direct ones" : "chained");
                return -EINVAL;
            }
            if (d.len == 0 || d.len % sizeof(struct pvirtq_desc) || n > VIRTQ_MAX_SIZE) {
                log_err("%s: chain at slot %u: indirect table length %u invalid", vq->name,
                        vq->last_avail_idx, d.len);
                return -EINVAL;
            }
            tbl = vu_mem_gpa_range(vq->mem, d.addr, d.len);
            if (!tbl || ((uintptr_t)tbl % _Alignof(struct pvirtq_desc))) {
                log_err("%s: chain at slot %u: indirect table gpa 0x%llx len %u not mapped",
                        vq->name, vq->last_avail_idx, (unsigned long long)d.addr, d.len);
                return -EINVAL;
            }
            for (uint32_t k = 0; k < n; k++) {
                struct pvirtq_desc t;
                memcpy(&t, (const void *)&tbl[k], sizeof(t));
                __atomic_signal_fence(__ATOMIC_SEQ_CST);
                if (t.flags & VIRTQ_DESC_F_INDIRECT) {
                    log_err("%s: chain at slot %u: nested indirect descriptor", vq->name,
                            vq->last_avail_idx);
                    return -EINVAL;
                }
                t.id = d.id;
                ret = virtq_packed_seg(vq, e, &t, &total);
                if (ret)
                    return ret;
            }
        } else {
            ret = virtq_packed_seg(vq, e, &d, &total);
            if (ret)
                return ret;
        }
        if (++i == vq->num) {
            i = 0;
            wrap = !wrap;
        }
        if ((d.flags & VIRTQ_DESC_F_INDIRECT) || !(d.flags & VIRTQ_DESC_F_NEXT)) {
            e->head = d.id; /* the buffer ID is in the chain's last descriptor */
            break;
        }
    }
    e->n_descs = (uint16_t)count;
    if (vq->pinflight)
        pinf_record(vq, e, vq->last_avail_idx);
    vq->last_avail_idx = i;
    vq->avail_wrap = wrap;
    vq->n_chains++;
    return 1;
}

void virtq_push_packed(struct virtq *vq, const struct virtq_elem *e, uint32_t len)
{
    struct pvirtq_desc *d = &vq->pdesc[vq->used_idx];
    uint16_t flags = vq->used_wrap ? (PVIRTQ_DESC_F_AVAIL | PVIRTQ_DESC_F_USED) : 0;

    if (len)
        flags |= VIRTQ_DESC_F_WRITE; /* len is meaningful (2.8.9) */
    d->id = e->head;
    d->len = len;
    /* The driver reads used descriptors in ring order and stops at the first one not
     * used: holding back the first one's flags hides the batch, and the others' lines
     * are written whole before the driver looks at them (one transfer per line). */
    if (!vq->used_held) {
        vq->used_held = true;
        vq->used_held_slot = vq->used_idx;
        vq->used_held_flags = flags;
    } else {
        __atomic_store_n(&d->flags, flags, __ATOMIC_RELEASE);
    }
    if (vq->log)
        vu_log_write(vq->log, vq->desc_gpa + (uint64_t)vq->used_idx * sizeof(*d), sizeof(*d));
    vq->used_idx = (uint16_t)(vq->used_idx + e->n_descs);
    if (vq->used_idx >= vq->num) {
        vq->used_idx = (uint16_t)(vq->used_idx - vq->num);
        vq->used_wrap = !vq->used_wrap;
    }
    if (vq->pinflight) {
        /* Onto the pending list; the flush returns it to the free list. */
        uint16_t h = e->islot, l;
        if (h >= vq->num) {
            pinf_bad(vq, "pushed chain entry", h);
            return;
        }
        l = vq->pinflight->desc[h].last;
        if (l >= vq->num) {
            pinf_bad(vq, "last entry of a chain", l);
            return;
        }
        if (vq->pinf_pend_n++ == 0)
            vq->pinf_pend_tail = l;
        else
            vq->pinflight->desc[l].next = vq->pinf_pend_head;
        vq->pinf_pend_head = h;
    }
}

/* The spec's order: entries back on the free list, the used position, the descriptors'
 * flags (the batch goes out), the heads out of flight, then the consistent point. */
static void pinf_flush(struct virtq *vq)
{
    struct vhost_user_inflight_queue_packed *q = vq->pinflight;
    uint16_t h = vq->pinf_pend_head;

    if (vq->pinf_pend_n) {
        q->desc[vq->pinf_pend_tail].next = q->free_head;
        q->free_head = vq->pinf_pend_head;
    }
    q->used_idx = vq->used_idx;
    q->used_wrap_counter = vq->used_wrap;
    __atomic_signal_fence(__ATOMIC_SEQ_CST); /* each step in order (see pinf_record) */
    if (vq->used_held)
        __atomic_store_n(&vq->pdesc[vq->used_held_slot].flags, vq->used_held_flags,
                         __ATOMIC_RELEASE);
    vq->used_held = false;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    for (unsigned k = 0; k < vq->pinf_pend_n; k++) {
        uint16_t l;
        if (h >= vq->num) {
            pinf_bad(vq, "pending chain entry", h);
            return;
        }
        q->desc[h].inflight = 0;
        l = q->desc[h].last;
        if (l >= vq->num) {
            pinf_bad(vq, "last entry of a chain", l);
            return;
        }
        h = q->desc[l].next;
    }
    vq->pinf_pend_n = 0;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    q->old_free_head = q->free_head;
    q->old_used_idx = q->used_idx;
    q->old_used_wrap_counter = q->used_wrap_counter;
}

void virtq_flush_packed(struct virtq *vq)
{
    if (vq->pinflight) {
        pinf_flush(vq);
        return;
    }
    if (!vq->used_held)
        return;
    __atomic_store_n(&vq->pdesc[vq->used_held_slot].flags, vq->used_held_flags, __ATOMIC_RELEASE);
    vq->used_held = false;
}

int virtq_pop(struct virtq *vq, struct virtq_elem *e)
{
    uint16_t pending = (uint16_t)(vq->shadow_avail_idx - vq->last_avail_idx);
    uint16_t head;
    int ret;

    if (vq->packed)
        return virtq_pop_packed(vq, e);
    /* Entries seen at the last read of avail->idx are consumed first; the
     * index is read again only when they are gone (or the cached value does
     * not make sense for our position, e.g. after SET_VRING_BASE). */
    if (pending == 0 || pending > vq->num) {
        uint16_t avail_idx = __atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE);
        vq->shadow_avail_idx = avail_idx;
        pending = (uint16_t)(avail_idx - vq->last_avail_idx);
        if (pending == 0)
            return 0;
        if (pending > vq->num) {
            log_err("%s: driver avail index %u is %u ahead of ours %u (ring size %u)", vq->name,
                    avail_idx, pending, vq->last_avail_idx, vq->num);
            return -EINVAL;
        }
    }
    head = __atomic_load_n(&vq->avail->ring[vq->last_avail_idx & (vq->num - 1)], __ATOMIC_RELAXED);
    if (head >= vq->num) {
        log_err("%s: avail ring entry %u names head %u (ring size %u)", vq->name,
                vq->last_avail_idx, head, vq->num);
        return -EINVAL;
    }
    if (pending > 1)
        __builtin_prefetch(
            &vq->desc[vq->avail->ring[(vq->last_avail_idx + 1) & (vq->num - 1)] & (vq->num - 1)]);
    ret = virtq_walk_chain(vq, e, head);
    if (ret)
        return ret;
    vq->next_head = (uint16_t)((head + e->n_out + e->n_in) & (vq->num - 1));
    if (vq->inflight) {
        vq->inflight->desc[head].counter = ++vq->inflight_counter;
        vq->inflight->desc[head].inflight = 1;
    }
    vq->last_avail_idx++;
    vq->n_chains++;
    return 1;
}

/* Hint the first bytes of one buffer (see virtq_prefetch). */
static inline void virtq_prefetch_buf(const struct virtq *vq, uint64_t addr, bool for_write,
                                      unsigned read_first)
{
    uint64_t len = 128;
    uint8_t *p = vu_mem_gpa_ptr(vq->mem, addr, &len);

    if (!p)
        return;
    if (for_write) {
        /* The first read_first bytes are read before they are written (and usually
         * not written): fetch their line shared unless the written part starts in
         * it, so that the driver keeps its copy. */
        uintptr_t w = (uintptr_t)p + (read_first < len ? read_first : 0);
        if (((uintptr_t)p ^ w) & ~(uintptr_t)63)
            __builtin_prefetch(p);
        __builtin_prefetch((const void *)w, 1);
        if ((uintptr_t)p + len > w + 64)
            __builtin_prefetch((const void *)(w + 64), 1);
    } else {
        __builtin_prefetch(p);
        if (len > 64)
            __builtin_prefetch(p + 64);
    }
}

void virtq_prefetch(const struct virtq *vq, unsigned max, bool for_write, unsigned read_first)
{
    uint16_t heads[64];
    unsigned n = (uint16_t)(vq->shadow_avail_idx - vq->last_avail_idx);

    if (vq->packed)
        return; /* virtq_prefetch_ahead fetches the descriptors; buffer hints measured no
                 * gain on packed rings (A/B, 4 runs each, within the noise) */
    if (n > vq->num)
        return;
    if (n > max)
        n = max;
    if (n > 64)
        n = 64;
    for (unsigned k = 0; k < n; k++) {
        uint16_t h = __atomic_load_n(
            &vq->avail->ring[(uint16_t)(vq->last_avail_idx + k) & (vq->num - 1)], __ATOMIC_RELAXED);
        heads[k] = h & (vq->num - 1);
        __builtin_prefetch(&vq->desc[heads[k]]);
    }
    for (unsigned k = 0; k < n; k++) {
        const struct virtq_desc *d = &vq->desc[heads[k]];

        if (__atomic_load_n(&d->flags, __ATOMIC_RELAXED) & VIRTQ_DESC_F_INDIRECT)
            continue;
        virtq_prefetch_buf(vq, __atomic_load_n(&d->addr, __ATOMIC_RELAXED), for_write, read_first);
    }
}

void virtq_unpop(struct virtq *vq, const struct virtq_elem *e, uint16_t n)
{
    if (vq->packed) {
        if (vq->pinflight && n) {
            /* The chains' entries were taken from the free list one after the other: the
             * last one's link still leads past them. Back in front of the list they go. */
            struct vhost_user_inflight_queue_packed *q = vq->pinflight;
            uint16_t l = e[n - 1].islot < vq->num ? q->desc[e[n - 1].islot].last : vq->num;
            if (e[0].islot >= vq->num || l >= vq->num) {
                pinf_bad(vq, "unpopped chain entry", e[0].islot);
            } else {
                for (unsigned k = 0; k < n; k++)
                    if (e[k].islot < vq->num)
                        q->desc[e[k].islot].inflight = 0;
                q->desc[l].next = q->free_head;
                q->free_head = q->old_free_head = e[0].islot;
            }
        }
        while (n--) {
            uint16_t nd = e[n].n_descs;
            if (vq->last_avail_idx < nd) {
                vq->last_avail_idx = (uint16_t)(vq->last_avail_idx + vq->num - nd);
                vq->avail_wrap = !vq->avail_wrap;
            } else {
                vq->last_avail_idx = (uint16_t)(vq->last_avail_idx - nd);
            }
            vq->n_chains--;
        }
        return;
    }
    while (n--) {
        vq->last_avail_idx--;
        if (vq->inflight) {
            uint16_t head = vq->avail->ring[vq->last_avail_idx & (vq->num - 1)];
            if (head < vq->num)
                vq->inflight->desc[head].inflight = 0;
        }
        vq->n_chains--;
    }
}

/* Packed (2.8.10): the driver's event suppression says enable, disable, or (event idx)
 * the slot and wrap of the used descriptor it wants to hear about. */
static bool virtq_need_notify_packed(struct virtq *vq)
{
    uint16_t old = vq->signalled_used, now = vq->used_idx, flags, off_wrap, off;
    bool valid = vq->signalled_valid;

    virtq_full_barrier();
    vq->signalled_used = now;
    vq->signalled_valid = true;
    flags = __atomic_load_n(&vq->driver_ev->flags, __ATOMIC_RELAXED) & 3;
    if (flags != PVIRTQ_EVENT_DESC || !vq->event_idx)
        return flags != PVIRTQ_EVENT_DISABLE;
    if (!valid)
        return true;
    off_wrap = __atomic_load_n(&vq->driver_ev->off_wrap, __ATOMIC_RELAXED);
    off = off_wrap & 0x7fff;
    /* Unwrap both onto now's lap: old before it, the event on the previous lap when its
     * wrap counter is not ours. */
    if (now <= old)
        old = (uint16_t)(old - vq->num);
    if (!!(off_wrap >> 15) != vq->used_wrap)
        off = (uint16_t)(off - vq->num);
    return virtq_need_event(off, now, old);
}

bool virtq_need_notify(struct virtq *vq)
{
    uint16_t old, now = vq->used_idx;
    bool valid = vq->signalled_valid;

    if (vq->packed)
        return virtq_need_notify_packed(vq);
    /* Our used-idx store must be visible before we read the driver's flags/event. */
    virtq_full_barrier();
    if (!vq->event_idx)
        return !(__atomic_load_n(&vq->avail->flags, __ATOMIC_RELAXED) & VIRTQ_AVAIL_F_NO_INTERRUPT);
    old = vq->signalled_used;
    vq->signalled_used = now;
    vq->signalled_valid = true;
    if (!valid)
        return true;
    return virtq_need_event(__atomic_load_n(&vq->avail->ring[vq->num], __ATOMIC_RELAXED), now, old);
}

void virtq_signal(struct virtq *vq)
{
    if (vq->call_fd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(vq->call_fd, &one, sizeof(one));
        (void)r;
        vq->n_calls++;
    }
}

bool virtq_notify(struct virtq *vq)
{
    if (!virtq_need_notify(vq))
        return false;
    virtq_signal(vq);
    return true;
}

static void virtq_log_used_hdr(struct virtq *vq)
{
    if (vq->log)
        vu_log_write(vq->log, vq->used_gpa, 2);
}

/* Packed: kicks on or off for every descriptor (the device event suppression). */
static void virtq_set_kicks_packed(struct virtq *vq, uint16_t flags)
{
    __atomic_store_n(&vq->device_ev->flags, flags, __ATOMIC_RELAXED);
    if (vq->log)
        vu_log_write(vq->log, vq->device_ev_gpa, sizeof(*vq->device_ev));
}

bool virtq_enable_kicks(struct virtq *vq)
{
    if (vq->packed) {
        virtq_set_kicks_packed(vq, PVIRTQ_EVENT_ENABLE);
        virtq_full_barrier();
        return virtq_packed_avail(vq);
    }
    if (vq->event_idx) {
        uint16_t *avail_event = (uint16_t *)&vq->used->ring[vq->num];
        __atomic_store_n(avail_event, vq->last_avail_idx, __ATOMIC_RELAXED);
        if (vq->log)
            vu_log_write(vq->log, vq->used_gpa + 4 + (uint64_t)vq->num * 8, 2);
    } else {
        __atomic_store_n(&vq->used->flags, vq->used->flags & ~VIRTQ_USED_F_NO_NOTIFY,
                         __ATOMIC_RELAXED);
        virtq_log_used_hdr(vq);
    }
    virtq_full_barrier();
    return virtq_avail_count(vq) != 0;
}

void virtq_disable_kicks(struct virtq *vq)
{
    if (vq->packed) {
        virtq_set_kicks_packed(vq, PVIRTQ_EVENT_DISABLE);
        return;
    }
    if (!vq->event_idx) {
        __atomic_store_n(&vq->used->flags, vq->used->flags | VIRTQ_USED_F_NO_NOTIFY,
                         __ATOMIC_RELAXED);
        virtq_log_used_hdr(vq);
    }
    /* With event idx, a stale avail_event already suppresses kicks. */
}

void virtq_log_elem_write(struct virtq *vq, const struct virtq_elem *e, uint32_t len)
{
    if (!vq->log)
        return;
    for (unsigned i = e->n_out; i < (unsigned)(e->n_out + e->n_in) && len; i++) {
        uint32_t l = e->iov[i].len < len ? e->iov[i].len : len;
        vu_log_write(vq->log, e->iov[i].gpa, l);
        len -= l;
    }
}

uint64_t virtq_inflight_queue_size(uint16_t num)
{
    uint64_t sz = sizeof(struct vhost_user_inflight_queue) +
                  (uint64_t)num * sizeof(struct vhost_user_inflight_desc);
    return (sz + 63) & ~(uint64_t)63;
}

uint64_t virtq_inflight_queue_size_packed(uint16_t num)
{
    uint64_t sz = sizeof(struct vhost_user_inflight_queue_packed) +
                  (uint64_t)num * sizeof(struct vhost_user_inflight_desc_packed);
    return (sz + 63) & ~(uint64_t)63;
}

void virtq_inflight_init_packed(struct vhost_user_inflight_queue_packed *q, uint16_t num,
                                uint16_t used_idx, bool used_wrap)
{
    memset(q->desc, 0, (size_t)num * sizeof(q->desc[0]));
    for (unsigned i = 0; i < num; i++)
        q->desc[i].next = (uint16_t)(i + 1);
    q->desc_num = num;
    q->free_head = q->old_free_head = 0;
    q->used_idx = q->old_used_idx = used_idx;
    q->used_wrap_counter = q->old_used_wrap_counter = used_wrap;
    __atomic_store_n(&q->version, 1, __ATOMIC_RELEASE);
}

int virtq_inflight_recover_packed(struct vhost_user_inflight_queue_packed *q, uint16_t num,
                                  const struct pvirtq_desc *ring, uint16_t *used_idx,
                                  bool *used_wrap)
{
    uint16_t f;
    unsigned n = 0, steps = 0;

    if (q->desc_num != num || q->used_idx >= num || q->old_used_idx >= num ||
        q->used_wrap_counter > 1 || q->old_used_wrap_counter > 1 || q->free_head > num ||
        q->old_free_head > num)
        return -EINVAL;
    if (q->used_idx != q->old_used_idx || q->used_wrap_counter != q->old_used_wrap_counter) {
        /* A flush was cut short. Its first descriptor still available (for the old wrap
         * counter: AVAIL = w, USED = !w) means the batch never went out: roll back. */
        uint16_t fl = __atomic_load_n(&ring[q->old_used_idx].flags, __ATOMIC_ACQUIRE);
        uint16_t avail = q->old_used_wrap_counter ? PVIRTQ_DESC_F_AVAIL : PVIRTQ_DESC_F_USED;
        if ((fl & (PVIRTQ_DESC_F_AVAIL | PVIRTQ_DESC_F_USED)) != avail) {
            q->old_free_head = q->free_head;
            q->old_used_idx = q->used_idx;
            q->old_used_wrap_counter = q->used_wrap_counter;
        }
    }
    q->free_head = q->old_free_head;
    q->used_idx = q->old_used_idx;
    q->used_wrap_counter = q->old_used_wrap_counter;
    for (f = q->free_head; f < num; f = q->desc[f].next) {
        if (++steps > num)
            return -EINVAL; /* the free list loops */
        q->desc[f].inflight = 0;
    }
    for (unsigned i = 0; i < num; i++)
        n += q->desc[i].inflight != 0;
    *used_idx = q->used_idx;
    *used_wrap = q->used_wrap_counter;
    return (int)n;
}

unsigned virtq_inflight_pending(const struct vhost_user_inflight_queue *q, uint16_t num)
{
    unsigned n = 0;
    for (unsigned i = 0; i < num; i++)
        n += q->desc[i].inflight != 0;
    return n;
}
