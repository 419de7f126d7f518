/* SPDX-License-Identifier: Apache-2.0 */
/*
 * blk: virtio-blk functional test.
 *  - disk 0 (read-write): GET_ID against blk.serial, a seeded pattern written
 *    over 2048 sectors in requests of 1..64 sectors and read back with a
 *    different split (per-sector compare and a whole-range checksum), FLUSH,
 *    an out-of-range read that must fail, WRITE_ZEROES and DISCARD if offered.
 *  - disk 1 (read-only): VIRTIO_BLK_F_RO offered, GET_ID against
 *    blk.ro_serial, a write is rejected and leaves the data unchanged.
 * The host side (run-guest) checks the image file holds the pattern.
 */
#include "rt/rt.h"
#include "rt/io.h"
#include "rt/vblk.h"

const char guest_name[] = "blk";

#define SECTOR        512
#define PATTERN_FIRST 2048
#define PATTERN_COUNT 2048
#define MAX_REQ       64

/*
 * Sector contents: 64 words derived from the seed and the sector number
 * (run-guest mirrors it). Cheap on purpose: on hypervisors that emulate the
 * guest's kernel-mode code every instruction counts.
 */
static inline uint64_t blk_word(uint64_t seed, uint64_t sector, uint64_t i)
{
    uint64_t w = ((seed ^ (sector << 6)) + i) * 0x9e3779b97f4a7c15ull;

    return w ^ (w >> 32);
}

static void blk_fill(uint64_t *w, uint64_t seed, uint64_t sector)
{
    for (uint64_t i = 0; i < SECTOR / 8; i++)
        w[i] = blk_word(seed, sector, i);
}

/* Compares a sector with its pattern and folds it into the running checksum. */
static bool blk_check(const uint64_t *w, uint64_t seed, uint64_t sector, uint64_t *sum)
{
    uint64_t h = *sum;

    for (uint64_t i = 0; i < SECTOR / 8; i++) {
        if (w[i] != blk_word(seed, sector, i))
            return false;
        h = ((h << 1) | (h >> 63)) ^ w[i];
    }
    *sum = h;
    return true;
}

static uint64_t blk_sum(const uint64_t *w, uint64_t h)
{
    for (uint64_t i = 0; i < SECTOR / 8; i++)
        h = ((h << 1) | (h >> 63)) ^ w[i];
    return h;
}

static int blk_check_id(struct vblk *b, const char *key)
{
    char want[VIRTIO_BLK_ID_BYTES + 1], got[VIRTIO_BLK_ID_BYTES + 1];
    uint8_t *id = rt_alloc(VIRTIO_BLK_ID_BYTES, 16);
    int st;

    if (!cmdline_get(key, want, sizeof(want))) {
        printf("blk: no %s= on the command line, skipping GET_ID\n", key);
        return 0;
    }
    st = vblk_rw(b, VIRTIO_BLK_T_GET_ID, 0, id, VIRTIO_BLK_ID_BYTES);
    if (st != VIRTIO_BLK_S_OK) {
        printf("blk: GET_ID failed (status %d)\n", st);
        return -EIO;
    }
    memcpy(got, id, VIRTIO_BLK_ID_BYTES);
    got[VIRTIO_BLK_ID_BYTES] = '\0';
    if (strcmp(got, want)) {
        printf("blk: GET_ID returned '%s', expected '%s'\n", got, want);
        return -EIO;
    }
    printf("blk: GET_ID '%s' ok\n", got);
    return 0;
}

static int blk_pattern(struct vblk *b, uint64_t seed)
{
    uint8_t *buf = rt_alloc(MAX_REQ * SECTOR, 4096);
    uint64_t sum_w = 0xcbf29ce484222325ull, sum_r = sum_w;
    uint64_t *words = (uint64_t *)buf;
    uint64_t s, end = PATTERN_FIRST + PATTERN_COUNT;
    unsigned reqs = 0;
    uint64_t t0 = time_ns(), t_fill = 0, t_io = 0, t;
    int st;

    if (b->capacity < end + MAX_REQ) {
        printf("blk: disk too small (%lu sectors)\n", b->capacity);
        return -ENOSPC;
    }
    /* Write with request sizes 1, 2, ..., 64 sectors, cycling. */
    for (s = PATTERN_FIRST; s < end; reqs++) {
        uint32_t n = (uint32_t)(reqs % MAX_REQ) + 1;

        if (s + n > end)
            n = (uint32_t)(end - s);
        t = time_ns();
        for (uint32_t i = 0; i < n; i++) {
            blk_fill(words + i * (SECTOR / 8), seed, s + i);
            sum_w = blk_sum(words + i * (SECTOR / 8), sum_w);
        }
        t_fill += time_ns() - t;
        t = time_ns();
        st = vblk_rw(b, VIRTIO_BLK_T_OUT, s, buf, n * SECTOR);
        t_io += time_ns() - t;
        if (st != VIRTIO_BLK_S_OK) {
            printf("blk: write of %u sectors at %lu failed (status %d)\n", n, s, st);
            return -EIO;
        }
        s += n;
    }
    printf("blk: wrote %u sectors in %u requests in %lu ms (fill %lu ms, I/O %lu ms)\n",
           PATTERN_COUNT, reqs, (time_ns() - t0) / 1000000, t_fill / 1000000, t_io / 1000000);
    /* Read back in a different split: 64, 63, ..., 1 sectors. */
    reqs = 0;
    t0 = time_ns();
    for (s = PATTERN_FIRST; s < end; reqs++) {
        uint32_t n = MAX_REQ - (uint32_t)(reqs % MAX_REQ);

        if (s + n > end)
            n = (uint32_t)(end - s);
        memset(buf, 0xa5, n * SECTOR);
        st = vblk_rw(b, VIRTIO_BLK_T_IN, s, buf, n * SECTOR);
        if (st != VIRTIO_BLK_S_OK) {
            printf("blk: read of %u sectors at %lu failed (status %d)\n", n, s, st);
            return -EIO;
        }
        for (uint32_t i = 0; i < n; i++) {
            if (!blk_check(words + i * (SECTOR / 8), seed, s + i, &sum_r)) {
                printf("blk: sector %lu reads back wrong data\n", s + i);
                return -EIO;
            }
        }
        s += n;
    }
    printf("blk: read %u sectors in %u requests in %lu ms\n", PATTERN_COUNT, reqs,
           (time_ns() - t0) / 1000000);
    if (sum_r != sum_w) {
        printf("blk: checksum mismatch: wrote %016lx read %016lx\n", sum_w, sum_r);
        return -EIO;
    }
    printf("blk: pattern sectors %u-%u written and verified, checksum %016lx\n", PATTERN_FIRST,
           PATTERN_FIRST + PATTERN_COUNT - 1, sum_r);
    return 0;
}

static int blk_zeroes(struct vblk *b, uint64_t seed)
{
    uint64_t first = PATTERN_FIRST + PATTERN_COUNT;
    uint32_t n = 32;
    uint8_t *buf = rt_alloc(n * SECTOR, 4096);
    int st;

    if (virtio_has(&b->vd, VIRTIO_BLK_F_WRITE_ZEROES) && b->max_write_zeroes_sectors >= n) {
        for (uint32_t i = 0; i < n; i++)
            blk_fill((uint64_t *)buf + i * (SECTOR / 8), seed ^ 0x5a5a, first + i);
        st = vblk_rw(b, VIRTIO_BLK_T_OUT, first, buf, n * SECTOR);
        if (st != VIRTIO_BLK_S_OK)
            return -EIO;
        st = vblk_discard_wz(b, VIRTIO_BLK_T_WRITE_ZEROES, first, n, false);
        if (st != VIRTIO_BLK_S_OK) {
            printf("blk: WRITE_ZEROES failed (status %d)\n", st);
            return -EIO;
        }
        memset(buf, 0xa5, n * SECTOR);
        st = vblk_rw(b, VIRTIO_BLK_T_IN, first, buf, n * SECTOR);
        if (st != VIRTIO_BLK_S_OK)
            return -EIO;
        for (uint32_t i = 0; i < n * SECTOR / 8; i++) {
            if (((uint64_t *)buf)[i]) {
                printf("blk: word %u not zero after WRITE_ZEROES\n", i);
                return -EIO;
            }
        }
        printf("blk: zeroed sectors %lu-%lu\n", first, first + n - 1);
    } else {
        printf("blk: WRITE_ZEROES not offered\n");
    }
    if (virtio_has(&b->vd, VIRTIO_BLK_F_DISCARD) && b->max_discard_sectors >= n) {
        /* Discarded data is unspecified; only the request must succeed. */
        st = vblk_discard_wz(b, VIRTIO_BLK_T_DISCARD, first + n, n, false);
        if (st != VIRTIO_BLK_S_OK) {
            printf("blk: DISCARD failed (status %d)\n", st);
            return -EIO;
        }
        printf("blk: discard of %u sectors ok\n", n);
    } else {
        printf("blk: DISCARD not offered\n");
    }
    return 0;
}

/* Every request queue works, and data written through one queue reads back through another. */
static int blk_mq(struct vblk *b, uint64_t seed)
{
    uint64_t want = cmdline_get_u64("blk.queues", 0);
    uint64_t base = PATTERN_FIRST + PATTERN_COUNT + 64;
    uint32_t n = 8;
    uint64_t *w = rt_alloc(n * SECTOR, 4096);
    int st;

    if (want && b->n_queues != (want < VIRTIO_MAX_QUEUES ? want : VIRTIO_MAX_QUEUES)) {
        printf("blk: %u request queues in use, expected %lu\n", b->n_queues, want);
        return -EINVAL;
    }
    if (b->n_queues < 2) {
        printf("blk: single request queue\n");
        return 0;
    }
    for (uint16_t q = 0; q < b->n_queues; q++) {
        uint64_t first = base + q * n, sum = 0;
        uint16_t other = (uint16_t)((q + 1) % b->n_queues);

        for (uint32_t i = 0; i < n; i++)
            blk_fill(w + i * (SECTOR / 8), seed ^ q, first + i);
        st = vblk_rw_queue(b, q, VIRTIO_BLK_T_OUT, first, w, n * SECTOR);
        if (st != VIRTIO_BLK_S_OK) {
            printf("blk: write on queue %u failed (%d)\n", q, st);
            return -EIO;
        }
        memset(w, 0, n * SECTOR);
        st = vblk_rw_queue(b, other, VIRTIO_BLK_T_IN, first, w, n * SECTOR);
        if (st != VIRTIO_BLK_S_OK) {
            printf("blk: read on queue %u failed (%d)\n", other, st);
            return -EIO;
        }
        for (uint32_t i = 0; i < n; i++) {
            if (!blk_check(w + i * (SECTOR / 8), seed ^ q, first + i, &sum)) {
                printf("blk: sector %lu written on queue %u reads back wrong on queue %u\n",
                       first + i, q, other);
                return -EIO;
            }
        }
    }
    printf("blk: %u request queues: cross-queue write/read ok\n", b->n_queues);
    return 0;
}

static int blk_test_rw(uint64_t seed)
{
    struct vblk b;
    uint8_t *buf;
    int ret, st;

    ret = vblk_open(&b, 0, 128, 1ull << VIRTIO_BLK_F_MQ);
    if (ret == -ENODEV)
        printf("NODEV virtio-blk\n");
    if (ret < 0) {
        printf("blk: no read-write virtio-blk device (%d)\n", ret);
        return ret;
    }
    printf("blk: disk 0: %lu sectors, features 0x%lx, %u queue(s) of %u\n", b.capacity,
           b.vd.features, b.n_queues, b.vd.vq[0].size);
    if (virtio_has(&b.vd, VIRTIO_BLK_F_RO)) {
        printf("blk: disk 0 is read-only\n");
        return -EINVAL;
    }
    ret = blk_check_id(&b, "blk.serial");
    if (ret < 0)
        return ret;
    ret = blk_pattern(&b, seed);
    if (ret < 0)
        return ret;
    if (virtio_has(&b.vd, VIRTIO_BLK_F_FLUSH)) {
        st = vblk_rw(&b, VIRTIO_BLK_T_FLUSH, 0, NULL, 0);
        if (st != VIRTIO_BLK_S_OK) {
            printf("blk: FLUSH failed (status %d)\n", st);
            return -EIO;
        }
        printf("blk: flush ok\n");
    } else {
        printf("blk: FLUSH not offered\n");
    }
    buf = rt_alloc(SECTOR, 4096);
    st = vblk_rw(&b, VIRTIO_BLK_T_IN, b.capacity, buf, SECTOR);
    if (st == VIRTIO_BLK_S_OK || st < 0) {
        printf("blk: read past the end (sector %lu) returned %d, expected an error status\n",
               b.capacity, st);
        return -EIO;
    }
    printf("blk: read past the end rejected (status %d)\n", st);
    if (virtio_status(&b.vd) & VIRTIO_STATUS_NEEDS_RESET) {
        printf("blk: device wants a reset after a well-formed request\n");
        return -EIO;
    }
    ret = blk_zeroes(&b, seed);
    if (ret < 0)
        return ret;
    return blk_mq(&b, seed);
}

static int blk_test_ro(void)
{
    struct vblk b;
    uint8_t *orig, *buf;
    int ret, st;

    ret = vblk_open(&b, 1, 64, 0);
    if (ret == -ENODEV) {
        printf("blk: no second disk, skipping the read-only checks\n");
        return 0;
    }
    if (ret < 0)
        return ret;
    printf("blk: disk 1: %lu sectors, features 0x%lx\n", b.capacity, b.vd.features);
    if (!virtio_has(&b.vd, VIRTIO_BLK_F_RO)) {
        printf("blk: disk 1 does not offer VIRTIO_BLK_F_RO\n");
        return -EINVAL;
    }
    ret = blk_check_id(&b, "blk.ro_serial");
    if (ret < 0)
        return ret;
    orig = rt_alloc(8 * SECTOR, 4096);
    buf = rt_alloc(8 * SECTOR, 4096);
    st = vblk_rw(&b, VIRTIO_BLK_T_IN, 0, orig, 8 * SECTOR);
    if (st != VIRTIO_BLK_S_OK) {
        printf("blk: read of the read-only disk failed (status %d)\n", st);
        return -EIO;
    }
    memset(buf, 0x5a, 8 * SECTOR);
    st = vblk_rw(&b, VIRTIO_BLK_T_OUT, 0, buf, 8 * SECTOR);
    if (st == VIRTIO_BLK_S_OK) {
        printf("blk: write to the read-only disk succeeded\n");
        return -EIO;
    }
    printf("blk: write to the read-only disk rejected (status %d)\n", st);
    if (virtio_status(&b.vd) & VIRTIO_STATUS_NEEDS_RESET) {
        /* A write on a read-only disk is a driver bug the device may also treat as fatal. */
        printf("blk: device set NEEDS_RESET, resetting\n");
        ret = vblk_reinit(&b, 64);
        if (ret < 0)
            return ret;
    }
    st = vblk_rw(&b, VIRTIO_BLK_T_IN, 0, buf, 8 * SECTOR);
    if (st != VIRTIO_BLK_S_OK || memcmp(orig, buf, 8 * SECTOR)) {
        printf("blk: read-only disk changed or unreadable after the write (status %d)\n", st);
        return -EIO;
    }
    printf("blk: read-only disk unchanged\n");
    return 0;
}

int guest_main(void)
{
    uint64_t seed = cmdline_get_u64("blk.seed", rdtsc());
    int ret;

    printf("blk: seed %lu\n", seed);
    ret = blk_test_rw(seed);
    if (ret < 0)
        return ret;
    return blk_test_ro();
}
