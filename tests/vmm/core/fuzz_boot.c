/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the kernel loaders (PVH ELF and bzImage) on arbitrary files.
 * An odd-sized input also gets an initramfs. Whatever a loader accepts must
 * put the entry point and the boot parameters inside guest RAM.
 */
#include <stdint.h>
#include <stdlib.h>

#include "vmm/boot.h"

#define FUZZ_RAM (32u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *ram; /* one guest RAM for the whole run */
    static struct guest_mem gm;
    static const uint8_t initrd[4096];
    struct boot_images img = {
        .kernel = data, .kernel_len = size, .cmdline = "console=ttyS0", .rsdp = 0xe0000};
    struct boot_info bi;
    char err[256];

    if (!ram) {
        ram = calloc(1, FUZZ_RAM);
        if (!ram || guest_mem_layout(&gm, FUZZ_RAM, ram) < 0)
            abort();
    }
    if (size & 1) {
        img.initrd = initrd;
        img.initrd_len = sizeof(initrd);
    }
    if (boot_load(&gm, &img, &bi, err, sizeof(err)) == 0) {
        if (!guest_mem_ptr(&gm, bi.entry, 1) || !guest_mem_ptr(&gm, bi.params, 1) ||
            bi.kernel_end > FUZZ_RAM)
            abort();
    }
    return 0;
}

#include "fuzz_replay.h"
