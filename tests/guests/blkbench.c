/* SPDX-License-Identifier: Apache-2.0 */
/*
 * blkbench: 4 KiB random reads on the first virtio-blk disk at queue depth
 * bench.qd (default 1), for bench.count requests or bench.secs seconds,
 * whichever comes first, after bench.warmup requests. Prints one line:
 *   BENCH iops=<n> lat_ns=<mean latency> qd=<qd> bs=4096 reqs=<n> ns=<elapsed>
 */
#include "rt/rt.h"
#include "rt/io.h"
#include "rt/vblk.h"

const char guest_name[] = "blkbench";

#define BS         4096
#define BS_SECTORS (BS / 512)

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

int guest_main(void)
{
    uint64_t qd = cmdline_get_u64("bench.qd", 1);
    uint64_t count = cmdline_get_u64("bench.count", 100000);
    uint64_t secs = cmdline_get_u64("bench.secs", 10);
    uint64_t warmup = cmdline_get_u64("bench.warmup", 200);
    uint64_t rng = cmdline_get_u64("bench.seed", 0x2545f4914f6cdd1dull) | 1;
    uint64_t submit_tsc[VBLK_SLOTS];
    uint64_t blocks, issued = 0, done = 0, lat_sum = 0, t0 = 0, t1, deadline, elapsed_ns;
    uint64_t khz = tsc_khz();
    uint8_t *bufs;
    struct vblk b;
    int ret;

    ret = vblk_open(&b, 0, 256, 0);
    if (ret == -ENODEV)
        printf("NODEV virtio-blk\n");
    if (ret < 0) {
        printf("blkbench: no virtio-blk disk (%d)\n", ret);
        return ret;
    }
    blocks = b.capacity / BS_SECTORS;
    if (!blocks) {
        printf("blkbench: disk smaller than one block\n");
        return -ENOSPC;
    }
    if (qd < 1)
        qd = 1;
    if (qd > VBLK_SLOTS)
        qd = VBLK_SLOTS;
    if (qd > b.vd.vq[0].size / 3u)
        qd = b.vd.vq[0].size / 3u;
    bufs = rt_alloc(qd * BS, 4096);
    printf("blkbench: %lu blocks of %u bytes, qd %lu, queue size %u, count %lu, %lu s max\n",
           blocks, BS, qd, b.vd.vq[0].size, count, secs);

    /* Warm-up, then the measured run; both keep qd requests in flight. */
    for (int phase = 0; phase < 2; phase++) {
        uint64_t target = phase == 0 ? warmup : count;

        issued = done = lat_sum = 0;
        t0 = rdtsc();
        deadline = t0 + secs * khz * 1000;
        while (done < target) {
            bool kicked = false;

            for (uint64_t s = 0; s < qd && issued < target; s++) {
                if (b.slots[s].head >= 0)
                    continue;
                submit_tsc[s] = rdtsc();
                ret = vblk_submit(&b, (int)s, VIRTIO_BLK_T_IN,
                                  (xorshift64(&rng) % blocks) * BS_SECTORS, bufs + s * BS, BS);
                if (ret < 0)
                    panic("blkbench: submit failed (%d)", ret);
                issued++;
                kicked = true;
            }
            if (kicked)
                virtq_kick(&b.vd, &b.vd.vq[0]);
            for (;;) {
                int slot = vblk_reap(&b);

                if (slot < 0)
                    break;
                if (b.slots[slot].status != VIRTIO_BLK_S_OK)
                    panic("blkbench: read failed (status %u)", b.slots[slot].status);
                lat_sum += rdtsc() - submit_tsc[slot];
                done++;
            }
            if (rdtsc() > deadline) {
                if (target == count)
                    printf("blkbench: time limit reached after %lu requests\n", done);
                /* Drain what is in flight before stopping. */
                while (done < issued) {
                    int slot = vblk_reap(&b);

                    if (slot >= 0) {
                        lat_sum += rdtsc() - submit_tsc[slot];
                        done++;
                    }
                }
                break;
            }
        }
    }
    t1 = rdtsc();
    if (!done)
        return -EIO;
    elapsed_ns = (t1 - t0) * 1000000 / khz;
    printf("BENCH iops=%lu lat_ns=%lu qd=%lu bs=%u reqs=%lu ns=%lu\n",
           done * 1000000000ul / (elapsed_ns ? elapsed_ns : 1), lat_sum * 1000000 / khz / done, qd,
           BS, done, elapsed_ns);
    return 0;
}
