/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The io_uring data path never blocks the polling thread: with tiny metadata
 * caches (2 L2 tables, 1 refcount block) a random mix of reads, allocating
 * and in-place writes and flushes runs through qtimg_aio_* on a plain qcow2,
 * an overlay on a backing file, an image with an internal snapshot (writes
 * copy away from shared clusters), a compressed image, a LUKS-encrypted image
 * and a raw image, with discards and write-zeroes (aligned to clusters or
 * not) in the mix, and the library's count of synchronous I/O calls on the
 * images (pread/pwrite/fdatasync/fallocate outside the ring) must not move
 * between the end of the open and the last completion. The data is then
 * checked against a shadow copy after reopening with the synchronous API,
 * and the image by qtimg_check. A run with 512-byte clusters makes the
 * refcount table grow under the same traffic.
 *
 *   test_aio_nowait           unit
 *   test_aio_nowait interop   the same, then `qemu-img check` on every image,
 *                             and a fixed VHD backing file read on the ring
 *                             (exit 77 without qemu-img)
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "image/img_internal.h"
#include "image/qcow2.h"
#include "image/qtimg.h"

#define IMG_SIZE   (24ull << 20)
#define SECTOR     512u
#define MAX_LEN    (20u * 1024)
#define QD         16
#define NOPS       1500
#define PASSPHRASE "secret-pass"

static char tmpdir[] = "/tmp/qtimg-nowait-XXXXXX";
static bool with_qemu;

enum layout { L_PLAIN, L_EXTL2, L_BACKING, L_SNAPSHOT, L_COMPRESSED, L_LUKS, L_RAW, L_GROW, L_V2 };
static const char *const layout_name[] = {"plain", "extl2", "backing", "snapshot", "compressed",
                                          "luks",  "raw",   "grow",    "v2"};

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

/* Compressible but not constant: runs of one byte with random lengths. */
static void fill_compressible(uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t run = 1 + rnd() % 300;
        uint8_t v = (uint8_t)rnd();
        for (; run && i < n; run--)
            p[i++] = v;
    }
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Writes len random bytes at off through the synchronous API and the shadow. */
static void sync_write(struct qtimg *img, uint8_t *shadow, uint64_t off, uint64_t len)
{
    uint8_t *buf = malloc(len);

    assert_non_null(buf);
    fill_random(buf, len);
    assert_int_equal(qtimg_pwrite(img, buf, len, off), 0);
    if (shadow)
        memcpy(shadow + off, buf, len);
    free(buf);
}

/* Creates the image for a layout with some data in it (mirrored in shadow). */
static void layout_prepare(enum layout l, const char *path, const char *base, uint8_t *shadow,
                           uint8_t *base_shadow)
{
    /* 64-bit refcounts: a refcount block covers 2 MiB, so that allocation
     * misses refcount blocks and creates new ones */
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_QCOW2,
                                   .size = IMG_SIZE,
                                   .cluster_size = 4096,
                                   .refcount_bits = 64,
                                   .compat = 3};
    struct qtimg_open_opts oo = {0};
    struct qtimg *img;

    memset(shadow, 0, IMG_SIZE);
    memset(base_shadow, 0, IMG_SIZE);
    if (l == L_RAW)
        co.fmt = QTIMG_FMT_RAW;
    if (l == L_GROW) /* a refcount table cluster covers 2 MiB of file: it grows */
        co.cluster_size = 512;
    if (l == L_V2) { /* no zero flag: write-zeroes writes zeroes */
        co.compat = 2;
        co.refcount_bits = 16;
    }
    if (l == L_EXTL2) {
        co.cluster_size = 65536;
        co.refcount_bits = 16;
        co.extended_l2 = true;
    }
    if (l == L_LUKS) {
        co.encrypt_format = "luks";
        co.key_secret = PASSPHRASE;
        co.encrypt_iter_time_ms = 10;
        oo.key_secret = PASSPHRASE;
    }
    if (l == L_BACKING) {
        struct qtimg_create_opts bo = co;
        assert_int_equal(qtimg_create(base, &bo), 0);
        assert_int_equal(qtimg_open(base, &oo, &img), 0);
        for (int i = 0; i < 60; i++)
            sync_write(img, shadow, (rnd() % (IMG_SIZE / SECTOR - 64)) * SECTOR,
                       (1 + rnd() % 40) * SECTOR);
        assert_int_equal(qtimg_close(img), 0);
        memcpy(base_shadow, shadow, IMG_SIZE);
        co.backing_file = strrchr(base, '/') + 1;
        co.backing_fmt = "qcow2";
    }
    assert_int_equal(qtimg_create(path, &co), 0);
    assert_int_equal(qtimg_open(path, &oo, &img), 0);
    if (l == L_COMPRESSED) {
        uint8_t *c = malloc(4096);
        assert_non_null(c);
        for (int i = 0; i < 300; i++) {
            uint64_t off = (rnd() % (IMG_SIZE / 4096)) * 4096;
            fill_compressible(c, 4096);
            assert_int_equal(qtimg_pwrite_compressed(img, c, 4096, off), 0);
            memcpy(shadow + off, c, 4096);
        }
        free(c);
    } else {
        for (int i = 0; i < 80; i++)
            sync_write(img, shadow, (rnd() % (IMG_SIZE / SECTOR - 64)) * SECTOR,
                       (1 + rnd() % 40) * SECTOR);
    }
    if (l == L_SNAPSHOT) {
        /* every cluster written so far is now shared with the snapshot */
        assert_int_equal(qtimg_snapshot_create(img, "before"), 0);
    }
    assert_int_equal(qtimg_close(img), 0);
}

struct io {
    struct run *run;
    uint8_t *buf;
    uint64_t off, len;
    int kind; /* 0 read, 1 write, 2 flush, 3 discard, 4 write-zeroes */
    bool busy;
};

struct run {
    uint8_t *shadow;
    uint8_t *base;     /* what a discarded range reads: the backing file or zeroes */
    uint64_t dgran;    /* discard granularity (subcluster size; 1: raw) */
    uint8_t *inflight; /* one byte per sector: a request covers it */
    struct io io[QD];
    unsigned busy, done_reads, done_writes, done_flushes, done_discards, done_zeroes, mismatches,
        errors;
};

static void io_done(void *opaque, int ret)
{
    struct io *io = opaque;
    struct run *run = io->run;

    if (ret < 0) {
        fprintf(stderr, "request %d [%llu, +%llu) failed: %s\n", io->kind,
                (unsigned long long)io->off, (unsigned long long)io->len, strerror(-ret));
        run->errors++;
    }
    if (io->kind == 0) {
        if (ret == 0 && memcmp(io->buf, run->shadow + io->off, io->len) != 0) {
            fprintf(stderr, "read [%llu, +%llu) differs from what was written\n",
                    (unsigned long long)io->off, (unsigned long long)io->len);
            run->mismatches++;
        }
        run->done_reads++;
    } else if (io->kind == 1) {
        run->done_writes++;
    } else if (io->kind == 3) {
        run->done_discards++;
    } else if (io->kind == 4) {
        run->done_zeroes++;
    } else {
        run->done_flushes++;
    }
    if (io->kind != 2)
        memset(run->inflight + io->off / SECTOR, 0, io->len / SECTOR);
    io->busy = false;
    run->busy--;
}

static bool range_free(const struct run *run, uint64_t off, uint64_t len)
{
    for (uint64_t s = off / SECTOR; s < (off + len) / SECTOR; s++)
        if (run->inflight[s])
            return false;
    return true;
}

/* Picks a range: half of the time near the start of a cluster that the
 * preparation may have written (shared / compressed / allocated). */
static void pick_range(uint64_t *off, uint64_t *len)
{
    *len = (1 + rnd() % (MAX_LEN / SECTOR)) * SECTOR;
    if (rnd() % 2)
        *off = (rnd() % (IMG_SIZE / 4096)) * 4096 + (rnd() % 8) * SECTOR;
    else
        *off = (rnd() % (IMG_SIZE / SECTOR)) * SECTOR;
    if (*off + *len > IMG_SIZE)
        *off = IMG_SIZE - *len;
}

/* A discard drops the whole (sub)clusters of the range (they read from the
 * backing file, or zeroes); partial ones are left as they are. */
static void shadow_discard(struct run *run, uint64_t off, uint64_t len)
{
    uint64_t a = (off + run->dgran - 1) / run->dgran * run->dgran;
    uint64_t b = (off + len) / run->dgran * run->dgran;

    if (a < b)
        memcpy(run->shadow + a, run->base + a, b - a);
}

static void run_layout(enum layout l)
{
    char path[256], base[256];
    struct qtimg_open_opts oo = {.l2_cache_tables = 2, .refblock_cache_size = 1};
    struct run run = {0};
    struct qtimg_aio *aio;
    struct qtimg *img;
    uint64_t sync0, sync1;
    uint8_t *back;
    unsigned submitted = 0;

    rng_state = 0x9e3779b97f4a7c15ull ^ ((uint64_t)l << 32);
    snprintf(path, sizeof(path), "%s/%s.img", tmpdir, layout_name[l]);
    snprintf(base, sizeof(base), "%s/%s-base.qcow2", tmpdir, layout_name[l]);
    run.shadow = malloc(IMG_SIZE);
    run.base = malloc(IMG_SIZE);
    assert_non_null(run.base);
    run.dgran = l == L_RAW ? 1 : l == L_EXTL2 ? 2048 : l == L_GROW ? 512 : 4096;
    run.inflight = calloc(IMG_SIZE / SECTOR, 1);
    back = malloc(IMG_SIZE);
    assert_non_null(run.shadow);
    assert_non_null(run.inflight);
    assert_non_null(back);
    layout_prepare(l, path, base, run.shadow, run.base);
    for (int i = 0; i < QD; i++) {
        run.io[i].run = &run;
        assert_int_equal(posix_memalign((void **)&run.io[i].buf, 4096, MAX_LEN), 0);
    }

    if (l == L_LUKS)
        oo.key_secret = PASSPHRASE;
    assert_int_equal(qtimg_open(path, &oo, &img), 0);
    assert_int_equal(qtimg_aio_init(img, QD, &aio), 0);
    sync0 = img_sync_io_count(img); /* the image is open and its queue set up */

    while (submitted < NOPS || run.busy) {
        if (submitted < NOPS && run.busy < QD) {
            struct io *io = NULL;
            uint64_t off, len;
            unsigned r = (unsigned)(rnd() % 100);
            for (int i = 0; i < QD && !io; i++)
                if (!run.io[i].busy)
                    io = &run.io[i];
            assert_non_null(io);
            if (r < (l == L_PLAIN ? 1u : 4u)) {
                io->kind = 2;
                io->off = io->len = 0;
                assert_int_equal(qtimg_aio_submit(aio, QTIMG_AIO_FLUSH, NULL, 0, 0, io_done, io),
                                 0);
            } else {
                pick_range(&off, &len);
                if (!range_free(&run, off, len)) {
                    assert_true(qtimg_aio_poll(aio, false) >= 0);
                    continue;
                }
                static const enum qtimg_aio_op ops[] = {QTIMG_AIO_READ, QTIMG_AIO_WRITE, 0,
                                                        QTIMG_AIO_DISCARD, QTIMG_AIO_WRITE_ZEROES};
                io->kind = r < 45 ? 0 : r < 82 ? 1 : r < 91 ? 3 : 4;
                io->off = off;
                io->len = len;
                memset(run.inflight + off / SECTOR, 1, len / SECTOR);
                if (io->kind == 1) {
                    fill_random(io->buf, len);
                    memcpy(run.shadow + off, io->buf, len);
                } else if (io->kind == 3) {
                    shadow_discard(&run, off, len);
                } else if (io->kind == 4) {
                    memset(run.shadow + off, 0, len);
                }
                assert_int_equal(qtimg_aio_submit(aio, ops[io->kind],
                                                  io->kind >= 3 ? NULL : io->buf, len, off, io_done,
                                                  io),
                                 0);
            }
            io->busy = true;
            run.busy++;
            submitted++;
            if (rnd() % 4)
                continue; /* build some queue depth */
        }
        assert_true(qtimg_aio_poll(aio, run.busy == QD || submitted == NOPS) >= 0);
    }
    sync1 = img_sync_io_count(img);
    if (sync1 != sync0)
        fprintf(stderr, "%s: %llu synchronous I/O calls on the data path\n", layout_name[l],
                (unsigned long long)(sync1 - sync0));
    assert_int_equal(sync1, sync0);
    assert_int_equal(run.errors, 0);
    assert_int_equal(run.mismatches, 0);
    assert_true(run.done_reads > NOPS / 4);
    assert_true(run.done_writes > NOPS / 4);
    assert_true(run.done_flushes > 5);
    assert_true(run.done_discards > NOPS / 30);
    assert_true(run.done_zeroes > NOPS / 30);
    qtimg_aio_fini(aio);
    assert_int_equal(qtimg_close(img), 0);

    /* reopened through the synchronous API with the default caches */
    oo.l2_cache_tables = oo.refblock_cache_size = 0;
    assert_int_equal(qtimg_open(path, &oo, &img), 0);
    assert_int_equal(qtimg_pread(img, back, IMG_SIZE, 0), 0);
    assert_memory_equal(back, run.shadow, IMG_SIZE);
    if (l != L_RAW) {
        struct qtimg_check_result cr;
        assert_int_equal(qtimg_check(img, 0, &cr), 0);
        assert_int_equal(cr.corruptions, 0);
        assert_int_equal(cr.leaks, 0);
    }
    assert_int_equal(qtimg_close(img), 0);

    if (with_qemu && l != L_RAW) {
        if (l == L_LUKS)
            assert_int_equal(sh("qemu-img check -q --object secret,id=s0,data=%s --image-opts "
                                "driver=qcow2,encrypt.key-secret=s0,file.filename=%s",
                                PASSPHRASE, path),
                             0);
        else
            assert_int_equal(sh("qemu-img check -q -f qcow2 '%s'", path), 0);
    }

    for (int i = 0; i < QD; i++)
        free(run.io[i].buf);
    free(run.shadow);
    free(run.base);
    free(run.inflight);
    free(back);
    unlink(path);
    unlink(base);
}

static void test_plain(void **state)
{
    (void)state;
    run_layout(L_PLAIN);
}

static void test_extl2(void **state)
{
    (void)state;
    run_layout(L_EXTL2);
}

static void test_backing(void **state)
{
    (void)state;
    run_layout(L_BACKING);
}

static void test_snapshot(void **state)
{
    (void)state;
    run_layout(L_SNAPSHOT);
}

static void test_compressed(void **state)
{
    (void)state;
    run_layout(L_COMPRESSED);
}

static void test_luks(void **state)
{
    (void)state;
    run_layout(L_LUKS);
}

static void test_raw(void **state)
{
    (void)state;
    run_layout(L_RAW);
}

/* qcow2 version 2 (0.10): write-zeroes of whole clusters go through the
 * write path too. */
static void test_v2(void **state)
{
    (void)state;
    run_layout(L_V2);
}

/* The refcount table grows (on the ring too) in the middle of the traffic. */
static void test_reftable_growth(void **state)
{
    (void)state;
    run_layout(L_GROW);
}

static void count_cb(void *opaque, int ret)
{
    int *n = opaque;
    assert_int_equal(ret, 0);
    (*n)++;
}

/* interop: a fixed VHD (made by qemu-img) under a qcow2 overlay is read on
 * the ring too. */
static void test_vhd_fixed_backing(void **state)
{
    char vhd[256], top[256];
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_QCOW2,
                                   .cluster_size = 65536,
                                   .compat = 3,
                                   .backing_file = "fixed.vhd",
                                   .backing_fmt = "vpc"};
    struct qtimg_aio *aio;
    struct qtimg *img;
    uint8_t *buf = NULL;
    uint64_t sync0, size;
    int done = 0;

    (void)state;
    if (!with_qemu)
        skip();
    snprintf(vhd, sizeof(vhd), "%s/fixed.vhd", tmpdir);
    snprintf(top, sizeof(top), "%s/vhdtop.qcow2", tmpdir);
    assert_int_equal(sh("qemu-img create -q -f vpc -o subformat=fixed '%s' 4M && "
                        "qemu-io -f vpc -c 'write -P 0x5a 0 4M' -c 'write -P 0x33 1M 4k' '%s' "
                        ">/dev/null",
                        vhd, vhd),
                     0);
    assert_int_equal(qtimg_create(top, &co), 0);
    assert_int_equal(qtimg_open(top, &(struct qtimg_open_opts){0}, &img), 0);
    size = qtimg_size(img);
    assert_true(size >= (2u << 20));
    assert_int_equal(posix_memalign((void **)&buf, 4096, 2u << 20), 0);
    assert_int_equal(qtimg_aio_init(img, 4, &aio), 0);
    sync0 = img_sync_io_count(img);
    assert_int_equal(qtimg_aio_submit(aio, QTIMG_AIO_READ, buf, 2u << 20, 0, count_cb, &done), 0);
    while (!done)
        assert_true(qtimg_aio_poll(aio, true) >= 0);
    assert_int_equal(img_sync_io_count(img), sync0);
    for (uint64_t i = 0; i < (2u << 20); i++)
        assert_int_equal(buf[i], i >= (1u << 20) && i < (1u << 20) + 4096 ? 0x33 : 0x5a);
    qtimg_aio_fini(aio);
    assert_int_equal(qtimg_close(img), 0);
    free(buf);
    unlink(top);
    unlink(vhd);
}

struct order {
    int seq;    /* completions so far */
    int at[20]; /* completion rank of each request */
};

struct order_req {
    struct order *o;
    int i;
};

static void order_cb(void *opaque, int ret)
{
    struct order_req *r = opaque;

    assert_int_equal(ret, 0);
    r->o->at[r->i] = ++r->o->seq;
}

/* A flush completes after every request submitted before it; requests
 * submitted after it are accepted meanwhile. */
static void test_flush_order(void **state)
{
    char path[256];
    struct qtimg_create_opts co = {
        .fmt = QTIMG_FMT_QCOW2, .size = IMG_SIZE, .cluster_size = 4096, .compat = 3};
    struct qtimg_open_opts oo = {.l2_cache_tables = 2, .refblock_cache_size = 1};
    struct order o = {0};
    struct order_req req[20];
    struct qtimg_aio *aio;
    struct qtimg *img;
    uint8_t *buf = NULL;
    uint64_t sync0;

    (void)state;
    snprintf(path, sizeof(path), "%s/order.qcow2", tmpdir);
    assert_int_equal(qtimg_create(path, &co), 0);
    assert_int_equal(qtimg_open(path, &oo, &img), 0);
    assert_int_equal(posix_memalign((void **)&buf, 4096, 4096), 0);
    memset(buf, 0x77, 4096);
    assert_int_equal(qtimg_aio_init(img, 20, &aio), 0);
    sync0 = img_sync_io_count(img);
    /* 0..8: writes in 9 different L2 tables, 9: flush, 10..18: writes, 19: flush */
    for (int i = 0; i < 20; i++) {
        req[i].o = &o;
        req[i].i = i;
        if (i == 9 || i == 19)
            assert_int_equal(qtimg_aio_submit(aio, QTIMG_AIO_FLUSH, NULL, 0, 0, order_cb, &req[i]),
                             0);
        else
            assert_int_equal(qtimg_aio_submit(aio, QTIMG_AIO_WRITE, buf, 4096,
                                              (uint64_t)(i % 10) * (2u << 20) + 8192, order_cb,
                                              &req[i]),
                             0);
    }
    while (o.seq < 20)
        assert_true(qtimg_aio_poll(aio, true) >= 0);
    for (int i = 0; i < 9; i++)
        assert_true(o.at[i] < o.at[9]);
    for (int i = 0; i < 19; i++)
        assert_true(o.at[i] < o.at[19]);
    assert_int_equal(img_sync_io_count(img), sync0);
    qtimg_aio_fini(aio);
    assert_int_equal(qtimg_close(img), 0);
    free(buf);
    unlink(path);
}

/* A discard / write-zeroes of one subcluster waits for an allocation in
 * flight in the same cluster (extended L2: the allocation publishes the
 * whole L2 entry), as a second write would. */
static void test_zero_order(void **state)
{
    char path[256];
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_QCOW2,
                                   .size = IMG_SIZE,
                                   .cluster_size = 65536,
                                   .extended_l2 = true,
                                   .compat = 3};
    struct qtimg_aio *aio;
    struct qtimg *img;
    uint8_t *buf = NULL, *back = malloc(65536);
    uint64_t sync0;
    int done = 0;

    (void)state;
    assert_non_null(back);
    snprintf(path, sizeof(path), "%s/zorder.qcow2", tmpdir);
    assert_int_equal(qtimg_create(path, &co), 0);
    assert_int_equal(qtimg_open(path, &(struct qtimg_open_opts){0}, &img), 0);
    assert_int_equal(posix_memalign((void **)&buf, 4096, 65536), 0);
    memset(buf, 0x5a, 65536);
    /* subclusters 8..15 of clusters 0..39 hold data; the discards /
     * write-zeroes below take all of them (a discard frees the cluster) */
    for (int c = 0; c < 40; c++)
        assert_int_equal(qtimg_pwrite(img, buf, 16384, (uint64_t)c * 65536 + 16384), 0);
    assert_int_equal(qtimg_aio_init(img, 8, &aio), 0);
    sync0 = img_sync_io_count(img);
    memset(buf, 0xa5, 65536);
    for (int c = 0; c < 40; c++) {
        uint64_t base = (uint64_t)c * 65536;
        /* allocating write of subclusters 0..1, then the others of the
         * cluster zeroed / discarded while it is in flight */
        assert_int_equal(qtimg_aio_submit(aio, QTIMG_AIO_WRITE, buf, 4096, base, count_cb, &done),
                         0);
        assert_int_equal(qtimg_aio_submit(aio, c % 2 ? QTIMG_AIO_DISCARD : QTIMG_AIO_WRITE_ZEROES,
                                          NULL, 16384, base + 16384, count_cb, &done),
                         0);
        while (done < 2 * (c + 1))
            assert_true(qtimg_aio_poll(aio, true) >= 0);
    }
    assert_int_equal(img_sync_io_count(img), sync0);
    qtimg_aio_fini(aio);
    assert_int_equal(qtimg_close(img), 0);
    assert_int_equal(qtimg_open(path, &(struct qtimg_open_opts){0}, &img), 0);
    for (int c = 0; c < 40; c++) {
        assert_int_equal(qtimg_pread(img, back, 65536, (uint64_t)c * 65536), 0);
        for (int i = 0; i < 65536; i++) {
            uint8_t want = i < 4096 ? 0xa5 : 0;
            if (back[i] != want) {
                fprintf(stderr, "cluster %d byte %d: 0x%02x, want 0x%02x\n", c, i, back[i], want);
                fail();
            }
        }
    }
    {
        struct qtimg_check_result cr;
        assert_int_equal(qtimg_check(img, 0, &cr), 0);
        assert_int_equal(cr.corruptions, 0);
        assert_int_equal(cr.leaks, 0);
    }
    assert_int_equal(qtimg_close(img), 0);
    free(buf);
    free(back);
    unlink(path);
}

/* ---- every crash point of an asynchronous flush ----
 * The driver's flush runs against a test ring that performs one operation
 * at a time, in order; after every write the file is copied, as a process
 * killed at that moment would leave it, and the copy must open and check
 * without corruption (leaks are fine). */

struct tio_op {
    enum img_io_op op;
    void *buf;
    uint64_t len, off;
    img_io_done done;
    void *arg;
};

struct tio {
    struct tio_op q[8192];
    size_t head, tail;
};

static int tio_queue(void *ctx, struct qtimg *img, enum img_io_op op, void *buf, uint64_t len,
                     uint64_t off, img_io_done done, void *arg)
{
    struct tio *t = ctx;

    (void)img;
    assert_true(t->tail < 8192);
    t->q[t->tail++] = (struct tio_op){op, buf, len, off, done, arg};
    return 0;
}

static void flush_done(void *arg, int ret)
{
    *(int *)arg = ret == 0 ? 1 : -1;
}

static void copy_file(const char *from, const char *to)
{
    static uint8_t buf[1 << 16];
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ssize_t n;

    assert_true(in >= 0 && out >= 0);
    while ((n = read(in, buf, sizeof(buf))) > 0)
        assert_int_equal(write(out, buf, (size_t)n), n);
    close(in);
    close(out);
}

static unsigned check_copy(const char *path, const char *copy)
{
    struct qtimg_open_opts oo = {.flags = QTIMG_O_RDONLY | QTIMG_O_CHECK};
    struct qtimg_check_result cr;
    struct qtimg *img;

    copy_file(path, copy);
    log_set_level((enum log_level) - 1); /* leaks are expected: quiet */
    assert_int_equal(qtimg_open(copy, &oo, &img), 0);
    assert_int_equal(qtimg_check(img, 0, &cr), 0);
    log_set_level(LOG_LVL_ERROR);
    assert_int_equal(cr.corruptions, 0);
    assert_int_equal(cr.check_errors, 0);
    assert_int_equal(qtimg_close(img), 0);
    return 1;
}

static void test_flush_crash_points(void **state)
{
    char path[256], copy[256];
    /* 512-byte clusters, 64-bit refcounts: new refcount blocks every 32 KiB
     * and a refcount table that grows every 2 MiB of file */
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_QCOW2,
                                   .size = 8u << 20,
                                   .cluster_size = 512,
                                   .refcount_bits = 64,
                                   .compat = 3};
    struct qtimg_open_opts oo = {.l2_cache_tables = 1024, .refblock_cache_size = 1024};
    struct tio *t = calloc(1, sizeof(*t));
    struct img_io io = {.ctx = t, .queue = tio_queue};
    struct qtimg_aio *aio;
    struct qtimg *img;
    uint8_t *buf = NULL, *back = NULL;
    unsigned checked = 0;
    int fd, fdone = 0, done = 0;

    (void)state;
    assert_non_null(t);
    snprintf(path, sizeof(path), "%s/points.qcow2", tmpdir);
    snprintf(copy, sizeof(copy), "%s/points-crash.qcow2", tmpdir);
    assert_int_equal(qtimg_create(path, &co), 0);
    assert_int_equal(qtimg_open(path, &oo, &img), 0);
    assert_int_equal(posix_memalign((void **)&buf, 4096, 3u << 20), 0);
    back = malloc(3u << 20);
    assert_non_null(back);
    rng_state = 0x1234567ull;
    fill_random(buf, 3u << 20);
    /* 3 MiB of allocating writes, no flush: everything stays in the cache */
    assert_int_equal(qtimg_aio_init(img, 16, &aio), 0);
    for (int i = 0; i < 48; i++) {
        while (qtimg_aio_submit(aio, QTIMG_AIO_WRITE, buf + i * 65536, 65536,
                                (uint64_t)i * 65536 + (1u << 20), count_cb, &done) == -EAGAIN)
            assert_true(qtimg_aio_poll(aio, true) >= 0);
    }
    while (done < 48)
        assert_true(qtimg_aio_poll(aio, true) >= 0);
    qtimg_aio_fini(aio);
    assert_true(((struct qcow2 *)img->priv)->rt_hdr_dirty); /* the table grew in memory */

    checked += check_copy(path, copy); /* before the flush */
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(img->drv->meta_flush(img, &io, true, flush_done, &fdone), 0);
    while (t->head < t->tail) {
        struct tio_op op = t->q[t->head++];
        ssize_t res = 0;
        if (op.op == IMG_IO_WRITE)
            res = pwrite(fd, op.buf, op.len, (off_t)op.off);
        else if (op.op == IMG_IO_READ)
            res = pread(fd, op.buf, op.len, (off_t)op.off);
        else
            res = fdatasync(fd);
        assert_true(res >= 0);
        if (op.op == IMG_IO_WRITE)
            checked += check_copy(path, copy);
        op.done(op.arg, (int)res);
    }
    close(fd);
    assert_int_equal(fdone, 1);
    assert_false(((struct qcow2 *)img->priv)->rt_hdr_dirty);
    assert_true(checked > 100); /* refcount blocks, table, header, L2 tables, L1 */
    assert_int_equal(qtimg_close(img), 0);

    /* after the flush the image holds everything, with no leak left over */
    assert_int_equal(qtimg_open(path, &(struct qtimg_open_opts){0}, &img), 0);
    assert_int_equal(qtimg_pread(img, back, 3u << 20, 1u << 20), 0);
    assert_memory_equal(back, buf, 3u << 20);
    {
        struct qtimg_check_result cr;
        assert_int_equal(qtimg_check(img, 0, &cr), 0);
        assert_int_equal(cr.corruptions, 0);
        assert_int_equal(cr.leaks, 0);
    }
    assert_int_equal(qtimg_close(img), 0);
    free(buf);
    free(back);
    free(t);
    unlink(path);
    unlink(copy);
}

static int teardown(void **state)
{
    (void)state;
    rmdir(tmpdir);
    return 0;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_extl2),
        cmocka_unit_test(test_backing),
        cmocka_unit_test(test_snapshot),
        cmocka_unit_test(test_compressed),
        cmocka_unit_test(test_luks),
        cmocka_unit_test(test_raw),
        cmocka_unit_test(test_reftable_growth),
        cmocka_unit_test(test_v2),
        cmocka_unit_test(test_vhd_fixed_backing),
        cmocka_unit_test(test_flush_order),
        cmocka_unit_test(test_zero_order),
        cmocka_unit_test(test_flush_crash_points),
    };
    log_init("test_aio_nowait", LOG_LVL_ERROR);
    if (argc >= 2 && strcmp(argv[1], "interop") == 0) {
        if (sh("command -v qemu-img >/dev/null") != 0) {
            fprintf(stderr, "qemu-img not installed (Debian qemu-utils): skipping\n");
            return 77;
        }
        with_qemu = true;
    }
    if (!mkdtemp(tmpdir))
        return 1;
    return cmocka_run_group_tests(tests, NULL, teardown);
}
