/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qcow2 internal snapshots: the snapshot table, L1 copies and copy-on-write
 * through refcounts (a cluster shared with a snapshot has refcount > 1 and
 * loses its copied flag, so the next write allocates a new cluster).
 */
#include "image/qcow2.h"
#include "common/log.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int snap_read_l1(struct qcow2 *s, const struct qcow2_snap *sn, uint64_t **out)
{
    uint64_t *l1 = calloc(sn->l1_size ? sn->l1_size : 1, 8);
    int ret;

    if (!l1)
        return -ENOMEM;
    ret = img_meta_pread(s->img, l1, (size_t)sn->l1_size * 8, sn->l1_off);
    if (ret < 0) {
        free(l1);
        return ret;
    }
    for (uint32_t i = 0; i < sn->l1_size; i++)
        l1[i] = be64toh(l1[i]) & ~QCOW2_OFLAG_COPIED;
    *out = l1;
    return 0;
}

/* Adds addend to the refcount of every L2 table and data cluster reachable from l1. */
int qcow2_l1_walk_refcount(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, int addend)
{
    uint8_t *copy = malloc(s->cluster_size);
    int ret = 0;

    if (!copy)
        return -ENOMEM;
    for (uint32_t i = 0; i < l1_size && ret == 0; i++) {
        uint64_t l2off = l1[i] & QCOW2_OFFSET_MASK;
        uint8_t *l2;
        if (!l2off)
            continue;
        if ((l2off & (s->cluster_size - 1)) || l2off + s->cluster_size > s->file_size) {
            ret = qcow2_signal_corrupt(s, "L2 table offset 0x%llx invalid",
                                       (unsigned long long)l2off);
            break;
        }
        ret = qcow2_cache_get(s, &s->l2c, l2off, true, &l2);
        if (ret < 0)
            break;
        memcpy(copy, l2, s->cluster_size);
        for (uint64_t j = 0; j < (1ull << s->l2_bits) && ret == 0; j++) {
            struct qcow2_l2e e;
            ret = qcow2_l2e_get(s, copy, l2off, j, &e);
            if (ret < 0)
                break;
            if (e.type == L2E_NORMAL) {
                ret = qcow2_refcount_add(s, e.host >> s->cluster_bits, addend);
            } else if (e.type == L2E_COMPRESSED) {
                for (uint64_t c = e.host >> s->cluster_bits;
                     c <= (e.host + e.csize - 1) >> s->cluster_bits && ret == 0; c++)
                    ret = qcow2_refcount_add(s, c, addend);
            }
        }
        if (ret == 0)
            ret = qcow2_refcount_add(s, l2off >> s->cluster_bits, addend);
    }
    free(copy);
    return ret;
}

/* Recomputes the copied flags of the active L1 and its L2 tables. */
int qcow2_fix_copied(struct qcow2 *s)
{
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l2off = s->l1[i] & QCOW2_OFFSET_MASK, rc, nv;
        uint8_t *l2;
        int ret;
        if (!l2off)
            continue;
        ret = qcow2_refcount_get(s, l2off >> s->cluster_bits, &rc);
        if (ret < 0)
            return ret;
        nv = l2off | (rc == 1 ? QCOW2_OFLAG_COPIED : 0);
        if (nv != s->l1[i]) {
            s->l1[i] = nv;
            qcow2_mark_l1_dirty(s);
        }
        for (uint64_t j = 0; j < (1ull << s->l2_bits); j++) {
            struct qcow2_l2e e;
            ret = qcow2_cache_get(s, &s->l2c, l2off, true, &l2);
            if (ret < 0)
                return ret;
            ret = qcow2_l2e_get(s, l2, l2off, j, &e);
            if (ret < 0)
                return ret;
            if (e.type != L2E_NORMAL)
                continue;
            ret = qcow2_refcount_get(s, e.host >> s->cluster_bits, &rc);
            if (ret < 0)
                return ret;
            if ((rc == 1) != e.copied) {
                /* flags only matter in the active view; a table shared with a
                 * snapshot gets them too (they are ignored there) */
                ret = qcow2_cache_get(s, &s->l2c, l2off, true, &l2);
                if (ret < 0)
                    return ret;
                e.copied = rc == 1;
                qcow2_l2e_encode(s, &e, l2 + j * s->l2_esize);
                qcow2_cache_mark_dirty(&s->l2c, l2off);
            }
        }
    }
    return 0;
}

static size_t snap_entry_size(const struct qcow2_snap *sn)
{
    size_t n = 40 + 24 + strlen(sn->id) + strlen(sn->name);
    return (n + 7) & ~7ul;
}

/* Writes the snapshot array to new clusters and points the header at them. */
int qcow2_write_snapshots(struct qcow2 *s)
{
    uint64_t total = 0, off = 0, old_off = s->snap_off, old_size = s->snap_table_size;
    uint8_t *buf = NULL, hdr[12];
    size_t pos = 0;
    int ret;

    for (uint32_t i = 0; i < s->nb_snaps; i++)
        total += snap_entry_size(&s->snaps[i]);
    if (total > QCOW2_MAX_SNAP_TABLE)
        return -EFBIG;
    if (total) {
        uint64_t clusters = (total + s->cluster_size - 1) >> s->cluster_bits;
        buf = calloc(1, clusters << s->cluster_bits);
        if (!buf)
            return -ENOMEM;
        for (uint32_t i = 0; i < s->nb_snaps; i++) {
            struct qcow2_snap *sn = &s->snaps[i];
            uint8_t *p = buf + pos;
            uint64_t v;
            size_t idl = strlen(sn->id), nl = strlen(sn->name);
            v = htobe64(sn->l1_off);
            memcpy(p, &v, 8);
            {
                uint32_t w = htobe32(sn->l1_size);
                uint16_t h = htobe16((uint16_t)idl);
                memcpy(p + 8, &w, 4);
                memcpy(p + 12, &h, 2);
                h = htobe16((uint16_t)nl);
                memcpy(p + 14, &h, 2);
                w = htobe32(sn->date_sec);
                memcpy(p + 16, &w, 4);
                w = htobe32(sn->date_nsec);
                memcpy(p + 20, &w, 4);
                v = htobe64(sn->vm_clock_nsec);
                memcpy(p + 24, &v, 8);
                w = htobe32(sn->vm_state_size > UINT32_MAX ? 0 : (uint32_t)sn->vm_state_size);
                memcpy(p + 32, &w, 4);
                w = htobe32(24);
                memcpy(p + 36, &w, 4);
            }
            v = htobe64(sn->vm_state_size);
            memcpy(p + 40, &v, 8);
            v = htobe64(sn->disk_size);
            memcpy(p + 48, &v, 8);
            v = htobe64(sn->icount);
            memcpy(p + 56, &v, 8);
            memcpy(p + 64, sn->id, idl);
            memcpy(p + 64 + idl, sn->name, nl);
            pos += snap_entry_size(sn);
        }
        ret = qcow2_alloc_clusters(s, clusters, &off);
        if (ret < 0)
            goto out;
        ret = img_meta_pwrite(s->img, buf, clusters << s->cluster_bits, off);
        if (ret < 0)
            goto out;
    }
    ret = qcow2_flush_meta(s);
    if (ret < 0)
        goto out;
    {
        uint32_t w = htobe32(s->nb_snaps);
        uint64_t v = htobe64(off);
        memcpy(hdr, &w, 4);
        memcpy(hdr + 4, &v, 8);
    }
    ret = img_meta_pwrite(s->img, hdr, 12, 60);
    if (ret < 0)
        goto out;
    if (img_fdatasync(s->img) < 0) {
        ret = -errno;
        goto out;
    }
    s->snap_off = off;
    s->snap_table_size = total;
    if (old_off && old_size) {
        for (uint64_t c = old_off >> s->cluster_bits;
             c <= (old_off + old_size - 1) >> s->cluster_bits; c++) {
            ret = qcow2_refcount_add(s, c, -1);
            if (ret < 0)
                goto out;
        }
    }
    ret = 0;
out:
    free(buf);
    return ret;
}

static int snap_find(struct qcow2 *s, const char *key)
{
    for (uint32_t i = 0; i < s->nb_snaps; i++)
        if (!strcmp(s->snaps[i].id, key))
            return (int)i;
    for (uint32_t i = 0; i < s->nb_snaps; i++)
        if (!strcmp(s->snaps[i].name, key))
            return (int)i;
    return -1;
}

static struct qcow2 *snap_priv(struct qtimg *img, bool write)
{
    if (img->drv != &img_qcow2_driver) {
        log_err("image '%s': internal snapshots need qcow2", img->path);
        return NULL;
    }
    if (write && img->read_only) {
        log_err("image '%s': opened read-only", img->path);
        return NULL;
    }
    return img->priv;
}

int qtimg_snapshot_list(struct qtimg *img, struct qtimg_snapshot **out, int *count)
{
    struct qcow2 *s = snap_priv(img, false);
    struct qtimg_snapshot *v;

    *out = NULL;
    *count = 0;
    if (!s)
        return -ENOTSUP;
    v = calloc(s->nb_snaps ? s->nb_snaps : 1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->nb_snaps; i++) {
        snprintf(v[i].id, sizeof(v[i].id), "%s", s->snaps[i].id);
        snprintf(v[i].name, sizeof(v[i].name), "%s", s->snaps[i].name);
        v[i].vm_state_size = s->snaps[i].vm_state_size;
        v[i].date_sec = s->snaps[i].date_sec;
        v[i].date_nsec = s->snaps[i].date_nsec;
        v[i].vm_clock_nsec = s->snaps[i].vm_clock_nsec;
        v[i].disk_size = s->snaps[i].disk_size;
        v[i].icount = s->snaps[i].icount;
    }
    *out = v;
    *count = (int)s->nb_snaps;
    return 0;
}

int qtimg_snapshot_create(struct qtimg *img, const char *name)
{
    struct qcow2 *s = snap_priv(img, true);
    struct qcow2_snap *arr, *sn;
    uint64_t l1off = 0, clusters, maxid = 0;
    struct timespec ts;
    uint64_t *be = NULL;
    char idbuf[32];
    int ret;

    if (!s)
        return -ENOTSUP;
    if (!name || !*name || strlen(name) > 255) {
        log_err("image '%s': snapshot name must be 1..255 characters", img->path);
        return -EINVAL;
    }
    if (snap_find(s, name) >= 0) {
        log_err("image '%s': snapshot '%s' already exists", img->path, name);
        return -EEXIST;
    }
    if (s->nb_snaps >= QCOW2_MAX_SNAPSHOTS)
        return -ENOSPC;
    if (s->refcount_order == 0) {
        log_err("image '%s': 1-bit refcounts cannot share clusters with a snapshot", img->path);
        return -ERANGE;
    }
    for (uint32_t i = 0; i < s->nb_snaps; i++) {
        uint64_t id = strtoull(s->snaps[i].id, NULL, 10);
        if (id > maxid)
            maxid = id;
    }
    snprintf(idbuf, sizeof(idbuf), "%llu", (unsigned long long)maxid + 1);
    ret = qcow2_flush_meta(s);
    if (ret < 0)
        return ret;
    /* 1. copy the active L1 */
    clusters = ((uint64_t)s->l1_size * 8 + s->cluster_size - 1) >> s->cluster_bits;
    if (s->l1_size) {
        be = calloc(clusters << s->cluster_bits, 1);
        if (!be)
            return -ENOMEM;
        for (uint32_t i = 0; i < s->l1_size; i++)
            be[i] = htobe64(s->l1[i] & ~QCOW2_OFLAG_COPIED);
        ret = qcow2_alloc_clusters(s, clusters, &l1off);
        if (ret == 0)
            ret = img_meta_pwrite(img, be, clusters << s->cluster_bits, l1off);
        free(be);
        if (ret < 0)
            return ret;
    }
    /* 2. every cluster it reaches gains a reference; copied flags drop */
    ret = qcow2_l1_walk_refcount(s, s->l1, s->l1_size, 1);
    if (ret < 0)
        return ret;
    ret = qcow2_fix_copied(s);
    if (ret < 0)
        return ret;
    ret = qcow2_flush_meta(s);
    if (ret < 0)
        return ret;
    /* 3. the table entry */
    arr = realloc(s->snaps, (s->nb_snaps + 1) * sizeof(*arr));
    if (!arr)
        return -ENOMEM;
    s->snaps = arr;
    sn = &arr[s->nb_snaps];
    memset(sn, 0, sizeof(*sn));
    sn->id = strdup(idbuf);
    sn->name = strdup(name);
    if (!sn->id || !sn->name) {
        free(sn->id);
        free(sn->name);
        return -ENOMEM;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    sn->date_sec = (uint32_t)ts.tv_sec;
    sn->date_nsec = (uint32_t)ts.tv_nsec;
    sn->l1_off = l1off;
    sn->l1_size = s->l1_size;
    sn->disk_size = img->size;
    sn->icount = UINT64_MAX;
    s->nb_snaps++;
    ret = qcow2_write_snapshots(s);
    if (ret < 0) {
        s->nb_snaps--;
        free(sn->id);
        free(sn->name);
        return ret;
    }
    return qcow2_flush_meta(s);
}

int qtimg_snapshot_delete(struct qtimg *img, const char *key)
{
    struct qcow2 *s = snap_priv(img, true);
    struct qcow2_snap gone;
    uint64_t *l1 = NULL;
    int idx, ret;

    if (!s)
        return -ENOTSUP;
    idx = snap_find(s, key);
    if (idx < 0) {
        log_err("image '%s': no snapshot '%s'", img->path, key);
        return -ENOENT;
    }
    gone = s->snaps[idx];
    ret = snap_read_l1(s, &gone, &l1);
    if (ret < 0)
        return ret;
    memmove(&s->snaps[idx], &s->snaps[idx + 1], (s->nb_snaps - (uint32_t)idx - 1) * sizeof(gone));
    s->nb_snaps--;
    ret = qcow2_write_snapshots(s);
    if (ret < 0) {
        /* put it back in memory; the on-disk table is unchanged */
        memmove(&s->snaps[idx + 1], &s->snaps[idx], (s->nb_snaps - (uint32_t)idx) * sizeof(gone));
        s->snaps[idx] = gone;
        s->nb_snaps++;
        free(l1);
        return ret;
    }
    ret = qcow2_l1_walk_refcount(s, l1, gone.l1_size, -1);
    if (ret == 0 && gone.l1_size) {
        uint64_t n = ((uint64_t)gone.l1_size * 8 + s->cluster_size - 1) >> s->cluster_bits;
        for (uint64_t c = 0; c < n && ret == 0; c++)
            ret = qcow2_refcount_add(s, (gone.l1_off >> s->cluster_bits) + c, -1);
    }
    if (ret == 0)
        ret = qcow2_fix_copied(s);
    if (ret == 0)
        ret = qcow2_flush_meta(s);
    free(l1);
    free(gone.id);
    free(gone.name);
    return ret;
}

int qtimg_snapshot_apply(struct qtimg *img, const char *key)
{
    struct qcow2 *s = snap_priv(img, true);
    struct qcow2_snap *sn;
    uint64_t *snl1 = NULL, *old = NULL;
    uint32_t old_size;
    int idx, ret;

    if (!s)
        return -ENOTSUP;
    idx = snap_find(s, key);
    if (idx < 0) {
        log_err("image '%s': no snapshot '%s'", img->path, key);
        return -ENOENT;
    }
    sn = &s->snaps[idx];
    ret = qcow2_flush_meta(s);
    if (ret < 0)
        return ret;
    if (sn->l1_size > s->l1_size) {
        ret = qcow2_grow_l1(s, sn->l1_size);
        if (ret < 0)
            return ret;
    }
    ret = snap_read_l1(s, sn, &snl1);
    if (ret < 0)
        return ret;
    /* the snapshot's clusters gain the active reference first */
    ret = qcow2_l1_walk_refcount(s, snl1, sn->l1_size, 1);
    if (ret < 0)
        goto out;
    ret = qcow2_flush_meta(s);
    if (ret < 0)
        goto out;
    old_size = s->l1_size;
    old = malloc((size_t)old_size * 8 + 8);
    if (!old) {
        ret = -ENOMEM;
        goto out;
    }
    memcpy(old, s->l1, (size_t)old_size * 8);
    memset(s->l1, 0, (size_t)s->l1_size * 8);
    memcpy(s->l1, snl1, (size_t)sn->l1_size * 8);
    ret = qcow2_write_l1(s);
    if (ret == 0 && img_fdatasync(img) < 0)
        ret = -errno;
    if (ret < 0)
        goto out;
    if (sn->disk_size != img->size) {
        uint64_t v = htobe64(sn->disk_size);
        ret = img_meta_pwrite(img, &v, 8, 24);
        if (ret < 0)
            goto out;
        img->size = sn->disk_size;
    }
    ret = qcow2_l1_walk_refcount(s, old, old_size, -1);
    if (ret == 0)
        ret = qcow2_fix_copied(s);
    if (ret == 0)
        ret = qcow2_flush_meta(s);
out:
    free(snl1);
    free(old);
    return ret;
}
