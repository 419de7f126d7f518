/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qcow2 driver: header, L1/L2 mapping, refcounts, allocation, backing files,
 * compressed and extended-L2 clusters.
 *
 * Metadata is cached write-back. Ordering rules that keep a killed process
 * from leaving anything worse than leaked clusters:
 *   - guest data is written before the L2 entry that points to it changes;
 *   - refcount blocks are written (and synced) before any L2 table or L1
 *     table is written (refcounts before references);
 *   - L2 tables are written before the L1 table;
 *   - refcount decrements (discard, copy-on-write away from a shared cluster)
 *     are deferred until the tables no longer referencing the cluster are on
 *     disk, and freed clusters are not reused before that.
 */
#include "image/qcow2.h"
#include "common/log.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define L2_CACHE_DEFAULT 64
#define RB_CACHE_DEFAULT 16
#define DEC_MAX          4096

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return be32toh(v);
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}

static void wr32(uint8_t *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}

static void wr64(uint8_t *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

static void wr16(uint8_t *p, uint16_t v)
{
    v = htobe16(v);
    memcpy(p, &v, 2);
}

static uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return be16toh(v);
}

static void *qcow2_alloc_buf(size_t len)
{
    void *p = NULL;
    if (posix_memalign(&p, IMG_DIO_ALIGN, len ? len : IMG_DIO_ALIGN))
        return NULL;
    return p;
}

int qcow2_signal_corrupt(struct qcow2 *s, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_err("image '%s': corrupt: %s", s->img->path, msg);
    if (!s->img->read_only && !s->corrupt_signalled && !(s->img->open_flags & QTIMG_O_CHECK)) {
        s->corrupt_signalled = true;
        s->incompat |= QCOW2_INCOMPAT_CORRUPT;
        if (qcow2_write_header(s) == 0)
            log_err("image '%s': marked corrupt; run 'qtimg check -r all'", s->img->path);
    }
    return -EIO;
}

/* ---- refcount block bit packing (LSB first below 8 bits, big endian above) ---- */

uint64_t qcow2_rb_get(const uint8_t *rb, uint32_t order, uint64_t idx)
{
    switch (order) {
    case 0:
        return (rb[idx / 8] >> (idx % 8)) & 1;
    case 1:
        return (rb[idx / 4] >> (2 * (idx % 4))) & 3;
    case 2:
        return (rb[idx / 2] >> (4 * (idx % 2))) & 15;
    case 3:
        return rb[idx];
    case 4:
        return rd16(rb + 2 * idx);
    case 5:
        return rd32(rb + 4 * idx);
    default:
        return rd64(rb + 8 * idx);
    }
}

void qcow2_rb_set(uint8_t *rb, uint32_t order, uint64_t idx, uint64_t val)
{
    switch (order) {
    case 0:
        rb[idx / 8] = (uint8_t)((rb[idx / 8] & ~(1u << (idx % 8))) | ((val & 1) << (idx % 8)));
        break;
    case 1: {
        unsigned sh = 2 * (idx % 4);
        rb[idx / 4] = (uint8_t)((rb[idx / 4] & ~(3u << sh)) | ((val & 3) << sh));
        break;
    }
    case 2: {
        unsigned sh = 4 * (idx % 2);
        rb[idx / 2] = (uint8_t)((rb[idx / 2] & ~(15u << sh)) | ((val & 15) << sh));
        break;
    }
    case 3:
        rb[idx] = (uint8_t)val;
        break;
    case 4:
        wr16(rb + 2 * idx, (uint16_t)val);
        break;
    case 5:
        wr32(rb + 4 * idx, (uint32_t)val);
        break;
    default:
        wr64(rb + 8 * idx, val);
        break;
    }
}

/* ---- metadata cache ---- */

static int qcow2_cache_init(struct qcow2_cache *c, unsigned n, uint64_t cs)
{
    c->n = n;
    c->base = n;
    c->ent = calloc(n + QCOW2_CACHE_SLACK, sizeof(*c->ent));
    if (!c->ent)
        return -ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        c->ent[i].data = qcow2_alloc_buf(cs);
        if (!c->ent[i].data)
            return -ENOMEM;
    }
    return 0;
}

static void qcow2_cache_free(struct qcow2_cache *c)
{
    if (!c->ent)
        return;
    for (unsigned i = 0; i < c->n; i++)
        free(c->ent[i].data);
    free(c->ent);
    c->ent = NULL;
}

/* Writes the refcount table entries changed in memory only (new refcount
 * blocks); the blocks they point to must be on disk first. */
static int qcow2_rt_writeback(struct qcow2 *s)
{
    uint64_t lo = s->rt_dirty_lo, hi = s->rt_dirty_hi;
    uint64_t *be;
    int ret;

    if (lo >= hi)
        return 0;
    be = malloc((hi - lo) * 8);
    if (!be)
        return -ENOMEM;
    for (uint64_t i = lo; i < hi; i++)
        be[i - lo] = htobe64(s->rt[i]);
    ret = img_meta_pwrite(s->img, be, (hi - lo) * 8, s->rt_off + lo * 8);
    free(be);
    if (ret < 0) {
        log_err("image '%s': writing refcount table: %s", s->img->path, strerror(-ret));
        return ret;
    }
    s->rt_dirty_lo = s->rt_dirty_hi = 0;
    return 0;
}

static int qcow2_rb_writeback(struct qcow2 *s, bool sync)
{
    bool wrote = false;
    int ret;

    for (unsigned i = 0; i < s->rbc.n; i++) {
        struct qcow2_cache_ent *e = &s->rbc.ent[i];
        if (e->off && e->dirty) {
            ret = img_meta_pwrite(s->img, e->data, s->cluster_size, e->off);
            if (ret < 0) {
                log_err("image '%s': writing refcount block at 0x%llx: %s", s->img->path,
                        (unsigned long long)e->off, strerror(-ret));
                return ret;
            }
            e->dirty = false;
            wrote = true;
        }
    }
    if (s->rt_dirty_lo < s->rt_dirty_hi) {
        /* new blocks are on disk before the table points to them */
        if (wrote && img_fdatasync(s->img) < 0)
            return -errno;
        ret = qcow2_rt_writeback(s);
        if (ret < 0)
            return ret;
        wrote = true;
    }
    if (s->rt_hdr_dirty) {
        /* a table grown in non-blocking mode: the header switches to it once
         * it is on disk */
        uint8_t hdr[12];
        if (img_fdatasync(s->img) < 0)
            return -errno;
        wr64(hdr, s->rt_off);
        wr32(hdr + 8, s->rt_clusters);
        ret = img_meta_pwrite(s->img, hdr, sizeof(hdr), 48);
        if (ret < 0)
            return ret;
        s->rt_hdr_dirty = false;
        wrote = true;
    }
    if (sync && wrote && img_fdatasync(s->img) < 0)
        return -errno;
    return 0;
}

static int qcow2_cache_write_ent(struct qcow2 *s, struct qcow2_cache *c, struct qcow2_cache_ent *e)
{
    int ret;

    if (c == &s->l2c) {
        /* refcounts of everything this table references go first */
        ret = qcow2_rb_writeback(s, true);
        if (ret < 0)
            return ret;
    }
    ret = img_meta_pwrite(s->img, e->data, s->cluster_size, e->off);
    if (ret < 0) {
        log_err("image '%s': writing %s at 0x%llx: %s", s->img->path,
                c == &s->l2c ? "L2 table" : "refcount block", (unsigned long long)e->off,
                strerror(-ret));
        return ret;
    }
    e->dirty = false;
    return 0;
}

static struct qcow2_cache_ent *qcow2_cache_find(struct qcow2_cache *c, uint64_t off)
{
    for (unsigned i = 0; i < c->n; i++)
        if (c->ent[i].off == off)
            return &c->ent[i];
    return NULL;
}

/* Takes one more slot past the bound (non-blocking mode only). */
static struct qcow2_cache_ent *qcow2_cache_grow(struct qcow2 *s, struct qcow2_cache *c)
{
    struct qcow2_cache_ent *e;

    if (c->n >= c->base + QCOW2_CACHE_SLACK)
        return NULL;
    e = &c->ent[c->n];
    memset(e, 0, sizeof(*e));
    e->data = qcow2_alloc_buf(s->cluster_size);
    if (!e->data)
        return NULL;
    c->n++;
    return e;
}

/*
 * A slot for a table that is not cached: a free one, else the least recently
 * used clean one. Blocking mode writes back the least recently used dirty
 * table; non-blocking mode never does I/O here: it takes a slot from the
 * slack and asks for a write-back, or reports IMG_NEED_ROOM when the slack
 * is used up too. Pinned tables are never evicted.
 */
static int qcow2_cache_slot(struct qcow2 *s, struct qcow2_cache *c, struct qcow2_cache_ent **out)
{
    struct qcow2_cache_ent *clean = NULL, *dirty = NULL, *e;
    int ret;

    for (unsigned i = 0; i < c->n; i++) {
        e = &c->ent[i];
        if (!e->off) {
            *out = e;
            return 0;
        }
        if (e->pin)
            continue;
        if (!e->dirty) {
            if (!clean || e->lru < clean->lru)
                clean = e;
        } else if (!dirty || e->lru < dirty->lru) {
            dirty = e;
        }
    }
    if (clean && s->img->nowait && clean->lru == c->tick) {
        /* the only clean table was just read for a request that has not used
         * it yet: keep it while the slack lasts */
        e = qcow2_cache_grow(s, c);
        if (e) {
            s->img->want_writeback = true;
            *out = e;
            return 0;
        }
    }
    if (clean) {
        *out = clean;
        return 0;
    }
    if (s->img->nowait) {
        s->img->want_writeback = true;
        e = qcow2_cache_grow(s, c);
        if (e) {
            *out = e;
            return 0;
        }
        s->img->nowait->kind = IMG_NEED_ROOM;
        s->img->nowait->img = s->img;
        return -EWOULDBLOCK;
    }
    if (dirty && s->flushing) {
        /* an older copy of it may be on the ring: writing it here could be
         * overtaken by that copy; take a slack slot instead */
        e = qcow2_cache_grow(s, c);
        if (e) {
            *out = e;
            return 0;
        }
        log_err("image '%s': metadata cache full while a flush is on the ring; poll and retry",
                s->img->path);
        return -EBUSY;
    }
    if (dirty) {
        ret = qcow2_cache_write_ent(s, c, dirty);
        if (ret < 0)
            return ret;
        *out = dirty;
        return 0;
    }
    /* every table is pinned by an in-flight allocation */
    e = qcow2_cache_grow(s, c);
    if (!e) {
        log_err("image '%s': metadata cache exhausted by in-flight allocations", s->img->path);
        return -ENOBUFS;
    }
    *out = e;
    return 0;
}

/* Gives back the slots taken past the bound once their tables are clean. */
static void qcow2_cache_trim(struct qcow2_cache *c)
{
    for (unsigned i = 0; i < c->n && c->n > c->base;) {
        struct qcow2_cache_ent *e = &c->ent[i];
        if (e->off && (e->dirty || e->pin)) {
            i++;
            continue;
        }
        free(e->data);
        c->n--;
        if (i != c->n)
            *e = c->ent[c->n];
        memset(&c->ent[c->n], 0, sizeof(c->ent[c->n]));
    }
    c->last = 0;
}

static int qcow2_cache_id(const struct qcow2 *s, const struct qcow2_cache *c)
{
    return c == &s->l2c ? 0 : 1;
}

/* Returns the cached table at off; read=false gives a zeroed table (new). */
int qcow2_cache_get(struct qcow2 *s, struct qcow2_cache *c, uint64_t off, bool read, uint8_t **out)
{
    struct qcow2_cache_ent *victim = NULL;
    int ret;

    if (c->last < c->n && c->ent[c->last].off == off && read) {
        c->ent[c->last].lru = ++c->tick;
        *out = c->ent[c->last].data;
        return 0;
    }
    victim = qcow2_cache_find(c, off);
    if (victim) {
        victim->lru = ++c->tick;
        c->last = (unsigned)(victim - c->ent);
        if (!read) {
            memset(victim->data, 0, s->cluster_size);
            victim->dirty = false;
            victim->gen++;
        }
        *out = victim->data;
        return 0;
    }
    if (read && s->img->nowait) {
        struct img_need *need = s->img->nowait;
        need->kind = IMG_NEED_READ;
        need->img = s->img;
        need->table = qcow2_cache_id(s, c);
        need->off = off;
        need->len = (uint32_t)s->cluster_size;
        return -EWOULDBLOCK;
    }
    ret = qcow2_cache_slot(s, c, &victim);
    if (ret < 0)
        return ret;
    victim->off = 0;
    if (read) {
        ret = img_meta_pread(s->img, victim->data, s->cluster_size, off);
        if (ret < 0) {
            log_err("image '%s': reading table at 0x%llx: %s", s->img->path,
                    (unsigned long long)off, strerror(-ret));
            return ret;
        }
    } else {
        memset(victim->data, 0, s->cluster_size);
    }
    victim->off = off;
    victim->dirty = false;
    victim->gen++;
    victim->lru = ++c->tick;
    c->last = (unsigned)(victim - c->ent);
    *out = victim->data;
    return 0;
}

/* Non-blocking mode: a slot can be had without I/O (checked before a change
 * that must not be left half done). */
static int qcow2_cache_reserve(struct qcow2 *s, struct qcow2_cache *c)
{
    struct qcow2_cache_ent *e;

    if (!s->img->nowait)
        return 0;
    for (unsigned i = 0; i < c->n; i++) {
        e = &c->ent[i];
        if (!e->off || (!e->pin && !e->dirty))
            return 0;
    }
    if (c->n < c->base + QCOW2_CACHE_SLACK)
        return 0;
    s->img->want_writeback = true;
    s->img->nowait->kind = IMG_NEED_ROOM;
    s->img->nowait->img = s->img;
    return -EWOULDBLOCK;
}

void qcow2_cache_mark_dirty(struct qcow2_cache *c, uint64_t off)
{
    struct qcow2_cache_ent *e = qcow2_cache_find(c, off);

    if (e) {
        e->dirty = true;
        e->gen++;
    }
}

static void qcow2_cache_pin(struct qcow2_cache *c, uint64_t off, bool pin)
{
    struct qcow2_cache_ent *e = qcow2_cache_find(c, off);

    if (!e)
        return;
    if (pin)
        e->pin++;
    else if (e->pin)
        e->pin--;
}

void qcow2_mark_l1_dirty(struct qcow2 *s)
{
    s->l1_dirty = true;
    s->l1_gen++;
}

static void qcow2_cache_drop(struct qcow2_cache *c, uint64_t off)
{
    for (unsigned i = 0; i < c->n; i++)
        if (c->ent[i].off == off && !c->ent[i].pin)
            c->ent[i].off = 0;
}

/* ---- refcounts ---- */

static int qcow2_rb_lookup(struct qcow2 *s, uint64_t cluster, uint64_t *rb_off)
{
    uint64_t bi = cluster >> s->rb_bits;

    *rb_off = 0;
    if (bi >= s->rt_size)
        return 0;
    *rb_off = s->rt[bi] & QCOW2_OFFSET_MASK;
    if (s->rt[bi] & ((s->cluster_size - 1) | ~QCOW2_OFFSET_MASK))
        return qcow2_signal_corrupt(s, "refcount table entry %llu (0x%llx) is not aligned",
                                    (unsigned long long)bi, (unsigned long long)s->rt[bi]);
    if (*rb_off && *rb_off + s->cluster_size > s->file_size)
        return qcow2_signal_corrupt(s, "refcount block %llu at 0x%llx is past the end of the file",
                                    (unsigned long long)bi, (unsigned long long)*rb_off);
    return 0;
}

int qcow2_refcount_get(struct qcow2 *s, uint64_t cluster, uint64_t *out)
{
    uint64_t rb_off;
    uint8_t *rb;
    int ret = qcow2_rb_lookup(s, cluster, &rb_off);

    *out = 0;
    if (ret < 0 || !rb_off)
        return ret;
    ret = qcow2_cache_get(s, &s->rbc, rb_off, true, &rb);
    if (ret < 0)
        return ret;
    *out = qcow2_rb_get(rb, s->refcount_order, cluster & ((1ull << s->rb_bits) - 1));
    return 0;
}

static int qcow2_reftable_grow(struct qcow2 *s, uint64_t min_entries);

/* Creates the refcount block for block index bi, placed at the first cluster
 * it covers (free by definition since nothing counts it). */
static int qcow2_refblock_create(struct qcow2 *s, uint64_t bi)
{
    uint64_t cluster = bi << s->rb_bits, off, be;
    uint8_t *rb;
    int ret;

    if (bi >= s->rt_size) {
        ret = qcow2_reftable_grow(s, bi + 1);
        if (ret < 0)
            return ret;
        if (s->rt[bi])
            return 0;
    }
    if (cluster == 0)
        return qcow2_signal_corrupt(s, "refcount table has no block for cluster 0");
    off = cluster << s->cluster_bits;
    ret = qcow2_cache_get(s, &s->rbc, off, false, &rb);
    if (ret < 0)
        return ret;
    qcow2_rb_set(rb, s->refcount_order, 0, 1);
    if (s->img->nowait) {
        /* no I/O now: the block is a dirty cache entry, the table entry is
         * written after it by the next write-back (qcow2_rb_writeback / the
         * asynchronous flush), before any table that references a cluster
         * it counts */
        qcow2_cache_mark_dirty(&s->rbc, off);
        if (off + s->cluster_size > s->file_size)
            s->file_size = off + s->cluster_size;
        s->rt[bi] = off;
        if (s->rt_dirty_lo >= s->rt_dirty_hi) {
            s->rt_dirty_lo = bi;
            s->rt_dirty_hi = bi + 1;
        } else {
            if (bi < s->rt_dirty_lo)
                s->rt_dirty_lo = bi;
            if (bi + 1 > s->rt_dirty_hi)
                s->rt_dirty_hi = bi + 1;
        }
        return 0;
    }
    ret = img_meta_pwrite(s->img, rb, s->cluster_size, off);
    if (ret < 0)
        return ret;
    if (off + s->cluster_size > s->file_size)
        s->file_size = off + s->cluster_size;
    s->rt[bi] = off;
    be = htobe64(off);
    ret = img_meta_pwrite(s->img, &be, 8, s->rt_off + bi * 8);
    if (ret < 0)
        return ret;
    return 0;
}

static int qcow2_refcount_set_raw(struct qcow2 *s, uint64_t cluster, uint64_t val)
{
    uint64_t rb_off;
    uint8_t *rb;
    int ret = qcow2_rb_lookup(s, cluster, &rb_off);

    if (ret < 0)
        return ret;
    if (!rb_off) {
        if (val == 0)
            return 0;
        ret = qcow2_refblock_create(s, cluster >> s->rb_bits);
        if (ret < 0)
            return ret;
        ret = qcow2_rb_lookup(s, cluster, &rb_off);
        if (ret < 0)
            return ret;
        if (!rb_off)
            return -EIO;
    }
    ret = qcow2_cache_get(s, &s->rbc, rb_off, true, &rb);
    if (ret < 0)
        return ret;
    qcow2_rb_set(rb, s->refcount_order, cluster & ((1ull << s->rb_bits) - 1), val);
    qcow2_cache_mark_dirty(&s->rbc, rb_off);
    return 0;
}

int qcow2_refcount_set(struct qcow2 *s, uint64_t cluster, uint64_t val)
{
    int ret = qcow2_refcount_set_raw(s, cluster, val);
    if (ret == 0 && val == 0) {
        if (cluster < s->free_hint)
            s->free_hint = cluster;
        qcow2_cache_drop(&s->l2c, cluster << s->cluster_bits);
        if (s->dcache_key && (s->dcache_key - 1) >> s->cluster_bits == cluster)
            s->dcache_key = 0;
    }
    return ret;
}

int qcow2_refcount_add(struct qcow2 *s, uint64_t cluster, int64_t addend)
{
    uint64_t rc;
    int ret = qcow2_refcount_get(s, cluster, &rc);

    if (ret < 0)
        return ret;
    if (addend < 0 && rc < (uint64_t)-addend)
        return qcow2_signal_corrupt(s, "refcount of cluster 0x%llx would drop below zero",
                                    (unsigned long long)(cluster << s->cluster_bits));
    if (addend > 0 && s->refcount_max - rc < (uint64_t)addend) {
        log_err("image '%s': refcount of cluster 0x%llx overflows %u-bit refcounts", s->img->path,
                (unsigned long long)(cluster << s->cluster_bits), 1u << s->refcount_order);
        return -ERANGE;
    }
    return qcow2_refcount_set(s, cluster, rc + (uint64_t)addend);
}

static int qcow2_defer_dec(struct qcow2 *s, uint64_t cluster);

/* Lays out a grown refcount table past everything the old one covers: each
 * new block at the first cluster of its range, the table contiguous in
 * between. Fills nrt[rt_size..] and returns the table's first cluster and
 * the first cluster past the layout. */
static int qcow2_reftable_layout(struct qcow2 *s, uint64_t *nrt, uint64_t new_size,
                                 uint64_t new_clusters, uint64_t *tbl_start, uint64_t *end)
{
    uint64_t cur, placed = 0;

    *tbl_start = 0;
    for (cur = s->rt_size << s->rb_bits; placed < new_clusters; cur++) {
        uint64_t bi = cur >> s->rb_bits;
        if ((cur & ((1ull << s->rb_bits) - 1)) == 0) {
            if (bi >= new_size)
                return -EFBIG;
            nrt[bi] = cur << s->cluster_bits;
            continue;
        }
        if (!placed || cur != *tbl_start + placed) {
            /* the table must be contiguous: restart after the refblock */
            placed = 0;
            *tbl_start = cur;
        }
        placed++;
    }
    *end = cur;
    return 0;
}

/*
 * Non-blocking growth: the new refcount blocks become dirty cache entries,
 * the new table and its header fields are written by the next write-back,
 * in that order and before any table that references a cluster only they
 * count (qcow2_flush_step: blocks, sync, table, sync, header, sync, L2). The
 * old table's clusters are released through the deferred decrements once
 * the header no longer points to them.
 */
static int qcow2_reftable_grow_nowait(struct qcow2 *s, uint64_t new_size, uint64_t new_clusters)
{
    uint64_t old_off = s->rt_off, old_clusters = s->rt_clusters, tbl_start, end, nblocks, avail = 0;
    uint64_t *nrt = calloc(new_size, 8);
    int ret;

    if (!nrt)
        return -ENOMEM;
    memcpy(nrt, s->rt, s->rt_size * 8);
    ret = qcow2_reftable_layout(s, nrt, new_size, new_clusters, &tbl_start, &end);
    if (ret < 0)
        goto out;
    nblocks = ((end - 1) >> s->rb_bits) - s->rt_size + 1;
    /* room for every new block in the cache before changing anything */
    for (unsigned i = 0; i < s->rbc.n; i++)
        if (!s->rbc.ent[i].off || (!s->rbc.ent[i].pin && !s->rbc.ent[i].dirty))
            avail++;
    avail += s->rbc.base + QCOW2_CACHE_SLACK - s->rbc.n;
    if (avail < nblocks) {
        s->img->want_writeback = true;
        s->img->nowait->kind = IMG_NEED_ROOM;
        s->img->nowait->img = s->img;
        ret = -EWOULDBLOCK;
        goto out;
    }
    for (uint64_t bi = s->rt_size; bi < s->rt_size + nblocks; bi++) {
        uint64_t first = bi << s->rb_bits;
        uint8_t *rb;
        ret = qcow2_cache_get(s, &s->rbc, first << s->cluster_bits, false, &rb);
        if (ret < 0) /* cannot happen after the check above */
            goto out;
        qcow2_rb_set(rb, s->refcount_order, 0, 1);
        for (uint64_t c = tbl_start; c < tbl_start + new_clusters; c++)
            if ((c >> s->rb_bits) == bi)
                qcow2_rb_set(rb, s->refcount_order, c - first, 1);
        qcow2_cache_mark_dirty(&s->rbc, first << s->cluster_bits);
    }
    free(s->rt);
    s->rt = nrt;
    nrt = NULL;
    s->rt_size = new_size;
    s->rt_off = tbl_start << s->cluster_bits;
    s->rt_clusters = (uint32_t)new_clusters;
    s->rt_dirty_lo = 0;
    s->rt_dirty_hi = new_size;
    s->rt_hdr_dirty = true;
    if ((end << s->cluster_bits) > s->file_size)
        s->file_size = end << s->cluster_bits;
    if ((end << s->cluster_bits) > s->zero_above)
        s->zero_above = end << s->cluster_bits;
    for (uint64_t i = 0; i < old_clusters && ret == 0; i++)
        ret = qcow2_defer_dec(s, (old_off >> s->cluster_bits) + i);
out:
    free(nrt);
    return ret;
}

/*
 * Grows the refcount table to at least min_entries. The new table and the
 * refcount blocks it needs are laid out past everything the old table
 * covers, each new block at the first cluster of its range.
 */
static int qcow2_reftable_grow(struct qcow2 *s, uint64_t min_entries)
{
    uint64_t per_cluster = s->cluster_size / 8;
    uint64_t new_size = s->rt_size * 2, new_clusters, cur = 0, tbl_start = 0;
    uint64_t old_off = s->rt_off, old_clusters = s->rt_clusters, *nrt = NULL;
    uint8_t hdr[12];
    int ret;

    if (s->flushing) {
        /* the flush on the ring holds copies of the tables this moves */
        if (s->img->nowait) {
            s->img->nowait->kind = IMG_NEED_RETRY;
            s->img->nowait->img = s->img;
            return -EWOULDBLOCK;
        }
        log_err("image '%s': refcount table growth while a flush is on the ring", s->img->path);
        return -EBUSY;
    }
    if (new_size < min_entries)
        new_size = min_entries;
    new_size = (new_size + per_cluster - 1) / per_cluster * per_cluster;
    if (new_size * 8 > QCOW2_MAX_REFTABLE) {
        log_err("image '%s': refcount table would exceed %u bytes", s->img->path,
                QCOW2_MAX_REFTABLE);
        return -EFBIG;
    }
    new_clusters = new_size / per_cluster;
    if (s->img->nowait)
        return qcow2_reftable_grow_nowait(s, new_size, new_clusters);
    nrt = calloc(new_size, 8);
    if (!nrt)
        return -ENOMEM;
    memcpy(nrt, s->rt, s->rt_size * 8);
    ret = qcow2_reftable_layout(s, nrt, new_size, new_clusters, &tbl_start, &cur);
    if (ret < 0)
        goto out;
    /* Write refblocks for blocks [s->rt_size, last block used]. */
    for (uint64_t bi = s->rt_size; bi <= ((cur - 1) >> s->rb_bits); bi++) {
        uint8_t *rb = qcow2_alloc_buf(s->cluster_size);
        uint64_t first = bi << s->rb_bits;
        if (!rb) {
            ret = -ENOMEM;
            goto out;
        }
        memset(rb, 0, s->cluster_size);
        qcow2_rb_set(rb, s->refcount_order, 0, 1);
        for (uint64_t c = tbl_start; c < tbl_start + new_clusters; c++)
            if ((c >> s->rb_bits) == bi)
                qcow2_rb_set(rb, s->refcount_order, c - first, 1);
        ret = img_meta_pwrite(s->img, rb, s->cluster_size, first << s->cluster_bits);
        free(rb);
        if (ret < 0)
            goto out;
    }
    {
        uint64_t *be = calloc(new_size, 8);
        if (!be) {
            ret = -ENOMEM;
            goto out;
        }
        for (uint64_t i = 0; i < new_size; i++)
            be[i] = htobe64(nrt[i]);
        ret = img_meta_pwrite(s->img, be, new_size * 8, tbl_start << s->cluster_bits);
        free(be);
        if (ret < 0)
            goto out;
    }
    ret = qcow2_rb_writeback(s, false);
    if (ret < 0)
        goto out;
    if (img_fdatasync(s->img) < 0) {
        ret = -errno;
        goto out;
    }
    wr64(hdr, tbl_start << s->cluster_bits);
    wr32(hdr + 8, (uint32_t)new_clusters);
    ret = img_meta_pwrite(s->img, hdr, 12, 48);
    if (ret < 0)
        goto out;
    if (img_fdatasync(s->img) < 0) {
        ret = -errno;
        goto out;
    }
    free(s->rt);
    s->rt = nrt;
    nrt = NULL;
    s->rt_size = new_size;
    s->rt_off = tbl_start << s->cluster_bits;
    s->rt_clusters = (uint32_t)new_clusters;
    s->rt_dirty_lo = s->rt_dirty_hi = 0; /* all of it was written above */
    s->rt_hdr_dirty = false;
    {
        uint64_t end = (cur << s->cluster_bits);
        if (end > s->file_size)
            s->file_size = end;
        if (end > s->zero_above)
            s->zero_above = end;
    }
    /* the old table is no longer referenced by the header */
    for (uint64_t i = 0; i < old_clusters; i++) {
        ret = qcow2_refcount_add(s, (old_off >> s->cluster_bits) + i, -1);
        if (ret < 0)
            goto out;
    }
    ret = 0;
out:
    free(nrt);
    return ret;
}

static bool qcow2_is_deferred(const struct qcow2 *s, uint64_t c)
{
    for (size_t i = 0; i < s->ndec; i++)
        if (s->dec[i] == c)
            return true;
    return false;
}

/*
 * A run of at least one refcount block's range (e.g. the L1 table of a large
 * image with small clusters) cannot fit between refcount blocks placed at the
 * first cluster of the range each covers. Such a run goes into fresh ranges
 * past the end of the file, with the refcount blocks of those ranges packed in
 * front of it, all inside the first range: block r0 counts the blocks and the
 * run's clusters in its range, each further block the run's clusters in its
 * own. Blocks are written before the refcount-table entries that point to
 * them; a crash before the caller references the run leaves leaks only.
 * Synchronous path only (the data path never allocates such runs).
 */
static int qcow2_alloc_run_fresh(struct qcow2 *s, uint64_t n, uint64_t *off)
{
    uint64_t per = 1ull << s->rb_bits, m = 1, r0, first;
    int ret;

    while ((m + n + per - 1) / per > m)
        m = (m + n + per - 1) / per;
    if (m > per) {
        log_err("image '%s': a table of %llu clusters is too large for %u-bit refcounts and "
                "%u-byte clusters",
                s->img->path, (unsigned long long)n, 1u << s->refcount_order,
                (unsigned)s->cluster_size);
        return -EFBIG;
    }
    for (;;) {
        uint64_t fc = (s->file_size + s->cluster_size - 1) >> s->cluster_bits, j;
        r0 = (fc + per - 1) / per;
        if (r0 == 0)
            r0 = 1;
        if (r0 + m > s->rt_size) {
            ret = qcow2_reftable_grow(s, r0 + m);
            if (ret < 0)
                return ret;
            continue; /* the file may have grown: place again */
        }
        for (j = 0; j < m && !s->rt[r0 + j]; j++)
            ;
        if (j == m)
            break;
        /* a block already exists there (nothing counted in it past the end of
         * the file, but keep it): start past it */
        s->file_size = ((r0 + j + 1) * per) << s->cluster_bits;
    }
    first = r0 * per;
    for (uint64_t j = 0; j < m; j++) {
        uint64_t bi = r0 + j, lo = bi * per, hi = lo + per, at = first + j, be, c;
        uint8_t *rb;

        ret = qcow2_cache_get(s, &s->rbc, at << s->cluster_bits, false, &rb);
        if (ret < 0)
            return ret;
        if (j == 0)
            for (uint64_t k = 0; k < m; k++)
                qcow2_rb_set(rb, s->refcount_order, k, 1);
        for (c = first + m > lo ? first + m : lo; c < first + m + n && c < hi; c++)
            qcow2_rb_set(rb, s->refcount_order, c - lo, 1);
        ret = img_meta_pwrite(s->img, rb, s->cluster_size, at << s->cluster_bits);
        if (ret < 0)
            return ret;
        s->rt[bi] = at << s->cluster_bits;
        be = htobe64(s->rt[bi]);
        ret = img_meta_pwrite(s->img, &be, 8, s->rt_off + bi * 8);
        if (ret < 0)
            return ret;
    }
    *off = (first + m) << s->cluster_bits;
    if (*off + n * s->cluster_size > s->file_size)
        s->file_size = *off + n * s->cluster_size;
    return 0;
}

int qcow2_alloc_clusters(struct qcow2 *s, uint64_t n, uint64_t *off)
{
    uint64_t start, i, rc;
    int ret;

    if (n >= (1ull << s->rb_bits) && !s->img->nowait)
        return qcow2_alloc_run_fresh(s, n, off);
retry:
    start = s->free_hint;
    for (i = 0; i < n;) {
        uint64_t c = start + i;
        if ((c + 1) > (1ull << (56 - s->cluster_bits))) {
            log_err("image '%s': no free cluster below the 2^56 offset limit", s->img->path);
            return -ENOSPC;
        }
        ret = qcow2_refcount_get(s, c, &rc);
        if (ret == -EWOULDBLOCK && i == 0)
            s->free_hint = start; /* everything below is in use: do not rescan it */
        if (ret < 0)
            return ret;
        if (rc || (s->ndec && qcow2_is_deferred(s, c))) {
            start = c + 1;
            i = 0;
            continue;
        }
        i++;
    }
    /* make sure refcount blocks exist before taking the clusters */
    for (i = start >> s->rb_bits; i <= (start + n - 1) >> s->rb_bits; i++) {
        if (i >= s->rt_size || !s->rt[i]) {
            ret = qcow2_refblock_create(s, i);
            if (ret < 0)
                return ret;
            goto retry;
        }
    }
    for (i = 0; i < n; i++) {
        ret = qcow2_refcount_set_raw(s, start + i, 1);
        if (ret < 0)
            return ret;
    }
    s->free_hint = start + n;
    *off = start << s->cluster_bits;
    if (*off + n * s->cluster_size > s->file_size)
        s->file_size = *off + n * s->cluster_size;
    return 0;
}

/*
 * Data clusters past the end of the file, while other allocations are in
 * flight: extend the file ahead of them (fallocate), so that concurrent
 * O_DIRECT writes of new clusters do not each extend the file (extending
 * direct writes serialize on the inode and leave the io_uring fast path).
 * Not done at queue depth 1, where the unwritten-extent conversion costs more
 * than it saves (measured). Failure is harmless (no fallocate).
 */
static void qcow2_prealloc(struct qcow2 *s, uint64_t end)
{
    /* step: a quarter of the file, between one cluster and 2 MiB, so small
     * images stay thin */
    uint64_t chunk = s->file_size / 4, to;

    if (chunk > (2ull << 20))
        chunk = 2ull << 20;
    if (chunk < s->cluster_size)
        chunk = s->cluster_size;

    if (end <= s->prealloc_end)
        return;
    to = (end + chunk - 1) / chunk * chunk;
    if (s->img->nowait) {
        /* run on the ring by the caller (aio.c) */
        if (!s->img->falloc_len)
            s->img->falloc_off = s->prealloc_end;
        s->img->falloc_len = to - s->img->falloc_off;
        s->prealloc_end = to;
        return;
    }
    if (img_fallocate(s->img, 0, s->prealloc_end, to - s->prealloc_end) == 0)
        s->prealloc_end = to;
    else
        s->prealloc_end = end;
}

static int qcow2_defer_dec(struct qcow2 *s, uint64_t cluster)
{
    if (s->ndec == s->capdec) {
        size_t cap = s->capdec ? s->capdec * 2 : 64;
        uint64_t *p = realloc(s->dec, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        s->dec = p;
        s->capdec = cap;
    }
    s->dec[s->ndec++] = cluster;
    if (s->ndec >= DEC_MAX) {
        if (s->img->nowait) {
            s->img->want_flush = true; /* aio.c runs an asynchronous flush */
            return 0;
        }
        return qcow2_flush_meta(s);
    }
    return 0;
}

/* ---- L1 / header ---- */

int qcow2_write_l1(struct qcow2 *s)
{
    size_t bytes = (size_t)s->l1_size * 8;
    uint64_t *be;
    int ret;

    if (!s->l1_size)
        return 0;
    be = malloc(bytes);
    if (!be)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->l1_size; i++)
        be[i] = htobe64(s->l1[i]);
    ret = img_meta_pwrite(s->img, be, bytes, s->l1_off);
    free(be);
    if (ret < 0)
        log_err("image '%s': writing L1 table: %s", s->img->path, strerror(-ret));
    else
        s->l1_dirty = false;
    return ret;
}

int qcow2_flush_meta(struct qcow2 *s)
{
    bool l2dirty = false;
    int ret;

    for (unsigned i = 0; i < s->l2c.n; i++)
        l2dirty |= s->l2c.ent[i].off && s->l2c.ent[i].dirty;
    if (!l2dirty && !s->l1_dirty && !s->ndec) {
        ret = qcow2_rb_writeback(s, false);
        if (ret < 0)
            return ret;
        return img_fdatasync(s->img) < 0 ? -errno : 0;
    }
    ret = qcow2_rb_writeback(s, false);
    if (ret < 0)
        return ret;
    if (img_fdatasync(s->img) < 0)
        return -errno;
    for (unsigned i = 0; i < s->l2c.n; i++) {
        struct qcow2_cache_ent *e = &s->l2c.ent[i];
        if (e->off && e->dirty) {
            ret = img_meta_pwrite(s->img, e->data, s->cluster_size, e->off);
            if (ret < 0)
                return ret;
            e->dirty = false;
        }
    }
    if (s->l1_dirty) {
        if (img_fdatasync(s->img) < 0)
            return -errno;
        ret = qcow2_write_l1(s);
        if (ret < 0)
            return ret;
    }
    if (img_fdatasync(s->img) < 0)
        return -errno;
    if (s->ndec) {
        size_t n = s->ndec;
        s->ndec = 0;
        for (size_t i = 0; i < n; i++) {
            ret = qcow2_refcount_add(s, s->dec[i], -1);
            if (ret < 0)
                return ret;
        }
        ret = qcow2_rb_writeback(s, true);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* ---- asynchronous metadata flush (on the ring, aio.c) ----
 *
 * The same order as qcow2_flush_meta: refcount blocks, fdatasync, new
 * refcount-table entries, fdatasync, L2 tables, [fdatasync, L1,] fdatasync,
 * then the deferred refcount decrements. Every dirty table is copied when
 * the flush starts, so the copies form one consistent state (a reference in
 * a copied L2 table has its refcount in a copied refcount block: allocation
 * counts a cluster before publishing it) while the poll thread goes on
 * changing the cache; a table changed after its copy was taken stays dirty
 * (generation counter).
 */

enum qf_stage {
    QF_RB,
    QF_RT,
    QF_RT_W,
    QF_HDR,
    QF_HDR_W,
    QF_L2,
    QF_L2_W,
    QF_L1,
    QF_L1_W,
    QF_END,
    QF_DEC,
    QF_DONE
};

struct qcow2_wb {
    struct qcow2_flush *f;
    int table; /* 0 L2, 1 refcount block, 2 refcount table, 3 L1, 4 header's table fields */
    uint64_t off, gen, len;
    uint8_t *copy;
};

struct qcow2_flush {
    struct qtimg *img;
    struct qcow2 *s;
    struct img_io io;
    bool final;
    img_io_done done;
    void *arg;
    int ret;
    unsigned pending;
    enum qf_stage stage;
    bool synced; /* an fdatasync is queued/done after the last write */
    struct qcow2_wb *wb;
    size_t nwb, next_wb;
    size_t ndec;  /* deferred decrements covered by this flush */
    size_t dec_i; /* next one to apply */
    uint8_t *dec_buf;
    struct img_need dec_need;
};

static void qcow2_flush_step(struct qcow2_flush *f);
static int qcow2_mark_dirty(struct qcow2 *s);

static void qcow2_flush_io_done(void *arg, int res)
{
    struct qcow2_wb *w = arg;
    struct qcow2_flush *f = w->f;

    if (res < 0 || (w->copy && (uint64_t)res != w->len)) {
        if (f->ret == 0)
            f->ret = res < 0 ? res : -EIO;
        log_err("image '%s': metadata write at 0x%llx: %s", f->img->path,
                (unsigned long long)w->off, strerror(res < 0 ? -res : EIO));
    } else if (w->copy) {
        struct qcow2 *s = f->s;
        struct qcow2_cache_ent *e = NULL;
        if (w->table == 0)
            e = qcow2_cache_find(&s->l2c, w->off);
        else if (w->table == 1)
            e = qcow2_cache_find(&s->rbc, w->off);
        if (e && e->gen == w->gen)
            e->dirty = false;
        if (w->table == 3 && s->l1_gen == w->gen)
            s->l1_dirty = false;
    }
    if (res < 0 && w->table == 2) { /* write the whole table next time */
        f->s->rt_dirty_lo = 0;
        f->s->rt_dirty_hi = f->s->rt_size;
    }
    if (res < 0 && w->table == 4)
        f->s->rt_hdr_dirty = true;
    free(w->copy);
    w->copy = NULL;
    if (w->table < 0)
        free(w); /* an fdatasync */
    f->pending--;
    if (f->pending == 0)
        qcow2_flush_step(f);
}

static int qcow2_flush_queue(struct qcow2_flush *f, struct qcow2_wb *w, enum img_io_op op)
{
    int ret;

    w->f = f;
    f->pending++;
    ret = f->io.queue(f->io.ctx, f->img, op, w->copy, w->len, w->off, qcow2_flush_io_done, w);
    if (ret < 0) {
        f->pending--;
        free(w->copy);
        w->copy = NULL;
        if (w->table < 0)
            free(w);
        if (f->ret == 0)
            f->ret = ret;
    }
    return ret;
}

static void qcow2_flush_sync(struct qcow2_flush *f)
{
    struct qcow2_wb *w = calloc(1, sizeof(*w));

    if (!w) {
        if (f->ret == 0)
            f->ret = -ENOMEM;
        return;
    }
    w->table = -1;
    qcow2_flush_queue(f, w, IMG_IO_FDATASYNC);
    f->synced = true;
}

/* Queues the copies of one stage's tables. */
static void qcow2_flush_write_stage(struct qcow2_flush *f, int table)
{
    for (size_t i = 0; i < f->nwb && f->ret == 0; i++)
        if (f->wb[i].table == table && f->wb[i].copy) {
            f->synced = false;
            qcow2_flush_queue(f, &f->wb[i], IMG_IO_WRITE);
        }
}

static bool qcow2_flush_has(const struct qcow2_flush *f, int table)
{
    for (size_t i = 0; i < f->nwb; i++)
        if (f->wb[i].table == table)
            return true;
    return false;
}

static void qcow2_flush_dec_read_done(void *arg, int res)
{
    struct qcow2_flush *f = arg;
    struct qcow2 *s = f->s;
    uint8_t *buf = f->dec_buf;

    f->dec_buf = NULL;
    f->pending--;
    if (res >= 0 && (uint64_t)res < s->cluster_size)
        memset(buf + res, 0, s->cluster_size - (uint64_t)res);
    if (res < 0) {
        free(buf);
        f->stage = QF_DONE; /* the decrements stay deferred */
    } else {
        struct img_need *saved = s->img->nowait, need;
        s->img->nowait = &need;
        if (s->img->drv->meta_insert(s->img, &f->dec_need, buf) < 0) {
            free(buf);
            f->stage = QF_DONE;
        }
        s->img->nowait = saved;
    }
    qcow2_flush_step(f);
}

/* Applies the decrements the flush covered; a missing refcount block is read
 * on the ring first. Runs in non-blocking mode. */
static void qcow2_flush_apply_dec(struct qcow2_flush *f)
{
    struct qcow2 *s = f->s;
    struct img_need *saved = s->img->nowait, need = {0};
    int ret = 0;

    s->img->nowait = &need;
    while (f->dec_i < f->ndec) {
        ret = qcow2_refcount_add(s, s->dec[f->dec_i], -1);
        if (ret < 0)
            break;
        f->dec_i++;
    }
    s->img->nowait = saved;
    if (ret == -EWOULDBLOCK && need.kind == IMG_NEED_READ) {
        f->dec_need = need;
        f->dec_buf = qcow2_alloc_buf(need.len);
        if (f->dec_buf) {
            f->pending++;
            ret = f->io.queue(f->io.ctx, f->img, IMG_IO_READ, f->dec_buf, need.len, need.off,
                              qcow2_flush_dec_read_done, f);
            if (ret == 0)
                return;
            f->pending--;
            free(f->dec_buf);
            f->dec_buf = NULL;
        }
    } else if (ret < 0 && ret != -EWOULDBLOCK && f->ret == 0) {
        f->ret = ret;
    }
    f->stage = QF_DONE; /* what is left stays deferred to the next flush */
}

static void qcow2_flush_finish(struct qcow2_flush *f)
{
    struct qcow2 *s = f->s;
    img_io_done done = f->done;
    void *arg = f->arg;
    int ret = f->ret;

    if (f->dec_i) {
        memmove(s->dec, s->dec + f->dec_i, (s->ndec - f->dec_i) * sizeof(*s->dec));
        s->ndec -= f->dec_i;
    }
    for (size_t i = 0; i < f->nwb; i++)
        free(f->wb[i].copy);
    free(f->wb);
    s->flushing = NULL;
    qcow2_cache_trim(&s->l2c);
    qcow2_cache_trim(&s->rbc);
    free(f);
    done(arg, ret);
}

static void qcow2_flush_step(struct qcow2_flush *f)
{
    while (f->pending == 0) {
        if (f->ret < 0 && f->stage < QF_DONE)
            f->stage = QF_DONE;
        switch (f->stage) {
        case QF_RB:
            f->stage = QF_RT;
            qcow2_flush_write_stage(f, 1);
            break;
        case QF_RT:
            /* refcount blocks are on disk before the table points to them and
             * before any table that references what they count */
            f->stage = QF_RT_W;
            if (qcow2_flush_has(f, 2) && qcow2_flush_has(f, 1))
                qcow2_flush_sync(f);
            break;
        case QF_RT_W:
            f->stage = QF_HDR;
            qcow2_flush_write_stage(f, 2);
            break;
        case QF_HDR:
            /* a grown table is on disk before the header points to it */
            f->stage = QF_HDR_W;
            if (qcow2_flush_has(f, 4) && !f->synced)
                qcow2_flush_sync(f);
            break;
        case QF_HDR_W:
            f->stage = QF_L2;
            qcow2_flush_write_stage(f, 4);
            break;
        case QF_L2:
            f->stage = QF_L2_W;
            if (qcow2_flush_has(f, 0) && !f->synced &&
                (qcow2_flush_has(f, 1) || qcow2_flush_has(f, 2) || qcow2_flush_has(f, 4)))
                qcow2_flush_sync(f);
            break;
        case QF_L2_W:
            f->stage = QF_L1;
            qcow2_flush_write_stage(f, 0);
            break;
        case QF_L1:
            f->stage = QF_L1_W;
            if (qcow2_flush_has(f, 3) && !f->synced && qcow2_flush_has(f, 0))
                qcow2_flush_sync(f);
            break;
        case QF_L1_W:
            f->stage = QF_END;
            qcow2_flush_write_stage(f, 3);
            break;
        case QF_END:
            f->stage = f->final ? QF_DEC : QF_DONE;
            if (f->final && !f->synced)
                qcow2_flush_sync(f);
            break;
        case QF_DEC:
            qcow2_flush_apply_dec(f);
            break;
        default:
            qcow2_flush_finish(f);
            return;
        }
    }
}

/* Copies a dirty table for the flush. */
static int qcow2_flush_copy(struct qcow2_flush *f, int table, uint64_t off, uint64_t gen,
                            const void *data, uint64_t len)
{
    struct qcow2_wb *w = &f->wb[f->nwb];

    w->copy = qcow2_alloc_buf(len);
    if (!w->copy)
        return -ENOMEM;
    memcpy(w->copy, data, len);
    w->table = table;
    w->off = off;
    w->gen = gen;
    w->len = len;
    w->f = f;
    f->nwb++;
    return 0;
}

static int qcow2_meta_flush(struct qtimg *img, const struct img_io *io, bool final,
                            img_io_done done, void *arg)
{
    struct qcow2 *s = img->priv;
    struct qcow2_flush *f;
    size_t max = (size_t)s->l2c.n + s->rbc.n + 3;
    int ret = 0;

    if (s->flushing)
        return -EBUSY;
    f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->wb = calloc(max, sizeof(*f->wb));
    if (!f->wb) {
        free(f);
        return -ENOMEM;
    }
    f->img = img;
    f->s = s;
    f->io = *io;
    f->final = final;
    f->done = done;
    f->arg = arg;
    f->ndec = final ? s->ndec : 0;
    for (unsigned i = 0; i < s->rbc.n && ret == 0; i++) {
        struct qcow2_cache_ent *e = &s->rbc.ent[i];
        if (e->off && e->dirty)
            ret = qcow2_flush_copy(f, 1, e->off, e->gen, e->data, s->cluster_size);
    }
    if (ret == 0 && s->rt_dirty_lo < s->rt_dirty_hi) {
        uint64_t lo = s->rt_dirty_lo, hi = s->rt_dirty_hi;
        uint64_t *be = malloc((hi - lo) * 8);
        if (!be) {
            ret = -ENOMEM;
        } else {
            for (uint64_t i = lo; i < hi; i++)
                be[i - lo] = htobe64(s->rt[i]);
            ret = qcow2_flush_copy(f, 2, s->rt_off + lo * 8, 0, be, (hi - lo) * 8);
            free(be);
            if (ret == 0)
                s->rt_dirty_lo = s->rt_dirty_hi = 0; /* re-marked if the write fails */
        }
    }
    if (ret == 0 && s->rt_hdr_dirty) {
        uint8_t hdr[12];
        wr64(hdr, s->rt_off);
        wr32(hdr + 8, s->rt_clusters);
        ret = qcow2_flush_copy(f, 4, 48, 0, hdr, sizeof(hdr));
        if (ret == 0)
            s->rt_hdr_dirty = false; /* re-marked if the write fails */
    }
    for (unsigned i = 0; i < s->l2c.n && ret == 0; i++) {
        struct qcow2_cache_ent *e = &s->l2c.ent[i];
        if (e->off && e->dirty)
            ret = qcow2_flush_copy(f, 0, e->off, e->gen, e->data, s->cluster_size);
    }
    if (ret == 0 && final && s->l1_dirty && s->l1_size) {
        size_t bytes = (size_t)s->l1_size * 8;
        uint64_t *be = malloc(bytes);
        if (!be) {
            ret = -ENOMEM;
        } else {
            for (uint32_t i = 0; i < s->l1_size; i++)
                be[i] = htobe64(s->l1[i]);
            ret = qcow2_flush_copy(f, 3, s->l1_off, s->l1_gen, be, bytes);
            free(be);
        }
    }
    if (ret < 0) {
        for (size_t i = 0; i < f->nwb; i++)
            free(f->wb[i].copy);
        free(f->wb);
        free(f);
        return ret;
    }
    s->flushing = f;
    qcow2_flush_step(f);
    return 0;
}

/* A table read on the ring for an IMG_NEED_READ: into the cache. */
static int qcow2_meta_insert(struct qtimg *img, const struct img_need *need, void *buf)
{
    struct qcow2 *s = img->priv;
    struct qcow2_cache *c = need->table == 0 ? &s->l2c : &s->rbc;
    struct qcow2_cache_ent *e;
    int ret;

    if (need->len != s->cluster_size)
        return -EINVAL;
    if (qcow2_cache_find(c, need->off)) {
        free(buf); /* read twice: the cached copy may be newer */
        return 0;
    }
    ret = qcow2_cache_slot(s, c, &e);
    if (ret < 0)
        return ret;
    free(e->data);
    e->data = buf;
    e->off = need->off;
    e->dirty = false;
    e->pin = 0;
    e->gen++;
    e->lru = ++c->tick;
    return 0;
}

/* Before the first asynchronous request: what would otherwise block later. */
static int qcow2_aio_attach(struct qtimg *img)
{
    struct qcow2 *s = img->priv;

    if (img->read_only)
        return 0;
    return qcow2_mark_dirty(s); /* lazy refcounts: the header's dirty bit */
}

int qcow2_write_header(struct qcow2 *s)
{
    uint8_t *buf = calloc(1, s->cluster_size);
    size_t pos, hl = s->version >= 3 ? 112 : 72;
    size_t blen = s->backing_file ? strlen(s->backing_file) : 0;
    int ret;

    if (!buf)
        return -ENOMEM;
    wr32(buf, QCOW2_MAGIC);
    wr32(buf + 4, s->version);
    wr32(buf + 20, s->cluster_bits);
    wr64(buf + 24, s->img->size);
    wr32(buf + 32, s->crypt_method);
    wr32(buf + 36, s->l1_size);
    wr64(buf + 40, s->l1_off);
    wr64(buf + 48, s->rt_off);
    wr32(buf + 56, s->rt_clusters);
    wr32(buf + 60, s->nb_snaps);
    wr64(buf + 64, s->snap_off);
    if (s->version >= 3) {
        wr64(buf + 72, s->incompat);
        wr64(buf + 80, s->compat);
        wr64(buf + 88, s->autoclear);
        wr32(buf + 96, s->refcount_order);
        wr32(buf + 100, (uint32_t)hl);
    }
    pos = hl;
#define ADD_EXT(type, data, len)                                                                   \
    do {                                                                                           \
        size_t l_ = (len);                                                                         \
        if (pos + 8 + ((l_ + 7) & ~7ul) + 8 + blen > s->cluster_size) {                            \
            ret = -ENOSPC;                                                                         \
            goto out;                                                                              \
        }                                                                                          \
        wr32(buf + pos, (type));                                                                   \
        wr32(buf + pos + 4, (uint32_t)l_);                                                         \
        memcpy(buf + pos + 8, (data), l_);                                                         \
        pos += 8 + ((l_ + 7) & ~7ul);                                                              \
    } while (0)
    if (s->backing_fmt && s->backing_file)
        ADD_EXT(QCOW2_EXT_BACKING_FMT, s->backing_fmt, strlen(s->backing_fmt));
    if (s->crypt_method == 2) {
        uint8_t c[16];
        wr64(c, s->crypto_off);
        wr64(c + 8, s->crypto_len);
        ADD_EXT(QCOW2_EXT_CRYPTO, c, 16);
    }
    for (unsigned i = 0; i < s->next; i++)
        ADD_EXT(s->ext[i].type, s->ext[i].data, s->ext[i].len);
#undef ADD_EXT
    if (pos + 8 + blen > s->cluster_size) {
        ret = -ENOSPC;
        goto out;
    }
    pos += 8; /* end marker */
    if (blen) {
        wr64(buf + 8, pos);
        wr32(buf + 16, (uint32_t)blen);
        memcpy(buf + pos, s->backing_file, blen);
        pos += blen;
    }
    ret = img_meta_pwrite(s->img, buf, pos, 0);
    if (ret == 0 && img_fdatasync(s->img) < 0)
        ret = -errno;
out:
    if (ret == -ENOSPC)
        log_err("image '%s': header extensions and backing name do not fit in one cluster",
                s->img->path);
    free(buf);
    return ret;
}

/* ---- header validation (pure) ---- */

int qcow2_header_check(const uint8_t *buf, size_t len, uint64_t file_size, const char **why)
{
    uint32_t version, cbits, hl, rorder = 4;
    uint64_t cs;

    if (len < 72) {
        *why = "file shorter than a qcow2 header";
        return -EINVAL;
    }
    if (rd32(buf) != QCOW2_MAGIC) {
        *why = "bad magic";
        return -EINVAL;
    }
    version = rd32(buf + 4);
    if (version != 2 && version != 3) {
        *why = "unsupported version (only 2 and 3)";
        return -ENOTSUP;
    }
    cbits = rd32(buf + 20);
    if (cbits < QCOW2_MIN_CLUSTER_BITS || cbits > QCOW2_MAX_CLUSTER_BITS) {
        *why = "cluster_bits out of range 9..21";
        return -EINVAL;
    }
    cs = 1ull << cbits;
    hl = 72;
    if (version == 3) {
        if (len < 104) {
            *why = "file shorter than a version 3 header";
            return -EINVAL;
        }
        hl = rd32(buf + 100);
        rorder = rd32(buf + 96);
        if (hl < 104 || hl > cs || hl > len || (hl % 8)) {
            *why = "header_length invalid";
            return -EINVAL;
        }
        if (rorder > 6) {
            *why = "refcount_order above 6";
            return -EINVAL;
        }
    }
    if (rd64(buf + 48) % cs || rd64(buf + 48) == 0) {
        *why = "refcount table offset not cluster aligned";
        return -EINVAL;
    }
    if (rd32(buf + 56) == 0 || (uint64_t)rd32(buf + 56) * cs > QCOW2_MAX_REFTABLE) {
        *why = "refcount table size invalid";
        return -EINVAL;
    }
    if (rd64(buf + 48) + (uint64_t)rd32(buf + 56) * cs > file_size) {
        *why = "refcount table extends past the end of the file";
        return -EINVAL;
    }
    if ((uint64_t)rd32(buf + 36) * 8 > QCOW2_MAX_L1_BYTES) {
        *why = "L1 table too large";
        return -EFBIG;
    }
    if (rd32(buf + 36) && (rd64(buf + 40) % cs || rd64(buf + 40) == 0)) {
        *why = "L1 table offset not cluster aligned";
        return -EINVAL;
    }
    if (rd32(buf + 36) && rd64(buf + 40) + (uint64_t)rd32(buf + 36) * 8 > file_size) {
        *why = "L1 table extends past the end of the file";
        return -EINVAL;
    }
    if (rd32(buf + 60) > QCOW2_MAX_SNAPSHOTS) {
        *why = "too many snapshots";
        return -EINVAL;
    }
    if (rd32(buf + 60) && (rd64(buf + 64) % cs || rd64(buf + 64) >= file_size)) {
        *why = "snapshot table offset invalid";
        return -EINVAL;
    }
    if (rd64(buf + 24) > (1ull << 62)) {
        *why = "virtual size too large";
        return -EFBIG;
    }
    if (rd64(buf + 8)) {
        uint64_t bo = rd64(buf + 8);
        uint32_t bl = rd32(buf + 16);
        if (bl > QCOW2_MAX_BACKING_NAME || bl == 0 || bo >= cs || bo + bl > cs || bo < hl) {
            *why = "backing file name out of the header cluster";
            return -EINVAL;
        }
    }
    return 0;
}

/* ---- L2 entries ---- */

int qcow2_l2e_get(struct qcow2 *s, const uint8_t *l2, uint64_t l2off, uint64_t j,
                  struct qcow2_l2e *e)
{
    const char *why = NULL;

    if (qcow2_l2e_decode(s, l2 + j * s->l2_esize, e, &why) < 0)
        return qcow2_signal_corrupt(s, "L2 table 0x%llx entry %llu: %s", (unsigned long long)l2off,
                                    (unsigned long long)j, why);
    return 0;
}

int qcow2_l2e_decode(const struct qcow2 *s, const uint8_t *p, struct qcow2_l2e *e, const char **why)
{
    uint64_t v = rd64(p);

    memset(e, 0, sizeof(*e));
    e->copied = v & QCOW2_OFLAG_COPIED;
    if (v & QCOW2_OFLAG_COMPRESSED) {
        uint32_t x = 62 - (s->cluster_bits - 8);
        uint64_t sectors = ((v >> x) & ((1ull << (s->cluster_bits - 8)) - 1)) + 1;
        e->type = L2E_COMPRESSED;
        e->host = v & ((1ull << x) - 1);
        e->csize = sectors * 512 - (e->host & 511);
        e->alloc = s->sc_all;
        if (e->copied) {
            *why = "compressed cluster with the copied flag";
            return -EINVAL;
        }
        if (s->extended_l2 && rd64(p + 8)) {
            *why = "compressed cluster with a non-zero subcluster bitmap";
            return -EINVAL;
        }
        if (!e->host) {
            *why = "compressed cluster at offset 0";
            return -EINVAL;
        }
        return 0;
    }
    e->host = v & QCOW2_OFFSET_MASK;
    if (v & ~(QCOW2_OFFSET_MASK | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO)) {
        *why = "reserved bits set in L2 entry";
        return -EINVAL;
    }
    if (e->host & (s->cluster_size - 1)) {
        *why = "data cluster offset not cluster aligned";
        return -EINVAL;
    }
    e->type = e->host ? L2E_NORMAL : L2E_UNALLOC;
    if (s->extended_l2) {
        uint64_t bm = rd64(p + 8);
        if (v & QCOW2_OFLAG_ZERO) {
            *why = "zero flag set in an extended L2 entry";
            return -EINVAL;
        }
        e->alloc = (uint32_t)bm;
        e->zero = (uint32_t)(bm >> 32);
        if (e->alloc & e->zero) {
            *why = "subcluster both allocated and zero";
            return -EINVAL;
        }
        if (!e->host && e->alloc) {
            *why = "allocated subclusters without a host cluster";
            return -EINVAL;
        }
    } else {
        if (v & QCOW2_OFLAG_ZERO) {
            if (s->version < 3) {
                *why = "zero flag in a version 2 image";
                return -EINVAL;
            }
            e->zero = 1;
        } else if (e->host) {
            e->alloc = 1;
        }
    }
    if (e->copied && !e->host) {
        *why = "copied flag on an unallocated cluster";
        return -EINVAL;
    }
    return 0;
}

void qcow2_l2e_encode(const struct qcow2 *s, const struct qcow2_l2e *e, uint8_t *p)
{
    uint64_t v = 0;

    if (e->type == L2E_COMPRESSED) {
        uint32_t x = 62 - (s->cluster_bits - 8);
        uint64_t sectors = ((e->host + e->csize - 1) >> 9) - (e->host >> 9);
        v = QCOW2_OFLAG_COMPRESSED | e->host | (sectors << x);
        wr64(p, v);
        if (s->extended_l2)
            wr64(p + 8, 0);
        return;
    }
    v = e->host | (e->copied && e->host ? QCOW2_OFLAG_COPIED : 0);
    if (s->extended_l2) {
        wr64(p, v);
        wr64(p + 8, (uint64_t)e->alloc | ((uint64_t)e->zero << 32));
        return;
    }
    if (e->zero && !e->alloc)
        v |= QCOW2_OFLAG_ZERO;
    wr64(p, v);
}

/* ---- L2 lookup ---- */

static int qcow2_l1_entry(struct qcow2 *s, uint64_t l1i, uint64_t *l2off, bool *copied)
{
    uint64_t v;

    *l2off = 0;
    *copied = false;
    if (l1i >= s->l1_size)
        return 0;
    v = s->l1[l1i];
    *l2off = v & QCOW2_OFFSET_MASK;
    *copied = v & QCOW2_OFLAG_COPIED;
    if (v & QCOW2_L1_RESERVED & ~QCOW2_OFLAG_ZERO)
        return qcow2_signal_corrupt(s, "L1 entry %llu has reserved bits set (0x%llx)",
                                    (unsigned long long)l1i, (unsigned long long)v);
    if (*l2off & (s->cluster_size - 1))
        return qcow2_signal_corrupt(s, "L2 table offset 0x%llx (L1 index %llu) not aligned",
                                    (unsigned long long)*l2off, (unsigned long long)l1i);
    if (*l2off && *l2off + s->cluster_size > s->file_size)
        return qcow2_signal_corrupt(s, "L2 table at 0x%llx (L1 index %llu) past the end of file",
                                    (unsigned long long)*l2off, (unsigned long long)l1i);
    if (*l2off && *l2off < s->cluster_size)
        return qcow2_signal_corrupt(s, "L2 table at offset 0 overlaps the header");
    return 0;
}

/* Reads the entry for guest cluster gc. */
static int qcow2_get_entry(struct qcow2 *s, uint64_t gc, struct qcow2_l2e *e)
{
    uint64_t l1i = gc >> s->l2_bits, l2off;
    uint32_t l2i = (uint32_t)(gc & ((1ull << s->l2_bits) - 1));
    const char *why = NULL;
    uint8_t *l2;
    bool copied;
    int ret = qcow2_l1_entry(s, l1i, &l2off, &copied);

    memset(e, 0, sizeof(*e));
    if (ret < 0 || !l2off)
        return ret;
    ret = qcow2_cache_get(s, &s->l2c, l2off, true, &l2);
    if (ret < 0)
        return ret;
    if (qcow2_l2e_decode(s, l2 + (size_t)l2i * s->l2_esize, e, &why) < 0)
        return qcow2_signal_corrupt(s, "L2 table at 0x%llx entry %u: %s", (unsigned long long)l2off,
                                    l2i, why);
    if (e->type == L2E_NORMAL && e->host < s->cluster_size)
        return qcow2_signal_corrupt(s, "data cluster at offset 0 (L2 0x%llx entry %u)",
                                    (unsigned long long)l2off, l2i);
    return 0;
}

/* Makes the L2 table for l1i writable (allocated, refcount 1); returns its offset. */
static int qcow2_l2_for_write(struct qcow2 *s, uint64_t l1i, uint64_t *out)
{
    uint64_t l2off, noff;
    uint8_t *src, *dst;
    bool copied;
    int ret;

    if (l1i >= s->l1_size) {
        ret = qcow2_grow_l1(s, l1i + 1);
        if (ret < 0)
            return ret;
    }
    ret = qcow2_l1_entry(s, l1i, &l2off, &copied);
    if (ret < 0)
        return ret;
    if (l2off && copied) {
        *out = l2off;
        return 0;
    }
    /* everything that may have to wait comes before the allocation, so
     * that a non-blocking caller retrying later finds nothing half done */
    if (l2off) {
        ret = qcow2_cache_get(s, &s->l2c, l2off, true, &src);
        if (ret < 0)
            return ret;
    }
    ret = qcow2_cache_reserve(s, &s->l2c);
    if (ret < 0)
        return ret;
    ret = qcow2_alloc_clusters(s, 1, &noff);
    if (ret < 0)
        return ret;
    if (l2off) {
        uint8_t *tmp = malloc(s->cluster_size);
        if (!tmp)
            return -ENOMEM;
        ret = qcow2_cache_get(s, &s->l2c, l2off, true, &src);
        if (ret == 0)
            memcpy(tmp, src, s->cluster_size);
        if (ret == 0)
            ret = qcow2_cache_get(s, &s->l2c, noff, false, &dst);
        if (ret == 0)
            memcpy(dst, tmp, s->cluster_size);
        free(tmp);
        if (ret < 0)
            return ret;
        ret = qcow2_defer_dec(s, l2off >> s->cluster_bits);
        if (ret < 0)
            return ret;
    } else {
        ret = qcow2_cache_get(s, &s->l2c, noff, false, &dst);
        if (ret < 0)
            return ret;
    }
    qcow2_cache_mark_dirty(&s->l2c, noff);
    s->l1[l1i] = noff | QCOW2_OFLAG_COPIED;
    qcow2_mark_l1_dirty(s);
    *out = noff;
    return 0;
}

static int qcow2_set_entry(struct qcow2 *s, uint64_t l2off, uint64_t gc, const struct qcow2_l2e *e)
{
    uint32_t l2i = (uint32_t)(gc & ((1ull << s->l2_bits) - 1));
    uint8_t *l2;
    int ret = qcow2_cache_get(s, &s->l2c, l2off, true, &l2);

    if (ret < 0)
        return ret;
    qcow2_l2e_encode(s, e, l2 + (size_t)l2i * s->l2_esize);
    qcow2_cache_mark_dirty(&s->l2c, l2off);
    return 0;
}

/* ---- data path ---- */

static int qcow2_inflate_buf(struct qcow2 *s, const uint8_t *in, uint64_t clen, uint64_t host,
                             uint8_t *out)
{
    z_stream zs;
    int zr;

    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, -12) != Z_OK)
        return -ENOMEM;
    zs.next_in = (uint8_t *)in;
    zs.avail_in = (uInt)clen;
    zs.next_out = out;
    zs.avail_out = (uInt)s->cluster_size;
    zr = inflate(&zs, Z_FINISH);
    inflateEnd(&zs);
    if ((zr != Z_STREAM_END && zr != Z_BUF_ERROR) || zs.avail_out != 0)
        return qcow2_signal_corrupt(s, "compressed cluster at 0x%llx does not inflate to a cluster",
                                    (unsigned long long)host);
    memcpy(s->dcache, out, s->cluster_size);
    s->dcache_key = host + 1;
    return 0;
}

static int qcow2_compressed_check(struct qcow2 *s, uint64_t host, uint64_t csize)
{
    if (csize > 2 * s->cluster_size + 512 || host + csize > s->file_size + 512)
        return qcow2_signal_corrupt(s, "compressed cluster at 0x%llx (%llu bytes) out of bounds",
                                    (unsigned long long)host, (unsigned long long)csize);
    return 0;
}

static int qcow2_decompress(struct qcow2 *s, const struct qcow2_l2e *e, uint8_t *out)
{
    uint8_t *in;
    int ret = qcow2_compressed_check(s, e->host, e->csize);

    if (ret < 0)
        return ret;
    if (s->dcache_key == e->host + 1) {
        memcpy(out, s->dcache, s->cluster_size);
        return 0;
    }
    in = malloc(e->csize);
    if (!in)
        return -ENOMEM;
    ret = img_meta_pread(s->img, in, e->csize, e->host);
    if (ret == 0)
        ret = qcow2_inflate_buf(s, in, e->csize, e->host, out);
    free(in);
    return ret;
}

/* aio.c: a compressed cluster read on the ring. */
static int qcow2_aio_inflate(struct qtimg *img, const uint8_t *in, uint64_t clen, uint64_t host,
                             uint8_t *out)
{
    struct qcow2 *s = img->priv;
    int ret = qcow2_compressed_check(s, host, clen);

    if (ret < 0)
        return ret;
    if (s->dcache_key == host + 1) {
        memcpy(out, s->dcache, s->cluster_size);
        return 0;
    }
    return qcow2_inflate_buf(s, in, clen, host, out);
}

/* Guest data in host clusters: encrypted with sector = host offset / 512. */
static int qcow2_host_read(struct qcow2 *s, void *buf, uint64_t len, uint64_t host)
{
    int ret = img_data_pread(s->img, buf, len, host);
    if (ret < 0 || !s->crypt_method)
        return ret;
    if (!s->crypto)
        return -EACCES;
    if ((len | host) & 511)
        return -EINVAL;
    return luks_cipher_decrypt(s->crypto, host / 512, buf, len);
}

static int qcow2_host_write(struct qcow2 *s, const void *buf, uint64_t len, uint64_t host)
{
    uint8_t *tmp;
    int ret;

    if (!s->crypt_method)
        return img_data_pwrite(s->img, buf, len, host);
    if (!s->crypto)
        return -EACCES;
    if ((len | host) & 511)
        return -EINVAL;
    tmp = qcow2_alloc_buf(len);
    if (!tmp)
        return -ENOMEM;
    memcpy(tmp, buf, len);
    ret = luks_cipher_encrypt(s->crypto, host / 512, tmp, len);
    if (ret == 0)
        ret = img_data_pwrite(s->img, tmp, len, host);
    free(tmp);
    return ret;
}

/* Reads [coff, coff+n) of guest cluster gc described by e. */
static int qcow2_read_in_cluster(struct qcow2 *s, const struct qcow2_l2e *e, uint64_t gc,
                                 uint8_t *buf, uint64_t coff, uint64_t n)
{
    uint64_t guest = (gc << s->cluster_bits) + coff;
    int ret;

    if (e->type == L2E_COMPRESSED) {
        uint8_t *tmp = qcow2_alloc_buf(s->cluster_size);
        if (!tmp)
            return -ENOMEM;
        ret = qcow2_decompress(s, e, tmp);
        if (ret == 0)
            memcpy(buf, tmp + coff, n);
        free(tmp);
        return ret;
    }
    while (n) {
        uint32_t sc = (uint32_t)(coff >> s->sc_bits);
        uint64_t run = ((uint64_t)(sc + 1) << s->sc_bits) - coff;
        uint32_t bit = 1u << sc;
        int kind = (e->alloc & bit) ? 1 : (e->zero & bit) ? 2 : 0;
        /* extend the run over subclusters of the same kind */
        while (run < n) {
            uint32_t nb = 1u << (sc + 1);
            int k2 = (e->alloc & nb) ? 1 : (e->zero & nb) ? 2 : 0;
            if (k2 != kind)
                break;
            sc++;
            run += 1ull << s->sc_bits;
        }
        if (run > n)
            run = n;
        if (kind == 1)
            ret = qcow2_host_read(s, buf, run, e->host + coff);
        else if (kind == 2) {
            memset(buf, 0, run);
            ret = 0;
        } else
            ret = img_read_backing(s->img, buf, run, guest);
        if (ret < 0)
            return ret;
        buf += run;
        coff += run;
        guest += run;
        n -= run;
    }
    return 0;
}

static int qcow2_pread(struct qtimg *img, void *vbuf, uint64_t len, uint64_t off)
{
    struct qcow2 *s = img->priv;
    uint8_t *buf = vbuf;
    int ret;

    if (s->crypt_method && !s->crypto) {
        log_err("image '%s': encrypted; a key secret is needed to read it", img->path);
        return -EACCES;
    }
    if (s->crypt_method && ((off | len) & 511)) {
        log_err("image '%s': encrypted images need 512-byte aligned requests", img->path);
        return -EINVAL;
    }
    while (len) {
        uint64_t gc = off >> s->cluster_bits, coff = off & (s->cluster_size - 1);
        uint64_t n = s->cluster_size - coff;
        struct qcow2_l2e e;
        if (n > len)
            n = len;
        ret = qcow2_get_entry(s, gc, &e);
        if (ret < 0)
            return ret;
        ret = qcow2_read_in_cluster(s, &e, gc, buf, coff, n);
        if (ret < 0)
            return ret;
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

static int qcow2_mark_dirty(struct qcow2 *s)
{
    if (s->dirty_set || !(s->compat & QCOW2_COMPAT_LAZY))
        return 0;
    s->incompat |= QCOW2_INCOMPAT_DIRTY;
    s->dirty_set = true;
    return qcow2_write_header(s);
}

static uint32_t sc_mask(uint32_t first, uint32_t last)
{
    uint32_t hi = last >= 31 ? 0xffffffffu : ((1u << (last + 1)) - 1);
    return hi & ~((1u << first) - 1);
}

static int qcow2_write_in_cluster(struct qcow2 *s, uint64_t gc, const uint8_t *data, uint64_t coff,
                                  uint64_t n)
{
    uint64_t l2off, scs = 1ull << s->sc_bits;
    uint32_t first = (uint32_t)(coff >> s->sc_bits);
    uint32_t last = (uint32_t)((coff + n - 1) >> s->sc_bits);
    uint32_t touched = sc_mask(first, last);
    struct qcow2_l2e e, ne;
    uint8_t *tmp = NULL;
    int ret;

    ret = qcow2_l2_for_write(s, gc >> s->l2_bits, &l2off);
    if (ret < 0)
        return ret;
    ret = qcow2_get_entry(s, gc, &e);
    if (ret < 0)
        return ret;

    if (e.type == L2E_NORMAL && e.copied) {
        /* in place: fill partial subclusters that hold no data yet */
        uint64_t span_lo = coff, span_hi = coff + n;
        bool head = (coff & (scs - 1)) && !(e.alloc & (1u << first));
        bool tail = ((coff + n) & (scs - 1)) && !(e.alloc & (1u << last));
        if (head)
            span_lo = (uint64_t)first << s->sc_bits;
        if (tail)
            span_hi = (uint64_t)(last + 1) << s->sc_bits;
        if (head || tail) {
            tmp = qcow2_alloc_buf(span_hi - span_lo);
            if (!tmp)
                return -ENOMEM;
            ret = qcow2_read_in_cluster(s, &e, gc, tmp, span_lo, span_hi - span_lo);
            if (ret < 0)
                goto out;
            memcpy(tmp + (coff - span_lo), data, n);
            ret = qcow2_host_write(s, tmp, span_hi - span_lo, e.host + span_lo);
        } else {
            ret = qcow2_host_write(s, data, n, e.host + coff);
        }
        if (ret < 0)
            goto out;
        if ((e.alloc & touched) != touched) {
            ne = e;
            ne.alloc |= touched;
            ne.zero &= ~touched;
            ret = qcow2_set_entry(s, l2off, gc, &ne);
        }
        goto out;
    }

    /* allocate a new cluster, copy what must survive from the old mapping */
    {
        uint64_t host, span_lo, span_hi;
        uint32_t keep = e.type == L2E_COMPRESSED ? s->sc_all : (e.type == L2E_NORMAL ? e.alloc : 0);
        uint32_t newalloc = keep | touched, lo = 0, hi = 31;
        bool fresh;

        if (s->nb_sc == 1)
            newalloc = 1;
        while (!(newalloc & (1u << lo)))
            lo++;
        while (!(newalloc & (1u << hi)))
            hi--;
        span_lo = (uint64_t)lo << s->sc_bits;
        span_hi = (uint64_t)(hi + 1) << s->sc_bits;
        ret = qcow2_alloc_clusters(s, 1, &host);
        if (ret < 0)
            return ret;
        fresh = host >= s->zero_above;
        if (coff == span_lo && coff + n == span_hi) {
            ret = qcow2_host_write(s, data, n, host + coff);
        } else if (fresh && keep == 0 && !s->img->backing && e.zero == 0 && s->nb_sc == 1 &&
                   !s->crypt_method) {
            /* beyond the end of the file: the rest already reads as zero */
            ret = qcow2_host_write(s, data, n, host + coff);
        } else {
            tmp = qcow2_alloc_buf(span_hi - span_lo);
            if (!tmp)
                return -ENOMEM;
            ret = qcow2_read_in_cluster(s, &e, gc, tmp, span_lo, span_hi - span_lo);
            if (ret < 0)
                goto out;
            memcpy(tmp + (coff - span_lo), data, n);
            ret = qcow2_host_write(s, tmp, span_hi - span_lo, host + span_lo);
        }
        if (ret < 0)
            goto out;
        if (host + s->cluster_size > s->zero_above)
            s->zero_above = host + s->cluster_size;
        ne.type = L2E_NORMAL;
        ne.copied = true;
        ne.host = host;
        ne.csize = 0;
        ne.alloc = newalloc;
        ne.zero = (s->nb_sc == 1) ? 0 : (e.zero & ~newalloc);
        ret = qcow2_set_entry(s, l2off, gc, &ne);
        if (ret < 0)
            goto out;
        if (e.type == L2E_NORMAL) {
            ret = qcow2_defer_dec(s, e.host >> s->cluster_bits);
        } else if (e.type == L2E_COMPRESSED) {
            for (uint64_t c = e.host >> s->cluster_bits;
                 c <= (e.host + e.csize - 1) >> s->cluster_bits && ret == 0; c++)
                ret = qcow2_defer_dec(s, c);
        }
    }
out:
    free(tmp);
    return ret;
}

static int qcow2_pwrite(struct qtimg *img, const void *vbuf, uint64_t len, uint64_t off)
{
    struct qcow2 *s = img->priv;
    const uint8_t *buf = vbuf;
    int ret;

    if (s->crypt_method && !s->crypto) {
        log_err("image '%s': encrypted; a key secret is needed to write it", img->path);
        return -EACCES;
    }
    if (s->crypt_method && ((off | len) & 511)) {
        log_err("image '%s': encrypted images need 512-byte aligned requests", img->path);
        return -EINVAL;
    }
    if (s->incompat & QCOW2_INCOMPAT_CORRUPT) {
        log_err("image '%s': marked corrupt, refusing to write", img->path);
        return -EIO;
    }
    ret = qcow2_mark_dirty(s);
    if (ret < 0)
        return ret;
    while (len) {
        uint64_t gc = off >> s->cluster_bits, coff = off & (s->cluster_size - 1);
        uint64_t n = s->cluster_size - coff;
        if (n > len)
            n = len;
        ret = qcow2_write_in_cluster(s, gc, buf, coff, n);
        if (ret < 0)
            return ret;
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

int qtimg_pwrite_compressed(struct qtimg *img, const void *buf, uint64_t len, uint64_t off)
{
    struct qcow2 *s = img->priv;
    uint8_t *out = NULL, *in = NULL;
    uint64_t l2off, gc, csize, place;
    struct qcow2_l2e e, ne;
    z_stream zs;
    int ret;

    if (img->drv != &img_qcow2_driver || s->crypt_method)
        return qtimg_pwrite(img, buf, len, off);
    if ((off & (s->cluster_size - 1)) || len > s->cluster_size ||
        (len < s->cluster_size && off + len != img->size))
        return -EINVAL;
    gc = off >> s->cluster_bits;
    in = calloc(1, s->cluster_size);
    out = malloc(s->cluster_size);
    if (!in || !out) {
        ret = -ENOMEM;
        goto out;
    }
    memcpy(in, buf, len);
    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
        ret = -ENOMEM;
        goto out;
    }
    zs.next_in = in;
    zs.avail_in = (uInt)s->cluster_size;
    zs.next_out = out;
    zs.avail_out = (uInt)(s->cluster_size - 512);
    ret = deflate(&zs, Z_FINISH);
    csize = s->cluster_size - 512 - zs.avail_out;
    deflateEnd(&zs);
    if (ret != Z_STREAM_END || s->cluster_size <= 512) {
        ret = qtimg_pwrite(img, buf, len, off);
        goto out;
    }
    ret = qcow2_get_entry(s, gc, &e);
    if (ret < 0)
        goto out;
    if (e.type != L2E_UNALLOC || e.zero) {
        /* compressed writes only go to untouched clusters (convert) */
        ret = qtimg_pwrite(img, buf, len, off);
        goto out;
    }
    ret = qcow2_l2_for_write(s, gc >> s->l2_bits, &l2off);
    if (ret < 0)
        goto out;
    /* pack into the current compressed cluster run */
    if (s->comp_cur && s->comp_cur + csize <= s->comp_end) {
        place = s->comp_cur;
        for (uint64_t c = place >> s->cluster_bits; c <= (place + csize - 1) >> s->cluster_bits;
             c++) {
            ret = qcow2_refcount_add(s, c, 1);
            if (ret < 0)
                goto out;
        }
    } else {
        uint64_t nclus = (csize + s->cluster_size - 1) >> s->cluster_bits;
        ret = qcow2_alloc_clusters(s, nclus, &place);
        if (ret < 0)
            goto out;
        s->comp_end = place + nclus * s->cluster_size;
    }
    ret = img_meta_pwrite(img, out, csize, place);
    if (ret < 0)
        goto out;
    s->comp_cur = (place + csize + 511) & ~511ull;
    if (s->comp_end > s->zero_above)
        s->zero_above = s->comp_end;
    memset(&ne, 0, sizeof(ne));
    ne.type = L2E_COMPRESSED;
    ne.host = place;
    ne.csize = csize;
    ret = qcow2_set_entry(s, l2off, gc, &ne);
out:
    free(in);
    free(out);
    return ret;
}

static int qcow2_flush(struct qtimg *img)
{
    struct qcow2 *s = img->priv;

    if (s->flushing) {
        log_err("image '%s': synchronous flush while a flush is on the ring", img->path);
        return -EBUSY;
    }
    return qcow2_flush_meta(s);
}

static bool qcow2_inflight_has(const struct qcow2 *s, uint64_t gc);

/*
 * One step of a discard (zero=false: unallocated, reads from backing) or
 * write-zeroes at off, at most to the end of its cluster: *np bytes handled.
 * Whole subclusters change in the L2 table (through the cache; the old
 * cluster's refcount decrement is deferred to the next flush); *wz asks the
 * caller to write zeroes over the step instead (partial subclusters, v2
 * images, part of a compressed cluster). Nothing is changed before a cache
 * miss (-EWOULDBLOCK in non-blocking mode), so the step can be retried;
 * -EBUSY while the cluster has an asynchronous allocation in flight.
 */
static int qcow2_zero_step(struct qtimg *img, uint64_t off, uint64_t len, bool zero, uint64_t *np,
                           bool *wz)
{
    struct qcow2 *s = img->priv;
    uint64_t gc = off >> s->cluster_bits, coff = off & (s->cluster_size - 1);
    uint64_t scs = 1ull << s->sc_bits, cend = s->cluster_size - coff, n, l2off;
    struct qcow2_l2e e, ne;
    uint32_t first, last, mask;
    int ret;

    *wz = false;
    if (s->incompat & QCOW2_INCOMPAT_CORRUPT)
        return -EIO;
    if (cend > len)
        cend = len;
    if (coff & (scs - 1)) { /* head of a partial subcluster */
        n = scs - (coff & (scs - 1));
        *np = n < cend ? n : cend;
        *wz = zero;
        return 0;
    }
    n = cend & ~(scs - 1);
    if (n == 0) { /* tail of a partial subcluster */
        *np = cend;
        *wz = zero;
        return 0;
    }
    *np = n;
    if (img->nowait && qcow2_inflight_has(s, gc))
        return -EBUSY;
    first = (uint32_t)(coff >> s->sc_bits);
    last = (uint32_t)((coff + n) >> s->sc_bits); /* exclusive */
    mask = sc_mask(first, last - 1);
    ret = qcow2_get_entry(s, gc, &e);
    if (ret < 0)
        return ret;
    if (zero && s->version < 3) {
        /* no zero flag in v2: write zeroes unless nothing can show through */
        *wz = e.type != L2E_UNALLOC || img->backing;
        return 0;
    }
    if (!zero && e.type == L2E_UNALLOC && !e.zero && !e.alloc)
        return 0;
    if (e.type == L2E_COMPRESSED && mask != s->sc_all) {
        *wz = zero; /* part of a compressed cluster: decompress by writing */
        return 0;
    }
    ret = qcow2_l2_for_write(s, gc >> s->l2_bits, &l2off);
    if (ret < 0)
        return ret;
    ret = qcow2_get_entry(s, gc, &e);
    if (ret < 0)
        return ret;
    ne = e;
    if (e.type == L2E_COMPRESSED)
        memset(&ne, 0, sizeof(ne));
    ne.alloc &= ~mask;
    if (zero)
        ne.zero |= mask;
    else
        ne.zero &= ~mask;
    if (ne.type == L2E_NORMAL && !ne.alloc && (s->nb_sc > 1 || !zero || !e.copied)) {
        ne.type = L2E_UNALLOC;
        ne.host = 0;
        ne.copied = false;
    }
    ret = qcow2_set_entry(s, l2off, gc, &ne);
    if (ret < 0)
        return ret;
    if (e.type == L2E_NORMAL && ne.type == L2E_UNALLOC) {
        ret = qcow2_defer_dec(s, e.host >> s->cluster_bits);
    } else if (e.type == L2E_COMPRESSED) {
        for (uint64_t c = e.host >> s->cluster_bits;
             c <= (e.host + e.csize - 1) >> s->cluster_bits && ret == 0; c++)
            ret = qcow2_defer_dec(s, c);
    }
    return ret;
}

/* Deallocates (zero=false: unallocated, reads from backing) or zeroes. */
static int qcow2_discard(struct qtimg *img, uint64_t off, uint64_t len, bool zero)
{
    struct qcow2 *s = img->priv;
    int ret;

    if (s->incompat & QCOW2_INCOMPAT_CORRUPT)
        return -EIO;
    ret = qcow2_mark_dirty(s);
    if (ret < 0)
        return ret;
    while (len) {
        uint64_t n = 0;
        bool wz;
        ret = qcow2_zero_step(img, off, len, zero, &n, &wz);
        if (ret < 0)
            return ret;
        if (wz) {
            ret = qtimg_pwrite(img, s->zbuf, n, off);
            if (ret < 0)
                return ret;
        }
        off += n;
        len -= n;
    }
    return 0;
}

static int qcow2_get_info(struct qtimg *img, struct qtimg_info *info)
{
    struct qcow2 *s = img->priv;

    info->cluster_size = (uint32_t)s->cluster_size;
    info->version = s->version;
    info->refcount_bits = 1u << s->refcount_order;
    info->lazy_refcounts = s->compat & QCOW2_COMPAT_LAZY;
    info->corrupt = s->incompat & QCOW2_INCOMPAT_CORRUPT;
    info->dirty = s->incompat & QCOW2_INCOMPAT_DIRTY;
    info->extended_l2 = s->extended_l2;
    info->encrypted = s->crypt_method != 0;
    info->nb_snapshots = s->nb_snaps;
    if (s->backing_file) {
        info->has_backing = true;
        snprintf(info->backing_file, sizeof(info->backing_file), "%s", s->backing_file);
        if (s->backing_fmt)
            snprintf(info->backing_fmt, sizeof(info->backing_fmt), "%s", s->backing_fmt);
    }
    return 0;
}

/* Grows the active L1 table to at least min_size entries. */
int qcow2_grow_l1(struct qcow2 *s, uint64_t min_size)
{
    uint64_t new_size = s->l1_size ? s->l1_size : 1, new_off, bytes, clusters;
    uint64_t old_off = s->l1_off, old_clusters, *nl1;
    uint8_t hdr[12];
    int ret;

    while (new_size < min_size)
        new_size = new_size * 3 / 2 + 1;
    if (new_size * 8 > QCOW2_MAX_L1_BYTES) {
        new_size = min_size;
        if (new_size * 8 > QCOW2_MAX_L1_BYTES) {
            log_err("image '%s': L1 table would exceed %u bytes", s->img->path, QCOW2_MAX_L1_BYTES);
            return -EFBIG;
        }
    }
    bytes = new_size * 8;
    clusters = (bytes + s->cluster_size - 1) >> s->cluster_bits;
    new_size = (clusters << s->cluster_bits) / 8; /* use the whole clusters */
    if (new_size * 8 > QCOW2_MAX_L1_BYTES)
        new_size = QCOW2_MAX_L1_BYTES / 8;
    old_clusters = ((uint64_t)s->l1_size * 8 + s->cluster_size - 1) >> s->cluster_bits;
    nl1 = calloc(new_size, 8);
    if (!nl1)
        return -ENOMEM;
    memcpy(nl1, s->l1, (size_t)s->l1_size * 8);
    ret = qcow2_alloc_clusters(s, clusters, &new_off);
    if (ret < 0)
        goto fail;
    /* refcounts and L2 tables the new L1 points to must be on disk first */
    ret = qcow2_flush_meta(s);
    if (ret < 0)
        goto fail;
    {
        uint64_t *be = calloc(clusters << s->cluster_bits, 1);
        if (!be) {
            ret = -ENOMEM;
            goto fail;
        }
        for (uint64_t i = 0; i < new_size; i++)
            be[i] = htobe64(nl1[i]);
        ret = img_meta_pwrite(s->img, be, clusters << s->cluster_bits, new_off);
        free(be);
        if (ret < 0)
            goto fail;
    }
    if (img_fdatasync(s->img) < 0) {
        ret = -errno;
        goto fail;
    }
    wr32(hdr, (uint32_t)new_size);
    wr64(hdr + 4, new_off);
    ret = img_meta_pwrite(s->img, hdr, 12, 36);
    if (ret < 0)
        goto fail;
    if (img_fdatasync(s->img) < 0) {
        ret = -errno;
        goto fail;
    }
    free(s->l1);
    s->l1 = nl1;
    s->l1_size = (uint32_t)new_size;
    s->l1_off = new_off;
    s->l1_dirty = false;
    if (new_off + (clusters << s->cluster_bits) > s->zero_above)
        s->zero_above = new_off + (clusters << s->cluster_bits);
    for (uint64_t i = 0; i < old_clusters && old_off; i++) {
        ret = qcow2_refcount_add(s, (old_off >> s->cluster_bits) + i, -1);
        if (ret < 0)
            return ret;
    }
    return 0;
fail:
    free(nl1);
    return ret;
}

static int qcow2_resize(struct qtimg *img, uint64_t new_size, uint32_t flags)
{
    struct qcow2 *s = img->priv;
    uint64_t per_l2 = s->cluster_size << s->l2_bits;
    uint64_t need = (new_size + per_l2 - 1) / per_l2;
    uint8_t sz[8];
    int ret;

    if (s->flushing) {
        /* its table copies must land before the tables move */
        log_err("image '%s': resize while a metadata flush is on the ring; poll and retry",
                img->path);
        return -EBUSY;
    }
    if (new_size % 512) {
        log_err("image '%s': new size %llu is not a multiple of 512", img->path,
                (unsigned long long)new_size);
        return -EINVAL;
    }
    if (new_size < img->size) {
        if (!(flags & QTIMG_RESIZE_SHRINK)) {
            log_err("image '%s': shrinking from %llu to %llu bytes needs --shrink", img->path,
                    (unsigned long long)img->size, (unsigned long long)new_size);
            return -EINVAL;
        }
        if (s->nb_snaps) {
            log_err("image '%s': cannot shrink an image with internal snapshots", img->path);
            return -ENOTSUP;
        }
        for (uint64_t off = new_size; off < img->size;) {
            struct qcow2_l2e e;
            uint64_t gc = off >> s->cluster_bits;
            ret = qcow2_get_entry(s, gc, &e);
            if (ret < 0)
                return ret;
            if (e.type != L2E_UNALLOC || e.alloc) {
                log_err("image '%s': cannot shrink: data allocated at offset %llu", img->path,
                        (unsigned long long)(gc << s->cluster_bits));
                return -EBUSY;
            }
            off = (gc + 1) << s->cluster_bits;
        }
    }
    if (need > s->l1_size) {
        ret = qcow2_grow_l1(s, need);
        if (ret < 0)
            return ret;
    }
    ret = qcow2_flush_meta(s);
    if (ret < 0)
        return ret;
    wr64(sz, new_size);
    ret = img_meta_pwrite(img, sz, 8, 24);
    if (ret < 0)
        return ret;
    if (img_fdatasync(img) < 0)
        return -errno;
    img->size = new_size;
    return 0;
}

static int qcow2_map(struct qtimg *img, uint64_t off, uint64_t len, struct qtimg_map *out)
{
    struct qcow2 *s = img->priv;
    uint64_t done = 0, expect_host = UINT64_MAX;
    int kind0 = -1;

    out->host_off = UINT64_MAX;
    while (done < len) {
        uint64_t cur = off + done, gc = cur >> s->cluster_bits;
        uint64_t coff = cur & (s->cluster_size - 1);
        uint32_t sc = (uint32_t)(coff >> s->sc_bits);
        uint64_t run = ((uint64_t)(sc + 1) << s->sc_bits) - coff, host = UINT64_MAX;
        struct qcow2_l2e e;
        int kind, ret = qcow2_get_entry(s, gc, &e);
        if (ret < 0)
            return ret;
        if (e.type == L2E_NORMAL && !s->crypt_method)
            host = e.host + coff; /* also for zero/unallocated subclusters, as QEMU */
        if (e.type == L2E_COMPRESSED) {
            kind = QTIMG_MAP_COMPRESSED;
            run = s->cluster_size - coff;
        } else if (e.alloc & (1u << sc)) {
            kind = QTIMG_MAP_DATA;
        } else if (e.zero & (1u << sc)) {
            kind = QTIMG_MAP_ZERO;
        } else {
            kind = QTIMG_MAP_UNALLOC;
        }
        if (kind0 < 0) {
            kind0 = kind;
            out->kind = (enum qtimg_map_kind)kind;
            out->host_off = host;
        } else if (kind != kind0 || host != expect_host || kind == QTIMG_MAP_COMPRESSED) {
            break;
        }
        if (run > len - done)
            run = len - done;
        done += run;
        expect_host = host == UINT64_MAX ? UINT64_MAX : host + run;
    }
    out->len = done;
    out->host_zero = false;
    if (out->kind == QTIMG_MAP_DATA && out->host_off != UINT64_MAX) {
        /* holes in the host file read as zero: report them as QEMU does */
        off_t d = lseek(img->fd, (off_t)out->host_off, SEEK_DATA);
        if (d < 0 || (uint64_t)d > out->host_off) {
            out->host_zero = true;
            if (d >= 0 && (uint64_t)d - out->host_off < out->len)
                out->len = (uint64_t)d - out->host_off;
        } else {
            off_t h = lseek(img->fd, (off_t)out->host_off, SEEK_HOLE);
            if (h >= 0 && (uint64_t)h - out->host_off < out->len)
                out->len = (uint64_t)h - out->host_off;
        }
    }
    return 0;
}

static int qcow2_map_io(struct qtimg *img, uint64_t off, uint64_t len, bool for_write,
                        struct img_ext *ext)
{
    struct qcow2 *s = img->priv;
    uint64_t gc = off >> s->cluster_bits, coff = off & (s->cluster_size - 1);
    uint32_t sc = (uint32_t)(coff >> s->sc_bits);
    uint64_t n = s->cluster_size - coff;
    struct qcow2_l2e e;
    int ret;

    if (n > len)
        n = len;
    ext->len = n;
    ext->host_off = 0;
    ext->crypt = s->crypt_method != 0;
    if (s->crypt_method && (!s->crypto || ((off | n) & 511))) {
        ext->kind = IMG_EXT_SLOW; /* the synchronous path reports the error */
        return 0;
    }
    if (for_write) {
        uint32_t last = (uint32_t)((coff + n - 1) >> s->sc_bits);
        uint32_t m = sc_mask(sc, last);
        uint64_t l2off;
        bool copied;
        ext->kind = IMG_EXT_SLOW;
        ret = qcow2_l1_entry(s, gc >> s->l2_bits, &l2off, &copied);
        if (ret < 0 || !l2off || !copied || (s->incompat & QCOW2_INCOMPAT_CORRUPT))
            return ret;
        ret = qcow2_get_entry(s, gc, &e);
        if (ret < 0)
            return ret;
        if (e.type == L2E_NORMAL && e.copied && (e.alloc & m) == m) {
            ext->kind = IMG_EXT_HOST;
            ext->host_off = e.host + coff;
        }
        return 0;
    }
    ret = qcow2_get_entry(s, gc, &e);
    if (ret < 0)
        return ret;
    if (e.type == L2E_COMPRESSED) {
        ext->kind = IMG_EXT_COMPRESSED;
        ext->host_off = e.host;
        ext->clen = e.csize;
        ext->coff = coff;
        ext->ulen = s->cluster_size;
        ext->crypt = false;
        return 0;
    }
    {
        uint32_t bit = 1u << sc;
        int kind = (e.alloc & bit) ? IMG_EXT_HOST : (e.zero & bit) ? IMG_EXT_ZERO : IMG_EXT_BACKING;
        uint64_t run = ((uint64_t)(sc + 1) << s->sc_bits) - coff;
        while (run < n && sc + 1 < s->nb_sc) {
            uint32_t nb = 1u << (sc + 1);
            int k2 = (e.alloc & nb) ? IMG_EXT_HOST : (e.zero & nb) ? IMG_EXT_ZERO : IMG_EXT_BACKING;
            if (k2 != kind)
                break;
            sc++;
            run += 1ull << s->sc_bits;
        }
        if (run > n)
            run = n;
        ext->kind = (enum img_ext_kind)kind;
        ext->len = run;
        if (kind == IMG_EXT_HOST)
            ext->host_off = e.host + coff;
    }
    return 0;
}

/* ---- asynchronous allocation (used by aio.c) ---- */

static bool qcow2_inflight_has(const struct qcow2 *s, uint64_t gc)
{
    for (unsigned i = 0; i < s->ninflight; i++)
        if (s->inflight[i] == gc)
            return true;
    return false;
}

static int qcow2_write_prepare(struct qtimg *img, uint64_t off, uint64_t len, struct img_ext *ext,
                               struct img_ticket *t)
{
    struct qcow2 *s = img->priv;
    uint64_t gc = off >> s->cluster_bits, coff = off & (s->cluster_size - 1);
    uint64_t n = s->cluster_size - coff, scs = 1ull << s->sc_bits, l2off, host;
    uint32_t first, last, touched;
    struct qcow2_l2e e;
    int ret;

    if (n > len)
        n = len;
    ext->len = n;
    ext->kind = IMG_EXT_SLOW;
    memset(t, 0, sizeof(*t));
    if ((s->incompat & QCOW2_INCOMPAT_CORRUPT) ||
        (s->crypt_method && (!s->crypto || ((off | n) & 511))))
        return 0; /* the synchronous path refuses it with a message */
    if (qcow2_inflight_has(s, gc))
        return -EBUSY;
    t->crypt = s->crypt_method != 0;
    first = (uint32_t)(coff >> s->sc_bits);
    last = (uint32_t)((coff + n - 1) >> s->sc_bits);
    touched = sc_mask(first, last);
    ret = qcow2_mark_dirty(s);
    if (ret < 0)
        return ret;
    ret = qcow2_l2_for_write(s, gc >> s->l2_bits, &l2off);
    if (ret < 0)
        return ret;
    ret = qcow2_get_entry(s, gc, &e);
    if (ret < 0)
        return ret;
    /* partial subclusters without data of their own need a fill */
    {
        bool head = (coff & (scs - 1)) && !(e.type == L2E_NORMAL && (e.alloc & (1u << first)));
        bool tail = ((coff + n) & (scs - 1)) && !(e.type == L2E_NORMAL && (e.alloc & (1u << last)));
        t->cow_lo = head ? (uint64_t)first << s->sc_bits : coff;
        t->cow_hi = tail ? (uint64_t)(last + 1) << s->sc_bits : coff + n;
        t->head_zero = !img->backing || (e.zero & (1u << first));
        t->tail_zero = !img->backing || (e.zero & (1u << last));
        t->cow = head || tail;
    }
    if (e.type == L2E_NORMAL && e.copied) {
        host = e.host;
        t->new_cluster = false;
    } else if (e.type == L2E_UNALLOC) {
        bool zero_fill = false;
        if (t->cow && s->nb_sc == 1 && !img->backing && !e.zero && !s->crypt_method) {
            /* a fresh cluster with nothing below it: no fill unless reused */
            t->cow = false;
            zero_fill = true;
        }
        ret = qcow2_alloc_clusters(s, 1, &host);
        if (ret < 0)
            return ret;
        if (s->ninflight)
            qcow2_prealloc(s, host + s->cluster_size); /* concurrent allocations only */
        if (zero_fill && host < s->zero_above)
            t->cow = true; /* a reused cluster: the zero fill is written with the data */
        if (host + s->cluster_size > s->zero_above)
            s->zero_above = host + s->cluster_size;
        t->new_cluster = true;
    } else {
        /* shared with a snapshot (not COPIED) or compressed: a new cluster
         * filled from the current mapping; the old one is released on commit */
        uint32_t keep = e.type == L2E_COMPRESSED ? s->sc_all : e.alloc;
        uint32_t newalloc = s->nb_sc == 1 ? 1 : (keep | touched), lo = 0, hi = 31;
        while (!(newalloc & (1u << lo)))
            lo++;
        while (!(newalloc & (1u << hi)))
            hi--;
        t->cow_lo = (uint64_t)lo << s->sc_bits;
        t->cow_hi = (uint64_t)(hi + 1) << s->sc_bits;
        t->cow = !(coff == t->cow_lo && coff + n == t->cow_hi);
        t->head_zero = t->tail_zero = false;
        t->replace = true;
        touched = newalloc;
        qcow2_l2e_encode(s, &e, (uint8_t *)t->old_l2e);
        ret = qcow2_alloc_clusters(s, 1, &host);
        if (ret < 0)
            return ret;
        if (s->ninflight)
            qcow2_prealloc(s, host + s->cluster_size);
        if (host + s->cluster_size > s->zero_above)
            s->zero_above = host + s->cluster_size;
        t->new_cluster = true;
    }
    if (s->ninflight == s->capinflight) {
        unsigned cap = s->capinflight ? s->capinflight * 2 : 64;
        uint64_t *p = realloc(s->inflight, cap * sizeof(*p));
        if (!p) {
            if (t->new_cluster)
                qcow2_refcount_add(s, host >> s->cluster_bits, -1);
            return -ENOMEM;
        }
        s->inflight = p;
        s->capinflight = cap;
    }
    s->inflight[s->ninflight++] = gc;
    qcow2_cache_pin(&s->l2c, l2off, true); /* write_commit finds it without I/O */
    t->guest_base = gc << s->cluster_bits;
    t->gc = gc;
    t->l2off = l2off;
    t->host = host;
    t->mask = s->nb_sc == 1 ? 1 : touched;
    ext->kind = IMG_EXT_HOST;
    ext->host_off = host + coff;
    return 0;
}

static int qcow2_crypt(struct qtimg *img, bool encrypt, uint64_t host, void *buf, uint64_t len)
{
    struct qcow2 *s = img->priv;

    if (!s->crypto)
        return -EACCES;
    if ((host | len) & 511)
        return -EINVAL;
    return encrypt ? luks_cipher_encrypt(s->crypto, host / 512, buf, len)
                   : luks_cipher_decrypt(s->crypto, host / 512, buf, len);
}

static int qcow2_write_commit(struct qtimg *img, const struct img_ticket *t, int result)
{
    struct qcow2 *s = img->priv;
    struct qcow2_l2e e;
    int ret;

    for (unsigned i = 0; i < s->ninflight; i++) {
        if (s->inflight[i] == t->gc) {
            s->inflight[i] = s->inflight[--s->ninflight];
            break;
        }
    }
    if (result < 0) {
        qcow2_cache_pin(&s->l2c, t->l2off, false);
        /* the new cluster was never referenced */
        if (!t->new_cluster)
            return 0;
        ret = qcow2_refcount_add(s, t->host >> s->cluster_bits, -1);
        if (ret == -EWOULDBLOCK) {
            log_warn("image '%s': cluster 0x%llx of a failed write leaked", img->path,
                     (unsigned long long)t->host);
            ret = 0;
        }
        return ret;
    }
    ret = qcow2_get_entry(s, t->gc, &e);
    qcow2_cache_pin(&s->l2c, t->l2off, false);
    if (ret < 0)
        return ret;
    if (t->replace) {
        struct qcow2_l2e old, ne = {0};
        const char *why = NULL;
        if (qcow2_l2e_decode(s, (const uint8_t *)t->old_l2e, &old, &why) < 0 ||
            e.type != old.type || e.host != old.host)
            return qcow2_signal_corrupt(s, "L2 entry of guest cluster %llu changed during a write",
                                        (unsigned long long)t->gc);
        ne.type = L2E_NORMAL;
        ne.copied = true;
        ne.host = t->host;
        ne.alloc = t->mask;
        ne.zero = s->nb_sc == 1 ? 0 : (e.zero & ~t->mask);
        ret = qcow2_set_entry(s, t->l2off, t->gc, &ne);
        if (ret < 0)
            return ret;
        /* released once the tables no longer pointing to it are on disk */
        if (old.type == L2E_NORMAL)
            return qcow2_defer_dec(s, old.host >> s->cluster_bits);
        for (uint64_t c = old.host >> s->cluster_bits;
             c <= (old.host + old.csize - 1) >> s->cluster_bits && ret == 0; c++)
            ret = qcow2_defer_dec(s, c);
        return ret;
    }
    if (e.type == L2E_UNALLOC) {
        e.type = L2E_NORMAL;
        e.host = t->host;
        e.copied = true;
    } else if (e.type != L2E_NORMAL || e.host != t->host) {
        return qcow2_signal_corrupt(s, "L2 entry of guest cluster %llu changed during a write",
                                    (unsigned long long)t->gc);
    }
    e.alloc |= t->mask;
    e.zero &= ~t->mask;
    return qcow2_set_entry(s, t->l2off, t->gc, &e);
}

/* ---- open ---- */

static int qcow2_parse_exts(struct qcow2 *s, const uint8_t *hdr, uint64_t start, uint64_t end)
{
    uint64_t pos = start;

    while (pos + 8 <= end) {
        uint32_t type = rd32(hdr + pos), len = rd32(hdr + pos + 4);
        pos += 8;
        if (type == QCOW2_EXT_END)
            return 0;
        if (len > end - pos) {
            log_err("image '%s': header extension 0x%08x length %u runs past the header cluster",
                    s->img->path, type, len);
            return -EINVAL;
        }
        switch (type) {
        case QCOW2_EXT_BACKING_FMT:
            if (len == 0 || len > 31) {
                log_err("image '%s': backing format extension length %u invalid", s->img->path,
                        len);
                return -EINVAL;
            }
            free(s->backing_fmt);
            s->backing_fmt = strndup((const char *)hdr + pos, len);
            if (!s->backing_fmt)
                return -ENOMEM;
            break;
        case QCOW2_EXT_FEATURE_TABLE:
            if (len % 48) {
                log_err("image '%s': feature name table length %u not a multiple of 48",
                        s->img->path, len);
                return -EINVAL;
            }
            break; /* regenerated knowledge, not needed */
        case QCOW2_EXT_CRYPTO:
            if (len != 16) {
                log_err("image '%s': encryption header extension length %u (expected 16)",
                        s->img->path, len);
                return -EINVAL;
            }
            s->crypto_off = rd64(hdr + pos);
            s->crypto_len = rd64(hdr + pos + 8);
            break;
        case QCOW2_EXT_DATAFILE:
            log_err("image '%s': external data files are not supported", s->img->path);
            return -ENOTSUP;
        default: /* bitmaps and unknown extensions: kept verbatim */
            if (s->next >= QCOW2_MAX_EXT) {
                log_err("image '%s': more than %d header extensions", s->img->path, QCOW2_MAX_EXT);
                return -EINVAL;
            }
            s->ext[s->next].type = type;
            s->ext[s->next].len = len;
            s->ext[s->next].data = malloc(len ? len : 1);
            if (!s->ext[s->next].data)
                return -ENOMEM;
            memcpy(s->ext[s->next].data, hdr + pos, len);
            s->next++;
            break;
        }
        pos += (len + 7ull) & ~7ull;
    }
    return 0;
}

void qcow2_snaps_free(struct qcow2_snap *snaps, uint32_t n)
{
    if (!snaps)
        return;
    for (uint32_t i = 0; i < n; i++) {
        free(snaps[i].id);
        free(snaps[i].name);
    }
    free(snaps);
}

int qcow2_parse_snapshots(struct qcow2 *s)
{
    uint64_t pos = s->snap_off, total = 0;
    uint8_t fixed[40];
    int ret = 0;

    if (!s->nb_snaps)
        return 0;
    s->snaps = calloc(s->nb_snaps, sizeof(*s->snaps));
    if (!s->snaps)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->nb_snaps; i++) {
        struct qcow2_snap *sn = &s->snaps[i];
        uint32_t extra, idl, nl;
        uint8_t ex[24] = {0};
        if (pos + 40 > s->file_size || total > QCOW2_MAX_SNAP_TABLE) {
            log_err("image '%s': snapshot %u header past the end of the file", s->img->path, i);
            return -EINVAL;
        }
        ret = img_meta_pread(s->img, fixed, 40, pos);
        if (ret < 0)
            return ret;
        sn->l1_off = rd64(fixed);
        sn->l1_size = rd32(fixed + 8);
        idl = rd16(fixed + 12);
        nl = rd16(fixed + 14);
        sn->date_sec = rd32(fixed + 16);
        sn->date_nsec = rd32(fixed + 20);
        sn->vm_clock_nsec = rd64(fixed + 24);
        sn->vm_state_size = rd32(fixed + 32);
        extra = rd32(fixed + 36);
        sn->extra_size = extra;
        if (extra > 1024) {
            log_err("image '%s': snapshot %u extra data size %u too large", s->img->path, i, extra);
            return -EINVAL;
        }
        if (sn->l1_off % s->cluster_size || (uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES ||
            sn->l1_off + (uint64_t)sn->l1_size * 8 > s->file_size ||
            (sn->l1_size && sn->l1_off < s->cluster_size)) {
            log_err("image '%s': snapshot %u L1 table (0x%llx, %u entries) invalid", s->img->path,
                    i, (unsigned long long)sn->l1_off, sn->l1_size);
            return -EINVAL;
        }
        pos += 40;
        if (pos + extra + idl + nl > s->file_size) {
            log_err("image '%s': snapshot %u entry past the end of the file", s->img->path, i);
            return -EINVAL;
        }
        ret = img_meta_pread(s->img, ex, extra < 24 ? extra : 24, pos);
        if (ret < 0)
            return ret;
        sn->disk_size = s->img->size;
        sn->icount = UINT64_MAX;
        if (extra >= 8)
            sn->vm_state_size = rd64(ex);
        if (extra >= 16)
            sn->disk_size = rd64(ex + 8);
        if (extra >= 24)
            sn->icount = rd64(ex + 16);
        pos += extra;
        sn->id = calloc(1, idl + 1);
        sn->name = calloc(1, nl + 1);
        if (!sn->id || !sn->name)
            return -ENOMEM;
        ret = img_meta_pread(s->img, sn->id, idl, pos);
        if (ret == 0)
            ret = img_meta_pread(s->img, sn->name, nl, pos + idl);
        if (ret < 0)
            return ret;
        pos += idl + nl;
        pos = (pos + 7) & ~7ull;
        total = pos - s->snap_off;
    }
    s->snap_table_size = total;
    return 0;
}

static int qcow2_luks_read(void *opaque, uint64_t off, void *buf, size_t len)
{
    struct qcow2 *s = opaque;
    if (off + len > s->crypto_len)
        return -EINVAL;
    return img_meta_pread(s->img, buf, len, s->crypto_off + off);
}

/* Validates the encryption header pointer; unlocks when a passphrase is given. */
static int qcow2_open_luks(struct qcow2 *s, const char *pass)
{
    int ret;

    if (!s->crypto_off || !s->crypto_len) {
        log_err("image '%s': LUKS encryption without a header extension", s->img->path);
        return -EINVAL;
    }
    if ((s->crypto_off & (s->cluster_size - 1)) || s->crypto_len > LUKS_MAX_HEADER_SIZE ||
        s->crypto_off + s->crypto_len > s->file_size || s->crypto_off < s->cluster_size) {
        log_err("image '%s': LUKS header at 0x%llx (+%llu) out of bounds", s->img->path,
                (unsigned long long)s->crypto_off, (unsigned long long)s->crypto_len);
        return -EINVAL;
    }
    if (!pass) {
        /* metadata (info, check, map) works without the key */
        s->luks = NULL;
        return 0;
    }
    ret = luks_load(&s->luks, qcow2_luks_read, s, s->crypto_len, pass, strlen(pass), s->img->path);
    if (ret < 0)
        return ret;
    ret = luks_cipher_new(s->luks, &s->crypto);
    if (ret < 0) {
        luks_close(s->luks);
        s->luks = NULL;
    }
    return ret;
}

/* When every L2 table fits in the cache, read them all now, so that the data
 * path never waits for a table read once the image is open. */
static void qcow2_preload(struct qcow2 *s)
{
    uint32_t n = 0;

    for (uint32_t i = 0; i < s->l1_size; i++)
        if (s->l1[i] & QCOW2_OFFSET_MASK)
            n++;
    if (n > s->l2c.n)
        return;
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l2off;
        uint8_t *l2;
        bool copied;
        if (qcow2_l1_entry(s, i, &l2off, &copied) < 0 || !l2off)
            continue;
        if (qcow2_cache_get(s, &s->l2c, l2off, true, &l2) < 0)
            return;
    }
}

static int qcow2_probe(const uint8_t *buf, size_t len)
{
    return (len >= 4 && rd32(buf) == QCOW2_MAGIC) ? 100 : 0;
}

static void qcow2_free(struct qcow2 *s)
{
    if (!s)
        return;
    qcow2_cache_free(&s->l2c);
    qcow2_cache_free(&s->rbc);
    free(s->l1);
    free(s->rt);
    free(s->backing_file);
    free(s->backing_fmt);
    free(s->dec);
    free(s->inflight);
    luks_cipher_free(s->crypto);
    luks_close(s->luks);
    free(s->zbuf);
    free(s->dcache);
    for (unsigned i = 0; i < s->next; i++)
        free(s->ext[i].data);
    qcow2_snaps_free(s->snaps, s->nb_snaps);
    free(s);
}

static int qcow2_open(struct qtimg *img, const struct qtimg_open_opts *opts)
{
    struct qcow2 *s = calloc(1, sizeof(*s));
    const char *why = NULL;
    uint8_t *hdr = NULL;
    struct stat st;
    uint64_t hl;
    int ret;

    if (!s)
        return -ENOMEM;
    s->img = img;
    if (fstat(img->fd, &st) < 0) {
        ret = -errno;
        goto fail;
    }
    s->file_size = (uint64_t)st.st_size;
    s->zero_above = s->file_size;
    s->prealloc_end = s->file_size;
    hdr = calloc(1, 1u << QCOW2_MAX_CLUSTER_BITS);
    if (!hdr) {
        ret = -ENOMEM;
        goto fail;
    }
    ret = img_meta_pread(img, hdr, 1u << QCOW2_MAX_CLUSTER_BITS, 0);
    if (ret < 0)
        goto fail;
    ret = qcow2_header_check(hdr, s->file_size < (1u << 21) ? s->file_size : (1u << 21),
                             s->file_size, &why);
    if (ret < 0) {
        log_err("image '%s': invalid qcow2 header: %s", img->path, why);
        goto fail;
    }
    s->version = rd32(hdr + 4);
    s->cluster_bits = rd32(hdr + 20);
    s->cluster_size = 1ull << s->cluster_bits;
    img->size = rd64(hdr + 24);
    s->crypt_method = rd32(hdr + 32);
    s->l1_size = rd32(hdr + 36);
    s->l1_off = rd64(hdr + 40);
    s->rt_off = rd64(hdr + 48);
    s->rt_clusters = rd32(hdr + 56);
    s->nb_snaps = rd32(hdr + 60);
    s->snap_off = rd64(hdr + 64);
    s->refcount_order = 4;
    hl = 72;
    if (s->version >= 3) {
        s->incompat = rd64(hdr + 72);
        s->compat = rd64(hdr + 80);
        s->autoclear = rd64(hdr + 88);
        s->refcount_order = rd32(hdr + 96);
        hl = rd32(hdr + 100);
        if (hl > 104 && hdr[104] != 0) {
            log_err("image '%s': compression type %u (zstd) is not supported", img->path, hdr[104]);
            ret = -ENOTSUP;
            goto fail;
        }
    }
    s->header_length = (uint32_t)hl;
    if (s->incompat & ~QCOW2_INCOMPAT_KNOWN) {
        log_err("image '%s': unknown incompatible features 0x%llx", img->path,
                (unsigned long long)(s->incompat & ~QCOW2_INCOMPAT_KNOWN));
        ret = -ENOTSUP;
        goto fail;
    }
    if (s->incompat & QCOW2_INCOMPAT_DATAFILE) {
        log_err("image '%s': external data files are not supported", img->path);
        ret = -ENOTSUP;
        goto fail;
    }
    if ((s->incompat & QCOW2_INCOMPAT_CORRUPT) && !img->read_only &&
        !(opts->flags & QTIMG_O_CHECK)) {
        log_err("image '%s': marked corrupt; open read-only or repair with 'qtimg check -r all'",
                img->path);
        ret = -EIO;
        goto fail;
    }
    s->extended_l2 = s->incompat & QCOW2_INCOMPAT_EXTL2;
    if (s->extended_l2 && s->cluster_bits < 14) {
        log_err("image '%s': extended L2 entries need clusters of at least 16 KiB", img->path);
        ret = -EINVAL;
        goto fail;
    }
    s->l2_esize = s->extended_l2 ? 16 : 8;
    s->l2_bits = s->cluster_bits - (s->extended_l2 ? 4 : 3);
    s->nb_sc = s->extended_l2 ? 32 : 1;
    s->sc_bits = s->cluster_bits - (s->extended_l2 ? 5 : 0);
    s->sc_all = s->extended_l2 ? 0xffffffffu : 1;
    s->rb_bits = s->cluster_bits + 3 - s->refcount_order;
    s->refcount_max = s->refcount_order == 6 ? UINT64_MAX : (1ull << (1u << s->refcount_order)) - 1;
    if (s->crypt_method > 2) {
        log_err("image '%s': unknown encryption method %u", img->path, s->crypt_method);
        ret = -EINVAL;
        goto fail;
    }
    if (s->crypt_method == 1) {
        log_err("image '%s': legacy AES encryption is not supported (use LUKS)", img->path);
        ret = -ENOTSUP;
        goto fail;
    }
    ret = qcow2_parse_exts(s, hdr, hl, s->cluster_size);
    if (ret < 0)
        goto fail;
    if (s->crypt_method == 2) {
        ret = qcow2_open_luks(s, opts->key_secret);
        if (ret < 0)
            goto fail;
    }
    {
        uint64_t per_l2 = s->cluster_size << s->l2_bits;
        uint64_t need = (img->size + per_l2 - 1) / per_l2;
        if (need > s->l1_size) {
            log_err("image '%s': L1 table has %u entries, %llu needed for the virtual size",
                    img->path, s->l1_size, (unsigned long long)need);
            ret = -EINVAL;
            goto fail;
        }
    }
    if (rd64(hdr + 8)) {
        uint64_t bo = rd64(hdr + 8);
        uint32_t bl = rd32(hdr + 16);
        s->backing_file = strndup((const char *)hdr + bo, bl);
        if (!s->backing_file) {
            ret = -ENOMEM;
            goto fail;
        }
        if (strlen(s->backing_file) != bl) {
            log_err("image '%s': backing file name contains NUL", img->path);
            ret = -EINVAL;
            goto fail;
        }
    }
    /* tables */
    s->l1 = calloc(s->l1_size ? s->l1_size : 1, 8);
    if (!s->l1) {
        ret = -ENOMEM;
        goto fail;
    }
    if (s->l1_size) {
        ret = img_meta_pread(img, s->l1, (size_t)s->l1_size * 8, s->l1_off);
        if (ret < 0)
            goto fail;
        for (uint32_t i = 0; i < s->l1_size; i++)
            s->l1[i] = be64toh(s->l1[i]);
    }
    s->rt_size = ((uint64_t)s->rt_clusters << s->cluster_bits) / 8;
    s->rt = calloc(s->rt_size, 8);
    if (!s->rt) {
        ret = -ENOMEM;
        goto fail;
    }
    ret = img_meta_pread(img, s->rt, s->rt_size * 8, s->rt_off);
    if (ret < 0)
        goto fail;
    for (uint64_t i = 0; i < s->rt_size; i++) {
        s->rt[i] = be64toh(s->rt[i]);
        if ((s->rt[i] & (s->cluster_size - 1)) || (s->rt[i] & ~QCOW2_OFFSET_MASK) ||
            s->rt[i] + s->cluster_size > s->file_size + (s->rt[i] ? 0 : s->cluster_size)) {
            log_err("image '%s': refcount table entry %llu (0x%llx) is misaligned or past the "
                    "end of the file",
                    img->path, (unsigned long long)i, (unsigned long long)s->rt[i]);
            ret = -EINVAL;
            goto fail;
        }
    }
    ret = qcow2_parse_snapshots(s);
    if (ret < 0)
        goto fail;
    ret = qcow2_cache_init(
        &s->l2c, opts->l2_cache_tables ? opts->l2_cache_tables : L2_CACHE_DEFAULT, s->cluster_size);
    if (ret == 0)
        ret = qcow2_cache_init(
            &s->rbc, opts->refblock_cache_size ? opts->refblock_cache_size : RB_CACHE_DEFAULT,
            s->cluster_size);
    if (ret < 0)
        goto fail;
    s->zbuf = qcow2_alloc_buf(s->cluster_size);
    s->dcache = malloc(s->cluster_size);
    if (!s->zbuf || !s->dcache) {
        ret = -ENOMEM;
        goto fail;
    }
    memset(s->zbuf, 0, s->cluster_size);
    s->free_hint = 0;
    img->priv = s;
    qcow2_preload(s);
    if (s->backing_file) {
        ret = img_open_backing(img, s->backing_file, s->backing_fmt);
        if (ret < 0)
            goto fail_priv;
    }
    if (!img->read_only) {
        bool rewrite = false;
        if (s->autoclear) { /* we do not maintain bitmaps: clear what we don't understand */
            s->autoclear = 0;
            rewrite = true;
        }
        if ((s->incompat & QCOW2_INCOMPAT_DIRTY) && !(opts->flags & QTIMG_O_CHECK)) {
            struct qtimg_check_result r;
            log_warn("image '%s': dirty (lazy refcounts); repairing refcounts", img->path);
            ret = qcow2_check(img, QTIMG_CHECK_FIX_LEAKS | QTIMG_CHECK_FIX_ERRORS, &r);
            if (ret < 0)
                goto fail_priv;
            s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
            rewrite = true;
        }
        if (rewrite) {
            ret = qcow2_write_header(s);
            if (ret < 0)
                goto fail_priv;
        }
    }
    free(hdr);
    return 0;
fail_priv:
    img->priv = NULL;
    if (img->backing) {
        qtimg_close(img->backing);
        img->backing = NULL;
    }
fail:
    free(hdr);
    qcow2_free(s);
    return ret;
}

static void qcow2_close(struct qtimg *img)
{
    struct qcow2 *s = img->priv;

    if (!s)
        return;
    if (!img->read_only && s->dirty_set) {
        if (qcow2_flush_meta(s) == 0) {
            s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
            qcow2_write_header(s);
        }
    }
    qcow2_free(s);
    img->priv = NULL;
}

int qtimg_set_backing(struct qtimg *img, const char *backing_file, const char *backing_fmt)
{
    struct qcow2 *s = img->priv;
    char *nb = NULL, *nf = NULL;
    int ret;

    if (img->drv != &img_qcow2_driver) {
        log_err("image '%s': only qcow2 images have a backing file", img->path);
        return -ENOTSUP;
    }
    if (img->read_only)
        return -EROFS;
    if (backing_file && strlen(backing_file) > QCOW2_MAX_BACKING_NAME)
        return -ENAMETOOLONG;
    if (backing_file && !(nb = strdup(backing_file)))
        return -ENOMEM;
    if (backing_file && backing_fmt && !(nf = strdup(backing_fmt))) {
        free(nb);
        return -ENOMEM;
    }
    ret = qcow2_flush_meta(s);
    if (ret < 0) {
        free(nb);
        free(nf);
        return ret;
    }
    free(s->backing_file);
    free(s->backing_fmt);
    s->backing_file = nb;
    s->backing_fmt = nf;
    return qcow2_write_header(s);
}

int qtimg_amend_lazy_refcounts(struct qtimg *img, bool on)
{
    struct qcow2 *s = img->priv;
    int ret;

    if (img->drv != &img_qcow2_driver)
        return -ENOTSUP;
    if (s->version < 3 && on) {
        log_err("image '%s': lazy refcounts need compat=1.1 (version 3)", img->path);
        return -EINVAL;
    }
    ret = qcow2_flush_meta(s);
    if (ret < 0)
        return ret;
    if (on)
        s->compat |= QCOW2_COMPAT_LAZY;
    else
        s->compat &= ~QCOW2_COMPAT_LAZY;
    return qcow2_write_header(s);
}

int qtimg_check(struct qtimg *img, uint32_t fix, struct qtimg_check_result *res)
{
    memset(res, 0, sizeof(*res));
    if (img->drv != &img_qcow2_driver)
        return -ENOTSUP;
    return qcow2_check(img, fix, res);
}

/* ---- create ---- */

static int qcow2_create(const char *path, const struct qtimg_create_opts *o)
{
    uint32_t cs = o->cluster_size ? o->cluster_size : 65536;
    uint32_t rbits = o->refcount_bits ? o->refcount_bits : 16;
    uint32_t version = o->compat ? o->compat : 3, cbits = 0, rorder = 0;
    uint64_t size = o->size;
    char *bfmt = NULL;
    uint8_t *buf = NULL;
    struct qtimg *img = NULL;
    struct qcow2 *s;
    int fd = -1, ret;

    while ((1u << cbits) < cs)
        cbits++;
    while ((1u << rorder) < rbits)
        rorder++;
    if ((1u << cbits) != cs || cbits < 9 || cbits > 21) {
        log_err("image '%s': cluster size %u must be a power of two between 512 and 2M", path, cs);
        return -EINVAL;
    }
    if ((1u << rorder) != rbits || rorder > 6) {
        log_err("image '%s': refcount bits %u must be a power of two up to 64", path, rbits);
        return -EINVAL;
    }
    if (version != 2 && version != 3) {
        log_err("image '%s': compat must be 0.10 or 1.1", path);
        return -EINVAL;
    }
    if (version == 2 && (rorder != 4 || o->lazy_refcounts || o->extended_l2)) {
        log_err("image '%s': compat=0.10 supports neither refcount_bits other than 16, lazy "
                "refcounts nor extended L2 entries",
                path);
        return -EINVAL;
    }
    if (o->extended_l2 && cbits < 14) {
        log_err("image '%s': extended_l2 needs a cluster size of at least 16K", path);
        return -EINVAL;
    }
    if (o->encrypt_format && strcmp(o->encrypt_format, "luks")) {
        log_err("image '%s': encryption format '%s' is not supported (only luks)", path,
                o->encrypt_format);
        return -ENOTSUP;
    }
    if (o->encrypt_format && !o->key_secret) {
        log_err("image '%s': encrypt.format=luks needs encrypt.key-secret", path);
        return -EINVAL;
    }
    if (o->encrypt_format && version < 3) {
        log_err("image '%s': LUKS encryption needs compat=1.1", path);
        return -EINVAL;
    }
    if (o->backing_file) {
        struct qtimg *b = NULL;
        struct qtimg_open_opts bo = {.flags = QTIMG_O_RDONLY};
        char *bpath = img_resolve_backing(path, o->backing_file);
        if (!bpath)
            return -ENOMEM;
        if (o->backing_fmt && qtimg_fmt_parse(o->backing_fmt, &bo.fmt) < 0) {
            log_err("image '%s': unknown backing format '%s'", path, o->backing_fmt);
            free(bpath);
            return -EINVAL;
        }
        ret = qtimg_open(bpath, &bo, &b);
        free(bpath);
        if (ret < 0) {
            log_err("image '%s': cannot open backing file '%s'", path, o->backing_file);
            return ret;
        }
        if (!size)
            size = b->size;
        bfmt = strdup(o->backing_fmt ? o->backing_fmt : qtimg_fmt_name(b->drv->fmt));
        qtimg_close(b);
        if (!bfmt)
            return -ENOMEM;
    }
    if (size % 512) {
        log_err("image '%s': size %llu is not a multiple of 512", path, (unsigned long long)size);
        ret = -EINVAL;
        goto out;
    }
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        ret = -errno;
        log_err("image '%s': create: %s", path, strerror(errno));
        goto out;
    }
    buf = calloc(3, cs);
    if (!buf) {
        ret = -ENOMEM;
        goto out;
    }
    wr32(buf, QCOW2_MAGIC);
    wr32(buf + 4, version);
    wr32(buf + 20, cbits);
    wr64(buf + 24, 0);
    wr64(buf + 48, cs);
    wr32(buf + 56, 1);
    if (version == 3) {
        wr64(buf + 72, o->extended_l2 ? QCOW2_INCOMPAT_EXTL2 : 0);
        wr64(buf + 80, o->lazy_refcounts ? QCOW2_COMPAT_LAZY : 0);
        wr32(buf + 96, rorder);
        wr32(buf + 100, 112);
    }
    wr64(buf + cs, 2ull * cs); /* refcount table -> block at cluster 2 */
    for (int i = 0; i < 3; i++)
        qcow2_rb_set(buf + 2 * cs, rorder, (uint64_t)i, 1);
    ret = img_pwrite_full(fd, buf, 3ull * cs, 0);
    if (ret < 0)
        goto out;
    close(fd);
    fd = -1;
    {
        struct qtimg_open_opts oo = {.flags = QTIMG_O_NO_BACKING, .fmt = QTIMG_FMT_QCOW2};
        ret = qtimg_open(path, &oo, &img);
        if (ret < 0)
            goto out;
    }
    s = img->priv;
    if (o->backing_file) {
        s->backing_file = strdup(o->backing_file);
        s->backing_fmt = bfmt;
        bfmt = NULL;
        if (!s->backing_file) {
            ret = -ENOMEM;
            goto out;
        }
    }
    if (o->encrypt_format) {
        struct luks_create_opts lo = {.iter_time_ms = o->encrypt_iter_time_ms};
        struct luks *l = NULL;
        void *area = NULL;
        size_t area_len = 0;
        uint64_t hoff;
        ret = luks_create(&l, &lo, o->key_secret, strlen(o->key_secret), &area, &area_len, path);
        if (ret < 0)
            goto out;
        ret = qcow2_alloc_clusters(s, (area_len + cs - 1) / cs, &hoff);
        if (ret == 0)
            ret = img_meta_pwrite(img, area, area_len, hoff);
        free(area);
        if (ret == 0)
            ret = qcow2_flush_meta(s);
        if (ret < 0) {
            luks_close(l);
            goto out;
        }
        s->crypt_method = 2;
        s->crypto_off = hoff;
        s->crypto_len = area_len;
        s->luks = l;
        ret = luks_cipher_new(l, &s->crypto);
        if (ret < 0)
            goto out;
    }
    ret = qcow2_write_header(s);
    if (ret < 0)
        goto out;
    ret = qcow2_resize(img, size, 0);
out:
    if (img) {
        int r2 = qtimg_close(img);
        if (ret == 0)
            ret = r2;
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    free(bfmt);
    return ret;
}

const struct img_driver img_qcow2_driver = {
    .name = "qcow2",
    .fmt = QTIMG_FMT_QCOW2,
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .pread = qcow2_pread,
    .pwrite = qcow2_pwrite,
    .flush = qcow2_flush,
    .discard = qcow2_discard,
    .get_info = qcow2_get_info,
    .resize = qcow2_resize,
    .map = qcow2_map,
    .map_io = qcow2_map_io,
    .create = qcow2_create,
    .write_prepare = qcow2_write_prepare,
    .write_commit = qcow2_write_commit,
    .zero_step = qcow2_zero_step,
    .crypt = qcow2_crypt,
    .aio_attach = qcow2_aio_attach,
    .meta_insert = qcow2_meta_insert,
    .meta_flush = qcow2_meta_flush,
    .inflate = qcow2_aio_inflate,
};
