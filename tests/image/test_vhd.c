/* SPDX-License-Identifier: Apache-2.0 */
/*
 * VHD reader tests.
 *   test_vhd            unit: images crafted by the small writer below (fixed,
 *                       dynamic, differencing chains with W2ru/W2ku/MacX parent
 *                       locators, sector bitmaps) and hostile variants;
 *                       test_aio_chain: a dynamic <- differencing <-
 *                       differencing chain under a qcow2 overlay read through
 *                       the io_uring queue with no synchronous I/O.
 *   test_vhd interop    images produced by qemu-img convert -O vpc (fixed and
 *                       dynamic, CHS and force_size) from a raw file written by
 *                       qemu-io; exits 77 without qemu-img.
 *   test_vhd corpus DIR runs the fuzz entry on DIR/vhd-* (tests/image/crypto/corpus).
 *   test_vhd gen-corpus DIR writes the seed images there.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "image/img_internal.h"
#include "image/qtimg.h"
#include "image/vhd.h"

static char tmpdir[256];

/* ---- test-only VHD writer ---- */

static void w16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void w32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void w64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint32_t csum(const uint8_t *p, size_t len)
{
    uint32_t s = 0;

    for (size_t i = 0; i < len; i++)
        s += p[i];
    return ~s;
}

struct locator {
    uint32_t code; /* 'W2ru', 'W2ku', 'MacX' */
    const char *path;
};

/* A disk under construction: content + which sectors are stored here. */
struct tdisk {
    int type; /* 2, 3, 4 */
    uint64_t size;
    uint32_t block_size;
    uint8_t uuid[16];
    uint8_t parent_uuid[16];
    const char *creator; /* 4 chars */
    struct locator loc[3];
    const char *parent_name; /* header unicode name */
    uint8_t *data;
    uint8_t *present; /* one byte per sector */
};

static void td_init(struct tdisk *d, int type, uint64_t size, uint32_t block_size, uint8_t id)
{
    memset(d, 0, sizeof(*d));
    d->type = type;
    d->size = size;
    d->block_size = block_size;
    memset(d->uuid, id, 16);
    d->creator = "qem2";
    d->data = calloc(1, size);
    d->present = calloc(1, size / 512);
    assert_non_null(d->data);
    assert_non_null(d->present);
}

static void td_free(struct tdisk *d)
{
    free(d->data);
    free(d->present);
}

static void td_write(struct tdisk *d, uint64_t off, uint64_t len, uint8_t pat)
{
    memset(d->data + off, pat, len);
    for (uint64_t s = off / 512; s < (off + len + 511) / 512; s++)
        d->present[s] = 1;
}

static void make_footer(uint8_t *f, const struct tdisk *d, uint64_t data_offset)
{
    uint64_t sectors = d->size / 512;

    memset(f, 0, 512);
    memcpy(f, "conectix", 8);
    w32(f + 8, 2);
    w32(f + 12, 0x00010000);
    w64(f + 16, data_offset);
    memcpy(f + 28, d->creator, 4);
    w32(f + 32, 0x00050003);
    memcpy(f + 36, "Wi2k", 4);
    w64(f + 40, d->size);
    w64(f + 48, d->size);
    /* a simple geometry: 16 heads, 63 sectors; cylinders rounded down */
    w16(f + 56, (uint16_t)(sectors / (16 * 63) > 65535 ? 65535 : sectors / (16 * 63)));
    f[58] = 16;
    f[59] = 63;
    w32(f + 60, (uint32_t)d->type);
    memcpy(f + 68, d->uuid, 16);
    w32(f + 64, csum(f, 512));
}

static size_t utf16le(const char *s, uint8_t *out)
{
    size_t n = 0;

    for (; *s; s++) { /* ASCII only in the tests */
        out[n++] = (uint8_t)*s;
        out[n++] = 0;
    }
    return n;
}

/* Serialise d into a malloc'd file image; *len gets its size. */
static uint8_t *td_build(const struct tdisk *d, size_t *len)
{
    if (d->type == 2) {
        uint8_t *img = calloc(1, d->size + 512);

        assert_non_null(img);
        memcpy(img, d->data, d->size);
        make_footer(img + d->size, d, ~0ull);
        *len = d->size + 512;
        return img;
    }
    uint32_t nblocks = (uint32_t)((d->size + d->block_size - 1) / d->block_size);
    uint32_t spb = d->block_size / 512;
    uint32_t bitmap = ((spb + 7) / 8 + 511) / 512 * 512;
    uint64_t bat_off = 1536, loc_off = bat_off + ((uint64_t)nblocks * 4 + 511) / 512 * 512;
    uint64_t blk_off = loc_off + 3 * 1024, end = blk_off;
    size_t cap = blk_off + (size_t)nblocks * (bitmap + d->block_size) + 512;
    uint8_t *img = calloc(1, cap), *dyn = img + 512, *bat = img + bat_off;

    assert_non_null(img);
    memcpy(dyn, "cxsparse", 8);
    w64(dyn + 8, ~0ull);
    w64(dyn + 16, bat_off);
    w32(dyn + 24, 0x00010000);
    w32(dyn + 28, nblocks);
    w32(dyn + 32, d->block_size);
    memcpy(dyn + 40, d->parent_uuid, 16);
    if (d->parent_name) {
        for (size_t i = 0; d->parent_name[i]; i++)
            dyn[64 + 2 * i + 1] = (uint8_t)d->parent_name[i]; /* UTF-16BE */
    }
    for (int i = 0; i < 3; i++) {
        uint8_t *e = dyn + 576 + 24 * i;
        size_t n;

        if (!d->loc[i].code)
            continue;
        if (d->loc[i].code == 0x4d616358) { /* MacX: UTF-8 */
            n = strlen(d->loc[i].path);
            memcpy(img + loc_off + 1024 * i, d->loc[i].path, n);
        } else {
            n = utf16le(d->loc[i].path, img + loc_off + 1024 * i);
        }
        w32(e, d->loc[i].code);
        w32(e + 4, 2);
        w32(e + 8, (uint32_t)n);
        w64(e + 16, loc_off + 1024 * i);
    }
    w32(dyn + 36, csum(dyn, 1024));
    for (uint32_t b = 0; b < nblocks; b++) {
        bool any = false;

        for (uint32_t s = 0; s < spb && (uint64_t)b * spb + s < d->size / 512; s++)
            any |= d->present[(uint64_t)b * spb + s];
        if (!any) {
            w32(bat + 4 * b, 0xffffffff);
            continue;
        }
        w32(bat + 4 * b, (uint32_t)(end / 512));
        for (uint32_t s = 0; s < spb && (uint64_t)b * spb + s < d->size / 512; s++) {
            uint64_t sec = (uint64_t)b * spb + s;

            if (d->type == 3 || d->present[sec])
                img[end + s / 8] |= (uint8_t)(0x80 >> (s % 8));
            if (d->type == 3 || d->present[sec])
                memcpy(img + end + bitmap + 512 * s, d->data + sec * 512, 512);
            else /* garbage where the bitmap says "not here" */
                memset(img + end + bitmap + 512 * s, 0xee, 512);
        }
        end += bitmap + d->block_size;
    }
    make_footer(img, d, 512);
    memcpy(img + end, img, 512);
    *len = end + 512;
    return img;
}

static void write_file(const char *path, const uint8_t *img, size_t len)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(img, 1, len, f), len);
    fclose(f);
}

static char *tpath(const char *name)
{
    static char buf[8][512];
    static int i;
    char *p = buf[i++ % 8];

    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static void td_save(const struct tdisk *d, const char *name)
{
    size_t len;
    uint8_t *img = td_build(d, &len);

    write_file(tpath(name), img, len);
    free(img);
}

static void check_content(const struct vhd *v, const uint8_t *want, uint64_t size)
{
    uint8_t *buf = malloc(size);

    assert_non_null(buf);
    assert_int_equal(vhd_get_virtual_size(v), size);
    assert_int_equal(vhd_pread(v, buf, size, 0), 0);
    assert_memory_equal(buf, want, size);
    /* unaligned small reads across sector and block boundaries */
    for (uint64_t off = 1; off + 1500 < size; off += 77777) {
        assert_int_equal(vhd_pread(v, buf, 1500, off), 0);
        assert_memory_equal(buf, want + off, 1500);
    }
    free(buf);
}

/* ---- unit tests on crafted images ---- */

static void test_fixed(void **state)
{
    struct tdisk d;
    struct vhd *v;
    uint8_t b[16];
    uint64_t n;
    bool alloc;

    (void)state;
    td_init(&d, 2, 3 << 20, 0, 0x11);
    td_write(&d, 0, 4096, 0xab);
    td_write(&d, (2 << 20) + 100, 5000, 0xcd);
    td_save(&d, "fixed.vhd");
    assert_int_equal(vhd_open(&v, tpath("fixed.vhd"), NULL), 0);
    assert_int_equal(vhd_get_type(v), VHD_TYPE_FIXED);
    assert_int_equal(vhd_get_block_size(v), 0);
    check_content(v, d.data, d.size);
    assert_int_equal(vhd_block_status(v, 0, d.size, &n, &alloc), 0);
    assert_int_equal(n, d.size);
    assert_true(alloc);
    assert_int_equal(vhd_pread(v, b, 16, d.size - 8), -EINVAL);
    vhd_close(v);
    td_free(&d);
}

static void test_dynamic(void **state)
{
    struct tdisk d;
    struct vhd *v;
    uint64_t n;
    bool alloc;
    int fd;

    (void)state;
    td_init(&d, 3, 5 << 20, 1 << 20, 0x22);
    td_write(&d, 512, 1024, 0x01);
    td_write(&d, (3 << 20) - 512, 1024, 0x02); /* straddles blocks 2 and 3 */
    td_save(&d, "dyn.vhd");
    fd = open(tpath("dyn.vhd"), O_RDONLY);
    assert_true(vhd_probe_fd(fd));
    assert_int_equal(vhd_open_fd(&v, fd, tpath("dyn.vhd"), NULL), 0);
    close(fd);
    assert_int_equal(vhd_get_type(v), VHD_TYPE_DYNAMIC);
    assert_int_equal(vhd_get_block_size(v), 1 << 20);
    check_content(v, d.data, d.size);
    /* block 0 allocated, block 1 not, blocks 2-3 allocated, 4 not */
    assert_int_equal(vhd_block_status(v, 0, d.size, &n, &alloc), 0);
    assert_int_equal(n, 1 << 20);
    assert_true(alloc);
    assert_int_equal(vhd_block_status(v, 1 << 20, d.size - (1 << 20), &n, &alloc), 0);
    assert_int_equal(n, 1 << 20);
    assert_false(alloc);
    assert_int_equal(vhd_block_status(v, 4 << 20, 1 << 20, &n, &alloc), 0);
    assert_false(alloc);
    vhd_close(v);

    /* damaged end footer: the copy at offset 0 is used */
    {
        size_t len;
        uint8_t *img = td_build(&d, &len);

        img[len - 512 + 20] ^= 0xff;
        write_file(tpath("dyn-badtail.vhd"), img, len);
        assert_int_equal(vhd_open(&v, tpath("dyn-badtail.vhd"), NULL), 0);
        check_content(v, d.data, d.size);
        vhd_close(v);
        free(img);
    }
    td_free(&d);
}

/* base (dynamic) <- mid (diff, W2ru) <- top (diff, W2ku drive path / MacX) */
static void test_differencing_chain(void **state)
{
    struct tdisk base, mid, top;
    struct vhd *v;
    uint8_t *want;
    uint64_t n, size = 4 << 20;
    bool alloc;

    (void)state;
    td_init(&base, 3, size, 1 << 20, 0xb0);
    td_write(&base, 0, size, 0x10);
    td_save(&base, "base.vhd");

    td_init(&mid, 4, size, 1 << 20, 0xb1);
    memcpy(mid.parent_uuid, base.uuid, 16);
    mid.loc[0] = (struct locator){0x57327275, ".\\base.vhd"};
    td_write(&mid, 1 << 20, 4096, 0x20); /* inside block 1 */
    td_write(&mid, (1 << 20) + 8192, 512, 0x21);
    td_save(&mid, "mid.vhd");

    td_init(&top, 4, size, 1 << 20, 0xb2);
    memcpy(top.parent_uuid, mid.uuid, 16);
    top.loc[0] = (struct locator){0x57326b75, "C:\\Users\\x\\vms\\mid.vhd"};
    top.loc[1] = (struct locator){0x4d616358, "file://./nonexistent.vhd"};
    td_write(&top, (1 << 20) + 2048, 512, 0x30); /* overrides part of mid */
    td_write(&top, 3 << 20, 1000, 0x31);
    td_save(&top, "top.vhd");

    want = malloc(size);
    memcpy(want, base.data, size);
    for (uint64_t s = 0; s < size / 512; s++) {
        if (mid.present[s])
            memcpy(want + s * 512, mid.data + s * 512, 512);
        if (top.present[s])
            memcpy(want + s * 512, top.data + s * 512, 512);
    }
    assert_int_equal(vhd_open(&v, tpath("top.vhd"), NULL), 0);
    assert_int_equal(vhd_get_type(v), VHD_TYPE_DIFF);
    assert_non_null(vhd_get_parent(v));
    assert_non_null(vhd_get_parent(vhd_get_parent(v)));
    assert_null(vhd_get_parent(vhd_get_parent(vhd_get_parent(v))));
    assert_string_equal(vhd_get_path(vhd_get_parent(v)), tpath("mid.vhd"));
    check_content(v, want, size);
    /* status runs follow the bitmaps through the chain */
    assert_int_equal(vhd_block_status(v, 1 << 20, 1 << 20, &n, &alloc), 0);
    assert_true(alloc);
    assert_int_equal(n, 2048); /* sectors 0-3 come from mid, sector 4 from top */
    assert_int_equal(vhd_block_status(v, (1 << 20) + 2048, 1 << 19, &n, &alloc), 0);
    assert_true(alloc);
    assert_int_equal(n, 512);
    assert_int_equal(vhd_block_status(v, (1 << 20) + 8192 + 512, 1 << 19, &n, &alloc), 0);
    assert_true(alloc); /* from base (dynamic, fully allocated) */
    vhd_close(v);

    /* no_parent: unallocated sectors read as zeros */
    {
        struct vhd_open_opts o = {.no_parent = true};
        uint8_t b[512];

        assert_int_equal(vhd_open(&v, tpath("top.vhd"), &o), 0);
        assert_null(vhd_get_parent(v));
        assert_int_equal(vhd_pread(v, b, 512, 0), 0);
        for (int i = 0; i < 512; i++)
            assert_int_equal(b[i], 0);
        assert_int_equal(vhd_pread(v, b, 512, (1 << 20) + 2048), 0);
        assert_int_equal(b[0], 0x30);
        vhd_close(v);
    }
    /* explicit parent override */
    {
        struct vhd_open_opts o = {.parent_path = tpath("mid.vhd")};

        rename(tpath("mid.vhd"), tpath("renamed-mid.vhd"));
        assert_int_equal(vhd_open(&v, tpath("top.vhd"), NULL), -ENOENT);
        o.parent_path = tpath("renamed-mid.vhd");
        assert_int_equal(vhd_open(&v, tpath("top.vhd"), &o), 0);
        check_content(v, want, size);
        vhd_close(v);
        rename(tpath("renamed-mid.vhd"), tpath("mid.vhd"));
    }
    /* MacX locator and the header's unicode name */
    top.loc[0] = (struct locator){0x4d616358, "file://mid.vhd"};
    top.loc[1] = (struct locator){0, NULL};
    td_save(&top, "top-macx.vhd");
    assert_int_equal(vhd_open(&v, tpath("top-macx.vhd"), NULL), 0);
    check_content(v, want, size);
    vhd_close(v);
    /* percent-encoded MacX URL to a parent whose name has a space */
    assert_int_equal(link(tpath("mid.vhd"), tpath("mid copy.vhd")), 0);
    top.loc[0] = (struct locator){0x4d616358, "file://mid%20copy.vhd"};
    td_save(&top, "top-macx2.vhd");
    assert_int_equal(vhd_open(&v, tpath("top-macx2.vhd"), NULL), 0);
    assert_string_equal(vhd_get_path(vhd_get_parent(v)), tpath("mid copy.vhd"));
    check_content(v, want, size);
    vhd_close(v);
    top.loc[0] = (struct locator){0, NULL};
    top.parent_name = "mid.vhd";
    td_save(&top, "top-name.vhd");
    assert_int_equal(vhd_open(&v, tpath("top-name.vhd"), NULL), 0);
    check_content(v, want, size);
    vhd_close(v);

    /* parent with the wrong unique id */
    top.parent_uuid[3] ^= 1;
    td_save(&top, "top-baduuid.vhd");
    assert_int_equal(vhd_open(&v, tpath("top-baduuid.vhd"), NULL), -EINVAL);
    assert_null(v);
    free(want);
    td_free(&base);
    td_free(&mid);
    td_free(&top);
}

/* A smaller parent: reads past its end are zeros. */
static void test_smaller_parent(void **state)
{
    struct tdisk base, top;
    struct vhd *v;
    uint8_t b[1024];

    (void)state;
    td_init(&base, 2, 1 << 20, 0, 0xc0);
    td_write(&base, 0, 1 << 20, 0x55);
    td_save(&base, "small.vhd");
    td_init(&top, 4, 2 << 20, 1 << 20, 0xc1);
    memcpy(top.parent_uuid, base.uuid, 16);
    top.loc[0] = (struct locator){0x57327275, "small.vhd"};
    td_save(&top, "big.vhd");
    assert_int_equal(vhd_open(&v, tpath("big.vhd"), NULL), 0);
    assert_int_equal(vhd_pread(v, b, sizeof(b), (1 << 20) - 512), 0);
    for (int i = 0; i < 512; i++)
        assert_int_equal(b[i], 0x55);
    for (int i = 512; i < 1024; i++)
        assert_int_equal(b[i], 0);
    vhd_close(v);
    td_free(&base);
    td_free(&top);
}

static void test_chain_loop_and_depth(void **state)
{
    struct tdisk d;
    struct vhd *v;
    char name[32], parent[32];

    (void)state;
    /* a differencing disk that names itself as parent */
    td_init(&d, 4, 1 << 20, 1 << 20, 0xd0);
    memcpy(d.parent_uuid, d.uuid, 16);
    d.loc[0] = (struct locator){0x57327275, "self.vhd"};
    td_save(&d, "self.vhd");
    assert_int_equal(vhd_open(&v, tpath("self.vhd"), NULL), -ELOOP);
    td_free(&d);

    /* 20 deep: refused at VHD_MAX_CHAIN */
    for (int i = 0; i < 20; i++) {
        td_init(&d, i == 0 ? 3 : 4, 1 << 20, 1 << 20, (uint8_t)(0x40 + i));
        if (i) {
            memset(d.parent_uuid, 0x40 + i - 1, 16);
            snprintf(parent, sizeof(parent), "deep%d.vhd", i - 1);
            d.loc[0] = (struct locator){0x57327275, parent};
        }
        snprintf(name, sizeof(name), "deep%d.vhd", i);
        td_save(&d, name);
        td_free(&d);
    }
    assert_int_equal(vhd_open(&v, tpath("deep15.vhd"), NULL), 0); /* 16 files */
    vhd_close(v);
    assert_int_equal(vhd_open(&v, tpath("deep16.vhd"), NULL), -ELOOP);
    assert_null(v);
}

/* ---- hostile images ---- */

struct dyn_layout {
    size_t len;
    uint8_t *img;
};

static void refoot(uint8_t *img, size_t len)
{
    w32(img + 64, 0);
    w32(img + 64, csum(img, 512));
    memcpy(img + len - 512, img, 512);
}

static void redyn(uint8_t *img)
{
    w32(img + 512 + 36, 0);
    w32(img + 512 + 36, csum(img + 512, 1024));
}

static void test_hostile(void **state)
{
    struct tdisk d;
    struct vhd *v;
    size_t len;
    uint8_t *good, *p;
    int ret;

    (void)state;
    td_init(&d, 3, 4 << 20, 1 << 20, 0xe0);
    td_write(&d, 0, 8192, 0x77);
    td_write(&d, 3 << 20, 8192, 0x78);
    good = td_build(&d, &len);
    p = malloc(len + 4096);

#define HOSTILE(label, expect, mutate)                                                             \
    do {                                                                                           \
        size_t plen = len;                                                                         \
        memcpy(p, good, len);                                                                      \
        mutate;                                                                                    \
        write_file(tpath("hostile.vhd"), p, plen);                                                 \
        ret = vhd_open(&v, tpath("hostile.vhd"), NULL);                                            \
        if (ret != (expect))                                                                       \
            fail_msg("%s: got %d, want %d", label, ret, expect);                                   \
        if (ret == 0)                                                                              \
            vhd_close(v);                                                                          \
        else                                                                                       \
            assert_null(v);                                                                        \
        assert_int_equal(vhd_fuzz_one(p, plen), 0);                                                \
    } while (0)

    HOSTILE("good", 0, (void)0);
    HOSTILE("bad cookie", -EINVAL, (p[0] = 'X', p[len - 512] = 'X'));
    HOSTILE("bad checksum", -EINVAL, (p[30] ^= 1, p[len - 512 + 30] ^= 1));
    HOSTILE("version 2", -ENOTSUP, (w32(p + 12, 0x00020000), refoot(p, len)));
    HOSTILE("disk type 5", -EINVAL, (w32(p + 60, 5), refoot(p, len)));
    HOSTILE("size not sector multiple", -EINVAL, (w64(p + 48, (4 << 20) + 1), refoot(p, len)));
    HOSTILE("size huge", -EINVAL, (w64(p + 48, 1ull << 62), refoot(p, len)));
    HOSTILE("dyn header outside", -EINVAL, (w64(p + 16, len), refoot(p, len)));
    HOSTILE("dyn header at 0", -EINVAL, (w64(p + 16, 0), refoot(p, len)));
    HOSTILE("dyn bad cookie", -EINVAL, (p[512] = 'X', redyn(p)));
    HOSTILE("dyn bad checksum", -EINVAL, (p[512 + 100] ^= 1));
    HOSTILE("dyn version", -ENOTSUP, (w32(p + 512 + 24, 0x00020000), redyn(p)));
    HOSTILE("block size 3M", -EINVAL, (w32(p + 512 + 32, 3 << 20), redyn(p)));
    HOSTILE("block size 0", -EINVAL, (w32(p + 512 + 32, 0), redyn(p)));
    HOSTILE("block size 1G", -EINVAL, (w32(p + 512 + 32, 1u << 30), redyn(p)));
    HOSTILE("BAT too small", -EINVAL, (w32(p + 512 + 28, 3), redyn(p)));
    HOSTILE("BAT huge", -EINVAL, (w32(p + 512 + 28, 0x7fffffff), redyn(p)));
    HOSTILE("BAT outside", -EINVAL, (w64(p + 512 + 16, len - 8), redyn(p)));
    HOSTILE("BAT over dyn header", -EINVAL, (w64(p + 512 + 16, 600), redyn(p)));
    HOSTILE("BAT entry outside", -EINVAL, w32(p + 1536, (uint32_t)(len / 512)));
    HOSTILE("BAT entry into footer", -EINVAL, w32(p + 1536 + 12, (uint32_t)(len / 512) - 2));
    HOSTILE("BAT entry over headers", -EINVAL, w32(p + 1536, 2));
    HOSTILE("BAT entry 0", -EINVAL, w32(p + 1536, 0));
    HOSTILE("BAT entries overlap", -EINVAL,
            (w32(p + 1536 + 4, ((p[1536] << 24 | p[1537] << 16 | p[1538] << 8 | p[1539]) + 8))));
    HOSTILE("truncated", -EINVAL, plen = 300);
    HOSTILE("truncated mid-block", -EINVAL, (plen = len - 700000, memcpy(p + plen - 512, p, 512)));
    HOSTILE("fixed bigger than file", -EINVAL,
            (w32(p + 60, 2), w64(p + 48, len), w64(p + 16, ~0ull), refoot(p, len)));
    HOSTILE("diff without parent", -ENOENT, (w32(p + 60, 4), refoot(p, len)));
    HOSTILE("diff locator outside", -EINVAL,
            (w32(p + 60, 4), refoot(p, len), w32(p + 512 + 576, 0x57327275),
             w32(p + 512 + 576 + 8, 100), w64(p + 512 + 576 + 16, len - 50), redyn(p)));
    HOSTILE("diff locator odd utf16", -EINVAL,
            (w32(p + 60, 4), refoot(p, len), w32(p + 512 + 576, 0x57327275),
             w32(p + 512 + 576 + 8, 7), w64(p + 512 + 576 + 16, 0), redyn(p)));
    HOSTILE("diff locator lone surrogate", -EINVAL,
            (w32(p + 60, 4), refoot(p, len), w32(p + 512 + 576, 0x57327275),
             w32(p + 512 + 576 + 8, 4), w64(p + 512 + 576 + 16, 4096), p[4096] = 0x00,
             p[4097] = 0xdc, redyn(p)));
#undef HOSTILE
    free(p);
    free(good);
    td_free(&d);
}

static void test_mutation_fuzz(void **state)
{
    struct tdisk d;
    size_t len;
    uint8_t *good, *p;
    unsigned seed = 4242;

    (void)state;
    td_init(&d, 4, 2 << 20, 1 << 20, 0xf0);
    td_write(&d, 0, 4096, 0x12);
    td_write(&d, (1 << 20) + 512, 4096, 0x34);
    d.loc[0] = (struct locator){0x57327275, "p.vhd"};
    good = td_build(&d, &len);
    p = malloc(len);
    for (int i = 0; i < 2000; i++) {
        memcpy(p, good, len);
        for (int f = 0; f < 1 + i % 4; f++) {
            /* mostly headers and BAT, sometimes anywhere */
            size_t off = (f & 1) ? (size_t)rand_r(&seed) % len : (size_t)rand_r(&seed) % 2048;

            p[off] = (uint8_t)rand_r(&seed);
        }
        if (i % 3 == 0) { /* keep checksums valid so the deeper checks run */
            w32(p + 64, 0);
            w32(p + 64, csum(p, 512));
            memcpy(p + len - 512, p, 512);
            redyn(p);
        }
        assert_int_equal(vhd_fuzz_one(p, i % 50 == 0 ? (size_t)rand_r(&seed) % len : len), 0);
    }
    free(p);
    free(good);
    td_free(&d);
}

/* ---- interop with qemu-img ---- */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static uint64_t qemu_virtual_size(const char *path)
{
    char cmd[1024], line[256];
    unsigned long long sz = 0;
    FILE *f;

    snprintf(cmd, sizeof(cmd),
             "qemu-img info --output json -f vpc %s | sed -n 's/.*\"virtual-size\": "
             "*\\([0-9]*\\).*/\\1/p'",
             path);
    f = popen(cmd, "r");
    assert_non_null(f);
    if (fgets(line, sizeof(line), f))
        sz = strtoull(line, NULL, 10);
    pclose(f);
    return sz;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    struct stat st;
    uint8_t *buf;
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    buf = malloc((size_t)st.st_size);
    assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

static void qemu_case(const char *opts, bool expect_exact)
{
    char raw[512], vhd[512];
    struct vhd *v;
    uint8_t *want, *got;
    size_t raw_len;
    uint64_t vsize, off = 0, alloc_bytes = 0;

    snprintf(raw, sizeof(raw), "%s/src.raw", tmpdir);
    snprintf(vhd, sizeof(vhd), "%s/out.vhd", tmpdir);
    assert_int_equal(sh("qemu-img convert -f raw -O vpc -o %s %s %s", opts, raw, vhd), 0);
    assert_int_equal(vhd_open(&v, vhd, NULL), 0);
    vsize = vhd_get_virtual_size(v);
    assert_int_equal(vsize, qemu_virtual_size(vhd));
    want = slurp(raw, &raw_len);
    if (expect_exact)
        assert_int_equal(vsize, raw_len);
    assert_true(vsize >= raw_len);
    got = malloc(vsize);
    assert_int_equal(vhd_pread(v, got, vsize, 0), 0);
    assert_memory_equal(got, want, raw_len);
    for (uint64_t i = raw_len; i < vsize; i++)
        assert_int_equal(got[i], 0);
    /* qemu-img compare agrees too (our bytes vs qemu's reading of the VHD) */
    {
        char back[512];

        snprintf(back, sizeof(back), "%s/back.raw", tmpdir);
        write_file(back, got, vsize);
        assert_int_equal(sh("qemu-img compare -q -f raw -F vpc %s %s", back, vhd), 0);
    }
    while (off < vsize) {
        uint64_t n;
        bool alloc;

        assert_int_equal(vhd_block_status(v, off, vsize - off, &n, &alloc), 0);
        assert_true(n > 0);
        if (alloc)
            alloc_bytes += n;
        else
            for (uint64_t i = off; i < off + n; i++)
                assert_int_equal(got[i], 0);
        off += n;
    }
    if (vhd_get_type(v) == VHD_TYPE_DYNAMIC)
        assert_true(alloc_bytes < vsize); /* thin: zero blocks stay unallocated */
    vhd_close(v);
    free(got);
    free(want);
}

static void test_qemu_vpc(void **state)
{
    char raw[512];

    (void)state;
    snprintf(raw, sizeof(raw), "%s/src.raw", tmpdir);
    assert_int_equal(sh("qemu-img create -q -f raw %s 10M && qemu-io -f raw "
                        "-c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 5M 4k' "
                        "-c 'write -P 0x3c 9437696 1536' %s >/dev/null",
                        raw, raw),
                     0);
    qemu_case("subformat=dynamic", false);
    qemu_case("subformat=fixed", false);
    qemu_case("subformat=dynamic,force_size=on", true);
    qemu_case("subformat=fixed,force_size=on", true);
}

/* Run the fuzz entry on every file of a corpus directory. */
/* Our crafted fixtures are real VHDs: QEMU's vpc driver reads the same
 * bytes and the same virtual size (CHS rule for "vpc ", current size for
 * "qem2"). Differencing disks are not compared: QEMU's vpc driver ignores
 * parents and bitmaps. */
static void test_crafted_vs_qemu(void **state)
{
    static const struct {
        int type;
        const char *creator;
        uint32_t block;
    } v[] = {
        {2, "qem2", 0},       {3, "qem2", 1 << 20}, {2, "vpc ", 0},
        {3, "vpc ", 1 << 21}, {3, "win ", 1 << 19},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        struct tdisk d;
        struct vhd *vh;

        td_init(&d, v[i].type, 5 << 20, v[i].block, (uint8_t)(0x60 + i));
        d.creator = v[i].creator;
        td_write(&d, 0, 4096, 0x61);
        td_write(&d, (2 << 20) + 1536, 70000, 0x62);
        td_write(&d, (5 << 20) - 1024, 1024, 0x63);
        td_save(&d, "crafted.vhd");
        write_file(tpath("crafted.raw"), d.data, d.size);
        assert_int_equal(vhd_open(&vh, tpath("crafted.vhd"), NULL), 0);
        assert_int_equal(vhd_get_virtual_size(vh), qemu_virtual_size(tpath("crafted.vhd")));
        if (strcmp(v[i].creator, "vpc ") == 0)
            assert_true(vhd_get_virtual_size(vh) < d.size); /* CHS rounds down */
        else
            assert_int_equal(vhd_get_virtual_size(vh), d.size);
        check_content(vh, d.data, vhd_get_virtual_size(vh));
        vhd_close(vh);
        /* compare only the common part (CHS size may be smaller) */
        assert_int_equal(sh("truncate -s %llu %s && qemu-img compare -q -f raw -F vpc %s %s",
                            (unsigned long long)qemu_virtual_size(tpath("crafted.vhd")),
                            tpath("crafted.raw"), tpath("crafted.raw"), tpath("crafted.vhd")),
                         0);
        td_free(&d);
    }
}

static int run_corpus(const char *dir)
{
    char path[1024];
    struct dirent *e;
    int n = 0;
    DIR *d = opendir(dir);

    if (!d) {
        fprintf(stderr, "corpus '%s': %s\n", dir, strerror(errno));
        return 1;
    }
    while ((e = readdir(d))) {
        size_t len;
        uint8_t *buf;

        if (strncmp(e->d_name, "vhd-", 4) != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        buf = slurp(path, &len);
        vhd_fuzz_one(buf, len);
        free(buf);
        n++;
    }
    closedir(d);
    printf("corpus: %d vhd files OK\n", n);
    return n ? 0 : 1;
}

/* Write small seed images for the fuzzer into dir. */
static int gen_corpus(const char *dir)
{
    struct tdisk d;
    char path[1024];

    snprintf(tmpdir, sizeof(tmpdir), "%s", dir);
    td_init(&d, 2, 8192, 0, 0x01);
    td_write(&d, 512, 1024, 0x5a);
    snprintf(path, sizeof(path), "vhd-fixed.bin");
    td_save(&d, path);
    td_free(&d);
    td_init(&d, 3, 32768, 4096, 0x02);
    td_write(&d, 0, 512, 0x11);
    td_write(&d, 12288, 2048, 0x22);
    d.creator = "vpc ";
    td_save(&d, "vhd-dynamic.bin");
    td_free(&d);
    td_init(&d, 4, 32768, 4096, 0x03);
    memset(d.parent_uuid, 0x02, 16);
    d.loc[0] = (struct locator){0x57327275, ".\\vhd-dynamic.bin"};
    d.loc[1] = (struct locator){0x57326b75, "C:\\x\\vhd-dynamic.bin"};
    d.loc[2] = (struct locator){0x4d616358, "file://vhd-dynamic.bin"};
    td_write(&d, 4096 + 512, 512, 0x33);
    td_save(&d, "vhd-diff.bin");
    td_free(&d);
    return 0;
}

/*
 * bench FILE COUNT SIZE: like `qemu-img bench -f vpc -c COUNT -s SIZE -d 1`
 * (sequential reads, wrapping at the end). Prints MiB/s (not a test).
 */
static int run_bench(const char *path, long count, long size)
{
    struct timespec t0, t1;
    struct vhd *v;
    uint64_t off = 0;
    uint8_t *buf;
    double secs;

    if (vhd_open(&v, path, NULL) < 0)
        return 1;
    buf = malloc((size_t)size);
    if (!buf) {
        vhd_close(v);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < count; i++) {
        if (off + (uint64_t)size > vhd_get_virtual_size(v))
            off = 0;
        if (vhd_pread(v, buf, (size_t)size, off) < 0)
            break;
        off += (uint64_t)size;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%ld x %ld bytes in %.3f s: %.1f MiB/s\n", count, size, secs,
           (double)count * (double)size / secs / 1048576.0);
    free(buf);
    vhd_close(v);
    return 0;
}

struct aio_read {
    uint8_t *buf;
    const uint8_t *want;
    uint64_t off, len;
    bool busy;
    unsigned *bad, *done;
};

static void aio_read_done(void *opaque, int ret)
{
    struct aio_read *r = opaque;

    if (ret < 0 || memcmp(r->buf, r->want + r->off, r->len) != 0) {
        fprintf(stderr, "aio read [%llu, +%llu): %s\n", (unsigned long long)r->off,
                (unsigned long long)r->len, ret < 0 ? strerror(-ret) : "data differs");
        (*r->bad)++;
    }
    (*r->done)++;
    r->busy = false;
}

/* Random reads of img through the ring at queue depth 8, checked against
 * want; the count of synchronous I/O calls must not move. */
static void aio_reads(struct qtimg *img, const uint8_t *want, uint64_t size, unsigned n)
{
    struct aio_read rd[8];
    struct qtimg_aio *aio;
    unsigned bad = 0, done = 0, submitted = 0;
    uint64_t sync0;

    assert_int_equal(qtimg_aio_init(img, 8, &aio), 0);
    sync0 = img_sync_io_count(img);
    for (int i = 0; i < 8; i++) {
        rd[i] = (struct aio_read){.want = want, .bad = &bad, .done = &done};
        rd[i].buf = malloc(80000);
        assert_non_null(rd[i].buf);
    }
    while (done < n) {
        for (int i = 0; i < 8 && submitted < n; i++) {
            struct aio_read *r = &rd[i];
            if (r->busy)
                continue;
            r->len = 1 + (uint64_t)random() % 70000;
            r->off = (uint64_t)random() % (size - r->len);
            if (submitted % 5 == 0) /* sector and block aligned too */
                r->off &= ~(uint64_t)511;
            r->busy = true;
            assert_int_equal(
                qtimg_aio_submit(aio, QTIMG_AIO_READ, r->buf, r->len, r->off, aio_read_done, r), 0);
            submitted++;
        }
        assert_true(qtimg_aio_poll(aio, true) >= 0);
    }
    assert_int_equal(img_sync_io_count(img), sync0);
    assert_int_equal(bad, 0);
    qtimg_aio_fini(aio);
    for (int i = 0; i < 8; i++)
        free(rd[i].buf);
}

/* base (dynamic, sparse) <- mid (diff) <- top (diff) <- qcow2 overlay: reads
 * on the ring (sector bitmaps read on the ring, cached) match the layers. */
static void test_aio_chain(void **state)
{
    struct tdisk base, mid, top;
    uint64_t size = 6 << 20;
    uint32_t bs = 512 << 10;
    uint8_t *want, *ov;
    struct qtimg *img;
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_QCOW2,
                                   .cluster_size = 65536,
                                   .compat = 3,
                                   .backing_file = "aio-top.vhd",
                                   .backing_fmt = "vpc"};
    struct qtimg_open_opts ro = {.flags = QTIMG_O_RDONLY, .fmt = QTIMG_FMT_VHD};

    (void)state;
    srandom(42);
    td_init(&base, 3, size, bs, 0xc0);
    for (int i = 0; i < 6; i++)
        td_write(&base, (uint64_t)(random() % (size / 512 - 300)) * 512,
                 (uint64_t)(1 + random() % 300) * 512, (uint8_t)(0x40 + i));
    td_save(&base, "aio-base.vhd");
    td_init(&mid, 4, size, bs, 0xc1);
    memcpy(mid.parent_uuid, base.uuid, 16);
    mid.loc[0] = (struct locator){0x57327275, ".\\aio-base.vhd"};
    for (int i = 0; i < 30; i++)
        td_write(&mid, (uint64_t)(random() % (size / 512 - 40)) * 512,
                 (uint64_t)(1 + random() % 40) * 512, (uint8_t)(0x60 + i));
    td_save(&mid, "aio-mid.vhd");
    td_init(&top, 4, size, bs, 0xc2);
    memcpy(top.parent_uuid, mid.uuid, 16);
    top.loc[0] = (struct locator){0x57327275, ".\\aio-mid.vhd"};
    for (int i = 0; i < 30; i++)
        td_write(&top, (uint64_t)(random() % (size / 512 - 40)) * 512,
                 (uint64_t)(1 + random() % 40) * 512, (uint8_t)(0x90 + i));
    td_save(&top, "aio-top.vhd");

    want = malloc(size);
    assert_non_null(want);
    memcpy(want, base.data, size);
    for (uint64_t s = 0; s < size / 512; s++) {
        if (mid.present[s])
            memcpy(want + s * 512, mid.data + s * 512, 512);
        if (top.present[s])
            memcpy(want + s * 512, top.data + s * 512, 512);
    }

    /* the differencing disk itself */
    assert_int_equal(qtimg_open(tpath("aio-top.vhd"), &ro, &img), 0);
    aio_reads(img, want, size, 400);
    assert_int_equal(qtimg_close(img), 0);

    /* under a qcow2 overlay with data of its own */
    assert_int_equal(qtimg_create(tpath("aio-ov.qcow2"), &co), 0);
    assert_int_equal(qtimg_open(tpath("aio-ov.qcow2"), &(struct qtimg_open_opts){0}, &img), 0);
    ov = malloc(100000);
    assert_non_null(ov);
    memset(ov, 0xee, 100000);
    assert_int_equal(qtimg_pwrite(img, ov, 100000, 1000000), 0);
    memcpy(want + 1000000, ov, 100000);
    assert_int_equal(qtimg_flush(img), 0);
    aio_reads(img, want, size, 400);
    assert_int_equal(qtimg_close(img), 0);

    free(ov);
    free(want);
    td_free(&base);
    td_free(&mid);
    td_free(&top);
}

static int setup_tmp(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_vhd.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest unit[] = {
        cmocka_unit_test(test_fixed),
        cmocka_unit_test(test_dynamic),
        cmocka_unit_test(test_differencing_chain),
        cmocka_unit_test(test_smaller_parent),
        cmocka_unit_test(test_chain_loop_and_depth),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_mutation_fuzz),
        cmocka_unit_test(test_aio_chain),
    };
    const struct CMUnitTest interop[] = {
        cmocka_unit_test(test_qemu_vpc),
        cmocka_unit_test(test_crafted_vs_qemu),
    };
    int ret;

    log_init("test_vhd", LOG_LVL_ERROR);
    if (argc == 3 && strcmp(argv[1], "corpus") == 0)
        return run_corpus(argv[2]);
    if (argc == 3 && strcmp(argv[1], "gen-corpus") == 0)
        return gen_corpus(argv[2]);
    if (argc == 5 && strcmp(argv[1], "bench") == 0)
        return run_bench(argv[2], atol(argv[3]), atol(argv[4]));
    if (argc >= 2 && strcmp(argv[1], "interop") == 0 &&
        sh("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0) {
        fprintf(stderr, "qemu-img/qemu-io not installed (Debian qemu-utils): skipping\n");
        return 77;
    }
    if (setup_tmp() < 0)
        return 1;
    if (argc >= 2 && strcmp(argv[1], "interop") == 0)
        ret = cmocka_run_group_tests_name("vhd-interop", interop, NULL, NULL);
    else
        ret = cmocka_run_group_tests_name("vhd", unit, NULL, NULL);
    if (!getenv("QT_KEEP_TMP"))
        sh("rm -rf %s", tmpdir);
    return ret;
}
