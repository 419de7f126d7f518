/* SPDX-License-Identifier: Apache-2.0 */
/* Read-only block driver for VHD ("vpc") images on top of vhd.c. */
#include "image/img_internal.h"
#include "image/vhd.h"
#include "common/log.h"

#include <errno.h>
#include <string.h>

static int vhd_drv_probe(const uint8_t *buf, size_t len)
{
    /* like QEMU: dynamic/differencing disks start with a footer copy; fixed
     * disks only have one at the end and need -f vpc */
    return vhd_probe(buf, len) ? 100 : 0;
}

static int vhd_drv_open(struct qtimg *img, const struct qtimg_open_opts *opts)
{
    struct vhd *v;
    int ret;

    if (!img->read_only) {
        log_err("image '%s': VHD images are read-only (convert them to qcow2)", img->path);
        return -EROFS;
    }
    ret = vhd_open_fd(&v, img->fd, img->path, NULL);
    if (ret < 0)
        return ret;
    img->size = vhd_get_virtual_size(v);
    img->priv = v;
    return 0;
}

static void vhd_drv_close(struct qtimg *img)
{
    vhd_close(img->priv);
    img->priv = NULL;
}

static int vhd_drv_pread(struct qtimg *img, void *buf, uint64_t len, uint64_t off)
{
    img->sync_io++; /* one or more preads (block table, sector bitmap, data) */
    return vhd_pread(img->priv, buf, len, off);
}

static int vhd_drv_pwrite(struct qtimg *img, const void *buf, uint64_t len, uint64_t off)
{
    return -EROFS;
}

static int vhd_drv_map(struct qtimg *img, uint64_t off, uint64_t len, struct qtimg_map *out)
{
    uint64_t n = 0;
    bool alloc = false;
    int ret = vhd_block_status(img->priv, off, len, &n, &alloc);

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

static int vhd_drv_map_io(struct qtimg *img, uint64_t off, uint64_t len, bool for_write,
                          struct img_ext *ext)
{
    /* fixed disks: the data is the file up to the footer, read on the ring;
     * dynamic / differencing: through vhd_pread (synchronous) */
    ext->kind = vhd_get_type(img->priv) == VHD_TYPE_FIXED ? IMG_EXT_HOST : IMG_EXT_SLOW;
    ext->len = len;
    ext->host_off = ext->kind == IMG_EXT_HOST ? off : 0;
    ext->crypt = false;
    return 0;
}

static int vhd_drv_get_info(struct qtimg *img, struct qtimg_info *info)
{
    info->cluster_size = vhd_get_block_size(img->priv);
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
    .get_info = vhd_drv_get_info,
};
