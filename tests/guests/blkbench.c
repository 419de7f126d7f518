/* SPDX-License-Identifier: Apache-2.0 */
/*
 * blkbench: 4 KiB random reads on the first virtio-blk disk at queue depth
 * bench.qd (default 1), for bench.count requests or bench.secs seconds,
 * whichever comes first, after bench.warmup requests. Prints one line:
 *   BENCH iops=<n> lat_ns=<mean latency> qd=<qd> bs=4096 reqs=<n> ns=<elapsed>
 *
 * To keep the guest's own cost per request small (on PVM hosts the guest's
 * kernel-mode instructions are emulated), every slot owns a fixed
 * three-descriptor chain (header, data, status) written once: submitting is
 * a header update, an avail-ring entry and an index store; completing is
 * reading one used-ring element.
 */
#include "rt/rt.h"
#include "rt/io.h"
#include "rt/vblk.h"

const char guest_name[] = "blkbench";

#define BS         4096
#define BS_SECTORS (BS / 512)

struct bench {
    struct vblk b;
    struct virtq *vq;
    uint8_t *bufs;
    uint64_t qd;
    uint64_t blocks;
    uint64_t rng;
    uint64_t submit_tsc[VBLK_SLOTS];
    bool busy[VBLK_SLOTS];
};

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static void bench_chains_init(struct bench *bn)
{
    for (uint64_t s = 0; s < bn->qd; s++) {
        struct vblk_slot *slot = &bn->b.slots[s];
        struct virtq_desc *d = &bn->vq->desc[3 * s];

        slot->hdr.type = VIRTIO_BLK_T_IN;
        d[0] = (struct virtq_desc){(uint64_t)&slot->hdr, sizeof(slot->hdr), VIRTQ_DESC_F_NEXT,
                                   (uint16_t)(3 * s + 1)};
        d[1] = (struct virtq_desc){(uint64_t)(bn->bufs + s * BS), BS,
                                   VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, (uint16_t)(3 * s + 2)};
        d[2] = (struct virtq_desc){(uint64_t)&slot->status, 1, VIRTQ_DESC_F_WRITE, 0};
    }
}

static void bench_submit(struct bench *bn, uint64_t s)
{
    bn->b.slots[s].hdr.sector = (xorshift64(&bn->rng) % bn->blocks) * BS_SECTORS;
    bn->b.slots[s].status = 0xff;
    bn->busy[s] = true;
    bn->submit_tsc[s] = rdtsc();
    virtq_publish(bn->vq, (uint16_t)(3 * s));
}

/* One completion: its slot, or -1. */
static int bench_reap(struct bench *bn)
{
    struct virtq *vq = bn->vq;
    uint32_t id;

    if (vq->used->idx == vq->last_used)
        return -1;
    barrier();
    id = vq->used->ring[vq->last_used % vq->size].id;
    vq->last_used++;
    if (id % 3 || id / 3 >= bn->qd || !bn->busy[id / 3])
        panic("blkbench: device completed unknown head %u", id);
    bn->busy[id / 3] = false;
    if (bn->b.slots[id / 3].status != VIRTIO_BLK_S_OK)
        panic("blkbench: read failed (status %u)", bn->b.slots[id / 3].status);
    return (int)(id / 3);
}

int guest_main(void)
{
    static struct bench bench;
    struct bench *bn = &bench;
    uint64_t count = cmdline_get_u64("bench.count", 100000);
    uint64_t secs = cmdline_get_u64("bench.secs", 10);
    uint64_t warmup = cmdline_get_u64("bench.warmup", 200);
    uint64_t issued = 0, done = 0, lat_sum = 0, t0 = 0, t1, deadline, elapsed_ns;
    uint64_t khz = tsc_khz();
    int ret;

    bn->qd = cmdline_get_u64("bench.qd", 1);
    bn->rng = cmdline_get_u64("bench.seed", 0x2545f4914f6cdd1dull) | 1;
    ret = vblk_open(&bn->b, 0, 256, 0);
    if (ret == -ENODEV)
        printf("NODEV virtio-blk\n");
    if (ret < 0) {
        printf("blkbench: no virtio-blk disk (%d)\n", ret);
        return ret;
    }
    bn->vq = &bn->b.vd.vq[0];
    bn->blocks = bn->b.capacity / BS_SECTORS;
    if (!bn->blocks) {
        printf("blkbench: disk smaller than one block\n");
        return -ENOSPC;
    }
    if (bn->qd < 1)
        bn->qd = 1;
    if (bn->qd > VBLK_SLOTS)
        bn->qd = VBLK_SLOTS;
    if (bn->qd > bn->vq->size / 3u)
        bn->qd = bn->vq->size / 3u;
    bn->bufs = rt_alloc(bn->qd * BS, 4096);
    bench_chains_init(bn);
    printf("blkbench: %lu blocks of %u bytes, qd %lu, queue size %u, count %lu, %lu s max\n",
           bn->blocks, BS, bn->qd, bn->vq->size, count, secs);

    /* Warm-up, then the measured run; both keep qd requests in flight. */
    for (int phase = 0; phase < 2; phase++) {
        uint64_t target = phase == 0 ? warmup : count;

        issued = done = lat_sum = 0;
        t0 = rdtsc();
        deadline = t0 + secs * khz * 1000;
        while (done < target) {
            bool added = false;
            int slot;

            for (uint64_t s = 0; s < bn->qd && issued < target; s++) {
                if (!bn->busy[s]) {
                    bench_submit(bn, s);
                    issued++;
                    added = true;
                }
            }
            if (added)
                virtq_kick(&bn->b.vd, bn->vq);
            while ((slot = bench_reap(bn)) < 0)
                cpu_relax();
            do {
                lat_sum += rdtsc() - bn->submit_tsc[slot];
                done++;
            } while ((slot = bench_reap(bn)) >= 0);
            if (rdtsc() > deadline) {
                if (target == count)
                    printf("blkbench: time limit reached after %lu requests\n", done);
                while (done < issued) {
                    slot = bench_reap(bn);
                    if (slot >= 0) {
                        lat_sum += rdtsc() - bn->submit_tsc[slot];
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
           done * 1000000000ul / (elapsed_ns ? elapsed_ns : 1), lat_sum * 1000000 / khz / done,
           bn->qd, BS, done, elapsed_ns);
    return 0;
}
