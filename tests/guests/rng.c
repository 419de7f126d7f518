/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rng: virtio-rng (virtio 1.2, 5.4). Fills device-writable buffers of several
 * sizes, checks the used length is within the buffer, that bytes were really
 * written (the buffer was pre-filled with a marker) and that two reads differ.
 */
#include "rt/rt.h"
#include "rt/io.h"
#include "rt/virtio.h"

const char guest_name[] = "rng";

#define RNG_MAX 256

static int rng_read(struct virtio_dev *vd, uint8_t *buf, uint32_t len, uint32_t *got)
{
    struct virtq_buf b = {(uint64_t)buf, len, true};
    int head, ret;

    memset(buf, 0, len);
    head = virtq_add(&vd->vq[0], &b, 1);
    if (head < 0)
        return head;
    virtq_kick(vd, &vd->vq[0]);
    ret = virtq_wait(vd, &vd->vq[0], head, got, 5000);
    if (ret < 0)
        return ret;
    if (*got == 0 || *got > len) {
        printf("rng: device reported %u bytes for a %u-byte buffer\n", *got, len);
        return -EPROTO;
    }
    return 0;
}

int guest_main(void)
{
    static const uint32_t sizes[] = {1, 16, 64, 255, RNG_MAX};
    struct virtio_dev vd;
    uint8_t *a, *b;
    uint32_t got_a, got_b;
    int ret;

    ret = virtio_find(VIRTIO_ID_RNG, 0, &vd);
    if (ret == -ENODEV)
        printf("NODEV virtio-rng\n");
    if (ret < 0)
        return ret;
    ret = virtio_init(&vd, 0);
    if (ret < 0)
        return ret;
    ret = virtq_setup(&vd, 0, 16);
    if (ret < 0)
        return ret;
    virtio_driver_ok(&vd);
    a = rt_alloc(RNG_MAX, 64);
    b = rt_alloc(RNG_MAX, 64);
    for (unsigned i = 0; i < ARRAY_SIZE(sizes); i++) {
        ret = rng_read(&vd, a, sizes[i], &got_a);
        if (ret < 0)
            return ret;
        printf("rng: %u-byte buffer: %u bytes\n", sizes[i], got_a);
    }
    /* Two full reads: random data is not all zero and does not repeat. */
    ret = rng_read(&vd, a, RNG_MAX, &got_a);
    if (ret == 0)
        ret = rng_read(&vd, b, RNG_MAX, &got_b);
    if (ret < 0)
        return ret;
    if (got_a < 16 || got_b < 16) {
        printf("rng: short reads (%u, %u bytes)\n", got_a, got_b);
        return -EIO;
    }
    if (!memcmp(a, b, 16)) {
        printf("rng: two reads returned the same 16 bytes\n");
        return -EIO;
    }
    {
        uint64_t nz = 0;

        for (uint32_t i = 0; i < got_a; i++)
            nz += a[i] != 0;
        if (nz < got_a / 2) {
            printf("rng: %lu of %u bytes non-zero\n", nz, got_a);
            return -EIO;
        }
    }
    printf("rng: ok\n");
    return 0;
}
