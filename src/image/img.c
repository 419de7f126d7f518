/* SPDX-License-Identifier: Apache-2.0 */
/* Generic image layer: format probing, backing chains, request checks. */
#include "image/img_internal.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct img_driver *const img_drivers[] = {&img_qcow2_driver, &img_vhd_driver,
                                                       &img_raw_driver};

const char *qtimg_fmt_name(enum qtimg_fmt fmt)
{
    switch (fmt) {
    case QTIMG_FMT_RAW:
        return "raw";
    case QTIMG_FMT_QCOW2:
        return "qcow2";
    case QTIMG_FMT_VHD:
        return "vpc";
    default:
        return "auto";
    }
}

int qtimg_fmt_parse(const char *name, enum qtimg_fmt *out)
{
    if (!strcmp(name, "raw"))
        *out = QTIMG_FMT_RAW;
    else if (!strcmp(name, "qcow2"))
        *out = QTIMG_FMT_QCOW2;
    else if (!strcmp(name, "vpc") || !strcmp(name, "vhd"))
        *out = QTIMG_FMT_VHD;
    else
        return -EINVAL;
    return 0;
}

int img_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) { /* past EOF reads as zero */
            memset(p, 0, len);
            return 0;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

int img_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

static bool img_dio_ok(const void *buf, size_t len, uint64_t off)
{
    return ((uintptr_t)buf % IMG_DIO_ALIGN) == 0 && len % IMG_DIO_ALIGN == 0 &&
           off % IMG_DIO_ALIGN == 0;
}

int img_data_pread(struct qtimg *img, void *buf, size_t len, uint64_t off)
{
    int fd = (img->data_fd != img->fd && img_dio_ok(buf, len, off)) ? img->data_fd : img->fd;
    img->sync_io++;
    return img_pread_full(fd, buf, len, off);
}

int img_data_pwrite(struct qtimg *img, const void *buf, size_t len, uint64_t off)
{
    int fd = (img->data_fd != img->fd && img_dio_ok(buf, len, off)) ? img->data_fd : img->fd;
    img->sync_io++;
    return img_pwrite_full(fd, buf, len, off);
}

int img_meta_pread(struct qtimg *img, void *buf, size_t len, uint64_t off)
{
    img->sync_io++;
    return img_pread_full(img->fd, buf, len, off);
}

int img_meta_pwrite(struct qtimg *img, const void *buf, size_t len, uint64_t off)
{
    img->sync_io++;
    return img_pwrite_full(img->fd, buf, len, off);
}

int img_fdatasync(struct qtimg *img)
{
    img->sync_io++;
    return fdatasync(img->fd);
}

int img_fallocate(struct qtimg *img, int mode, uint64_t off, uint64_t len)
{
    img->sync_io++;
    return fallocate(img->fd, mode, (off_t)off, (off_t)len);
}

uint64_t img_sync_io_count(const struct qtimg *img)
{
    uint64_t n = 0;
    for (; img; img = img->backing)
        n += img->sync_io;
    return n;
}

char *img_resolve_backing(const char *child_path, const char *name)
{
    char *dup, *dir, *out;

    if (name[0] == '/' || !strchr(child_path, '/'))
        return strdup(name);
    dup = strdup(child_path);
    if (!dup)
        return NULL;
    dir = dirname(dup);
    if (asprintf(&out, "%s/%s", dir, name) < 0)
        out = NULL;
    free(dup);
    return out;
}

int img_read_backing(struct qtimg *img, void *buf, uint64_t len, uint64_t off)
{
    uint64_t avail;

    if (!img->backing) {
        memset(buf, 0, len);
        return 0;
    }
    avail = off < img->backing->size ? img->backing->size - off : 0;
    if (avail > len)
        avail = len;
    if (avail) {
        int ret = qtimg_pread(img->backing, buf, avail, off);
        if (ret < 0)
            return ret;
    }
    if (avail < len)
        memset((uint8_t *)buf + avail, 0, len - avail);
    return 0;
}

static int img_probe(int fd, const char *path, enum qtimg_fmt *fmt)
{
    uint8_t buf[512];
    ssize_t n = pread(fd, buf, sizeof(buf), 0);
    int best = 0;

    if (n < 0) {
        log_err("image '%s': cannot read header: %s", path, strerror(errno));
        return -errno;
    }
    *fmt = QTIMG_FMT_RAW;
    for (size_t i = 0; i < sizeof(img_drivers) / sizeof(img_drivers[0]); i++) {
        int score = img_drivers[i]->probe ? img_drivers[i]->probe(buf, (size_t)n) : 0;
        if (score > best) {
            best = score;
            *fmt = img_drivers[i]->fmt;
        }
    }
    return 0;
}

static const struct img_driver *img_find_driver(enum qtimg_fmt fmt)
{
    for (size_t i = 0; i < sizeof(img_drivers) / sizeof(img_drivers[0]); i++)
        if (img_drivers[i]->fmt == fmt)
            return img_drivers[i];
    return NULL;
}

int img_open_internal(const char *path, const struct qtimg_open_opts *opts, int depth,
                      const char *const *chain, struct qtimg **out)
{
    struct qtimg_open_opts o = opts ? *opts : (struct qtimg_open_opts){0};
    struct qtimg *img;
    char real[PATH_MAX];
    int ret, oflags;

    if (depth >= QTIMG_MAX_CHAIN) {
        log_err("image '%s': backing chain deeper than %d", path, QTIMG_MAX_CHAIN);
        return -ELOOP;
    }
    if (!realpath(path, real)) {
        ret = -errno;
        log_err("image '%s': %s", path, strerror(errno));
        return ret;
    }
    for (int i = 0; i < depth; i++) {
        if (!strcmp(chain[i], real)) {
            log_err("image '%s': backing chain loop (already opened as level %d)", path, i);
            return -ELOOP;
        }
    }
    img = calloc(1, sizeof(*img));
    if (!img)
        return -ENOMEM;
    img->fd = img->data_fd = -1;
    img->chain_depth = depth;
    img->open_flags = o.flags;
    img->read_only = o.flags & QTIMG_O_RDONLY;
    img->path = strdup(path);
    if (!img->path) {
        ret = -ENOMEM;
        goto fail;
    }
    oflags = (img->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    img->fd = open(path, oflags);
    if (img->fd < 0) {
        ret = -errno;
        log_err("image '%s': open: %s", path, strerror(errno));
        goto fail;
    }
    img->data_fd = img->fd;
    if (o.flags & QTIMG_O_DIRECT) {
        img->data_fd = open(path, oflags | O_DIRECT);
        if (img->data_fd < 0) {
            ret = -errno;
            log_err("image '%s': open with O_DIRECT: %s", path, strerror(errno));
            img->data_fd = img->fd;
            goto fail;
        }
        img->direct = true;
    }
    if (o.fmt == QTIMG_FMT_AUTO) {
        ret = img_probe(img->fd, path, &o.fmt);
        if (ret < 0)
            goto fail;
    }
    img->drv = img_find_driver(o.fmt);
    if (!img->drv) {
        log_err("image '%s': format '%s' not supported", path, qtimg_fmt_name(o.fmt));
        ret = -ENOTSUP;
        goto fail;
    }
    {
        const char *sub[QTIMG_MAX_CHAIN + 1];
        for (int i = 0; i < depth; i++)
            sub[i] = chain[i];
        sub[depth] = real;
        /* Drivers open their backing file through img_open_backing(), which
         * needs the chain for loop detection during open. */
        img->chain = sub;
        ret = img->drv->open(img, &o);
        img->chain = NULL;
        if (ret < 0)
            goto fail;
    }
    *out = img;
    return 0;
fail:
    if (img->data_fd >= 0 && img->data_fd != img->fd)
        close(img->data_fd);
    if (img->fd >= 0)
        close(img->fd);
    free(img->path);
    free(img);
    return ret;
}

int img_open_backing(struct qtimg *img, const char *name, const char *fmt_name)
{
    const char *const *chain = img->chain;
    struct qtimg_open_opts o = {.flags = QTIMG_O_RDONLY | (img->open_flags & QTIMG_O_DIRECT)};
    char *path;
    int ret;

    if (img->open_flags & QTIMG_O_NO_BACKING)
        return 0;
    if (fmt_name && fmt_name[0] && qtimg_fmt_parse(fmt_name, &o.fmt) < 0) {
        log_err("image '%s': unknown backing format '%s'", img->path, fmt_name);
        return -EINVAL;
    }
    path = img_resolve_backing(img->path, name);
    if (!path)
        return -ENOMEM;
    ret = img_open_internal(path, &o, img->chain_depth + 1, chain, &img->backing);
    if (ret < 0)
        log_err("image '%s': cannot open backing file '%s'", img->path, path);
    free(path);
    return ret;
}

int qtimg_open(const char *path, const struct qtimg_open_opts *opts, struct qtimg **out)
{
    return img_open_internal(path, opts, 0, NULL, out);
}

int qtimg_close(struct qtimg *img)
{
    int ret = 0;

    if (!img)
        return 0;
    if (!img->read_only && img->drv->flush)
        ret = img->drv->flush(img);
    if (img->drv->close)
        img->drv->close(img);
    if (img->backing)
        qtimg_close(img->backing);
    if (img->data_fd != img->fd)
        close(img->data_fd);
    close(img->fd);
    free(img->path);
    free(img);
    return ret;
}

static int img_check_req(struct qtimg *img, uint64_t off, uint64_t len, bool write)
{
    if (write && img->read_only) {
        log_err("image '%s': write to a read-only image", img->path);
        return -EROFS;
    }
    if (off > img->size || len > img->size - off) {
        log_err("image '%s': request [%llu, +%llu) past the end (%llu bytes)", img->path,
                (unsigned long long)off, (unsigned long long)len, (unsigned long long)img->size);
        return -EINVAL;
    }
    return 0;
}

int qtimg_pread(struct qtimg *img, void *buf, uint64_t len, uint64_t off)
{
    int ret = img_check_req(img, off, len, false);
    return ret < 0 ? ret : (len ? img->drv->pread(img, buf, len, off) : 0);
}

int qtimg_pwrite(struct qtimg *img, const void *buf, uint64_t len, uint64_t off)
{
    int ret = img_check_req(img, off, len, true);
    return ret < 0 ? ret : (len ? img->drv->pwrite(img, buf, len, off) : 0);
}

int qtimg_flush(struct qtimg *img)
{
    if (img->read_only)
        return 0;
    return img->drv->flush ? img->drv->flush(img) : 0;
}

int qtimg_discard(struct qtimg *img, uint64_t off, uint64_t len)
{
    int ret = img_check_req(img, off, len, true);
    if (ret < 0 || !len)
        return ret;
    return img->drv->discard ? img->drv->discard(img, off, len, false) : 0;
}

int qtimg_write_zeroes(struct qtimg *img, uint64_t off, uint64_t len)
{
    int ret = img_check_req(img, off, len, true);
    if (ret < 0 || !len)
        return ret;
    return img->drv->discard ? img->drv->discard(img, off, len, true) : -ENOTSUP;
}

int qtimg_resize(struct qtimg *img, uint64_t new_size, uint32_t flags)
{
    if (img->read_only)
        return -EROFS;
    if (!img->drv->resize)
        return -ENOTSUP;
    return img->drv->resize(img, new_size, flags);
}

int qtimg_get_info(struct qtimg *img, struct qtimg_info *info)
{
    struct stat st;

    memset(info, 0, sizeof(*info));
    info->fmt = img->drv->fmt;
    info->virtual_size = img->size;
    if (fstat(img->fd, &st) == 0)
        info->actual_size = (uint64_t)st.st_blocks * 512;
    return img->drv->get_info ? img->drv->get_info(img, info) : 0;
}

const char *qtimg_path(const struct qtimg *img)
{
    return img->path;
}

uint64_t qtimg_size(const struct qtimg *img)
{
    return img->size;
}

struct qtimg *qtimg_backing(struct qtimg *img)
{
    return img->backing;
}

int qtimg_map_range(struct qtimg *img, uint64_t off, uint64_t len, struct qtimg_map *out)
{
    int ret = img_check_req(img, off, len, false);
    if (ret < 0)
        return ret;
    return img->drv->map(img, off, len, out);
}

int qtimg_create(const char *path, const struct qtimg_create_opts *opts)
{
    const struct img_driver *drv = img_find_driver(opts->fmt);

    if (!drv || !drv->create) {
        log_err("image '%s': cannot create format '%s'", path, qtimg_fmt_name(opts->fmt));
        return -ENOTSUP;
    }
    return drv->create(path, opts);
}

/* ---- raw driver ---- */

static int raw_open(struct qtimg *img, const struct qtimg_open_opts *opts)
{
    struct stat st;

    if (fstat(img->fd, &st) < 0)
        return -errno;
    img->size = (uint64_t)st.st_size;
    if (S_ISBLK(st.st_mode)) {
        off_t end = lseek(img->fd, 0, SEEK_END);
        if (end < 0)
            return -errno;
        img->size = (uint64_t)end;
    }
    return 0;
}

static int raw_pread(struct qtimg *img, void *buf, uint64_t len, uint64_t off)
{
    return img_data_pread(img, buf, len, off);
}

static int raw_pwrite(struct qtimg *img, const void *buf, uint64_t len, uint64_t off)
{
    return img_data_pwrite(img, buf, len, off);
}

static int raw_flush(struct qtimg *img)
{
    return img_fdatasync(img) < 0 ? -errno : 0;
}

static int raw_discard(struct qtimg *img, uint64_t off, uint64_t len, bool zero)
{
    if (img_fallocate(img, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    if (!zero)
        return 0; /* discard is advisory */
    {
        static const uint8_t zbuf[65536];
        while (len) {
            size_t n = len > sizeof(zbuf) ? sizeof(zbuf) : len;
            int ret = img_meta_pwrite(img, zbuf, n, off);
            if (ret < 0)
                return ret;
            off += n;
            len -= n;
        }
    }
    return 0;
}

static int raw_resize(struct qtimg *img, uint64_t new_size, uint32_t flags)
{
    if (new_size < img->size && !(flags & QTIMG_RESIZE_SHRINK)) {
        log_err("image '%s': shrinking needs --shrink", img->path);
        return -EINVAL;
    }
    if (ftruncate(img->fd, (off_t)new_size) < 0)
        return -errno;
    img->size = new_size;
    return 0;
}

static int raw_map(struct qtimg *img, uint64_t off, uint64_t len, struct qtimg_map *out)
{
    off_t data = lseek(img->fd, (off_t)off, SEEK_DATA);
    out->host_off = off; /* raw: guest offset == file offset, holes included */
    out->host_zero = false;
    if (data < 0 || (uint64_t)data >= off + len) {
        out->kind = QTIMG_MAP_ZERO;
        out->len = (data < 0) ? len : (uint64_t)data - off;
        return 0;
    }
    if ((uint64_t)data > off) {
        out->kind = QTIMG_MAP_ZERO;
        out->len = (uint64_t)data - off;
        return 0;
    }
    {
        off_t hole = lseek(img->fd, (off_t)off, SEEK_HOLE);
        uint64_t end = (hole < 0) ? off + len : (uint64_t)hole;
        if (end > off + len)
            end = off + len;
        out->kind = QTIMG_MAP_DATA;
        out->len = end - off;
        out->host_off = off;
    }
    return 0;
}

static int raw_map_io(struct qtimg *img, uint64_t off, uint64_t len, bool for_write,
                      struct img_ext *ext)
{
    ext->kind = IMG_EXT_HOST;
    ext->len = len;
    ext->host_off = off;
    ext->crypt = false;
    return 0;
}

static int raw_create(const char *path, const struct qtimg_create_opts *opts)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ret = 0;

    if (fd < 0) {
        ret = -errno;
        log_err("image '%s': create: %s", path, strerror(errno));
        return ret;
    }
    if (opts->backing_file) {
        log_err("image '%s': raw images cannot have a backing file", path);
        ret = -EINVAL;
    } else if (ftruncate(fd, (off_t)opts->size) < 0) {
        ret = -errno;
    }
    close(fd);
    return ret;
}

const struct img_driver img_raw_driver = {
    .name = "raw",
    .fmt = QTIMG_FMT_RAW,
    .probe = NULL,
    .open = raw_open,
    .pread = raw_pread,
    .pwrite = raw_pwrite,
    .flush = raw_flush,
    .discard = raw_discard,
    .resize = raw_resize,
    .map = raw_map,
    .map_io = raw_map_io,
    .create = raw_create,
};
