/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the qcow2 open path: the input is an image file; it is
 * opened (read-only, backing files not followed), read at a few offsets,
 * mapped and checked; then a writable copy gets a write, a discard and a
 * snapshot. Built as a libFuzzer target with -Dfuzz=true under clang, and
 * as a corpus runner (every file of a directory, suite 'unit') otherwise.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "image/qtimg.h"

static char fuzz_path[64];

static int write_file(const uint8_t *data, size_t size)
{
    int fd;

    if (!fuzz_path[0])
        snprintf(fuzz_path, sizeof(fuzz_path), "/tmp/qtimg-fuzz-%d.img", (int)getpid());
    fd = open(fuzz_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return -EIO;
    }
    close(fd);
    return 0;
}

static void exercise(struct qtimg *img, bool writable)
{
    static uint8_t buf[65536 + 512];
    uint64_t size = qtimg_size(img);
    struct qtimg_check_result r;
    struct qtimg_info info;
    struct qtimg_map m;
    uint64_t offs[3] = {0, size / 2, size > 4096 ? size - 4096 : 0};

    qtimg_get_info(img, &info);
    for (int i = 0; i < 3; i++) {
        uint64_t len = size - offs[i] < sizeof(buf) ? size - offs[i] : sizeof(buf);
        qtimg_pread(img, buf, len, offs[i]);
        if (len)
            qtimg_map_range(img, offs[i], len, &m);
    }
    if (size < (1ull << 40))
        qtimg_check(img, 0, &r);
    if (writable && size >= 4096) {
        memset(buf, 0x5a, 4096);
        qtimg_pwrite(img, buf, 4096, size / 2 & ~511ull);
        qtimg_discard(img, 0, size < 65536 ? size : 65536);
        qtimg_snapshot_create(img, "fuzz");
        qtimg_flush(img);
    }
}

static void aio_done(void *opaque, int ret)
{
    (void)ret;
    (*(unsigned *)opaque)++;
}

/* The io_uring path on the same image, with one-table caches so that table
 * reads and write-backs go through the ring (reads, writes, discards,
 * write-zeroes, a flush): it must finish every request
 * (an error is fine, a request that never completes is a bug). */
static void exercise_aio(struct qtimg *img, bool writable)
{
    static uint8_t bufs[4][16384] __attribute__((aligned(4096)));
    uint64_t size = qtimg_size(img);
    uint64_t offs[4] = {0, size / 3 & ~511ull, size / 2 & ~511ull,
                        size > 16384 ? (size - 16384) & ~511ull : 0};
    struct qtimg_aio *aio;
    unsigned done = 0, sent = 0;

    if (qtimg_aio_init(img, 8, &aio) < 0)
        return;
    for (int i = 0; i < 4; i++) {
        uint64_t len = size - offs[i] < sizeof(bufs[i]) ? size - offs[i] : sizeof(bufs[i]);
        bool write = writable && (i & 1);
        if (!len)
            continue;
        memset(bufs[i], 0x3c, sizeof(bufs[i]));
        if (qtimg_aio_submit(aio, write ? QTIMG_AIO_WRITE : QTIMG_AIO_READ, bufs[i], len, offs[i],
                             aio_done, &done) == 0)
            sent++;
    }
    /* discard and write-zeroes, cluster aligned and not */
    if (writable && size > 70000) {
        if (qtimg_aio_submit(aio, QTIMG_AIO_DISCARD, NULL, 66000, size / 4 & ~511ull, aio_done,
                             &done) == 0)
            sent++;
        if (qtimg_aio_submit(aio, QTIMG_AIO_WRITE_ZEROES, NULL, 70000 - 512,
                             (size - 70000) & ~511ull, aio_done, &done) == 0)
            sent++;
    }
    if (writable && qtimg_aio_submit(aio, QTIMG_AIO_FLUSH, NULL, 0, 0, aio_done, &done) == 0)
        sent++;
    for (unsigned polls = 0; qtimg_aio_inflight(aio); polls++) {
        if (polls > 1000000 || qtimg_aio_poll(aio, true) < 0) {
            fprintf(stderr, "fuzz: %u of %u io_uring requests never completed\n", sent - done,
                    sent);
            abort();
        }
    }
    qtimg_aio_fini(aio);
}

int qtimg_fuzz_one(const uint8_t *data, size_t size)
{
    struct qtimg_open_opts o = {.flags = QTIMG_O_RDONLY | QTIMG_O_NO_BACKING,
                                .fmt = QTIMG_FMT_QCOW2};
    struct qtimg *img;

    if (write_file(data, size) < 0)
        return 0;
    if (qtimg_open(fuzz_path, &o, &img) == 0) {
        exercise(img, false);
        qtimg_close(img);
        /* writable pass only for images small enough to stay fast */
        if (qtimg_open(
                fuzz_path,
                &(struct qtimg_open_opts){.flags = QTIMG_O_NO_BACKING, .fmt = QTIMG_FMT_QCOW2},
                &img) == 0) {
            if (qtimg_size(img) <= (64ull << 20))
                exercise(img, true);
            qtimg_close(img);
        }
        if (qtimg_open(fuzz_path,
                       &(struct qtimg_open_opts){.flags = QTIMG_O_NO_BACKING,
                                                 .fmt = QTIMG_FMT_QCOW2,
                                                 .l2_cache_tables = 1,
                                                 .refblock_cache_size = 1},
                       &img) == 0) {
            exercise_aio(img, qtimg_size(img) <= (64ull << 20));
            qtimg_close(img);
        }
    }
    unlink(fuzz_path);
    return 0;
}

#ifdef QTIMG_FUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        log_init("fuzz_qcow2", LOG_LVL_ERROR);
        if (!getenv("QT_LOG"))
            log_set_level((enum log_level) - 1); /* hostile inputs: errors expected */
        init = true;
    }
    return qtimg_fuzz_one(data, size);
}
#else
/* Corpus runner: fuzz_qcow2_corpus DIR */
int main(int argc, char **argv)
{
    struct dirent *de;
    DIR *d;
    int n = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    log_init("fuzz_corpus", LOG_LVL_ERROR);
    if (!getenv("QT_LOG"))
        log_set_level((enum log_level) - 1); /* hostile inputs: errors expected */
    d = opendir(argv[1]);
    if (!d) {
        perror(argv[1]);
        return 1;
    }
    while ((de = readdir(d))) {
        char path[4096];
        uint8_t *data;
        long len;
        FILE *f;
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", argv[1], de->d_name);
        f = fopen(path, "rb");
        if (!f)
            continue;
        fseek(f, 0, SEEK_END);
        len = ftell(f);
        fseek(f, 0, SEEK_SET);
        data = malloc(len > 0 ? (size_t)len : 1);
        if (data && fread(data, 1, (size_t)len, f) == (size_t)len)
            qtimg_fuzz_one(data, (size_t)len);
        free(data);
        fclose(f);
        n++;
    }
    closedir(d);
    printf("%d corpus files opened without a crash\n", n);
    return n > 0 ? 0 : 1;
}
#endif
