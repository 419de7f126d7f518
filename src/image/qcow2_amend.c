/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qcow2 amend: refcount width, compat level (v2 <-> v3), lazy refcounts and
 * virtual size of an existing image, with qemu-img amend's option meanings.
 *
 * Every change is validated for the whole request before the first byte is
 * written, and each change publishes itself with one header write after the
 * structures it points to are on disk (fdatasync), so a process killed at
 * any moment leaves either the old or the new image (see docs/qtimg.md).
 */
#include "image/qcow2.h"
#include "common/log.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define AMEND_WRITE_CHUNK (1u << 20) /* refcount blocks written per pwrite, at most */

/* A bitmap of clusters (the old refcount structures). */
struct amend_bits {
    uint8_t *b;
    uint64_t n;
};

static bool amend_bits_test(const struct amend_bits *m, uint64_t i)
{
    return i < m->n && (m->b[i / 8] >> (i % 8)) & 1;
}

static void amend_bits_set(struct amend_bits *m, uint64_t i)
{
    if (i < m->n)
        m->b[i / 8] |= (uint8_t)(1u << (i % 8));
}

static uint64_t amend_refcount_max(uint32_t order)
{
    return order == 6 ? UINT64_MAX : (1ull << (1u << order)) - 1;
}

/* First cluster past everything the file holds (in use or not). */
static int amend_file_clusters(struct qcow2 *s, uint64_t *out)
{
    struct stat st;
    uint64_t end = s->file_size;

    if (fstat(s->img->fd, &st) < 0)
        return -errno;
    if ((uint64_t)st.st_size > end)
        end = (uint64_t)st.st_size;
    *out = (end + s->cluster_size - 1) >> s->cluster_bits;
    return 0;
}

/* Marks the clusters of the current refcount table and blocks. */
static int amend_old_refcount_map(struct qcow2 *s, uint64_t nclusters, struct amend_bits *m)
{
    m->n = nclusters;
    m->b = calloc((nclusters + 7) / 8 + 1, 1);
    if (!m->b)
        return -ENOMEM;
    for (uint64_t i = 0; i < s->rt_clusters; i++)
        amend_bits_set(m, (s->rt_off >> s->cluster_bits) + i);
    for (uint64_t i = 0; i < s->rt_size; i++)
        if (s->rt[i] & QCOW2_OFFSET_MASK)
            amend_bits_set(m, (s->rt[i] & QCOW2_OFFSET_MASK) >> s->cluster_bits);
    return 0;
}

/*
 * The refcount a cluster below the current end keeps in the rebuilt
 * structures: its current one, except the current refcount table and blocks,
 * which the new header no longer references (so they are free afterwards,
 * and a crash after the switch leaves no leak).
 */
static int amend_carried_refcount(struct qcow2 *s, const struct amend_bits *old, uint64_t cl,
                                  uint64_t *rc)
{
    if (amend_bits_test(old, cl)) {
        *rc = 0;
        return 0;
    }
    return qcow2_refcount_get(s, cl, rc);
}

struct amend_rc_layout {
    uint32_t order;
    uint64_t per_block; /* refcount entries per block */
    uint64_t n0;        /* clusters of the file before the change (first new one) */
    uint64_t nb;        /* new refcount blocks at [n0, n0 + nb) */
    uint64_t nt;        /* new table clusters at [n0 + nb, n0 + nb + nt) */
};

static int amend_rc_plan(struct qcow2 *s, uint32_t order, uint64_t n0, struct amend_rc_layout *l)
{
    uint64_t nb = 0, nt = 0, pnb, pnt;

    l->order = order;
    l->per_block = 1ull << (s->cluster_bits + 3 - order);
    l->n0 = n0;
    /* the blocks cover the file, themselves and the table: iterate to the fixed point */
    do {
        pnb = nb;
        pnt = nt;
        nb = (n0 + nb + nt + l->per_block - 1) / l->per_block;
        nt = (nb * 8 + s->cluster_size - 1) >> s->cluster_bits;
    } while (nb != pnb || nt != pnt);
    if (nt * s->cluster_size > QCOW2_MAX_REFTABLE || nt > UINT32_MAX) {
        log_err("image '%s': %u-bit refcounts for %llu clusters need a %llu-byte refcount "
                "table (the limit is %u)",
                s->img->path, 1u << order, (unsigned long long)(n0 + nb + nt),
                (unsigned long long)(nt * s->cluster_size), QCOW2_MAX_REFTABLE);
        return -EFBIG;
    }
    if (((n0 + nb + nt) << s->cluster_bits) > (1ull << 56)) {
        log_err("image '%s': the new refcount structures would lie past the 2^56 offset limit",
                s->img->path);
        return -EFBIG;
    }
    l->nb = nb;
    l->nt = nt;
    return 0;
}

/* What both the width check and the rebuild start from: the clusters the file
 * holds now, the layout of the new structures, and today's refcounts. */
static int amend_rc_prepare(struct qcow2 *s, uint32_t order, uint64_t *n0,
                            struct amend_rc_layout *l, struct amend_bits *old)
{
    int ret = amend_file_clusters(s, n0);

    if (ret < 0)
        return ret;
    ret = amend_rc_plan(s, order, *n0, l);
    if (ret < 0)
        return ret;
    return amend_old_refcount_map(s, *n0, old);
}

/* Refuses a width too small for a current refcount (no byte written). */
static int amend_rc_check_width(struct qcow2 *s, uint32_t order)
{
    uint64_t n0, max = amend_refcount_max(order), over = 0, first = 0, highest = 0, rc;
    struct amend_bits old = {0};
    struct amend_rc_layout l;
    int ret;

    ret = amend_rc_prepare(s, order, &n0, &l, &old);
    if (ret < 0)
        return ret;
    for (uint64_t cl = 0; cl < n0; cl++) {
        ret = amend_carried_refcount(s, &old, cl, &rc);
        if (ret < 0)
            goto out;
        if (rc > max) {
            if (!over)
                first = cl;
            over++;
        }
        if (rc > highest)
            highest = rc;
    }
    if (over) {
        log_err("image '%s': refcount_bits=%u holds refcounts up to %llu, but %llu cluster%s "
                "have a higher one (the highest is %llu, first at offset 0x%llx; internal "
                "snapshots share clusters)",
                s->img->path, 1u << order, (unsigned long long)max, (unsigned long long)over,
                over == 1 ? "" : "s", (unsigned long long)highest,
                (unsigned long long)(first << s->cluster_bits));
        ret = -ERANGE;
    }
out:
    free(old.b);
    return ret;
}

/*
 * Rebuilds the refcount structures at width 2^order: new blocks and table are
 * written past the end of the file, synced, and one header write switches to
 * them. Until then the old structures are untouched and in charge.
 */
static int amend_rc_rebuild(struct qcow2 *s, uint32_t order)
{
    struct amend_bits old = {0};
    struct amend_rc_layout l;
    uint64_t n0, total, chunk, *nrt = NULL, *be = NULL;
    uint64_t o_rt_off = s->rt_off;
    uint32_t o_rt_clusters = s->rt_clusters, o_order = s->refcount_order;
    uint8_t *buf = NULL;
    int ret;

    ret = qcow2_flush_meta(s);
    if (ret < 0)
        return ret;
    ret = amend_rc_prepare(s, order, &n0, &l, &old);
    if (ret < 0)
        return ret;
    total = n0 + l.nb + l.nt;
    chunk = AMEND_WRITE_CHUNK >> s->cluster_bits;
    if (chunk == 0)
        chunk = 1;
    buf = malloc(chunk << s->cluster_bits);
    nrt = calloc((l.nt << s->cluster_bits) / 8, 8);
    be = calloc((l.nt << s->cluster_bits) / 8, 8);
    if (!buf || !nrt || !be) {
        ret = -ENOMEM;
        goto out;
    }
    for (uint64_t bi = 0; bi < l.nb; bi += chunk) {
        uint64_t n = l.nb - bi < chunk ? l.nb - bi : chunk;
        memset(buf, 0, n << s->cluster_bits);
        for (uint64_t k = 0; k < n; k++) {
            uint8_t *rb = buf + (k << s->cluster_bits);
            uint64_t first = (bi + k) * l.per_block;
            for (uint64_t j = 0; j < l.per_block && first + j < total; j++) {
                uint64_t cl = first + j, rc = 1; /* the new structures count once */
                if (cl < n0) {
                    ret = amend_carried_refcount(s, &old, cl, &rc);
                    if (ret < 0)
                        goto out;
                    if (rc > amend_refcount_max(order)) { /* checked before: changed since? */
                        log_err("image '%s': cluster 0x%llx refcount %llu does not fit %u bits",
                                s->img->path, (unsigned long long)(cl << s->cluster_bits),
                                (unsigned long long)rc, 1u << order);
                        ret = -ERANGE;
                        goto out;
                    }
                }
                qcow2_rb_set(rb, order, j, rc);
            }
            nrt[bi + k] = (n0 + bi + k) << s->cluster_bits;
        }
        ret = img_meta_pwrite(s->img, buf, n << s->cluster_bits, (n0 + bi) << s->cluster_bits);
        if (ret < 0) {
            log_err("image '%s': writing new refcount blocks: %s", s->img->path, strerror(-ret));
            goto out;
        }
    }
    for (uint64_t i = 0; i < (l.nt << s->cluster_bits) / 8; i++)
        be[i] = htobe64(nrt[i]);
    ret = img_meta_pwrite(s->img, be, l.nt << s->cluster_bits, (n0 + l.nb) << s->cluster_bits);
    if (ret < 0) {
        log_err("image '%s': writing the new refcount table: %s", s->img->path, strerror(-ret));
        goto out;
    }
    if (img_fdatasync(s->img) < 0) {
        ret = -errno;
        goto out;
    }
    /* the switch: one header write (offset, size and width together) */
    s->rt_off = (n0 + l.nb) << s->cluster_bits;
    s->rt_clusters = (uint32_t)l.nt;
    s->refcount_order = order;
    ret = qcow2_write_header(s);
    if (ret < 0) {
        s->rt_off = o_rt_off;
        s->rt_clusters = o_rt_clusters;
        s->refcount_order = o_order;
        log_err("image '%s': writing the header for the new refcount structures: %s", s->img->path,
                strerror(-ret));
        goto out;
    }
    free(s->rt);
    s->rt = nrt;
    nrt = NULL;
    s->rt_size = (l.nt << s->cluster_bits) / 8;
    s->rt_dirty_lo = s->rt_dirty_hi = 0;
    s->rb_bits = s->cluster_bits + 3 - order;
    s->refcount_max = amend_refcount_max(order);
    for (unsigned i = 0; i < s->rbc.n; i++) { /* cached blocks have the old width */
        s->rbc.ent[i].off = 0;
        s->rbc.ent[i].dirty = false;
    }
    s->free_hint = 0; /* the old structures are free now */
    if ((total << s->cluster_bits) > s->file_size)
        s->file_size = total << s->cluster_bits;
    if (s->file_size > s->zero_above)
        s->zero_above = s->file_size;
    if (s->file_size > s->prealloc_end)
        s->prealloc_end = s->file_size;
    log_info("image '%s': refcount_bits %u -> %u (%llu refcount blocks, %llu table clusters)",
             s->img->path, 1u << o_order, 1u << order, (unsigned long long)l.nb,
             (unsigned long long)l.nt);
    ret = 0;
out:
    free(old.b);
    free(buf);
    free(nrt);
    free(be);
    return ret;
}

/* ---- compat ---- */

/*
 * Zero clusters and compat=0.10 (version 2 has no zero flag). Every zero
 * flag of every L2 table (active and snapshot L1 tables) becomes:
 *  - unallocated, no backing file: the flag is cleared (version 2 reads an
 *    unallocated cluster without backing file as zero);
 *  - unallocated over a backing file: a zeroed cluster is allocated for it;
 *  - preallocated (host cluster kept) where every reference to the host
 *    cluster is such a zero entry: the host cluster is zeroed, then the flag
 *    cleared;
 *  - preallocated where the host cluster is also read as data (QEMU keeps
 *    the cluster shared with a snapshot when it zeroes it in the active
 *    image): the entry gets a zeroed cluster of its own (or becomes
 *    unallocated without backing file) and the old host cluster loses those
 *    references once the tables are on disk. Only entries of tables the
 *    active L1 reaches are changed this way; the same case inside a
 *    snapshot-only table is refused (its copied flags could not be kept
 *    right at every crash point).
 * A new cluster counts once per L1 table reaching its L2 table (the L2
 * table's refcount). Every step is invisible to a version 3 reader, so a
 * crash leaves the version 3 image with the same contents (leaked clusters
 * at worst); the version switch is the header write at the end.
 */
struct amend_host_ref {
    uint64_t host;
    uint64_t n; /* scan: zero entries visiting it; fix: references to drop */
};

struct amend_zero_scan {
    uint64_t clearable, alloc, prealloc, replace, blocking;
    uint64_t first_blocking;
    struct amend_host_ref *refs; /* scan: one per visit; then the safe hosts, sorted */
    size_t nrefs, caprefs;
    uint64_t *active_l2; /* sorted offsets of the L2 tables the active L1 reaches */
    size_t nactive;
    bool in_active; /* walking the active L1 */
};

static int amend_ref_add(struct amend_zero_scan *z, uint64_t host, uint64_t n)
{
    if (z->nrefs == z->caprefs) {
        size_t cap = z->caprefs ? z->caprefs * 2 : 64;
        struct amend_host_ref *p = realloc(z->refs, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        z->refs = p;
        z->caprefs = cap;
    }
    z->refs[z->nrefs].host = host;
    z->refs[z->nrefs].n = n;
    z->nrefs++;
    return 0;
}

static int amend_cmp_ref(const void *a, const void *b)
{
    uint64_t x = ((const struct amend_host_ref *)a)->host;
    uint64_t y = ((const struct amend_host_ref *)b)->host;
    return x < y ? -1 : x > y;
}

static int amend_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool amend_u64_has(const uint64_t *v, size_t n, uint64_t key)
{
    return n && bsearch(&key, v, n, sizeof(*v), amend_cmp_u64);
}

static bool amend_safe_host(const struct amend_host_ref *safe, size_t n, uint64_t host)
{
    struct amend_host_ref key = {.host = host};
    return n && bsearch(&key, safe, n, sizeof(*safe), amend_cmp_ref);
}

/*
 * Points entry j of the L2 table at l2off to a new zeroed cluster (backing:
 * true) or makes it unallocated, without the zero flag. Returns in *shared
 * how many references the entry stood for (the L2 table's refcount).
 */
static int amend_zero_replace(struct qcow2 *s, uint64_t l2off, uint64_t j, bool backing,
                              uint64_t *shared)
{
    struct qcow2_l2e e = {.type = L2E_UNALLOC};
    uint8_t *l2;
    int ret;

    ret = qcow2_refcount_get(s, l2off >> s->cluster_bits, shared);
    if (ret < 0)
        return ret;
    if (*shared == 0)
        return qcow2_signal_corrupt(s, "L2 table 0x%llx has refcount 0", (unsigned long long)l2off);
    if (backing) {
        ret = qcow2_alloc_clusters(s, 1, &e.host);
        if (ret < 0)
            return ret;
        if (*shared > 1) {
            ret = qcow2_refcount_set(s, e.host >> s->cluster_bits, *shared);
            if (ret < 0)
                return ret;
        }
        /* zeroes on disk before the entry can be (an L2 write-back syncs first) */
        ret = img_meta_pwrite(s->img, s->zbuf, s->cluster_size, e.host);
        if (ret < 0)
            return ret;
        if (e.host + s->cluster_size > s->zero_above)
            s->zero_above = e.host + s->cluster_size;
        e.type = L2E_NORMAL;
        e.alloc = 1;
        e.copied = *shared == 1;
    }
    ret = qcow2_cache_get(s, &s->l2c, l2off, true, &l2);
    if (ret < 0)
        return ret;
    qcow2_l2e_encode(s, &e, l2 + j * s->l2_esize);
    qcow2_cache_mark_dirty(&s->l2c, l2off);
    return 0;
}

/* fix == NULL: scan (read only). fix: the safe hosts (zeroed already); the
 * references to drop are appended to drop. */
static int amend_zero_walk_l1(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size,
                              struct amend_zero_scan *z, const struct amend_zero_scan *fix,
                              struct amend_zero_scan *drop)
{
    bool backing = s->backing_file != NULL;
    int ret;

    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t l2off = l1[i] & QCOW2_OFFSET_MASK, shared;
        uint8_t *l2;
        if (!l2off)
            continue;
        if ((l2off & (s->cluster_size - 1)) || l2off + s->cluster_size > s->file_size)
            return qcow2_signal_corrupt(s, "L1 entry %u: L2 table offset 0x%llx invalid", i,
                                        (unsigned long long)l2off);
        for (uint64_t j = 0; j < (1ull << s->l2_bits); j++) {
            struct qcow2_l2e e;
            /* fetched per entry: an allocation may have evicted the table */
            ret = qcow2_cache_get(s, &s->l2c, l2off, true, &l2);
            if (ret < 0)
                return ret;
            ret = qcow2_l2e_get(s, l2, l2off, j, &e);
            if (ret < 0)
                return ret;
            if (!e.zero)
                continue;
            if (e.type == L2E_UNALLOC && backing) {
                z->alloc++;
                if (fix) {
                    ret = amend_zero_replace(s, l2off, j, true, &shared);
                    if (ret < 0)
                        return ret;
                }
                continue;
            }
            if (e.type == L2E_NORMAL && !fix) {
                ret = amend_ref_add(z, e.host,
                                    z->in_active || amend_u64_has(z->active_l2, z->nactive, l2off));
                if (ret < 0)
                    return ret;
                continue;
            }
            if (e.type == L2E_NORMAL && !amend_safe_host(fix->refs, fix->nrefs, e.host)) {
                /* shared with a reader of its data: a cluster of its own */
                z->replace++;
                ret = amend_zero_replace(s, l2off, j, backing, &shared);
                if (ret == 0)
                    ret = amend_ref_add(drop, e.host, shared);
                if (ret < 0)
                    return ret;
                continue;
            }
            if (e.type == L2E_NORMAL)
                z->prealloc++;
            else
                z->clearable++;
            if (fix) { /* preallocated: the host cluster was zeroed before this walk */
                e.zero = 0;
                e.alloc = e.type == L2E_NORMAL;
                qcow2_l2e_encode(s, &e, l2 + j * s->l2_esize);
                qcow2_cache_mark_dirty(&s->l2c, l2off);
            }
        }
    }
    return 0;
}

static int amend_zero_walk(struct qcow2 *s, struct amend_zero_scan *z,
                           const struct amend_zero_scan *fix, struct amend_zero_scan *drop)
{
    int ret;

    z->in_active = true;
    ret = amend_zero_walk_l1(s, s->l1, s->l1_size, z, fix, drop);
    z->in_active = false;
    for (uint32_t i = 0; i < s->nb_snaps && ret == 0; i++) {
        struct qcow2_snap *sn = &s->snaps[i];
        uint64_t *l1 = calloc(sn->l1_size ? sn->l1_size : 1, 8);
        if (!l1)
            return -ENOMEM;
        ret = img_meta_pread(s->img, l1, (size_t)sn->l1_size * 8, sn->l1_off);
        for (uint32_t j = 0; j < sn->l1_size; j++)
            l1[j] = be64toh(l1[j]);
        if (ret == 0)
            ret = amend_zero_walk_l1(s, l1, sn->l1_size, z, fix, drop);
        free(l1);
    }
    return ret;
}

static void amend_zero_free(struct amend_zero_scan *z)
{
    free(z->refs);
    free(z->active_l2);
    memset(z, 0, sizeof(*z));
}

/*
 * Read-only pass. A preallocated zero host cluster is safe (zeroed in place)
 * when its refcount equals the zero entries visiting it; otherwise its
 * entries are replaced, which is refused for an entry in a snapshot-only
 * table (blocking). z->refs ends as the safe hosts, sorted, each once.
 */
static int amend_zero_scan(struct qcow2 *s, struct amend_zero_scan *z)
{
    size_t out = 0;
    int ret;

    memset(z, 0, sizeof(*z));
    z->active_l2 = calloc(s->l1_size ? s->l1_size : 1, sizeof(*z->active_l2));
    if (!z->active_l2)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->l1_size; i++)
        if (s->l1[i] & QCOW2_OFFSET_MASK)
            z->active_l2[z->nactive++] = s->l1[i] & QCOW2_OFFSET_MASK;
    qsort(z->active_l2, z->nactive, sizeof(*z->active_l2), amend_cmp_u64);
    ret = amend_zero_walk(s, z, NULL, NULL);
    if (ret < 0)
        return ret;
    if (z->nrefs)
        qsort(z->refs, z->nrefs, sizeof(*z->refs), amend_cmp_ref);
    for (size_t i = 0; i < z->nrefs;) {
        size_t k = i;
        bool all_active = true;
        uint64_t rc;
        while (k < z->nrefs && z->refs[k].host == z->refs[i].host)
            all_active &= z->refs[k++].n != 0;
        ret = qcow2_refcount_get(s, z->refs[i].host >> s->cluster_bits, &rc);
        if (ret < 0)
            return ret;
        if (rc == k - i) {
            z->prealloc += k - i;
            z->refs[out++] = z->refs[i];
        } else if (all_active) {
            z->replace += k - i;
        } else {
            if (!z->blocking)
                z->first_blocking = z->refs[i].host;
            z->blocking += k - i;
        }
        i = k;
    }
    z->nrefs = out;
    return 0;
}

/* Whether compat=0.10 can hold this image as it will be (no byte written). */
static int amend_downgrade_check(struct qcow2 *s, uint32_t order, bool lazy)
{
    struct amend_zero_scan z;
    uint64_t incompat = s->incompat & ~QCOW2_INCOMPAT_DIRTY;
    int ret;

    if (order != 4) {
        log_err("image '%s': compat=0.10 needs refcount_bits=16 (it has no refcount_order "
                "field)",
                s->img->path);
        return -EINVAL;
    }
    if (lazy) {
        log_err("image '%s': lazy_refcounts=on needs compat=1.1", s->img->path);
        return -EINVAL;
    }
    if (incompat) {
        log_err("image '%s': cannot downgrade to compat=0.10: incompatible features 0x%llx "
                "are in use%s%s%s",
                s->img->path, (unsigned long long)incompat,
                incompat & QCOW2_INCOMPAT_EXTL2 ? " (extended L2 entries)" : "",
                incompat & QCOW2_INCOMPAT_CORRUPT ? " (marked corrupt)" : "",
                incompat & QCOW2_INCOMPAT_COMPTYPE ? " (compression type)" : "");
        return -ENOTSUP;
    }
    if (s->crypt_method) {
        log_err("image '%s': cannot downgrade an encrypted (LUKS) image to compat=0.10",
                s->img->path);
        return -ENOTSUP;
    }
    ret = amend_zero_scan(s, &z);
    if (ret == 0 && z.blocking) {
        log_err("image '%s': cannot downgrade to compat=0.10: %llu preallocated zero "
                "cluster%s in snapshot-only L2 tables share%s a host cluster read as data "
                "elsewhere (first: host offset 0x%llx); copy the image with 'qtimg convert -O "
                "qcow2 -o compat=0.10' instead",
                s->img->path, (unsigned long long)z.blocking, z.blocking == 1 ? "" : "s",
                z.blocking == 1 ? "s" : "", (unsigned long long)z.first_blocking);
        ret = -ENOTSUP;
    }
    amend_zero_free(&z);
    return ret;
}

static int amend_downgrade(struct qcow2 *s)
{
    struct amend_zero_scan z, w = {0}, drop = {0};
    uint64_t o_compat = s->compat, o_incompat = s->incompat, o_autoclear = s->autoclear;
    uint32_t o_hl = s->header_length;
    int ret;

    ret = qcow2_flush_meta(s);
    if (ret < 0)
        return ret;
    ret = amend_zero_scan(s, &z);
    if (ret == 0 && z.blocking)
        ret = -ENOTSUP; /* checked before: cannot happen */
    /* safe preallocated zero clusters: zero the host clusters first (every
     * entry reaching them has the zero flag, so nothing reads them yet) */
    for (size_t i = 0; i < z.nrefs && ret == 0; i++)
        ret = img_meta_pwrite(s->img, s->zbuf, s->cluster_size, z.refs[i].host);
    if (ret == 0 && z.nrefs && img_fdatasync(s->img) < 0)
        ret = -errno;
    if (ret == 0)
        ret = amend_zero_walk(s, &w, &z, &drop);
    /* the tables on disk, then the references they dropped, then the copied flags */
    if (ret == 0)
        ret = qcow2_flush_meta(s);
    for (size_t i = 0; i < drop.nrefs && ret == 0; i++)
        ret = qcow2_refcount_add(s, drop.refs[i].host >> s->cluster_bits, -(int64_t)drop.refs[i].n);
    if (ret == 0 && drop.nrefs)
        ret = qcow2_fix_copied(s);
    if (ret == 0)
        ret = qcow2_flush_meta(s);
    amend_zero_free(&z);
    amend_zero_free(&drop);
    if (ret < 0)
        return ret;
    s->version = 2;
    s->compat = 0;
    s->incompat = 0;
    s->autoclear = 0;
    s->header_length = 72;
    ret = qcow2_write_header(s);
    if (ret < 0) {
        s->version = 3;
        s->compat = o_compat;
        s->incompat = o_incompat;
        s->autoclear = o_autoclear;
        s->header_length = o_hl;
        return ret;
    }
    log_info("image '%s': compat 1.1 -> 0.10 (zero clusters: %llu cleared, %llu zeroed in "
             "place, %llu given a zeroed cluster, %llu unshared)",
             s->img->path, (unsigned long long)w.clearable, (unsigned long long)w.prealloc,
             (unsigned long long)w.alloc, (unsigned long long)w.replace);
    amend_zero_free(&w);
    return 0;
}

static int amend_upgrade(struct qcow2 *s)
{
    bool rewrite_snaps = false;
    int ret;

    ret = qcow2_flush_meta(s);
    if (ret < 0)
        return ret;
    /* version 3 wants at least 16 bytes of extra data per snapshot */
    for (uint32_t i = 0; i < s->nb_snaps; i++)
        rewrite_snaps |= s->snaps[i].extra_size < 16;
    if (rewrite_snaps) {
        ret = qcow2_write_snapshots(s); /* readable by version 2 as well */
        if (ret < 0)
            return ret;
        for (uint32_t i = 0; i < s->nb_snaps; i++)
            s->snaps[i].extra_size = 24;
    }
    s->version = 3;
    s->incompat = 0;
    s->compat = 0;
    s->autoclear = 0;
    s->refcount_order = 4;
    s->header_length = 112;
    ret = qcow2_write_header(s);
    if (ret < 0) {
        s->version = 2;
        s->header_length = 72;
        return ret;
    }
    log_info("image '%s': compat 0.10 -> 1.1", s->img->path);
    return 0;
}

/* ---- size ---- */

static int amend_size_check(struct qtimg *img, struct qcow2 *s, uint64_t size)
{
    if (size % 512) {
        log_err("image '%s': new size %llu is not a multiple of 512", img->path,
                (unsigned long long)size);
        return -EINVAL;
    }
    if (size >= img->size)
        return 0;
    if (s->nb_snaps) {
        log_err("image '%s': cannot shrink an image with internal snapshots", img->path);
        return -ENOTSUP;
    }
    for (uint64_t off = size; off < img->size;) {
        struct qtimg_map m;
        int ret = qtimg_map_range(img, off, img->size - off, &m);
        if (ret < 0)
            return ret;
        if (m.kind != QTIMG_MAP_UNALLOC) {
            log_err("image '%s': cannot shrink to %llu bytes: data or zero clusters at offset "
                    "%llu",
                    img->path, (unsigned long long)size, (unsigned long long)off);
            return -EBUSY;
        }
        if (!m.len)
            break;
        off += m.len;
    }
    return 0;
}

/* ---- entry point ---- */

int qtimg_amend(struct qtimg *img, const struct qtimg_amend_opts *o)
{
    struct qcow2 *s = img->priv;
    uint32_t version, order = 0, target_order;
    bool lazy;
    int ret;

    if (img->drv != &img_qcow2_driver) {
        log_err("image '%s': amend supports qcow2 images only", img->path);
        return -ENOTSUP;
    }
    if (img->read_only)
        return -EROFS;
    if (s->flushing) {
        log_err("image '%s': amend while a metadata flush is on the ring", img->path);
        return -EBUSY;
    }
    /* the image as the request wants it */
    version = o->compat ? o->compat : s->version;
    if (version != 2 && version != 3) {
        log_err("image '%s': compat must be 0.10 or 1.1", img->path);
        return -EINVAL;
    }
    if (o->refcount_bits) {
        uint32_t b = o->refcount_bits;
        if (b > 64 || (b & (b - 1))) {
            log_err("image '%s': refcount_bits must be a power of two from 1 to 64 (got %u)",
                    img->path, b);
            return -EINVAL;
        }
        while ((1u << order) < b)
            order++;
    }
    target_order = o->refcount_bits ? order : s->refcount_order;
    lazy = o->lazy_refcounts >= 0 ? o->lazy_refcounts > 0 : (s->compat & QCOW2_COMPAT_LAZY) != 0;
    if (version == 2 && lazy && o->lazy_refcounts > 0) {
        log_err("image '%s': lazy_refcounts=on needs compat=1.1", img->path);
        return -EINVAL;
    }
    if (version == 2 && target_order != 4) {
        if (o->refcount_bits)
            log_err("image '%s': refcount_bits=%u needs compat=1.1 (compat=0.10 has 16-bit "
                    "refcounts only)",
                    img->path, 1u << target_order);
        else
            log_err("image '%s': compat=0.10 needs 16-bit refcounts and the image has %u-bit "
                    "ones (add refcount_bits=16)",
                    img->path, 1u << target_order);
        return -EINVAL;
    }
    if (version == 2 && s->version == 3 && o->lazy_refcounts < 0)
        lazy = false; /* a downgrade drops lazy refcounts (the image is clean) */

    /* validate everything before the first write */
    if (target_order != s->refcount_order) {
        ret = amend_rc_check_width(s, target_order);
        if (ret < 0)
            return ret;
    }
    if (version == 2 && s->version == 3) {
        ret = amend_downgrade_check(s, target_order, lazy);
        if (ret < 0)
            return ret;
    }
    if (o->size && o->size != img->size) {
        ret = amend_size_check(img, s, o->size);
        if (ret < 0)
            return ret;
    }

    /* apply: upgrade, size, refcount width, lazy refcounts, downgrade */
    if (version == 3 && s->version == 2) {
        ret = amend_upgrade(s);
        if (ret < 0)
            return ret;
    }
    if (o->size && o->size != img->size) {
        ret = qtimg_resize(img, o->size, QTIMG_RESIZE_SHRINK);
        if (ret < 0)
            return ret;
    }
    if (target_order != s->refcount_order) {
        ret = amend_rc_rebuild(s, target_order);
        if (ret < 0)
            return ret;
    }
    if (version == 3 && lazy != !!(s->compat & QCOW2_COMPAT_LAZY)) {
        ret = qtimg_amend_lazy_refcounts(img, lazy);
        if (ret < 0)
            return ret;
    }
    if (version == 2 && s->version == 3) {
        ret = amend_downgrade(s);
        if (ret < 0)
            return ret;
    }
    return qcow2_flush_meta(s);
}
