/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qcow2 consistency check: rebuilds the reference count of every cluster from
 * the metadata (header, tables, snapshots), compares with the stored
 * refcounts and the copied flags, and optionally repairs.
 */
#include "image/qcow2.h"
#include "common/log.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CHECK_MAX_CLUSTERS (1ull << 28)

struct check_ctx {
    struct qcow2 *s;
    uint32_t *refs;
    uint64_t n;
    struct qtimg_check_result *res;
};

static void check_ref(struct check_ctx *c, uint64_t off, uint64_t len, const char *what)
{
    struct qcow2 *s = c->s;
    if (!len)
        return;
    for (uint64_t cl = off >> s->cluster_bits; cl <= (off + len - 1) >> s->cluster_bits; cl++) {
        if (cl >= c->n) {
            log_err("image '%s': ERROR %s at 0x%llx is past the end of the image file",
                    s->img->path, what, (unsigned long long)(cl << s->cluster_bits));
            c->res->corruptions++;
            continue;
        }
        if (c->refs[cl] != UINT32_MAX)
            c->refs[cl]++;
    }
}

static int check_read_table(struct qcow2 *s, uint64_t off, uint8_t *buf)
{
    return img_meta_pread(s->img, buf, s->cluster_size, off);
}

/* Counts references from one L1 table; active: also verify the copied flags. */
static int check_l1(struct check_ctx *c, const uint64_t *l1, uint32_t l1_size, bool active,
                    bool fix)
{
    struct qcow2 *s = c->s;
    uint8_t *l2 = malloc(s->cluster_size);
    int ret = 0;

    if (!l2)
        return -ENOMEM;
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t l2off = l1[i] & QCOW2_OFFSET_MASK;
        if (!l2off)
            continue;
        if ((l2off & (s->cluster_size - 1)) || l2off + s->cluster_size > s->file_size) {
            log_err("image '%s': ERROR L1 entry %u: L2 table offset 0x%llx invalid", s->img->path,
                    i, (unsigned long long)l2off);
            c->res->corruptions++;
            continue;
        }
        check_ref(c, l2off, s->cluster_size, "L2 table");
        ret = check_read_table(s, l2off, l2);
        if (ret < 0)
            break;
        for (uint64_t j = 0; j < (1ull << s->l2_bits); j++) {
            struct qcow2_l2e e;
            const char *why = NULL;
            if (qcow2_l2e_decode(s, l2 + j * s->l2_esize, &e, &why) < 0) {
                log_err("image '%s': ERROR L2 table 0x%llx entry %llu: %s", s->img->path,
                        (unsigned long long)l2off, (unsigned long long)j, why);
                c->res->corruptions++;
                continue;
            }
            if (e.type == L2E_COMPRESSED) {
                check_ref(c, e.host & ~511ull, e.csize + (e.host & 511), "compressed cluster");
                if (active)
                    c->res->compressed_clusters++;
            } else if (e.type == L2E_NORMAL) {
                check_ref(c, e.host, s->cluster_size, "data cluster");
            }
            if (active && e.type != L2E_UNALLOC)
                c->res->allocated_clusters++;
        }
    }
    free(l2);
    return ret;
}

static int check_copied(struct check_ctx *c, bool fix)
{
    struct qcow2 *s = c->s;
    int ret = 0;

    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l2off = s->l1[i] & QCOW2_OFFSET_MASK, rc;
        uint8_t *l2;
        bool l2dirty = false;
        if (!l2off || (l2off & (s->cluster_size - 1)) || l2off + s->cluster_size > s->file_size)
            continue;
        ret = qcow2_refcount_get(s, l2off >> s->cluster_bits, &rc);
        if (ret < 0)
            return ret;
        if ((rc == 1) != !!(s->l1[i] & QCOW2_OFLAG_COPIED)) {
            log_err("image '%s': ERROR OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%llx "
                    "refcount=%llu",
                    s->img->path, i, (unsigned long long)s->l1[i], (unsigned long long)rc);
            if (fix) {
                s->l1[i] = l2off | (rc == 1 ? QCOW2_OFLAG_COPIED : 0);
                qcow2_mark_l1_dirty(s);
                c->res->corruptions_fixed++;
            } else {
                c->res->corruptions++;
            }
        }
        ret = qcow2_cache_get(s, &s->l2c, l2off, true, &l2);
        if (ret < 0)
            return ret;
        for (uint64_t j = 0; j < (1ull << s->l2_bits); j++) {
            struct qcow2_l2e e;
            const char *why;
            if (qcow2_l2e_decode(s, l2 + j * s->l2_esize, &e, &why) < 0 || e.type != L2E_NORMAL)
                continue;
            ret = qcow2_refcount_get(s, e.host >> s->cluster_bits, &rc);
            if (ret < 0)
                return ret;
            /* refcount_get may evict the L2 table: fetch it again */
            ret = qcow2_cache_get(s, &s->l2c, l2off, true, &l2);
            if (ret < 0)
                return ret;
            if ((rc == 1) != e.copied) {
                log_err("image '%s': ERROR OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu",
                        s->img->path, (unsigned long long)e.host, (unsigned long long)rc);
                if (fix) {
                    e.copied = rc == 1;
                    qcow2_l2e_encode(s, &e, l2 + j * s->l2_esize);
                    l2dirty = true;
                    c->res->corruptions_fixed++;
                } else {
                    c->res->corruptions++;
                }
            }
        }
        if (l2dirty)
            qcow2_cache_mark_dirty(&s->l2c, l2off);
    }
    return 0;
}

static uint64_t be64_at(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}

static uint32_t be32_at(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return be32toh(v);
}

/* Persistent dirty bitmaps (only while the autoclear bit says they are
 * valid): the directory, each bitmap table and its data clusters. */
static int check_bitmaps(struct check_ctx *c)
{
    struct qcow2 *s = c->s;
    const uint8_t *ext = NULL;
    uint64_t dir_size, dir_off, pos = 0;
    uint32_t nb;
    uint8_t *dir = NULL;
    int ret = 0;

    if (!(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
        return 0;
    for (unsigned i = 0; i < s->next; i++)
        if (s->ext[i].type == QCOW2_EXT_BITMAPS && s->ext[i].len >= 24)
            ext = s->ext[i].data;
    if (!ext)
        return 0;
    nb = be32_at(ext);
    dir_size = be64_at(ext + 8);
    dir_off = be64_at(ext + 16);
    if (nb > 65535 || dir_size > (64u << 20) || (dir_off & (s->cluster_size - 1)) ||
        dir_off + dir_size > s->file_size) {
        log_err("image '%s': ERROR bitmap directory (0x%llx, %llu bytes, %u bitmaps) invalid",
                s->img->path, (unsigned long long)dir_off, (unsigned long long)dir_size, nb);
        c->res->corruptions++;
        return 0;
    }
    check_ref(c, dir_off, dir_size, "bitmap directory");
    dir = malloc(dir_size ? dir_size : 1);
    if (!dir)
        return -ENOMEM;
    ret = img_meta_pread(s->img, dir, dir_size, dir_off);
    for (uint32_t i = 0; i < nb && ret == 0; i++) {
        uint64_t toff, *tbl;
        uint32_t tsize, extra, nlen;
        if (pos + 24 > dir_size) {
            log_err("image '%s': ERROR bitmap directory entry %u truncated", s->img->path, i);
            c->res->corruptions++;
            break;
        }
        toff = be64_at(dir + pos);
        tsize = be32_at(dir + pos + 8);
        nlen = (uint32_t)dir[pos + 18] << 8 | dir[pos + 19];
        extra = be32_at(dir + pos + 20);
        pos = (pos + 24 + extra + nlen + 7) & ~7ull;
        if ((toff & (s->cluster_size - 1)) || (uint64_t)tsize * 8 > (64u << 20) ||
            toff + (uint64_t)tsize * 8 > s->file_size) {
            log_err("image '%s': ERROR bitmap %u table (0x%llx, %u entries) invalid", s->img->path,
                    i, (unsigned long long)toff, tsize);
            c->res->corruptions++;
            continue;
        }
        check_ref(c, toff, (uint64_t)tsize * 8, "bitmap table");
        tbl = malloc((size_t)tsize * 8 + 8);
        if (!tbl) {
            ret = -ENOMEM;
            break;
        }
        ret = img_meta_pread(s->img, tbl, (size_t)tsize * 8, toff);
        for (uint32_t j = 0; j < tsize && ret == 0; j++) {
            uint64_t d = be64toh(tbl[j]) & QCOW2_OFFSET_MASK;
            if (d)
                check_ref(c, d, s->cluster_size, "bitmap data");
        }
        free(tbl);
    }
    free(dir);
    return ret;
}

int qcow2_check(struct qtimg *img, uint32_t fix, struct qtimg_check_result *res)
{
    struct qcow2 *s = img->priv;
    struct check_ctx c = {.s = s, .res = res};
    struct stat st;
    uint64_t nfile;
    int ret;

    memset(res, 0, sizeof(*res));
    if (fix && img->read_only)
        return -EROFS;
    ret = qcow2_flush_meta(s);
    if (ret < 0 && !img->read_only)
        return ret;
    if (fstat(img->fd, &st) < 0)
        return -errno;
    nfile = ((uint64_t)st.st_size + s->cluster_size - 1) >> s->cluster_bits;
    c.n = (s->file_size + s->cluster_size - 1) >> s->cluster_bits;
    if (c.n < nfile)
        c.n = nfile;
    if (c.n > CHECK_MAX_CLUSTERS) {
        log_err("image '%s': too many clusters to check (%llu)", img->path,
                (unsigned long long)c.n);
        return -EFBIG;
    }
    c.refs = calloc(c.n + 1, sizeof(*c.refs));
    if (!c.refs)
        return -ENOMEM;

    check_ref(&c, 0, s->cluster_size, "header");
    check_ref(&c, s->l1_off, (uint64_t)s->l1_size * 8, "L1 table");
    ret = check_l1(&c, s->l1, s->l1_size, true, fix);
    if (ret < 0)
        goto out;
    if (s->nb_snaps) {
        check_ref(&c, s->snap_off, s->snap_table_size, "snapshot table");
        for (uint32_t i = 0; i < s->nb_snaps; i++) {
            struct qcow2_snap *sn = &s->snaps[i];
            uint64_t *l1 = calloc(sn->l1_size ? sn->l1_size : 1, 8);
            if (!l1) {
                ret = -ENOMEM;
                goto out;
            }
            ret = img_meta_pread(img, l1, (size_t)sn->l1_size * 8, sn->l1_off);
            for (uint32_t j = 0; j < sn->l1_size; j++)
                l1[j] = be64toh(l1[j]);
            check_ref(&c, sn->l1_off, (uint64_t)sn->l1_size * 8, "snapshot L1 table");
            if (ret == 0)
                ret = check_l1(&c, l1, sn->l1_size, false, fix);
            free(l1);
            if (ret < 0)
                goto out;
        }
    }
    check_ref(&c, s->rt_off, (uint64_t)s->rt_clusters << s->cluster_bits, "refcount table");
    for (uint64_t i = 0; i < s->rt_size; i++) {
        if (s->rt[i])
            check_ref(&c, s->rt[i], s->cluster_size, "refcount block");
    }
    if (s->crypt_method == 2 && s->crypto_len)
        check_ref(&c, s->crypto_off, s->crypto_len, "encryption header");
    ret = check_bitmaps(&c);
    if (ret < 0)
        goto out;

    /* compare */
    for (uint64_t cl = 0; cl < c.n; cl++) {
        uint64_t rc;
        ret = qcow2_refcount_get(s, cl, &rc);
        if (ret < 0)
            goto out;
        if (rc == c.refs[cl])
            continue;
        if (rc > c.refs[cl]) {
            log_err("image '%s': %s cluster %llu refcount=%llu reference=%u", img->path,
                    c.refs[cl] ? "ERROR" : "Leaked", (unsigned long long)cl, (unsigned long long)rc,
                    c.refs[cl]);
            if (fix & QTIMG_CHECK_FIX_LEAKS) {
                ret = qcow2_refcount_set(s, cl, c.refs[cl]);
                if (ret < 0)
                    goto out;
                res->leaks_fixed++;
            } else {
                res->leaks++;
            }
        } else {
            log_err("image '%s': ERROR cluster %llu refcount=%llu reference=%u", img->path,
                    (unsigned long long)cl, (unsigned long long)rc, c.refs[cl]);
            if ((fix & QTIMG_CHECK_FIX_ERRORS) && c.refs[cl] <= s->refcount_max) {
                uint64_t bi = cl >> s->rb_bits;
                if (bi < s->rt_size && s->rt[bi]) {
                    ret = qcow2_refcount_set(s, cl, c.refs[cl]);
                    if (ret < 0)
                        goto out;
                    res->corruptions_fixed++;
                    continue;
                }
            }
            res->corruptions++;
        }
    }
    ret = check_copied(&c, fix & QTIMG_CHECK_FIX_ERRORS);
    if (ret < 0)
        goto out;
    if (fix) {
        ret = qcow2_flush_meta(s);
        if (ret < 0)
            goto out;
        if (!res->corruptions && (s->incompat & QCOW2_INCOMPAT_CORRUPT) &&
            (fix & QTIMG_CHECK_FIX_ERRORS)) {
            /* everything repaired: the image may be used again */
            s->incompat &= ~QCOW2_INCOMPAT_CORRUPT;
            ret = qcow2_write_header(s);
            if (ret < 0)
                goto out;
        }
    }
    res->total_clusters = (img->size + s->cluster_size - 1) >> s->cluster_bits;
    res->image_end_offset = 0;
    for (uint64_t cl = c.n; cl > 0; cl--) {
        if (c.refs[cl - 1]) {
            res->image_end_offset = cl << s->cluster_bits;
            break;
        }
    }
    ret = 0;
out:
    free(c.refs);
    return ret;
}
