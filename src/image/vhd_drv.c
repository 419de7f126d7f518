/* SPDX-License-Identifier: Apache-2.0 */
/* Read-only block driver for VHD ("vpc") images on top of vhd.c. */
#include "image/img_internal.h"
#include "image/vhd.h"
#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * The driver's state: the chain (top first) and, for the io_uring data path,
 * the sector bitmaps of differencing levels read so far (one per allocated
 * block at most: bitmap_size bytes, 512 for 2 MiB blocks), filled by
 * meta_insert after a read on the ring.
 */
struct vhd_drv {
    struct vhd *v;
    unsigned depth;
    const struct vhd *chain[VHD_MAX_CHAIN];
    uint8_t **bm[VHD_MAX_CHAIN]; /* [level][block]: NULL until read */
};

/* A bitmap need names its level and block in table: block << 4 | level. */
#define VHD_NEED_LEVEL_BITS 4

static int vhd_drv_probe(const uint8_t *buf, size_t len)
{
    /* like QEMU: dynamic/differencing disks start with a footer copy; fixed
     * disks only have one at the end and need -f vpc */
    return vhd_probe(buf, len) ? 100 : 0;
}

static int vhd_drv_open(struct qtimg *img, const struct qtimg_open_opts *opts)
{
    struct vhd_drv *d;
    struct vhd *v;
    int ret;

    (void)opts;
    if (!img->read_only) {
        log_err("image '%s': VHD images are read-only (convert them to qcow2)", img->path);
        return -EROFS;
    }
    ret = vhd_open_fd(&v, img->fd, img->path, NULL);
    if (ret < 0)
        return ret;
    d = calloc(1, sizeof(*d));
    if (!d) {
        vhd_close(v);
        return -ENOMEM;
    }
    d->v = v;
    for (const struct vhd *p = v; p && d->depth < VHD_MAX_CHAIN; p = vhd_get_parent(p))
        d->chain[d->depth++] = p;
    img->size = vhd_get_virtual_size(v);
    img->priv = d;
    return 0;
}

static void vhd_drv_close(struct qtimg *img)
{
    struct vhd_drv *d = img->priv;

    if (!d)
        return;
    for (unsigned l = 0; l < d->depth; l++) {
        if (!d->bm[l])
            continue;
        for (uint32_t i = 0; i < vhd_get_bat_entries(d->chain[l]); i++)
            free(d->bm[l][i]);
        free(d->bm[l]);
    }
    vhd_close(d->v);
    free(d);
    img->priv = NULL;
}

static int vhd_drv_pread(struct qtimg *img, void *buf, uint64_t len, uint64_t off)
{
    struct vhd_drv *d = img->priv;

    img->sync_io++; /* one or more preads (sector bitmaps, data) */
    return vhd_pread(d->v, buf, len, off);
}

static int vhd_drv_pwrite(struct qtimg *img, const void *buf, uint64_t len, uint64_t off)
{
    return -EROFS;
}

static int vhd_drv_map(struct qtimg *img, uint64_t off, uint64_t len, struct qtimg_map *out)
{
    uint64_t n = 0;
    bool alloc = false;
    int ret = vhd_block_status(((struct vhd_drv *)img->priv)->v, off, len, &n, &alloc);

    if (ret < 0)
        return ret;
    if (n == 0)
        return -EIO;
    memset(out, 0, sizeof(*out));
    out->kind = alloc ? QTIMG_MAP_DATA : QTIMG_MAP_ZERO;
    out->len = n;
    out->host_off = UINT64_MAX;
    return 0;
}

/*
 * Data-path lookup through the chain without I/O: the block tables are in
 * memory; a differencing level's sector bitmap comes from the cache, and a
 * miss asks (non-blocking mode) for the bitmap to be read on the ring.
 * Fixed levels and allocated blocks of dynamic levels are data in that
 * level's file (ext->alt_fd); unallocated everywhere: zeroes.
 */
static int vhd_drv_map_io(struct qtimg *img, uint64_t off, uint64_t len, bool for_write,
                          struct img_ext *ext)
{
    struct vhd_drv *d = img->priv;

    (void)for_write;
    memset(ext, 0, sizeof(*ext));
    for (unsigned l = 0; l < d->depth; l++) {
        const struct vhd *v = d->chain[l];
        uint64_t vsize = vhd_get_virtual_size(v), bs, in_block, avail, host, first, s, run;
        uint32_t entry, idx, bms;
        const uint8_t *bm;
        bool here;

        if (off >= vsize)
            break; /* beyond a smaller parent: zeroes */
        if (len > vsize - off)
            len = vsize - off;
        if (vhd_get_type(v) == VHD_TYPE_FIXED) {
            ext->kind = IMG_EXT_HOST;
            ext->len = len;
            ext->host_off = off;
            ext->alt_fd = true;
            ext->fd = vhd_get_fd(v);
            return 0;
        }
        bs = vhd_get_block_size(v);
        in_block = off % bs;
        avail = bs - in_block < len ? bs - in_block : len;
        entry = vhd_get_bat_entry(v, off);
        if (entry == VHD_BAT_UNALLOCATED) {
            len = avail; /* the parent's, or zeroes */
            continue;
        }
        bms = vhd_get_bitmap_size(v);
        host = (uint64_t)entry * VHD_SECTOR_SIZE + bms + in_block;
        if (vhd_get_type(v) == VHD_TYPE_DIFF) {
            idx = (uint32_t)(off / bs);
            bm = d->bm[l] ? d->bm[l][idx] : NULL;
            if (!bm) {
                if (!img->nowait) {
                    ext->kind = IMG_EXT_SLOW;
                    ext->len = len;
                    return 0;
                }
                img->nowait->kind = IMG_NEED_READ;
                img->nowait->img = img;
                img->nowait->table = (int)((idx << VHD_NEED_LEVEL_BITS) | l);
                img->nowait->off = (uint64_t)entry * VHD_SECTOR_SIZE;
                img->nowait->len = bms;
                img->nowait->alt_fd = true;
                img->nowait->fd = vhd_get_fd(v);
                return -EWOULDBLOCK;
            }
            /* the run of sectors with the first one's state */
            first = in_block / VHD_SECTOR_SIZE;
            here = bm[first / 8] & (0x80 >> (first % 8));
            for (s = first + 1; s * VHD_SECTOR_SIZE < in_block + avail; s++)
                if (!!(bm[s / 8] & (0x80 >> (s % 8))) != here)
                    break;
            run = s * VHD_SECTOR_SIZE - in_block;
            avail = run < avail ? run : avail;
            if (!here) {
                len = avail;
                continue;
            }
        }
        ext->kind = IMG_EXT_HOST;
        ext->len = avail;
        ext->host_off = host;
        ext->alt_fd = true;
        ext->fd = vhd_get_fd(v);
        return 0;
    }
    ext->kind = IMG_EXT_ZERO;
    ext->len = len;
    return 0;
}

/* A sector bitmap read on the ring: the cache takes it. */
static int vhd_drv_meta_insert(struct qtimg *img, const struct img_need *need, void *buf)
{
    struct vhd_drv *d = img->priv;
    unsigned l = (unsigned)need->table & ((1u << VHD_NEED_LEVEL_BITS) - 1);
    uint32_t idx = (uint32_t)need->table >> VHD_NEED_LEVEL_BITS, n;

    if (l >= d->depth || idx >= (n = vhd_get_bat_entries(d->chain[l])))
        return -EINVAL;
    if (!d->bm[l]) {
        d->bm[l] = calloc(n, sizeof(*d->bm[l]));
        if (!d->bm[l])
            return -ENOMEM;
    }
    if (d->bm[l][idx]) { /* read twice: keep the first */
        free(buf);
        return 0;
    }
    d->bm[l][idx] = buf;
    return 0;
}

static int vhd_drv_get_info(struct qtimg *img, struct qtimg_info *info)
{
    info->cluster_size = vhd_get_block_size(((struct vhd_drv *)img->priv)->v);
    return 0;
}

const struct img_driver img_vhd_driver = {
    .name = "vpc",
    .fmt = QTIMG_FMT_VHD,
    .probe = vhd_drv_probe,
    .open = vhd_drv_open,
    .close = vhd_drv_close,
    .pread = vhd_drv_pread,
    .pwrite = vhd_drv_pwrite,
    .map = vhd_drv_map,
    .map_io = vhd_drv_map_io,
    .meta_insert = vhd_drv_meta_insert,
    .get_info = vhd_drv_get_info,
};
