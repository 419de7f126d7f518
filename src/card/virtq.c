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
        /* Fast path, the usual packet: one direct descriptor inside one memory
         * region. Anything else takes the full walk below, which reads the
         * descriptor again and checks everything. */
        struct virtq_desc d;
        memcpy(&d, (const void *)&tbl[head], sizeof(d));
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        if (!(d.flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) && d.len &&
            d.len <= (1u << 30)) {
            uint64_t l = d.len;
            uint8_t *p = vu_mem_gpa_ptr(vq->mem, d.addr, &l);
            if (p && l == d.len) {
                e->iov[0].base = p;
                e->iov[0].len = d.len;
                e->iov[0].gpa = d.addr;
                if (d.flags & VIRTQ_DESC_F_WRITE) {
                    e->n_in = 1;
                    e->in_len = d.len;
                } else {
                    e->n_out = 1;
                    e->out_len = d.len;
                }
                return 0;
            }
        }
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

int virtq_pop(struct virtq *vq, struct virtq_elem *e)
{
    uint16_t pending = (uint16_t)(vq->shadow_avail_idx - vq->last_avail_idx);
    uint16_t head;
    int ret;

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

void virtq_prefetch(const struct virtq *vq, unsigned max, bool for_write, unsigned read_first)
{
    uint16_t heads[64];
    unsigned n = (uint16_t)(vq->shadow_avail_idx - vq->last_avail_idx);

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
        uint64_t addr = __atomic_load_n(&d->addr, __ATOMIC_RELAXED), len = 128;
        uint8_t *p;

        if (__atomic_load_n(&d->flags, __ATOMIC_RELAXED) & VIRTQ_DESC_F_INDIRECT)
            continue;
        p = vu_mem_gpa_ptr(vq->mem, addr, &len);
        if (!p)
            continue;
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
}

void virtq_unpop(struct virtq *vq, uint16_t n)
{
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

bool virtq_need_notify(struct virtq *vq)
{
    uint16_t old, now = vq->used_idx;
    bool valid = vq->signalled_valid;

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

bool virtq_enable_kicks(struct virtq *vq)
{
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

unsigned virtq_inflight_pending(const struct vhost_user_inflight_queue *q, uint16_t num)
{
    unsigned n = 0;
    for (unsigned i = 0; i < num; i++)
        n += q->desc[i].inflight != 0;
    return n;
}
