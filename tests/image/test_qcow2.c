/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libqtimg unit tests: refcount packing, L2 entry decoding, header validation
 * with hostile inputs, and read/write/snapshot/resize/discard round trips on
 * temporary images checked by our own qtimg_check.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "image/qcow2.h"
#include "image/qtimg.h"

static char tmpdir[] = "/tmp/qtimg-unit-XXXXXX";

static void path_of(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

static void test_refcount_packing(void **state)
{
    uint8_t rb[64];

    for (uint32_t order = 0; order <= 6; order++) {
        uint64_t max = order == 6 ? UINT64_MAX : (1ull << (1u << order)) - 1;
        uint64_t n = sizeof(rb) * 8 >> order;
        memset(rb, 0, sizeof(rb));
        for (uint64_t i = 0; i < n; i++)
            qcow2_rb_set(rb, order, i, (i * 7 + 3) & max);
        for (uint64_t i = 0; i < n; i++)
            assert_int_equal(qcow2_rb_get(rb, order, i), (i * 7 + 3) & max);
        /* neighbours untouched by a write */
        qcow2_rb_set(rb, order, 1, max);
        assert_int_equal(qcow2_rb_get(rb, order, 0), 3 & max);
        assert_int_equal(qcow2_rb_get(rb, order, 2), 17 & max);
    }
    /* bit layout: LSB first within a byte for sub-byte widths (as QEMU) */
    memset(rb, 0, sizeof(rb));
    qcow2_rb_set(rb, 0, 1, 1);
    assert_int_equal(rb[0], 0x02);
    memset(rb, 0, sizeof(rb));
    qcow2_rb_set(rb, 2, 1, 0xa);
    assert_int_equal(rb[0], 0xa0);
    memset(rb, 0, sizeof(rb));
    qcow2_rb_set(rb, 4, 1, 0x1234);
    assert_int_equal(rb[2], 0x12);
    assert_int_equal(rb[3], 0x34);
}

static void fake_state(struct qcow2 *s, uint32_t cbits, bool ext)
{
    memset(s, 0, sizeof(*s));
    s->version = 3;
    s->cluster_bits = cbits;
    s->cluster_size = 1ull << cbits;
    s->extended_l2 = ext;
    s->l2_esize = ext ? 16 : 8;
    s->nb_sc = ext ? 32 : 1;
    s->sc_all = ext ? 0xffffffffu : 1;
}

static void put64(uint8_t *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

static void test_l2_decode(void **state)
{
    struct qcow2 s;
    struct qcow2_l2e e, e2;
    const char *why;
    uint8_t p[16], q[16];

    fake_state(&s, 16, false);
    put64(p, 0x50000ull | QCOW2_OFLAG_COPIED);
    assert_int_equal(qcow2_l2e_decode(&s, p, &e, &why), 0);
    assert_int_equal(e.type, L2E_NORMAL);
    assert_true(e.copied);
    assert_int_equal(e.host, 0x50000);
    assert_int_equal(e.alloc, 1);
    qcow2_l2e_encode(&s, &e, q);
    assert_memory_equal(p, q, 8);

    put64(p, 1); /* zero cluster without allocation */
    assert_int_equal(qcow2_l2e_decode(&s, p, &e, &why), 0);
    assert_int_equal(e.type, L2E_UNALLOC);
    assert_int_equal(e.zero, 1);

    put64(p, 0x50200ull); /* misaligned for 64k clusters */
    assert_int_equal(qcow2_l2e_decode(&s, p, &e, &why), -EINVAL);
    assert_non_null(why);

    put64(p, 0x50000ull | (1ull << 5)); /* reserved bit */
    assert_int_equal(qcow2_l2e_decode(&s, p, &e, &why), -EINVAL);

    put64(p, QCOW2_OFLAG_COPIED); /* copied without an offset */
    assert_int_equal(qcow2_l2e_decode(&s, p, &e, &why), -EINVAL);

    /* compressed: x = 62 - (16 - 8) = 54; 3 additional sectors */
    put64(p, QCOW2_OFLAG_COMPRESSED | (3ull << 54) | 0x12345ull);
    assert_int_equal(qcow2_l2e_decode(&s, p, &e, &why), 0);
    assert_int_equal(e.type, L2E_COMPRESSED);
    assert_int_equal(e.host, 0x12345);
    assert_int_equal(e.csize, 4 * 512 - (0x12345 & 511));
    qcow2_l2e_encode(&s, &e, q);
    assert_int_equal(qcow2_l2e_decode(&s, q, &e2, &why), 0);
    assert_int_equal(e2.host, e.host);
    assert_true(e2.csize >= e.csize);

    /* extended L2 */
    fake_state(&s, 16, true);
    put64(p, 0x70000ull | QCOW2_OFLAG_COPIED);
    put64(p + 8, 0x0000000f000000f0ull);
    assert_int_equal(qcow2_l2e_decode(&s, p, &e, &why), 0);
    assert_int_equal(e.alloc, 0xf0);
    assert_int_equal(e.zero, 0x0f);
    qcow2_l2e_encode(&s, &e, q);
    assert_memory_equal(p, q, 16);
    put64(p + 8, 0x000000f0000000f0ull); /* both allocated and zero */
    assert_int_equal(qcow2_l2e_decode(&s, p, &e, &why), -EINVAL);
    put64(p, 0);
    put64(p + 8, 1); /* allocated subcluster without a host cluster */
    assert_int_equal(qcow2_l2e_decode(&s, p, &e, &why), -EINVAL);
    put64(p, 0x70000ull | 1); /* zero flag not allowed with extended L2 */
    put64(p + 8, 0);
    assert_int_equal(qcow2_l2e_decode(&s, p, &e, &why), -EINVAL);
}

static void make_header(uint8_t *h, size_t len)
{
    memset(h, 0, len);
    put64(h, 0); /* magic + version via 32-bit writes below */
    uint32_t v = htobe32(QCOW2_MAGIC);
    memcpy(h, &v, 4);
    v = htobe32(3);
    memcpy(h + 4, &v, 4);
    v = htobe32(16);
    memcpy(h + 20, &v, 4);
    put64(h + 24, 1 << 30);
    v = htobe32(1);
    memcpy(h + 36, &v, 4); /* l1_size */
    put64(h + 40, 3 << 16);
    put64(h + 48, 1 << 16);
    memcpy(h + 56, &v, 4); /* refcount table clusters */
    v = htobe32(4);
    memcpy(h + 96, &v, 4);
    v = htobe32(112);
    memcpy(h + 100, &v, 4);
}

static void test_header_hostile(void **state)
{
    uint8_t h[512];
    const char *why = NULL;
    uint64_t fsz = 4 << 16;
    uint32_t v;

    make_header(h, sizeof(h));
    assert_int_equal(qcow2_header_check(h, sizeof(h), fsz, &why), 0);

    assert_int_equal(qcow2_header_check(h, 40, fsz, &why), -EINVAL);
    h[0] ^= 1;
    assert_int_equal(qcow2_header_check(h, sizeof(h), fsz, &why), -EINVAL);
    make_header(h, sizeof(h));
    v = htobe32(40);
    memcpy(h + 20, &v, 4); /* cluster bits */
    assert_int_equal(qcow2_header_check(h, sizeof(h), fsz, &why), -EINVAL);
    make_header(h, sizeof(h));
    v = htobe32(7);
    memcpy(h + 96, &v, 4); /* refcount order */
    assert_int_equal(qcow2_header_check(h, sizeof(h), fsz, &why), -EINVAL);
    make_header(h, sizeof(h));
    put64(h + 48, 12345); /* unaligned refcount table */
    assert_int_equal(qcow2_header_check(h, sizeof(h), fsz, &why), -EINVAL);
    make_header(h, sizeof(h));
    put64(h + 40, 1ull << 40); /* L1 past EOF */
    assert_int_equal(qcow2_header_check(h, sizeof(h), fsz, &why), -EINVAL);
    make_header(h, sizeof(h));
    v = htobe32(0x7fffffff);
    memcpy(h + 36, &v, 4); /* huge L1 */
    assert_true(qcow2_header_check(h, sizeof(h), fsz, &why) < 0);
    make_header(h, sizeof(h));
    v = htobe32(100000);
    memcpy(h + 60, &v, 4); /* too many snapshots */
    put64(h + 64, 1 << 16);
    assert_int_equal(qcow2_header_check(h, sizeof(h), fsz, &why), -EINVAL);
    make_header(h, sizeof(h));
    put64(h + 8, 60000); /* backing name outside the header cluster */
    v = htobe32(10000);
    memcpy(h + 16, &v, 4);
    assert_int_equal(qcow2_header_check(h, sizeof(h), fsz, &why), -EINVAL);
    make_header(h, sizeof(h));
    v = htobe32(99);
    memcpy(h + 100, &v, 4); /* header length */
    assert_int_equal(qcow2_header_check(h, sizeof(h), fsz, &why), -EINVAL);
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)((i * 31 + seed * 17) ^ (i >> 9));
}

static void expect_clean(struct qtimg *img)
{
    struct qtimg_check_result r;
    assert_int_equal(qtimg_check(img, 0, &r), 0);
    assert_int_equal(r.corruptions, 0);
    assert_int_equal(r.leaks, 0);
}

/* Writes, reads back, checks for each refcount width and both L2 formats. */
static void test_roundtrip_variants(void **state)
{
    static const uint32_t bits[] = {1, 2, 4, 8, 16, 32, 64};
    uint8_t *w = malloc(300000), *r = malloc(300000);
    char p[256];

    assert_non_null(w);
    assert_non_null(r);
    for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++) {
        for (int ext = 0; ext < 2; ext++) {
            struct qtimg_create_opts co = {.fmt = QTIMG_FMT_QCOW2,
                                           .size = 64 << 20,
                                           .cluster_size = ext ? 16384 : 512,
                                           .refcount_bits = bits[i],
                                           .extended_l2 = ext};
            struct qtimg *img;
            path_of(p, sizeof(p), "rt.qcow2");
            assert_int_equal(qtimg_create(p, &co), 0);
            assert_int_equal(qtimg_open(p, NULL, &img), 0);
            fill(w, 300000, (unsigned)i);
            assert_int_equal(qtimg_pwrite(img, w, 300000, 12345 * 512ull), 0);
            assert_int_equal(qtimg_pwrite(img, w, 1000, (40ull << 20) + 7), 0);
            assert_int_equal(qtimg_flush(img), 0);
            assert_int_equal(qtimg_pread(img, r, 300000, 12345 * 512ull), 0);
            assert_memory_equal(w, r, 300000);
            assert_int_equal(qtimg_pread(img, r, 1000, (40ull << 20) + 7), 0);
            assert_memory_equal(w, r, 1000);
            assert_int_equal(qtimg_pread(img, r, 7, 40ull << 20), 0);
            for (int k = 0; k < 7; k++)
                assert_int_equal(r[k], 0);
            expect_clean(img);
            assert_int_equal(qtimg_close(img), 0);
            /* reopen: same content */
            assert_int_equal(qtimg_open(p, NULL, &img), 0);
            assert_int_equal(qtimg_pread(img, r, 300000, 12345 * 512ull), 0);
            assert_memory_equal(w, r, 300000);
            assert_int_equal(qtimg_close(img), 0);
            unlink(p);
        }
    }
    free(w);
    free(r);
}

static void test_backing_cow_discard(void **state)
{
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_QCOW2, .size = 8 << 20};
    uint8_t *w = malloc(65536), *r = malloc(65536);
    struct qtimg *base, *top;
    struct qtimg_map m;
    char bp[256], tp[256];

    path_of(bp, sizeof(bp), "base.qcow2");
    path_of(tp, sizeof(tp), "top.qcow2");
    assert_int_equal(qtimg_create(bp, &co), 0);
    assert_int_equal(qtimg_open(bp, NULL, &base), 0);
    memset(w, 0x11, 65536);
    assert_int_equal(qtimg_pwrite(base, w, 65536, 0), 0);
    assert_int_equal(qtimg_close(base), 0);
    co.backing_file = "base.qcow2";
    co.size = 0;
    assert_int_equal(qtimg_create(tp, &co), 0);
    assert_int_equal(qtimg_open(tp, NULL, &top), 0);
    assert_int_equal(qtimg_size(top), 8 << 20);
    memset(w, 0x22, 512);
    assert_int_equal(qtimg_pwrite(top, w, 512, 1024), 0); /* partial: COW the rest */
    assert_int_equal(qtimg_pread(top, r, 4096, 0), 0);
    assert_int_equal(r[0], 0x11);
    assert_int_equal(r[1024], 0x22);
    assert_int_equal(r[1536], 0x11);
    /* discard returns the cluster to the backing file */
    assert_int_equal(qtimg_discard(top, 0, 65536), 0);
    assert_int_equal(qtimg_map_range(top, 0, 65536, &m), 0);
    assert_int_equal(m.kind, QTIMG_MAP_UNALLOC);
    assert_int_equal(qtimg_pread(top, r, 4096, 0), 0);
    assert_int_equal(r[1024], 0x11);
    /* write_zeroes hides the backing file */
    assert_int_equal(qtimg_write_zeroes(top, 0, 65536), 0);
    assert_int_equal(qtimg_pread(top, r, 4096, 0), 0);
    assert_int_equal(r[1024], 0);
    assert_int_equal(qtimg_flush(top), 0);
    expect_clean(top);
    assert_int_equal(qtimg_close(top), 0);
    /* a backing chain that loops is refused */
    assert_int_equal(qtimg_open(tp, NULL, &top), 0);
    assert_int_equal(qtimg_set_backing(top, "top.qcow2", "qcow2"), 0);
    assert_int_equal(qtimg_close(top), 0);
    assert_int_equal(qtimg_open(tp, NULL, &top), -ELOOP);
    unlink(bp);
    unlink(tp);
    free(w);
    free(r);
}

static void test_snapshots_resize(void **state)
{
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_QCOW2, .size = 4 << 20};
    uint8_t *w = malloc(65536), *r = malloc(65536);
    struct qtimg_snapshot *sn;
    struct qtimg *img;
    int n;
    char p[256];

    path_of(p, sizeof(p), "snap.qcow2");
    assert_int_equal(qtimg_create(p, &co), 0);
    assert_int_equal(qtimg_open(p, NULL, &img), 0);
    memset(w, 0xaa, 65536);
    assert_int_equal(qtimg_pwrite(img, w, 65536, 0), 0);
    assert_int_equal(qtimg_snapshot_create(img, "s1"), 0);
    assert_int_equal(qtimg_snapshot_create(img, "s1"), -EEXIST);
    expect_clean(img);
    memset(w, 0xbb, 4096);
    assert_int_equal(qtimg_pwrite(img, w, 4096, 4096), 0);
    assert_int_equal(qtimg_flush(img), 0);
    expect_clean(img);
    assert_int_equal(qtimg_pread(img, r, 8192, 0), 0);
    assert_int_equal(r[0], 0xaa);
    assert_int_equal(r[4096], 0xbb);
    assert_int_equal(qtimg_snapshot_list(img, &sn, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(sn[0].name, "s1");
    assert_int_equal(sn[0].disk_size, 4 << 20);
    free(sn);
    /* online growth */
    assert_int_equal(qtimg_resize(img, 3ull << 30, 0), 0);
    assert_int_equal(qtimg_size(img), 3ull << 30);
    assert_int_equal(qtimg_pwrite(img, w, 4096, (3ull << 30) - 4096), 0);
    assert_int_equal(qtimg_pread(img, r, 4096, (3ull << 30) - 4096), 0);
    assert_int_equal(r[0], 0xbb);
    assert_int_equal(qtimg_snapshot_apply(img, "s1"), 0);
    assert_int_equal(qtimg_size(img), 4 << 20);
    assert_int_equal(qtimg_pread(img, r, 8192, 0), 0);
    assert_int_equal(r[4096], 0xaa);
    expect_clean(img);
    assert_int_equal(qtimg_snapshot_delete(img, "s1"), 0);
    assert_int_equal(qtimg_snapshot_delete(img, "s1"), -ENOENT);
    expect_clean(img);
    /* shrink: refused without the flag and over allocated data */
    assert_int_equal(qtimg_resize(img, 1 << 20, 0), -EINVAL);
    assert_int_equal(qtimg_resize(img, 32768, QTIMG_RESIZE_SHRINK), -EBUSY);
    assert_int_equal(qtimg_resize(img, 2 << 20, QTIMG_RESIZE_SHRINK), 0);
    expect_clean(img);
    assert_int_equal(qtimg_close(img), 0);
    unlink(p);
    free(w);
    free(r);
}

static void test_compressed(void **state)
{
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_QCOW2, .size = 1 << 20};
    uint8_t *w = malloc(65536), *r = malloc(65536);
    struct qtimg *img;
    struct qtimg_map m;
    char p[256];

    if (!w || !r) /* abort, not assert: gcc -O3 sees that they are not NULL below */
        abort();
    path_of(p, sizeof(p), "comp.qcow2");
    assert_int_equal(qtimg_create(p, &co), 0);
    assert_int_equal(qtimg_open(p, NULL, &img), 0);
    for (int c = 0; c < 4; c++) {
        memset(w, 0x30 + c, 65536);
        memcpy(w + 100, "qingtian", 8);
        assert_int_equal(qtimg_pwrite_compressed(img, w, 65536, (uint64_t)c << 16), 0);
    }
    assert_int_equal(qtimg_map_range(img, 0, 65536, &m), 0);
    assert_int_equal(m.kind, QTIMG_MAP_COMPRESSED);
    assert_int_equal(qtimg_flush(img), 0);
    expect_clean(img);
    assert_int_equal(qtimg_pread(img, r, 65536, 2 << 16), 0);
    assert_int_equal(r[0], 0x32);
    assert_memory_equal(r + 100, "qingtian", 8);
    /* overwrite part of a compressed cluster: decompress + COW */
    memset(w, 0x77, 512);
    assert_int_equal(qtimg_pwrite(img, w, 512, (1 << 16) + 512), 0);
    assert_int_equal(qtimg_pread(img, r, 65536, 1 << 16), 0);
    assert_int_equal(r[0], 0x31);
    assert_int_equal(r[512], 0x77);
    assert_int_equal(r[1024], 0x31);
    assert_int_equal(qtimg_flush(img), 0);
    expect_clean(img);
    assert_int_equal(qtimg_close(img), 0);
    unlink(p);
    free(w);
    free(r);
}

static void aio_count_cb(void *opaque, int ret)
{
    int *c = opaque;
    assert_int_equal(ret, 0);
    (*c)++;
}

/* Queue depth 16 of mixed writes (new clusters, same cluster twice while its
 * allocation is in flight, partial clusters over a backing file) and reads. */
static void test_aio(void **state)
{
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_QCOW2, .size = 16 << 20};
    uint8_t *bufs[32], *r = malloc(1 << 20);
    struct qtimg *base, *img;
    struct qtimg_aio *aio;
    int done = 0, sub = 0;
    char bp[256], p[256];

    path_of(bp, sizeof(bp), "aiobase.qcow2");
    path_of(p, sizeof(p), "aio.qcow2");
    assert_int_equal(qtimg_create(bp, &co), 0);
    assert_int_equal(qtimg_open(bp, NULL, &base), 0);
    memset(r, 0x99, 1 << 20);
    assert_int_equal(qtimg_pwrite(base, r, 1 << 20, 8 << 20), 0);
    assert_int_equal(qtimg_close(base), 0);
    co.backing_file = "aiobase.qcow2";
    assert_int_equal(qtimg_create(p, &co), 0);
    if (qtimg_open(p, &(struct qtimg_open_opts){.flags = QTIMG_O_DIRECT}, &img) < 0)
        assert_int_equal(qtimg_open(p, NULL, &img), 0); /* no O_DIRECT on this fs */
    assert_int_equal(qtimg_aio_init(img, 16, &aio), 0);
    for (int i = 0; i < 32; i++) {
        assert_int_equal(posix_memalign((void **)&bufs[i], 4096, 65536), 0);
        memset(bufs[i], 0x10 + i, 65536);
    }
    /* i < 16: 4k writes, two per cluster (second hits an in-flight allocation);
     * i >= 16: 4k writes into the backing file's data range (copy-on-write) */
    for (int i = 0; i < 32; i++) {
        uint64_t off = i < 16 ? (uint64_t)(i / 2) * 65536 + (uint64_t)(i % 2) * 8192
                              : (8ull << 20) + (uint64_t)(i - 16) * 65536 + 4096;
        while (qtimg_aio_submit(aio, QTIMG_AIO_WRITE, bufs[i], 4096, off, aio_count_cb, &done) ==
               -EAGAIN)
            assert_true(qtimg_aio_poll(aio, true) >= 0);
        sub++;
    }
    while (qtimg_aio_submit(aio, QTIMG_AIO_FLUSH, NULL, 0, 0, aio_count_cb, &done) == -EAGAIN)
        assert_true(qtimg_aio_poll(aio, true) >= 0);
    sub++;
    while (done < sub)
        assert_true(qtimg_aio_poll(aio, true) >= 0);
    /* read back through the ring */
    done = sub = 0;
    assert_int_equal(qtimg_aio_submit(aio, QTIMG_AIO_READ, r, 1 << 20, 0, aio_count_cb, &done), 0);
    sub++;
    while (done < sub)
        assert_true(qtimg_aio_poll(aio, true) >= 0);
    for (int i = 0; i < 16; i++) {
        uint64_t off = (uint64_t)(i / 2) * 65536 + (uint64_t)(i % 2) * 8192;
        assert_int_equal(r[off], 0x10 + i);
        assert_int_equal(r[off + 4095], 0x10 + i);
        assert_int_equal(r[off + 4096], 0);
    }
    assert_int_equal(
        qtimg_aio_submit(aio, QTIMG_AIO_READ, r, 1 << 20, 8 << 20, aio_count_cb, &done), 0);
    sub++;
    while (done < sub)
        assert_true(qtimg_aio_poll(aio, true) >= 0);
    for (int i = 16; i < 32; i++) {
        uint64_t off = (uint64_t)(i - 16) * 65536;
        assert_int_equal(r[off], 0x99);
        assert_int_equal(r[off + 4096], 0x10 + i);
        assert_int_equal(r[off + 8192], 0x99);
    }
    /* online growth with writes in flight, then I/O past the old end */
    done = sub = 0;
    for (int i = 0; i < 8; i++) {
        assert_int_equal(qtimg_aio_submit(aio, QTIMG_AIO_WRITE, bufs[i], 4096,
                                          (12ull << 20) + (uint64_t)i * 65536, aio_count_cb, &done),
                         0);
        sub++;
    }
    assert_int_equal(qtimg_resize(img, 64 << 20, 0), 0);
    assert_int_equal(
        qtimg_aio_submit(aio, QTIMG_AIO_WRITE, bufs[20], 4096, 40 << 20, aio_count_cb, &done), 0);
    sub++;
    while (done < sub)
        assert_true(qtimg_aio_poll(aio, true) >= 0);
    assert_int_equal(qtimg_aio_submit(aio, QTIMG_AIO_READ, r, 4096, 40 << 20, aio_count_cb, &done),
                     0);
    sub++;
    while (done < sub)
        assert_true(qtimg_aio_poll(aio, true) >= 0);
    assert_int_equal(r[0], 0x10 + 20);
    assert_int_equal(qtimg_pread(img, r, 4096, (12ull << 20) + 7 * 65536), 0);
    assert_int_equal(r[0], 0x10 + 7);
    qtimg_aio_fini(aio);
    expect_clean(img);
    assert_int_equal(qtimg_close(img), 0);
    for (int i = 0; i < 32; i++)
        free(bufs[i]);
    free(r);
    unlink(p);
    unlink(bp);
}

static void test_luks_qcow2(void **state)
{
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_QCOW2,
                                   .size = 4 << 20,
                                   .encrypt_format = "luks",
                                   .key_secret = "pass",
                                   .encrypt_iter_time_ms = 10};
    uint8_t *w = malloc(65536), *r = malloc(65536);
    struct qtimg *img;
    int fd;
    char p[256];

    path_of(p, sizeof(p), "luks.qcow2");
    assert_int_equal(qtimg_create(p, &co), 0);
    assert_int_equal(qtimg_open(p, &(struct qtimg_open_opts){.key_secret = "pass"}, &img), 0);
    memset(w, 0x3c, 65536);
    assert_int_equal(qtimg_pwrite(img, w, 4096, 8192), 0);
    assert_int_equal(qtimg_pwrite(img, w, 100, 0), -EINVAL); /* sector alignment */
    assert_int_equal(qtimg_close(img), 0);
    /* the plaintext is not in the file */
    fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    for (off_t off = 0;; off += 65536) {
        ssize_t n = pread(fd, r, 65536, off);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i + 64 <= n; i += 64)
            assert_false(memcmp(r + i, w, 64) == 0);
    }
    close(fd);
    assert_int_equal(qtimg_open(p, NULL, &img), 0); /* metadata only */
    assert_int_equal(qtimg_pread(img, r, 4096, 8192), -EACCES);
    expect_clean(img);
    assert_int_equal(qtimg_close(img), 0);
    assert_int_equal(qtimg_open(p, &(struct qtimg_open_opts){.key_secret = "wrong"}, &img),
                     -EACCES);
    assert_int_equal(qtimg_open(p, &(struct qtimg_open_opts){.key_secret = "pass"}, &img), 0);
    assert_int_equal(qtimg_pread(img, r, 65536, 0), 0);
    assert_memory_equal(r + 8192, w, 4096);
    assert_int_equal(r[0], 0);
    assert_int_equal(r[12288], 0);
    {
        /* the io_uring path: in-place encrypted write, allocating write, reads */
        struct qtimg_aio *aio;
        uint8_t *a = NULL, *b = NULL;
        int done = 0;
        assert_int_equal(posix_memalign((void **)&a, 4096, 65536), 0);
        assert_int_equal(posix_memalign((void **)&b, 4096, 65536), 0);
        memset(a, 0x5e, 65536);
        assert_int_equal(qtimg_aio_init(img, 4, &aio), 0);
        assert_int_equal(qtimg_aio_submit(aio, QTIMG_AIO_WRITE, a, 4096, 0, aio_count_cb, &done),
                         0);
        assert_int_equal(
            qtimg_aio_submit(aio, QTIMG_AIO_WRITE, a, 8192, 1 << 20, aio_count_cb, &done), 0);
        while (done < 2)
            assert_true(qtimg_aio_poll(aio, true) >= 0);
        assert_int_equal(qtimg_aio_submit(aio, QTIMG_AIO_READ, b, 65536, 0, aio_count_cb, &done),
                         0);
        while (done < 3)
            assert_true(qtimg_aio_poll(aio, true) >= 0);
        assert_memory_equal(b, a, 4096);
        assert_memory_equal(b + 8192, w, 4096);
        assert_int_equal(b[4096], 0);
        assert_int_equal(
            qtimg_aio_submit(aio, QTIMG_AIO_READ, b, 8192, 1 << 20, aio_count_cb, &done), 0);
        while (done < 4)
            assert_true(qtimg_aio_poll(aio, true) >= 0);
        assert_memory_equal(b, a, 8192);
        qtimg_aio_fini(aio);
        free(a);
        free(b);
    }
    assert_int_equal(qtimg_close(img), 0);
    unlink(p);
    free(w);
    free(r);
}

/* The corrupt bit blocks writers until check -r all repairs the image. */
static void test_corrupt_bit(void **state)
{
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_QCOW2, .size = 1 << 20};
    struct qtimg_check_result r;
    struct qtimg *img;
    uint64_t incompat;
    uint8_t buf[4096];
    int fd;
    char p[256];

    path_of(p, sizeof(p), "corrupt.qcow2");
    assert_int_equal(qtimg_create(p, &co), 0);
    fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    incompat = htobe64(QCOW2_INCOMPAT_CORRUPT);
    assert_int_equal(pwrite(fd, &incompat, 8, 72), 8);
    close(fd);
    assert_int_equal(qtimg_open(p, NULL, &img), -EIO);
    assert_int_equal(qtimg_open(p, &(struct qtimg_open_opts){.flags = QTIMG_O_RDONLY}, &img), 0);
    assert_int_equal(qtimg_pread(img, buf, sizeof(buf), 0), 0);
    assert_int_equal(qtimg_close(img), 0);
    assert_int_equal(qtimg_open(p, &(struct qtimg_open_opts){.flags = QTIMG_O_CHECK}, &img), 0);
    assert_int_equal(qtimg_check(img, QTIMG_CHECK_FIX_LEAKS | QTIMG_CHECK_FIX_ERRORS, &r), 0);
    assert_int_equal(qtimg_close(img), 0);
    assert_int_equal(qtimg_open(p, NULL, &img), 0);
    memset(buf, 1, sizeof(buf));
    assert_int_equal(qtimg_pwrite(img, buf, sizeof(buf), 0), 0);
    assert_int_equal(qtimg_close(img), 0);
    unlink(p);
}

/* Growth that needs a bigger L1 table (512-byte clusters: 2 MiB per L1 cluster). */
static void test_resize_l1_growth(void **state)
{
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_QCOW2, .size = 1 << 20, .cluster_size = 512};
    uint8_t w[4096], r[4096];
    struct qtimg *img;
    char p[256];

    path_of(p, sizeof(p), "grow.qcow2");
    assert_int_equal(qtimg_create(p, &co), 0);
    assert_int_equal(qtimg_open(p, NULL, &img), 0);
    memset(w, 0x61, sizeof(w));
    assert_int_equal(qtimg_pwrite(img, w, sizeof(w), 4096), 0);
    assert_int_equal(qtimg_resize(img, 64 << 20, 0), 0);
    memset(w, 0x62, sizeof(w));
    assert_int_equal(qtimg_pwrite(img, w, sizeof(w), 60 << 20), 0);
    assert_int_equal(qtimg_resize(img, 200 << 20, 0), 0);
    assert_int_equal(qtimg_pwrite(img, w, sizeof(w), 190 << 20), 0);
    expect_clean(img);
    assert_int_equal(qtimg_close(img), 0);
    assert_int_equal(qtimg_open(p, NULL, &img), 0);
    assert_int_equal(qtimg_size(img), 200 << 20);
    assert_int_equal(qtimg_pread(img, r, sizeof(r), 4096), 0);
    assert_int_equal(r[0], 0x61);
    assert_int_equal(qtimg_pread(img, r, sizeof(r), 60 << 20), 0);
    assert_int_equal(r[4095], 0x62);
    assert_int_equal(qtimg_pread(img, r, sizeof(r), 190 << 20), 0);
    assert_int_equal(r[0], 0x62);
    assert_int_equal(qtimg_close(img), 0);
    unlink(p);
}

/* io_uring path over a raw backing file: reads and a copy-on-write write. */
static void test_aio_raw_backing(void **state)
{
    struct qtimg_create_opts co = {
        .fmt = QTIMG_FMT_QCOW2, .backing_file = "rawbase.img", .backing_fmt = "raw"};
    uint8_t *buf = NULL, *r = NULL;
    struct qtimg_aio *aio;
    struct qtimg *img;
    int fd, done = 0;
    char bp[256], p[256];

    path_of(bp, sizeof(bp), "rawbase.img");
    path_of(p, sizeof(p), "rawtop.qcow2");
    assert_int_equal(posix_memalign((void **)&buf, 4096, 1 << 20), 0);
    assert_int_equal(posix_memalign((void **)&r, 4096, 1 << 20), 0);
    memset(buf, 0x77, 1 << 20);
    fd = open(bp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, 1 << 20), 1 << 20);
    close(fd);
    assert_int_equal(qtimg_create(p, &co), 0);
    assert_int_equal(qtimg_open(p, NULL, &img), 0);
    assert_int_equal(qtimg_aio_init(img, 4, &aio), 0);
    memset(buf, 0x12, 4096);
    assert_int_equal(qtimg_aio_submit(aio, QTIMG_AIO_WRITE, buf, 4096, 8192, aio_count_cb, &done),
                     0);
    /* event-loop style: submit without waiting, sleep on the ring fd */
    assert_true(qtimg_aio_poll(aio, false) >= 0);
    while (done < 1) {
        struct pollfd pfd = {.fd = qtimg_aio_fd(aio), .events = POLLIN};
        assert_true(poll(&pfd, 1, 5000) >= 0);
        assert_true(qtimg_aio_poll(aio, false) >= 0);
    }
    assert_int_equal(qtimg_aio_submit(aio, QTIMG_AIO_READ, r, 1 << 20, 0, aio_count_cb, &done), 0);
    while (done < 2)
        assert_true(qtimg_aio_poll(aio, true) >= 0);
    assert_int_equal(r[0], 0x77);
    assert_int_equal(r[8192], 0x12);
    assert_int_equal(r[12288], 0x77);
    assert_int_equal(r[(1 << 20) - 1], 0x77);
    qtimg_aio_fini(aio);
    expect_clean(img);
    assert_int_equal(qtimg_close(img), 0);
    unlink(p);
    unlink(bp);
    free(buf);
    free(r);
}

static int teardown(void **state)
{
    rmdir(tmpdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refcount_packing),    cmocka_unit_test(test_l2_decode),
        cmocka_unit_test(test_header_hostile),      cmocka_unit_test(test_roundtrip_variants),
        cmocka_unit_test(test_backing_cow_discard), cmocka_unit_test(test_snapshots_resize),
        cmocka_unit_test(test_compressed),          cmocka_unit_test(test_aio),
        cmocka_unit_test(test_luks_qcow2),          cmocka_unit_test(test_corrupt_bit),
        cmocka_unit_test(test_resize_l1_growth),    cmocka_unit_test(test_aio_raw_backing),
    };
    log_init("test_qcow2", LOG_LVL_ERROR);
    if (!mkdtemp(tmpdir))
        return 1;
    return cmocka_run_group_tests(tests, NULL, teardown);
}
