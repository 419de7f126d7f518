/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pci: enumerate bus 0 through CF8/CFC and through ECAM (from the MCFG) and
 * check both give the same devices and the same first 64 bytes of config
 * space (BARs excepted: sizing by firmware leaves them equal anyway). Prints
 * vendor/device/class per function. pci.expect_virtio=N checks N modern
 * virtio functions are present.
 */
#include "rt/rt.h"
#include "rt/io.h"

const char guest_name[] = "pci";

int guest_main(void)
{
    uint64_t ecam;
    uint8_t bus_start, bus_end;
    uint64_t expect_virtio = cmdline_get_u64("pci.expect_virtio", 0);
    unsigned found = 0, virtio = 0;
    int ret;

    ret = acpi_mcfg_ecam(&ecam, &bus_start, &bus_end);
    if (ret < 0) {
        printf("pci: no MCFG table (%d)\n", ret);
        return ret;
    }
    printf("pci: ECAM at 0x%lx, buses %u-%u\n", ecam, bus_start, bus_end);
    if (bus_start != 0) {
        printf("pci: ECAM does not cover bus 0\n");
        return -EINVAL;
    }
    for (uint8_t dev = 0; dev < 32; dev++) {
        for (uint8_t fn = 0; fn < 8; fn++) {
            uint64_t base = ecam + ((uint64_t)dev << 15) + ((uint64_t)fn << 12);
            uint32_t id_cf8 = pci_cf8_read32(0, dev, fn, 0);
            uint32_t id_ecam = mmio_read32(base);
            uint32_t cls;

            if (id_cf8 != id_ecam) {
                printf("pci: 00:%02x.%x: CF8 reads id %08x, ECAM %08x\n", dev, fn, id_cf8, id_ecam);
                return -EPROTO;
            }
            if ((id_cf8 & 0xffff) == 0xffff) {
                if (fn == 0)
                    break;
                continue;
            }
            for (uint16_t off = 0; off < 64; off += 4) {
                uint32_t a = pci_cf8_read32(0, dev, fn, off);
                uint32_t b = mmio_read32(base + off);

                if (a != b) {
                    printf("pci: 00:%02x.%x offset 0x%02x: CF8 %08x, ECAM %08x\n", dev, fn, off, a,
                           b);
                    return -EPROTO;
                }
            }
            /* Beyond 256 bytes only ECAM reaches: must not fault and must read something. */
            (void)mmio_read32(base + 0x100);
            cls = pci_cf8_read32(0, dev, fn, 8);
            printf("pci: 00:%02x.%x %04x:%04x class %02x%02x%02x rev %02x\n", dev, fn,
                   id_cf8 & 0xffff, id_cf8 >> 16, cls >> 24, (cls >> 16) & 0xff, (cls >> 8) & 0xff,
                   cls & 0xff);
            /* A write through one path is visible through the other (Interrupt Line, 0x3c). */
            if ((cls >> 24) != 0x06) {
                uint32_t orig = pci_cf8_read32(0, dev, fn, 0x3c);

                pci_cf8_write32(0, dev, fn, 0x3c, (orig & ~0xffu) | 0x5a);
                if ((mmio_read32(base + 0x3c) & 0xff) != 0x5a) {
                    printf("pci: 00:%02x.%x: CF8 write not seen through ECAM\n", dev, fn);
                    return -EPROTO;
                }
                mmio_write32(base + 0x3c, (orig & ~0xffu) | 0xa5);
                if ((pci_cf8_read32(0, dev, fn, 0x3c) & 0xff) != 0xa5) {
                    printf("pci: 00:%02x.%x: ECAM write not seen through CF8\n", dev, fn);
                    return -EPROTO;
                }
                pci_cf8_write32(0, dev, fn, 0x3c, orig);
            }
            found++;
            if ((id_cf8 & 0xffff) == 0x1af4 && (id_cf8 >> 16) >= 0x1040)
                virtio++;
            if (fn == 0 && !(mmio_read8(base + 0x0e) & 0x80))
                break; /* single-function device */
        }
    }
    printf("pci: %u functions, %u modern virtio\n", found, virtio);
    if (!found) {
        printf("pci: bus 0 is empty\n");
        return -ENODEV;
    }
    if (virtio < expect_virtio) {
        printf("NODEV virtio\n");
        printf("pci: expected %lu modern virtio functions\n", expect_virtio);
        return -ENODEV;
    }
    return 0;
}
