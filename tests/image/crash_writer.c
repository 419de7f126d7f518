/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writer for the crash-safety test (crash_test.py): random writes, zero
 * writes and discards with flushes, forever, until killed. Every 512-byte
 * sector written holds 64 copies of (seq << 32 | sector). Before each
 * operation a line "W|Z|D seq off len" goes to the journal; after each
 * completed flush, "F seq". The journal is written with write(2), so a
 * SIGKILL never loses a line that was written.
 *
 *   crash_writer IMAGE JOURNAL SEED [aio]
 * With "aio", writes go through the io_uring API (queue depth 8, O_DIRECT
 * when the file system allows it), zero writes and discards too
 * (QTIMG_AIO_WRITE_ZEROES / QTIMG_AIO_DISCARD); overlapping requests are not
 * kept in flight together, and "F" is journaled when the flush request completes. Odd seeds open
 * the image with tiny metadata caches (2 L2 tables, 1 refcount block).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "image/qtimg.h"

static int journal(int fd, char op, uint64_t seq, uint64_t off, uint64_t len)
{
    char line[128];
    int n = snprintf(line, sizeof(line), "%c %llu %llu %llu\n", op, (unsigned long long)seq,
                     (unsigned long long)off, (unsigned long long)len);
    return write(fd, line, (size_t)n) == n ? 0 : -EIO;
}

#define AIO_DEPTH 8

struct inflight {
    uint64_t first, len; /* sectors; len 0: free slot */
    uint8_t *buf;
};

struct aio_state {
    struct qtimg_aio *aio;
    struct inflight slot[AIO_DEPTH];
    int err;
    bool flushed;
};

static void aio_write_done(void *opaque, int ret)
{
    struct inflight *f = opaque;
    f->len = 0;
    if (ret < 0)
        fprintf(stderr, "crash_writer: aio request failed: %s\n", strerror(-ret));
}

static void aio_flush_done(void *opaque, int ret)
{
    struct aio_state *a = opaque;
    if (ret < 0)
        a->err = ret;
    a->flushed = true;
}

/* A free slot whose range does not overlap anything in flight. */
static struct inflight *aio_slot(struct aio_state *a, uint64_t first, uint64_t len)
{
    for (;;) {
        struct inflight *free_slot = NULL;
        bool overlap = false;
        for (int i = 0; i < AIO_DEPTH; i++) {
            struct inflight *f = &a->slot[i];
            if (!f->len)
                free_slot = free_slot ? free_slot : f;
            else if (first < f->first + f->len && f->first < first + len)
                overlap = true;
        }
        if (free_slot && !overlap)
            return free_slot;
        if (qtimg_aio_poll(a->aio, true) < 0)
            return NULL;
    }
}

int main(int argc, char **argv)
{
    struct qtimg *img;
    uint64_t seq = 1, sectors;
    uint8_t *buf;
    int jfd, ret;

    struct aio_state a = {0};
    bool use_aio = argc == 5 && !strcmp(argv[4], "aio");

    if (argc != 4 && !use_aio) {
        fprintf(stderr, "usage: crash_writer IMAGE JOURNAL SEED [aio]\n");
        return 2;
    }
    log_init("crash_writer", LOG_LVL_ERROR);
    srandom((unsigned)strtoul(argv[3], NULL, 0));
    jfd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (jfd < 0)
        return 1;
    if (use_aio) {
        /* odd seeds: tiny metadata caches, so that table reads and
         * write-backs run on the ring between the kills too */
        struct qtimg_open_opts oo = {.flags = QTIMG_O_DIRECT};
        if (strtoul(argv[3], NULL, 0) & 1) {
            oo.l2_cache_tables = 2;
            oo.refblock_cache_size = 1;
        }
        if (qtimg_open(argv[1], &oo, &img) < 0) {
            oo.flags = 0;
            if (qtimg_open(argv[1], &oo, &img) < 0)
                return 1;
        }
        if (qtimg_aio_init(img, AIO_DEPTH, &a.aio) < 0)
            return 1;
        for (int i = 0; i < AIO_DEPTH; i++)
            if (posix_memalign((void **)&a.slot[i].buf, 4096, 300 * 512))
                return 1;
    } else if (qtimg_open(argv[1], NULL, &img) < 0) {
        return 1;
    }
    sectors = qtimg_size(img) / 512;
    buf = malloc(1 << 20);
    if (!buf)
        return 1;
    for (;;) {
        int r = (int)(random() % 100);
        uint64_t len = 1 + (uint64_t)(random() % (r < 70 ? 16 : 300)); /* sectors */
        uint64_t first = (uint64_t)random() % sectors;
        if (first + len > sectors)
            len = sectors - first;
        if (r < 75) {
            struct inflight *f = NULL;
            uint8_t *dst = buf;
            if (use_aio) {
                f = aio_slot(&a, first, len);
                if (!f)
                    return 1;
                dst = f->buf;
            }
            for (uint64_t s = 0; s < len; s++) {
                uint64_t v = seq << 32 | (first + s);
                for (int k = 0; k < 64; k++)
                    memcpy(dst + s * 512 + k * 8, &v, 8);
            }
            if (journal(jfd, 'W', seq, first, len) < 0)
                return 1;
            if (use_aio) {
                f->first = first;
                f->len = len;
                ret = qtimg_aio_submit(a.aio, QTIMG_AIO_WRITE, dst, len * 512, first * 512,
                                       aio_write_done, f);
            } else {
                ret = qtimg_pwrite(img, buf, len * 512, first * 512);
            }
        } else if (use_aio && r >= 92) {
            a.flushed = false;
            while ((ret = qtimg_aio_submit(a.aio, QTIMG_AIO_FLUSH, NULL, 0, 0, aio_flush_done,
                                           &a)) == -EAGAIN)
                qtimg_aio_poll(a.aio, true);
            while (ret == 0 && !a.flushed)
                if (qtimg_aio_poll(a.aio, true) < 0)
                    return 1;
            if (ret == 0)
                ret = a.err;
            if (ret == 0 && journal(jfd, 'F', seq, 0, 0) < 0)
                return 1;
        } else if (use_aio && r < 92) {
            struct inflight *f = aio_slot(&a, first, len);
            if (!f || journal(jfd, r < 85 ? 'Z' : 'D', seq, first, len) < 0)
                return 1;
            f->first = first;
            f->len = len;
            ret = qtimg_aio_submit(a.aio, r < 85 ? QTIMG_AIO_WRITE_ZEROES : QTIMG_AIO_DISCARD, NULL,
                                   len * 512, first * 512, aio_write_done, f);
        } else if (r < 85) {
            if (journal(jfd, 'Z', seq, first, len) < 0)
                return 1;
            ret = qtimg_write_zeroes(img, first * 512, len * 512);
        } else if (r < 92) {
            if (journal(jfd, 'D', seq, first, len) < 0)
                return 1;
            ret = qtimg_discard(img, first * 512, len * 512);
        } else {
            ret = qtimg_flush(img);
            if (ret == 0 && journal(jfd, 'F', seq, 0, 0) < 0)
                return 1;
        }
        if (ret < 0) {
            fprintf(stderr, "crash_writer: operation %llu failed: %s\n", (unsigned long long)seq,
                    strerror(-ret));
            return 1;
        }
        seq++;
    }
}
