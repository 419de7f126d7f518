/* SPDX-License-Identifier: Apache-2.0 */
/*
 * blkmq: every vCPU drives its own virtio-blk request queue at the same
 * time (VIRTIO_BLK_F_MQ): the BSP uses queue 0 and each AP the next queue.
 * Each writes a seeded 4 KiB block to its own sector range, reads it back on
 * the same queue and checks it, blkmq.rounds times. The BSP then re-reads
 * every queue's last blocks through queue 0.
 */
#include "rt/rt.h"
#include "rt/io.h"
#include "rt/vblk.h"

const char guest_name[] = "blkmq";

#define SECTOR       512
#define BLOCK        4096
#define AREA_SECTORS 1024 /* per queue */
#define AREA_BASE    8192
#define SLOTS_PER_Q  16

struct blkmq {
    struct vblk b;
    uint64_t seed;
    uint64_t rounds;
    uint64_t *buf[VIRTIO_MAX_QUEUES];
    volatile uint32_t done[VIRTIO_MAX_QUEUES];
    volatile int32_t error[VIRTIO_MAX_QUEUES];
    volatile uint64_t failed_round[VIRTIO_MAX_QUEUES];
};

static struct blkmq mq;

static inline uint64_t mq_word(uint64_t seed, uint64_t sector, uint64_t i)
{
    uint64_t w = ((seed ^ (sector << 6)) + i) * 0x9e3779b97f4a7c15ull;

    return w ^ (w >> 32);
}

static uint64_t mq_sector(uint16_t q, uint64_t round)
{
    return AREA_BASE + (uint64_t)q * AREA_SECTORS + (round % SLOTS_PER_Q) * (BLOCK / SECTOR);
}

static uint64_t mq_seed(uint16_t q, uint64_t round)
{
    return mq.seed ^ ((uint64_t)q << 40) ^ (round << 20);
}

static int mq_round(uint16_t q, uint64_t round)
{
    uint64_t *w = mq.buf[q];
    uint64_t sector = mq_sector(q, round), seed = mq_seed(q, round);
    int st;

    for (uint64_t i = 0; i < BLOCK / 8; i++)
        w[i] = mq_word(seed, sector, i);
    st = vblk_rw_queue(&mq.b, q, VIRTIO_BLK_T_OUT, sector, w, BLOCK);
    if (st != VIRTIO_BLK_S_OK)
        return st < 0 ? st : -EIO;
    for (uint64_t i = 0; i < BLOCK / 8; i++)
        w[i] = 0;
    st = vblk_rw_queue(&mq.b, q, VIRTIO_BLK_T_IN, sector, w, BLOCK);
    if (st != VIRTIO_BLK_S_OK)
        return st < 0 ? st : -EIO;
    for (uint64_t i = 0; i < BLOCK / 8; i++) {
        if (w[i] != mq_word(seed, sector, i))
            return -EPROTO;
    }
    return 0;
}

static void mq_worker(uint32_t index)
{
    uint16_t q = (uint16_t)(index + 1); /* the BSP has queue 0 */

    if (q >= mq.b.n_queues)
        return;
    for (uint64_t r = 0; r < mq.rounds; r++) {
        int ret = mq_round(q, r);

        if (ret < 0) {
            mq.error[q] = ret;
            mq.failed_round[q] = r;
            break;
        }
    }
    __atomic_store_n(&mq.done[q], 1, __ATOMIC_SEQ_CST);
}

int guest_main(void)
{
    uint32_t ids[AP_MAX];
    uint64_t want = cmdline_get_u64("blkmq.queues", 0), end;
    int ret, n_cpus = 0, started;
    uint16_t nq;

    mq.seed = cmdline_get_u64("blkmq.seed", rdtsc());
    mq.rounds = cmdline_get_u64("blkmq.rounds", 64);
    ret = vblk_open(&mq.b, 0, 64, 1ull << VIRTIO_BLK_F_MQ);
    if (ret == -ENODEV)
        printf("NODEV virtio-blk\n");
    if (ret < 0)
        return ret;
    nq = mq.b.n_queues;
    printf("blkmq: %u request queues, %lu rounds each, seed %lu\n", nq, mq.rounds, mq.seed);
    if (want && nq != (want < VIRTIO_MAX_QUEUES ? want : VIRTIO_MAX_QUEUES)) {
        printf("blkmq: expected %lu queues\n", want);
        return -EINVAL;
    }
    if (mq.b.capacity < AREA_BASE + (uint64_t)nq * AREA_SECTORS)
        return -ENOSPC;
    for (uint16_t q = 0; q < nq; q++)
        mq.buf[q] = rt_alloc(BLOCK, 4096);

    started = smp_start_aps(mq_worker, ids, AP_MAX, &n_cpus);
    if (started < 0)
        return started;
    if (started + 1 < nq) {
        printf("blkmq: %d CPUs for %u queues: need one CPU per queue\n", started + 1, nq);
        return -EINVAL;
    }
    for (uint64_t r = 0; r < mq.rounds; r++) {
        ret = mq_round(0, r);
        if (ret < 0) {
            printf("blkmq: queue 0 round %lu failed (%d)\n", r, ret);
            return ret;
        }
    }
    mq.done[0] = 1;
    end = rdtsc() + 60000ull * tsc_khz(); /* 60 s */
    for (uint16_t q = 1; q < nq; q++) {
        while (!__atomic_load_n(&mq.done[q], __ATOMIC_SEQ_CST)) {
            if (rdtsc() > end) {
                printf("blkmq: queue %u worker did not finish\n", q);
                return -ETIMEDOUT;
            }
            cpu_relax();
        }
        if (mq.error[q]) {
            printf("blkmq: queue %u round %lu failed (%d)\n", q, mq.failed_round[q], mq.error[q]);
            return mq.error[q];
        }
    }
    /* Everything the other queues wrote is visible through queue 0. */
    for (uint16_t q = 0; q < nq; q++) {
        for (uint64_t r = mq.rounds > SLOTS_PER_Q ? mq.rounds - SLOTS_PER_Q : 0; r < mq.rounds;
             r++) {
            uint64_t sector = mq_sector(q, r), seed = mq_seed(q, r);
            int st = vblk_rw_queue(&mq.b, 0, VIRTIO_BLK_T_IN, sector, mq.buf[0], BLOCK);

            if (st != VIRTIO_BLK_S_OK)
                return -EIO;
            for (uint64_t i = 0; i < BLOCK / 8; i++) {
                if (mq.buf[0][i] != mq_word(seed, sector, i)) {
                    printf("blkmq: block of queue %u round %lu differs through queue 0\n", q, r);
                    return -EPROTO;
                }
            }
        }
    }
    printf("blkmq: %u queues x %lu rounds written and verified concurrently\n", nq, mq.rounds);
    return 0;
}
