/* SPDX-License-Identifier: Apache-2.0 */
/* Split virtqueues, device side. See virtq.h for the rules enforced here. */
#include "vmm/devices/virtq.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "vmm/vm.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio rings are little endian");
_Static_assert(sizeof(struct virtq_desc) == 16, "virtq_desc layout");
_Static_assert(sizeof(struct virtq_used_elem) == 8, "virtq_used_elem layout");

/* Avail ring: flags, idx, ring[size], used_event (all le16). */
#define AVAIL_FLAGS         0
#define AVAIL_IDX           1
#define AVAIL_RING(i)       (2 + (i))
#define AVAIL_USED_EVENT(s) (2 + (s))
/* Used ring: flags, idx (le16), ring[size] of 8 bytes, avail_event (le16). */
#define USED_FLAGS          0
#define USED_IDX            1
#define USED_AVAIL_EVENT(s) (2 + 4 * (s))

struct virtq_elem *virtq_elem_alloc(uint32_t max)
{
    struct virtq_elem *elem;

    if (max == 0 || max > VIRTQ_MAX_SIZE)
        return NULL;
    elem = calloc(1, sizeof(*elem) + (size_t)max * sizeof(struct iovec));
    if (elem)
        elem->iov_cap = max;
    return elem;
}

void virtq_set_error_handler(struct virtq *vq, virtq_error_fn fn, void *opaque)
{
    vq->on_error = fn;
    vq->opaque = opaque;
}

void virtq_reset(struct virtq *vq)
{
    virtq_error_fn fn = vq->on_error;
    void *opaque = vq->opaque;
    const char *name = vq->name;
    uint16_t index = vq->index;

    memset(vq, 0, sizeof(*vq));
    vq->on_error = fn;
    vq->opaque = opaque;
    vq->name = name;
    vq->index = index;
}

int virtq_setup(struct virtq *vq, struct vm *vm, const char *name, uint16_t index, uint16_t size,
                uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa, uint64_t features)
{
    uint64_t desc_len = 16ull * size, avail_len = 6ull + 2ull * size, used_len = 6ull + 8ull * size;
    void *desc, *avail, *used;

    virtq_reset(vq);
    vq->vm = vm;
    vq->name = name;
    vq->index = index;
    if (size == 0 || size > VIRTQ_MAX_SIZE) {
        log_warn("virtio device '%s' queue %u: size %u out of range 1-%u", name, index, size,
                 VIRTQ_MAX_SIZE);
        return -EINVAL;
    }
    if ((desc_gpa & 15) || (avail_gpa & 1) || (used_gpa & 3)) {
        log_warn("virtio device '%s' queue %u: misaligned rings (desc 0x%llx avail 0x%llx used "
                 "0x%llx)",
                 name, index, (unsigned long long)desc_gpa, (unsigned long long)avail_gpa,
                 (unsigned long long)used_gpa);
        return -EINVAL;
    }
    desc = vm_gpa_to_hva(vm, desc_gpa, desc_len);
    avail = vm_gpa_to_hva(vm, avail_gpa, avail_len);
    used = vm_gpa_to_hva(vm, used_gpa, used_len);
    if (!desc || !avail || !used) {
        log_warn("virtio device '%s' queue %u: %s ring at 0x%llx is outside guest RAM", name, index,
                 !desc    ? "descriptor"
                 : !avail ? "available"
                          : "used",
                 (unsigned long long)(!desc    ? desc_gpa
                                      : !avail ? avail_gpa
                                               : used_gpa));
        return -EINVAL;
    }
    vq->size = size;
    vq->desc = desc;
    vq->avail = avail;
    vq->used = used;
    vq->used_ring = (volatile struct virtq_used_elem *)((uint8_t *)used + 4);
    vq->event_idx = features & (1ull << VIRTIO_RING_F_EVENT_IDX);
    vq->indirect = features & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
    vq->ready = true;
    return 0;
}

void virtq_fail(struct virtq *vq, const char *fmt, ...)
{
    char reason[256];
    va_list ap;

    if (vq->broken)
        return;
    vq->broken = true;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    log_warn("virtio device '%s' queue %u: %s; device needs reset", vq->name ? vq->name : "?",
             vq->index, reason);
    if (vq->on_error)
        vq->on_error(vq->opaque, vq, reason);
}

static uint16_t virtq_load_avail_idx(struct virtq *vq)
{
    return __atomic_load_n(&vq->avail[AVAIL_IDX], __ATOMIC_ACQUIRE);
}

int virtq_avail_count(struct virtq *vq)
{
    uint16_t n;

    if (!vq->ready || vq->broken)
        return 0;
    n = (uint16_t)(virtq_load_avail_idx(vq) - vq->last_avail_idx);
    return n > vq->size ? 0 : n;
}

/* Add one buffer to elem, enforcing readable-before-writable. */
static int virtq_elem_add(struct virtq *vq, struct virtq_elem *elem, const struct virtq_desc *d,
                          uint32_t pos, bool indirect)
{
    const char *where = indirect ? "indirect descriptor" : "descriptor";
    void *hva;

    if (d->len == 0)
        return 0;
    if (d->addr + d->len < d->addr) {
        virtq_fail(vq, "%s %u: address 0x%llx + length %u overflows", where, pos,
                   (unsigned long long)d->addr, d->len);
        return -EIO;
    }
    hva = vm_gpa_to_hva(vq->vm, d->addr, d->len);
    if (!hva) {
        virtq_fail(vq, "%s %u: buffer 0x%llx length %u is outside guest RAM", where, pos,
                   (unsigned long long)d->addr, d->len);
        return -EIO;
    }
    if (elem->out_num + elem->in_num >= elem->iov_cap) {
        virtq_fail(vq, "descriptor chain has more than %u buffers", elem->iov_cap);
        return -EIO;
    }
    if (d->flags & VIRTQ_DESC_F_WRITE) {
        elem->iov[elem->out_num + elem->in_num] = (struct iovec){hva, d->len};
        elem->in_num++;
        elem->in_len += d->len;
    } else {
        if (elem->in_num) {
            virtq_fail(vq, "%s %u: device-readable buffer after a device-writable one", where, pos);
            return -EIO;
        }
        elem->iov[elem->out_num] = (struct iovec){hva, d->len};
        elem->out_num++;
        elem->out_len += d->len;
    }
    return 0;
}

static void virtq_read_desc(const void *table, uint32_t i, struct virtq_desc *d)
{
    /* One copy out of guest memory: the guest may change it behind our back. */
    memcpy(d, (const uint8_t *)table + 16ull * i, sizeof(*d));
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/* Walk an indirect table; d is the descriptor that points at it. */
static int virtq_walk_indirect(struct virtq *vq, struct virtq_elem *elem,
                               const struct virtq_desc *d, uint32_t pos)
{
    uint32_t n, i = 0, count = 0;
    const void *table;
    struct virtq_desc id;

    if (!vq->indirect) {
        virtq_fail(vq,
                   "descriptor %u is indirect but VIRTIO_RING_F_INDIRECT_DESC was not "
                   "negotiated",
                   pos);
        return -EIO;
    }
    if (d->flags & VIRTQ_DESC_F_NEXT) {
        virtq_fail(vq, "descriptor %u has both INDIRECT and NEXT", pos);
        return -EIO;
    }
    if (d->len == 0 || d->len % 16) {
        virtq_fail(vq, "descriptor %u: indirect table length %u is not a non-zero multiple of 16",
                   pos, d->len);
        return -EIO;
    }
    n = d->len / 16;
    if (n > vq->size) {
        virtq_fail(vq, "descriptor %u: indirect table of %u entries exceeds queue size %u", pos, n,
                   vq->size);
        return -EIO;
    }
    if (d->addr + d->len < d->addr || !(table = vm_gpa_to_hva(vq->vm, d->addr, d->len))) {
        virtq_fail(vq, "descriptor %u: indirect table 0x%llx length %u is outside guest RAM", pos,
                   (unsigned long long)d->addr, d->len);
        return -EIO;
    }
    for (;;) {
        if (++count > n) {
            virtq_fail(vq, "indirect table at 0x%llx: chain loops or exceeds its %u entries",
                       (unsigned long long)d->addr, n);
            return -EIO;
        }
        virtq_read_desc(table, i, &id);
        if (id.flags & VIRTQ_DESC_F_INDIRECT) {
            virtq_fail(vq, "indirect descriptor %u points to another indirect table", i);
            return -EIO;
        }
        if (virtq_elem_add(vq, elem, &id, i, true) < 0)
            return -EIO;
        if (!(id.flags & VIRTQ_DESC_F_NEXT))
            return 0;
        if (id.next >= n) {
            virtq_fail(vq, "indirect descriptor %u: next %u is beyond the table's %u entries", i,
                       id.next, n);
            return -EIO;
        }
        i = id.next;
    }
}

int virtq_pop(struct virtq *vq, struct virtq_elem *elem)
{
    uint16_t avail_idx, n, head;
    uint32_t i, count = 0;
    struct virtq_desc d;

    if (!vq->ready || vq->broken)
        return vq->broken ? -EIO : 0;
    avail_idx = virtq_load_avail_idx(vq);
    n = (uint16_t)(avail_idx - vq->last_avail_idx);
    if (n == 0 && vq->event_idx) {
        /*
         * About to report empty (and go to sleep): publish avail_event, then
         * look again. Without the full fence our store could sit in the store
         * buffer while the driver reads an old avail_event and skips the kick.
         */
        __atomic_store_n(&vq->used[USED_AVAIL_EVENT(vq->size)], vq->last_avail_idx,
                         __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        avail_idx = virtq_load_avail_idx(vq);
        n = (uint16_t)(avail_idx - vq->last_avail_idx);
    }
    if (n == 0)
        return 0;
    if (n > vq->size) {
        virtq_fail(vq, "available index %u is %u ahead of the last seen %u (queue size %u)",
                   avail_idx, n, vq->last_avail_idx, vq->size);
        return -EIO;
    }
    head = vq->avail[AVAIL_RING(vq->last_avail_idx % vq->size)];
    if (head >= vq->size) {
        virtq_fail(vq, "available ring entry %u: head %u is beyond queue size %u",
                   vq->last_avail_idx % vq->size, head, vq->size);
        return -EIO;
    }
    elem->head = head;
    elem->out_num = elem->in_num = 0;
    elem->out_len = elem->in_len = 0;
    i = head;
    for (;;) {
        if (++count > vq->size) {
            virtq_fail(vq, "descriptor chain from head %u loops or exceeds queue size %u", head,
                       vq->size);
            return -EIO;
        }
        virtq_read_desc((const void *)vq->desc, i, &d);
        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            if (virtq_walk_indirect(vq, elem, &d, i) < 0)
                return -EIO;
            break;
        }
        if (virtq_elem_add(vq, elem, &d, i, false) < 0)
            return -EIO;
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            break;
        if (d.next >= vq->size) {
            virtq_fail(vq, "descriptor %u: next %u is beyond queue size %u", i, d.next, vq->size);
            return -EIO;
        }
        i = d.next;
    }
    vq->last_avail_idx++;
    if (vq->event_idx) {
        /* Ask for a kick as soon as anything beyond what we have seen arrives. */
        __atomic_store_n(&vq->used[USED_AVAIL_EVENT(vq->size)], vq->last_avail_idx,
                         __ATOMIC_RELEASE);
    }
    return 1;
}

void virtq_fill(struct virtq *vq, uint16_t head, uint32_t len, uint16_t pos)
{
    uint16_t slot;

    if (!vq->ready)
        return;
    slot = (uint16_t)(vq->used_idx + pos) % vq->size;
    vq->used_ring[slot].id = head;
    vq->used_ring[slot].len = len;
}

void virtq_flush(struct virtq *vq, uint16_t n)
{
    if (!vq->ready)
        return;
    vq->used_idx = (uint16_t)(vq->used_idx + n);
    /* The elements must be visible before the index that publishes them. */
    __atomic_store_n(&vq->used[USED_IDX], vq->used_idx, __ATOMIC_RELEASE);
}

void virtq_push(struct virtq *vq, uint16_t head, uint32_t len)
{
    virtq_fill(vq, head, len, 0);
    virtq_flush(vq, 1);
}

void virtq_unpop(struct virtq *vq, uint16_t n)
{
    vq->last_avail_idx = (uint16_t)(vq->last_avail_idx - n);
}

bool virtq_should_notify(struct virtq *vq)
{
    uint16_t old, now, event;
    bool valid;

    if (!vq->ready)
        return false;
    /* Order our used->idx store before reading the driver's suppression fields. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!vq->event_idx)
        return !(vq->avail[AVAIL_FLAGS] & VIRTQ_AVAIL_F_NO_INTERRUPT);
    old = vq->signalled_used;
    valid = vq->signalled_used_valid;
    now = vq->used_idx;
    vq->signalled_used = now;
    vq->signalled_used_valid = true;
    if (!valid)
        return true;
    event = vq->avail[AVAIL_USED_EVENT(vq->size)];
    return virtq_need_event(event, now, old);
}

size_t virtq_elem_read(const struct virtq_elem *elem, size_t off, void *buf, size_t len)
{
    size_t done = 0;

    for (uint32_t i = 0; i < elem->out_num && done < len; i++) {
        size_t l = elem->iov[i].iov_len;

        if (off >= l) {
            off -= l;
            continue;
        }
        l -= off;
        if (l > len - done)
            l = len - done;
        memcpy((uint8_t *)buf + done, (uint8_t *)elem->iov[i].iov_base + off, l);
        done += l;
        off = 0;
    }
    return done;
}

size_t virtq_elem_write(const struct virtq_elem *elem, size_t off, const void *buf, size_t len)
{
    size_t done = 0;

    for (uint32_t i = elem->out_num; i < elem->out_num + elem->in_num && done < len; i++) {
        size_t l = elem->iov[i].iov_len;

        if (off >= l) {
            off -= l;
            continue;
        }
        l -= off;
        if (l > len - done)
            l = len - done;
        memcpy((uint8_t *)elem->iov[i].iov_base + off, (const uint8_t *)buf + done, l);
        done += l;
        off = 0;
    }
    return done;
}

int virtq_iov_slice(const struct iovec *iov, uint32_t n, size_t off, size_t len, struct iovec *out,
                    uint32_t max)
{
    uint32_t k = 0;

    for (uint32_t i = 0; i < n && len > 0; i++) {
        size_t l = iov[i].iov_len;

        if (off >= l) {
            off -= l;
            continue;
        }
        l -= off;
        if (l > len)
            l = len;
        if (k == max)
            return -EINVAL;
        out[k++] = (struct iovec){(uint8_t *)iov[i].iov_base + off, l};
        len -= l;
        off = 0;
    }
    return len ? -EINVAL : (int)k;
}
