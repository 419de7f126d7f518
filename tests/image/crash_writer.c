/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writer for the crash-safety test (crash_test.py): random writes, zero
 * writes and discards with flushes, forever, until killed. Every 512-byte
 * sector written holds 64 copies of (seq << 32 | sector). Before each
 * operation a line "W|Z|D seq off len" goes to the journal; after each
 * completed flush, "F seq". The journal is written with write(2), so a
 * SIGKILL never loses a line that was written.
 *
 *   crash_writer IMAGE JOURNAL SEED
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

int main(int argc, char **argv)
{
    struct qtimg *img;
    uint64_t seq = 1, sectors;
    uint8_t *buf;
    int jfd, ret;

    if (argc != 4) {
        fprintf(stderr, "usage: crash_writer IMAGE JOURNAL SEED\n");
        return 2;
    }
    log_init("crash_writer", LOG_LVL_ERROR);
    srandom((unsigned)strtoul(argv[3], NULL, 0));
    jfd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (jfd < 0)
        return 1;
    ret = qtimg_open(argv[1], NULL, &img);
    if (ret < 0)
        return 1;
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
            for (uint64_t s = 0; s < len; s++) {
                uint64_t v = seq << 32 | (first + s);
                for (int k = 0; k < 64; k++)
                    memcpy(buf + s * 512 + k * 8, &v, 8);
            }
            if (journal(jfd, 'W', seq, first, len) < 0)
                return 1;
            ret = qtimg_pwrite(img, buf, len * 512, first * 512);
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
