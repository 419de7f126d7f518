/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Microsoft VHD (Virtual Hard Disk Image Format Specification, v1.0) reader.
 *
 * Footer (512 bytes, at the end of every VHD and copied at offset 0 of
 * dynamic/differencing ones; integers big-endian):
 *   0 cookie "conectix"   8 features u32   12 version u32 (0x00010000)
 *  16 data_offset u64 (dynamic header; ~0 for fixed)   24 timestamp u32
 *  28 creator_app[4]   32 creator_ver u32   36 creator_os u32
 *  40 original_size u64   48 current_size u64   56 cylinders u16, heads u8,
 *  sectors u8   60 disk_type u32   64 checksum u32   68 unique_id[16]
 *  84 saved_state u8
 * Dynamic header (1024 bytes at footer.data_offset):
 *   0 cookie "cxsparse"   8 data_offset u64 (~0)   16 table_offset u64 (BAT)
 *  24 version u32 (0x00010000)   28 max_table_entries u32   32 block_size u32
 *  36 checksum u32   40 parent_unique_id[16]   56 parent_timestamp u32
 *  64 parent_unicode_name[512] (UTF-16BE)   576 8 parent locators x 24 bytes:
 *     +0 platform code u32  +4 data space u32  +8 data length u32
 *     +16 data offset u64
 * BAT: max_table_entries u32 sector numbers, ~0 = unallocated. A block is a
 * sector bitmap (1 bit per sector, MSB first, padded to 512 bytes) followed by
 * block_size bytes of data.
 */
#include "image/vhd.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

#define VHD_FOOTER_SIZE   512u
#define VHD_DYN_SIZE      1024u
#define VHD_VERSION       0x00010000u
#define VHD_UNALLOCATED   0xffffffffu
#define VHD_MIN_BLOCK     512u
#define VHD_MAX_BLOCK     (256u << 20)
#define VHD_MAX_SIZE      (64ull << 40) /* sanity bound on any virtual size */
#define VHD_MAX_BAT_BYTES (64u << 20)
#define VHD_MAX_LOCATOR   (8u << 10) /* bytes of one parent locator */
#define VHD_NUM_LOCATORS  8u
#define VHD_MAX_CHS_SIZE  (65535ull * 16 * 255 * 512)
#define VHD_FUZZ_READ_MAX (4u << 20)

#define VHD_PLAT_NONE 0x00000000u
#define VHD_PLAT_W2RU 0x57327275u /* "W2ru": relative Windows path, UTF-16LE */
#define VHD_PLAT_W2KU 0x57326b75u /* "W2ku": absolute Windows path, UTF-16LE */
#define VHD_PLAT_MACX 0x4d616358u /* "MacX": file URL, UTF-8 */

struct vhd {
    char *path;
    int fd;
    bool quiet;
    enum vhd_type type;
    uint64_t file_size;
    uint64_t current_size;
    uint64_t virtual_size;
    uint32_t block_size;
    uint32_t bitmap_size; /* bytes, sector aligned */
    uint32_t max_entries;
    uint32_t *bat; /* host order */
    uint8_t uuid[16];
    uint8_t parent_uuid[16];
    struct vhd *parent;
};

/* Files already in the chain being opened (loop detection). */
struct vhd_chain {
    unsigned depth;
    dev_t dev[VHD_MAX_CHAIN];
    ino_t ino[VHD_MAX_CHAIN];
};

static void vhd_err(const struct vhd *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void vhd_err(const struct vhd *v, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (v->quiet)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_err("vhd '%s': %s", v->path, msg);
}

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t x;
    memcpy(&x, p, sizeof(x));
    return be32toh(x);
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof(x));
    return be64toh(x);
}

/* pread all of len or fail (-EIO on a short read). */
static int vhd_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* One's complement of the byte sum, the checksum field counted as zero. */
static uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
    uint32_t sum = 0;

    for (size_t i = 0; i < len; i++) {
        if (i >= csum_off && i < csum_off + 4)
            continue;
        sum += buf[i];
    }
    return ~sum;
}

static void wr32_csum(uint8_t *p, uint32_t v, size_t off)
{
    v = htobe32(v);
    memcpy(p + off, &v, sizeof(v));
}

static bool vhd_footer_ok(const uint8_t *f)
{
    return memcmp(f, "conectix", 8) == 0 && vhd_checksum(f, VHD_FOOTER_SIZE, 64) == rd32(f + 64);
}

int vhd_probe(const void *buf, size_t len)
{
    return len >= 8 && memcmp(buf, "conectix", 8) == 0;
}

int vhd_probe_fd(int fd)
{
    uint8_t f[VHD_FOOTER_SIZE];
    struct stat st;

    if (fstat(fd, &st) < 0 || st.st_size < (off_t)VHD_FOOTER_SIZE)
        return 0;
    if (vhd_pread_full(fd, f, sizeof(f), (uint64_t)st.st_size - VHD_FOOTER_SIZE) == 0 &&
        memcmp(f, "conectix", 8) == 0)
        return 1;
    return vhd_pread_full(fd, f, sizeof(f), 0) == 0 && memcmp(f, "conectix", 8) == 0;
}

/* ---- footer ---- */

/* Virtual size rule shared with QEMU's vpc driver (see vhd.h). */
static int vhd_parse_footer(struct vhd *v, const uint8_t *f, bool at_end)
{
    static const char *const size_apps[] = {"win ", "qem2", "d2v ", "CTXS", "tap"};
    uint32_t version = rd32(f + 12), type = rd32(f + 60);
    uint64_t chs;
    bool use_chs = true;

    if (version >> 16 != 1) {
        vhd_err(v, "footer: unsupported format version 0x%08x", version);
        return -ENOTSUP;
    }
    if (type != VHD_TYPE_FIXED && type != VHD_TYPE_DYNAMIC && type != VHD_TYPE_DIFF) {
        vhd_err(v, "footer: disk type %u is not fixed(2), dynamic(3) or differencing(4)", type);
        return -EINVAL;
    }
    v->type = (enum vhd_type)type;
    if (v->type == VHD_TYPE_FIXED && !at_end) {
        vhd_err(v, "fixed disk without a valid footer at the end of the file");
        return -EINVAL;
    }
    v->current_size = rd64(f + 48);
    if (v->current_size % VHD_SECTOR_SIZE || v->current_size > VHD_MAX_SIZE) {
        vhd_err(v, "footer: current size %llu is not a multiple of 512 or above %llu",
                (unsigned long long)v->current_size, (unsigned long long)VHD_MAX_SIZE);
        return -EINVAL;
    }
    memcpy(v->uuid, f + 68, sizeof(v->uuid));

    chs = (uint64_t)rd16(f + 56) * f[58] * f[59] * VHD_SECTOR_SIZE;
    for (size_t i = 0; i < sizeof(size_apps) / sizeof(size_apps[0]); i++) {
        if (memcmp(f + 28, size_apps[i], 4) == 0)
            use_chs = false;
    }
    if (chs >= VHD_MAX_CHS_SIZE || chs == 0)
        use_chs = false;
    /* CHS never exposes bytes past the stored size (fixed: past the data). */
    v->virtual_size = use_chs && chs < v->current_size ? chs : v->current_size;
    if (v->type == VHD_TYPE_FIXED && v->current_size > v->file_size - VHD_FOOTER_SIZE) {
        vhd_err(v, "fixed disk of %llu bytes but only %llu bytes of data in the file",
                (unsigned long long)v->current_size,
                (unsigned long long)(v->file_size - VHD_FOOTER_SIZE));
        return -EINVAL;
    }
    return 0;
}

/* ---- dynamic header and BAT ---- */

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static int vhd_check_bat(struct vhd *v, uint64_t dyn_off, uint64_t bat_off, uint64_t bat_len,
                         uint64_t data_end)
{
    uint64_t block_sectors = ((uint64_t)v->bitmap_size + v->block_size) / VHD_SECTOR_SIZE;
    uint32_t *sorted;
    size_t n = 0;
    int ret = 0;

    sorted = malloc((size_t)v->max_entries * sizeof(uint32_t) + 1);
    if (!sorted)
        return -ENOMEM;
    for (uint32_t i = 0; i < v->max_entries; i++) {
        uint64_t start, len;

        if (v->bat[i] == VHD_UNALLOCATED)
            continue;
        start = (uint64_t)v->bat[i] * VHD_SECTOR_SIZE;
        len = block_sectors * VHD_SECTOR_SIZE;
        if (start < VHD_FOOTER_SIZE || start + len > data_end ||
            ranges_overlap(start, len, dyn_off, VHD_DYN_SIZE) ||
            ranges_overlap(start, len, bat_off, bat_len)) {
            vhd_err(v,
                    "BAT entry %u: block at sector %u (%llu bytes) outside the data area or "
                    "overlapping the headers",
                    i, v->bat[i], (unsigned long long)len);
            ret = -EINVAL;
            goto out;
        }
        sorted[n++] = v->bat[i];
    }
    qsort(sorted, n, sizeof(uint32_t), cmp_u32);
    for (size_t i = 1; i < n; i++) {
        if ((uint64_t)sorted[i] - sorted[i - 1] < block_sectors) {
            vhd_err(v, "BAT: blocks at sectors %u and %u overlap", sorted[i - 1], sorted[i]);
            ret = -EINVAL;
            goto out;
        }
    }
out:
    free(sorted);
    return ret;
}

/* Parent locator data decoded to a UTF-8 path; -ENOENT when unusable. */
static int vhd_utf16le_to_utf8(const uint8_t *src, size_t len, char *dst, size_t dst_len)
{
    size_t o = 0;

    if (len % 2)
        return -EINVAL;
    for (size_t i = 0; i < len; i += 2) {
        uint32_t c = (uint32_t)src[i] | (uint32_t)src[i + 1] << 8;

        if (c == 0)
            break;
        if (c >= 0xdc00 && c <= 0xdfff)
            return -EINVAL;
        if (c >= 0xd800 && c <= 0xdbff) {
            uint32_t lo;

            if (i + 3 >= len)
                return -EINVAL;
            lo = (uint32_t)src[i + 2] | (uint32_t)src[i + 3] << 8;
            if (lo < 0xdc00 || lo > 0xdfff)
                return -EINVAL;
            c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
            i += 2;
        }
        if (o + 5 > dst_len)
            return -ENAMETOOLONG;
        if (c < 0x80) {
            dst[o++] = (char)c;
        } else if (c < 0x800) {
            dst[o++] = (char)(0xc0 | c >> 6);
            dst[o++] = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            dst[o++] = (char)(0xe0 | c >> 12);
            dst[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
            dst[o++] = (char)(0x80 | (c & 0x3f));
        } else {
            dst[o++] = (char)(0xf0 | c >> 18);
            dst[o++] = (char)(0x80 | ((c >> 12) & 0x3f));
            dst[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
            dst[o++] = (char)(0x80 | (c & 0x3f));
        }
    }
    dst[o] = '\0';
    return o ? 0 : -ENOENT;
}

/* Join name onto the directory of the child's path. */
static int vhd_join_dir(const char *child, const char *name, char *out, size_t out_len)
{
    const char *slash = strrchr(child, '/');
    int n;

    if (name[0] == '/' || !slash)
        n = snprintf(out, out_len, "%s", name);
    else
        n = snprintf(out, out_len, "%.*s/%s", (int)(slash - child), child, name);
    return n < 0 || (size_t)n >= out_len ? -ENAMETOOLONG : 0;
}

/*
 * Turn a locator into a candidate path: backslashes become slashes; "W2ru"
 * is relative to the child's directory; a "W2ku" drive path (C:\dir\x.vhd)
 * cannot exist here, so its last component is looked up beside the child
 * (the parent unique id check makes this safe); "MacX" is a file:// URL.
 */
static int vhd_locator_path(const struct vhd *v, uint32_t code, const char *raw, char *out,
                            size_t out_len)
{
    char tmp[PATH_MAX];
    char *p = tmp;
    size_t n = strlen(raw);

    if (n >= sizeof(tmp))
        return -ENAMETOOLONG;
    memcpy(tmp, raw, n + 1);
    for (char *c = tmp; *c; c++) {
        if (*c == '\\' && code != VHD_PLAT_MACX)
            *c = '/';
    }
    if (code == VHD_PLAT_MACX) {
        char *w;

        if (strncmp(p, "file://localhost/", 17) == 0)
            p += 16;
        else if (strncmp(p, "file://", 7) == 0)
            p += 7;
        /* percent-decoding, in place */
        w = p;
        for (char *r = p; *r; r++) {
            unsigned hi, lo;

            if (r[0] == '%' && sscanf(r + 1, "%1x%1x", &hi, &lo) == 2 && (hi || lo)) {
                *w++ = (char)(hi << 4 | lo);
                r += 2;
            } else {
                *w++ = *r;
            }
        }
        *w = '\0';
        if (!*p)
            return -ENOENT;
        return vhd_join_dir(v->path, p, out, out_len);
    }
    if (code == VHD_PLAT_W2KU && p[0] && p[1] == ':') {
        char *base = strrchr(p, '/');

        p = base ? base + 1 : p + 2;
    }
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    if (!*p)
        return -ENOENT;
    return vhd_join_dir(v->path, p, out, out_len);
}

static int vhd_open_chain(struct vhd **out, int fd, const char *path,
                          const struct vhd_open_opts *opts, struct vhd_chain *chain, bool quiet);

/* Decode locator i of the dynamic header into raw (PATH_MAX bytes). */
static int vhd_read_locator(const struct vhd *v, const uint8_t *e, unsigned i, char *raw)
{
    uint32_t code = rd32(e), dlen = rd32(e + 8);
    uint64_t doff = rd64(e + 16);
    uint8_t *data;
    int ret;

    if (dlen == 0 || dlen > VHD_MAX_LOCATOR || doff > v->file_size || dlen > v->file_size - doff) {
        vhd_err(v, "parent locator %u: data (%u bytes at %llu) outside the file", i, dlen,
                (unsigned long long)doff);
        return -EINVAL;
    }
    data = malloc(dlen + 1);
    if (!data)
        return -ENOMEM;
    ret = vhd_pread_full(v->fd, data, dlen, doff);
    if (ret < 0)
        goto out;
    if (code == VHD_PLAT_MACX) { /* UTF-8 URL */
        data[dlen] = 0;
        if (memchr(data, 0, dlen) || dlen >= PATH_MAX)
            ret = -EINVAL;
        else
            memcpy(raw, data, dlen + 1);
    } else {
        ret = vhd_utf16le_to_utf8(data, dlen, raw, PATH_MAX);
    }
out:
    free(data);
    if (ret < 0)
        vhd_err(v, "parent locator %u: unreadable or undecodable path (%d)", i, ret);
    return ret < 0 ? -EINVAL : 0;
}

static int vhd_open_parent(struct vhd *v, const uint8_t *dyn, const struct vhd_open_opts *opts,
                           struct vhd_chain *chain)
{
    static const uint32_t order[] = {VHD_PLAT_W2RU, VHD_PLAT_W2KU, VHD_PLAT_MACX};
    struct vhd_open_opts popts = {0}; /* parent_path applies to this level only */
    char(*cand)[PATH_MAX];            /* heap: this frame recurses per chain level */
    uint8_t name_le[512];
    unsigned ncand = 0;
    char *raw;
    int ret;

    cand = calloc(4, PATH_MAX);
    raw = malloc(PATH_MAX);
    if (!cand || !raw) {
        ret = -ENOMEM;
        goto out;
    }
    if (opts && opts->parent_path) {
        snprintf(cand[0], PATH_MAX, "%s", opts->parent_path);
        ncand = 1;
    } else {
        for (size_t o = 0; o < sizeof(order) / sizeof(order[0]); o++) {
            for (unsigned i = 0; i < VHD_NUM_LOCATORS && ncand < 3; i++) {
                const uint8_t *e = dyn + 576 + 24 * i;

                if (rd32(e) != order[o])
                    continue;
                ret = vhd_read_locator(v, e, i, raw);
                if (ret < 0)
                    goto out;
                if (vhd_locator_path(v, order[o], raw, cand[ncand], PATH_MAX) == 0)
                    ncand++;
            }
        }
        /* Last resort: the parent's file name from the header, beside the child. */
        for (unsigned i = 0; i < sizeof(name_le); i += 2) {
            name_le[i] = dyn[64 + i + 1];
            name_le[i + 1] = dyn[64 + i];
        }
        if (vhd_utf16le_to_utf8(name_le, sizeof(name_le), raw, PATH_MAX) == 0 &&
            !strchr(raw, '/') && !strchr(raw, '\\') &&
            vhd_join_dir(v->path, raw, cand[ncand], PATH_MAX) == 0)
            ncand++;
    }
    for (unsigned i = 0; i < ncand; i++) {
        int pfd = open(cand[i], O_RDONLY | O_CLOEXEC);

        if (pfd < 0)
            continue;
        ret = vhd_open_chain(&v->parent, pfd, cand[i], &popts, chain, v->quiet);
        close(pfd);
        if (ret < 0) {
            vhd_err(v, "cannot open parent '%s' (%d)", cand[i], ret);
            goto out;
        }
        if (memcmp(v->parent->uuid, v->parent_uuid, 16) != 0) {
            vhd_err(v, "parent '%s' has a different unique id than the child expects", cand[i]);
            vhd_close(v->parent);
            v->parent = NULL;
            ret = -EINVAL;
        }
        goto out;
    }
    vhd_err(v, "differencing disk: parent not found (%u candidate path%s tried%s%s)", ncand,
            ncand == 1 ? "" : "s", ncand ? ", first " : "", ncand ? cand[0] : "");
    ret = -ENOENT;
out:
    free(raw);
    free(cand);
    return ret;
}

static int vhd_parse_dynamic(struct vhd *v, const uint8_t *footer, bool footer_at_end,
                             const struct vhd_open_opts *opts, struct vhd_chain *chain)
{
    uint8_t dyn[VHD_DYN_SIZE];
    uint64_t dyn_off = rd64(footer + 16), bat_off, bat_len, data_end, entries_needed;
    uint32_t version;
    int ret;

    if (dyn_off < VHD_FOOTER_SIZE || dyn_off > v->file_size ||
        v->file_size - dyn_off < VHD_DYN_SIZE) {
        vhd_err(v, "dynamic header offset %llu outside the file (%llu bytes)",
                (unsigned long long)dyn_off, (unsigned long long)v->file_size);
        return -EINVAL;
    }
    ret = vhd_pread_full(v->fd, dyn, sizeof(dyn), dyn_off);
    if (ret < 0) {
        vhd_err(v, "cannot read the dynamic header (%d)", ret);
        return ret;
    }
    if (memcmp(dyn, "cxsparse", 8) != 0) {
        vhd_err(v, "dynamic header at %llu: bad cookie", (unsigned long long)dyn_off);
        return -EINVAL;
    }
    if (vhd_checksum(dyn, sizeof(dyn), 36) != rd32(dyn + 36)) {
        vhd_err(v, "dynamic header: checksum mismatch");
        return -EINVAL;
    }
    version = rd32(dyn + 24);
    if (version != VHD_VERSION) {
        vhd_err(v, "dynamic header: unsupported version 0x%08x", version);
        return -ENOTSUP;
    }
    v->block_size = rd32(dyn + 32);
    if (v->block_size < VHD_MIN_BLOCK || v->block_size > VHD_MAX_BLOCK ||
        (v->block_size & (v->block_size - 1))) {
        vhd_err(v, "dynamic header: block size %u is not a power of two in [%u, %u]", v->block_size,
                VHD_MIN_BLOCK, VHD_MAX_BLOCK);
        return -EINVAL;
    }
    v->bitmap_size = ((v->block_size / VHD_SECTOR_SIZE + 7) / 8 + VHD_SECTOR_SIZE - 1) /
                     VHD_SECTOR_SIZE * VHD_SECTOR_SIZE;
    v->max_entries = rd32(dyn + 28);
    entries_needed = (v->virtual_size + v->block_size - 1) / v->block_size;
    if (v->max_entries < entries_needed || (uint64_t)v->max_entries * 4 > VHD_MAX_BAT_BYTES) {
        vhd_err(v, "dynamic header: %u BAT entries for %llu blocks of virtual size (max %u)",
                v->max_entries, (unsigned long long)entries_needed, VHD_MAX_BAT_BYTES / 4);
        return -EINVAL;
    }
    bat_off = rd64(dyn + 16);
    bat_len = (uint64_t)v->max_entries * 4;
    if (bat_off < VHD_FOOTER_SIZE || bat_off > v->file_size || bat_len > v->file_size - bat_off ||
        ranges_overlap(bat_off, bat_len, dyn_off, VHD_DYN_SIZE)) {
        vhd_err(v, "BAT at %llu (%llu bytes) outside the file or overlapping the dynamic header",
                (unsigned long long)bat_off, (unsigned long long)bat_len);
        return -EINVAL;
    }
    v->bat = malloc(bat_len ? bat_len : 1);
    if (!v->bat)
        return -ENOMEM;
    ret = vhd_pread_full(v->fd, v->bat, bat_len, bat_off);
    if (ret < 0) {
        vhd_err(v, "cannot read the BAT (%d)", ret);
        return ret;
    }
    for (uint32_t i = 0; i < v->max_entries; i++)
        v->bat[i] = be32toh(v->bat[i]);
    data_end = footer_at_end ? v->file_size - VHD_FOOTER_SIZE : v->file_size;
    ret = vhd_check_bat(v, dyn_off, bat_off, bat_len, data_end);
    if (ret < 0)
        return ret;

    if (v->type == VHD_TYPE_DIFF) {
        memcpy(v->parent_uuid, dyn + 40, sizeof(v->parent_uuid));
        if (opts && opts->no_parent)
            return 0;
        return vhd_open_parent(v, dyn, opts, chain);
    }
    return 0;
}

static int vhd_open_chain(struct vhd **out, int fd, const char *path,
                          const struct vhd_open_opts *opts, struct vhd_chain *chain, bool quiet)
{
    uint8_t head[VHD_FOOTER_SIZE], tail[VHD_FOOTER_SIZE];
    const uint8_t *footer;
    bool at_end;
    struct stat st;
    struct vhd *v;
    int ret;

    *out = NULL;
    v = calloc(1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    v->fd = -1;
    v->quiet = quiet;
    v->path = strdup(path ? path : "(fd)");
    if (!v->path) {
        ret = -ENOMEM;
        goto fail;
    }
    if (fstat(fd, &st) < 0) {
        ret = -errno;
        vhd_err(v, "stat: %s", strerror(errno));
        goto fail;
    }
    for (unsigned i = 0; i < chain->depth; i++) {
        if (chain->dev[i] == st.st_dev && chain->ino[i] == st.st_ino) {
            vhd_err(v, "parent chain loops back to this file");
            ret = -ELOOP;
            goto fail;
        }
    }
    if (chain->depth >= VHD_MAX_CHAIN) {
        vhd_err(v, "parent chain deeper than %u", VHD_MAX_CHAIN);
        ret = -ELOOP;
        goto fail;
    }
    chain->dev[chain->depth] = st.st_dev;
    chain->ino[chain->depth] = st.st_ino;
    chain->depth++;
    v->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (v->fd < 0) {
        ret = -errno;
        goto fail;
    }
    v->file_size = (uint64_t)st.st_size;
    if (v->file_size < VHD_FOOTER_SIZE) {
        vhd_err(v, "file of %llu bytes is too small for a VHD footer",
                (unsigned long long)v->file_size);
        ret = -EINVAL;
        goto fail;
    }
    if ((ret = vhd_pread_full(v->fd, tail, sizeof(tail), v->file_size - VHD_FOOTER_SIZE)) < 0 ||
        (ret = vhd_pread_full(v->fd, head, sizeof(head), 0)) < 0) {
        vhd_err(v, "cannot read the footer (%d)", ret);
        goto fail;
    }
    if (vhd_footer_ok(tail)) {
        footer = tail;
        at_end = true;
    } else if (vhd_footer_ok(head)) {
        footer = head;
        at_end = false;
        if (!v->quiet)
            log_warn("vhd '%s': footer at the end is damaged, using the copy at offset 0", v->path);
    } else {
        vhd_err(v, "no valid footer (cookie 'conectix' and checksum) at the end or the start");
        ret = -EINVAL;
        goto fail;
    }
    ret = vhd_parse_footer(v, footer, at_end);
    if (ret < 0)
        goto fail;
    if (v->type != VHD_TYPE_FIXED) {
        ret = vhd_parse_dynamic(v, footer, at_end, opts, chain);
        if (ret < 0)
            goto fail;
    }
    *out = v;
    return 0;
fail:
    vhd_close(v);
    return ret;
}

int vhd_open_fd(struct vhd **out, int fd, const char *path, const struct vhd_open_opts *opts)
{
    struct vhd_chain chain = {0};

    return vhd_open_chain(out, fd, path, opts, &chain, false);
}

int vhd_open(struct vhd **out, const char *path, const struct vhd_open_opts *opts)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int ret;

    *out = NULL;
    if (fd < 0) {
        ret = -errno;
        log_err("vhd '%s': open: %s", path, strerror(errno));
        return ret;
    }
    ret = vhd_open_fd(out, fd, path, opts);
    close(fd);
    return ret;
}

void vhd_close(struct vhd *v)
{
    if (!v)
        return;
    vhd_close(v->parent);
    if (v->fd >= 0)
        close(v->fd);
    free(v->bat);
    free(v->path);
    free(v);
}

uint64_t vhd_get_virtual_size(const struct vhd *v)
{
    return v->virtual_size;
}

enum vhd_type vhd_get_type(const struct vhd *v)
{
    return v->type;
}

uint32_t vhd_get_block_size(const struct vhd *v)
{
    return v->type == VHD_TYPE_FIXED ? 0 : v->block_size;
}

const struct vhd *vhd_get_parent(const struct vhd *v)
{
    return v->parent;
}

const char *vhd_get_path(const struct vhd *v)
{
    return v->path;
}

int vhd_get_fd(const struct vhd *v)
{
    return v->fd;
}

uint32_t vhd_get_bitmap_size(const struct vhd *v)
{
    return v->type == VHD_TYPE_FIXED ? 0 : v->bitmap_size;
}

uint32_t vhd_get_bat_entries(const struct vhd *v)
{
    return v->type == VHD_TYPE_FIXED ? 0 : v->max_entries;
}

uint32_t vhd_get_bat_entry(const struct vhd *v, uint64_t offset)
{
    uint64_t idx;

    if (v->type == VHD_TYPE_FIXED)
        return VHD_BAT_UNALLOCATED;
    idx = offset / v->block_size;
    return idx < v->max_entries ? v->bat[idx] : VHD_BAT_UNALLOCATED;
}

uint64_t vhd_get_file_size(const struct vhd *v)
{
    return v->file_size;
}

/* ---- reading ---- */

/*
 * Status of [off, off+len) inside one block (or the whole fixed disk):
 * *pnum bytes from off are either stored here (*here = true) or not.
 * Differencing disks consult the sector bitmap; dynamic disks treat an
 * allocated block as fully present (as QEMU and Hyper-V do).
 */
static int vhd_status_here(const struct vhd *v, uint64_t off, uint64_t len, uint64_t *pnum,
                           bool *here)
{
    uint64_t in_block, avail, first, nsec;
    uint32_t idx, entry;
    uint8_t bm[64];
    int ret;

    if (v->type == VHD_TYPE_FIXED) {
        *pnum = len;
        *here = true;
        return 0;
    }
    idx = (uint32_t)(off / v->block_size);
    in_block = off % v->block_size;
    avail = v->block_size - in_block;
    if (avail > len)
        avail = len;
    entry = idx < v->max_entries ? v->bat[idx] : VHD_UNALLOCATED;
    if (entry == VHD_UNALLOCATED || v->type == VHD_TYPE_DYNAMIC) {
        *pnum = avail;
        *here = entry != VHD_UNALLOCATED;
        return 0;
    }
    /* differencing: scan the bitmap from the first sector */
    first = in_block / VHD_SECTOR_SIZE;
    nsec = (in_block + avail + VHD_SECTOR_SIZE - 1) / VHD_SECTOR_SIZE - first;
    {
        uint64_t bm_first = first / 8, bm_len = (first + nsec + 7) / 8 - bm_first;
        uint64_t done = 0;
        bool state = false;

        if (bm_len > sizeof(bm))
            bm_len = sizeof(bm);
        ret =
            vhd_pread_full(v->fd, bm, (size_t)bm_len, (uint64_t)entry * VHD_SECTOR_SIZE + bm_first);
        if (ret < 0)
            return ret;
        for (uint64_t s = first; s < first + nsec && (s / 8 - bm_first) < bm_len; s++) {
            bool bit = bm[s / 8 - bm_first] & (0x80 >> (s % 8));

            if (s == first)
                state = bit;
            else if (bit != state)
                break;
            done++;
        }
        /* bytes covered by the first 'done' sectors, from off */
        *pnum = (first + done) * VHD_SECTOR_SIZE - in_block;
        if (*pnum > avail)
            *pnum = avail;
        *here = state;
    }
    return 0;
}

static int vhd_read_here(const struct vhd *v, uint8_t *buf, uint64_t len, uint64_t off)
{
    uint64_t host;

    if (v->type == VHD_TYPE_FIXED) {
        host = off;
    } else {
        uint32_t entry = v->bat[off / v->block_size];

        host = (uint64_t)entry * VHD_SECTOR_SIZE + v->bitmap_size + off % v->block_size;
    }
    return vhd_pread_full(v->fd, buf, (size_t)len, host);
}

static int vhd_read_chain(const struct vhd *v, uint8_t *buf, uint64_t len, uint64_t off)
{
    while (len) {
        uint64_t n;
        bool here;
        int ret;

        if (off >= v->virtual_size) { /* beyond a smaller parent: zeros */
            memset(buf, 0, (size_t)len);
            return 0;
        }
        n = len;
        if (n > v->virtual_size - off)
            n = v->virtual_size - off;
        ret = vhd_status_here(v, off, n, &n, &here);
        if (ret < 0)
            return ret;
        if (here)
            ret = vhd_read_here(v, buf, n, off);
        else if (v->parent)
            ret = vhd_read_chain(v->parent, buf, n, off);
        else
            memset(buf, 0, (size_t)n);
        if (ret < 0)
            return ret;
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

int vhd_pread(const struct vhd *v, void *buf, size_t len, uint64_t offset)
{
    int ret;

    if (offset > v->virtual_size || len > v->virtual_size - offset) {
        vhd_err(v, "read of %zu bytes at %llu beyond the virtual size %llu", len,
                (unsigned long long)offset, (unsigned long long)v->virtual_size);
        return -EINVAL;
    }
    ret = vhd_read_chain(v, buf, len, offset);
    if (ret < 0)
        vhd_err(v, "read of %zu bytes at %llu failed (%d)", len, (unsigned long long)offset, ret);
    return ret;
}

static int vhd_status_chain(const struct vhd *v, uint64_t off, uint64_t len, uint64_t *pnum,
                            bool *allocated)
{
    bool here;
    int ret;

    if (off >= v->virtual_size) {
        *pnum = len;
        *allocated = false;
        return 0;
    }
    if (len > v->virtual_size - off)
        len = v->virtual_size - off;
    ret = vhd_status_here(v, off, len, pnum, &here);
    if (ret < 0)
        return ret;
    if (here || !v->parent) {
        *allocated = here;
        return 0;
    }
    return vhd_status_chain(v->parent, off, *pnum, pnum, allocated);
}

int vhd_block_status(const struct vhd *v, uint64_t offset, uint64_t len, uint64_t *pnum,
                     bool *allocated)
{
    if (len == 0 || offset > v->virtual_size || len > v->virtual_size - offset)
        return -EINVAL;
    return vhd_status_chain(v, offset, len, pnum, allocated);
}

/* ---- fuzzing ---- */

int vhd_fuzz_one(const uint8_t *data, size_t size)
{
    struct vhd_open_opts opts = {.no_parent = true};
    struct vhd_chain chain = {0};
    struct vhd *v;
    uint8_t *buf;
    uint64_t off = 0, budget = VHD_FUZZ_READ_MAX;
    uint8_t *img = malloc(size ? size : 1);
    int fd = memfd_create("vhd-fuzz", MFD_CLOEXEC);

    if (fd < 0 || !img) {
        if (fd >= 0)
            close(fd);
        free(img);
        return 0;
    }
    memcpy(img, data, size);
    /* Even-sized inputs get valid checksums so mutations reach the deeper
     * checks; odd-sized ones keep exercising the checksum rejection. */
    if (size % 2 == 0 && size >= VHD_FOOTER_SIZE) {
        uint8_t *tail = img + size - VHD_FOOTER_SIZE;
        uint64_t dyn_off;

        wr32_csum(tail, vhd_checksum(tail, VHD_FOOTER_SIZE, 64), 64);
        wr32_csum(img, vhd_checksum(img, VHD_FOOTER_SIZE, 64), 64);
        dyn_off = rd64(tail + 16);
        if (dyn_off <= size && size - dyn_off >= VHD_DYN_SIZE)
            wr32_csum(img + dyn_off, vhd_checksum(img + dyn_off, VHD_DYN_SIZE, 36), 36);
    }
    if (write(fd, img, size) != (ssize_t)size ||
        vhd_open_chain(&v, fd, "fuzz", &opts, &chain, true) < 0) {
        close(fd);
        free(img);
        return 0;
    }
    close(fd);
    free(img);
    buf = malloc(65536);
    /* Walk the disk by status runs, reading a bounded amount of data. */
    while (buf && off < v->virtual_size && budget) {
        uint64_t n, chunk;
        bool alloc;

        if (vhd_block_status(v, off, v->virtual_size - off, &n, &alloc) < 0 || n == 0)
            break;
        chunk = n < 65536 ? n : 65536;
        if (alloc) {
            (void)vhd_read_chain(v, buf, chunk, off);
            budget = budget > chunk ? budget - chunk : 0;
        }
        off += n;
    }
    free(buf);
    vhd_close(v);
    return 0;
}
