/* SPDX-License-Identifier: Apache-2.0 */
/* hello: serial output, READY, the timer, a clean ACPI power-off. */
#include "rt/rt.h"

const char guest_name[] = "hello";

int guest_main(void)
{
    uint64_t t0, t1;

    char token[64];

    printf("hello from the qingtian test guest\n");
    /* The runner passes a random token: proves the command line reached the guest intact. */
    if (cmdline_get("hello.token", token, sizeof(token)))
        printf("hello: token %s\n", token);
    printf("start_info: version %u cmdline 0x%lx rsdp 0x%lx memmap %u entries, ram top 0x%lx\n",
           rt_start_info.version, rt_start_info.cmdline_paddr, rt_start_info.rsdp_paddr,
           rt_start_info.memmap_entries, rt_ram_top);
    printf("acpi: FADT %s, MADT %s, MCFG %s, DSDT %s\n", acpi_find_table("FACP") ? "yes" : "no",
           acpi_find_table("APIC") ? "yes" : "no", acpi_find_table("MCFG") ? "yes" : "no",
           acpi_find_table("DSDT") ? "yes" : "no");
    if (!acpi_find_table("FACP")) {
        printf("hello: no FADT, cannot power off\n");
        return -ENOENT;
    }
    t0 = time_ns();
    udelay(1000);
    t1 = time_ns();
    printf("tsc %lu kHz, 1 ms delay measured as %lu us\n", tsc_khz(), (t1 - t0) / 1000);
    if (t1 <= t0) {
        printf("hello: the TSC does not advance\n");
        return -EIO;
    }
    return 0;
}
