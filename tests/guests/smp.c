/* SPDX-License-Identifier: Apache-2.0 */
/*
 * smp: start every processor the MADT lists with INIT-SIPI-SIPI (rt/smp.c);
 * each AP reports its APIC ID and halts. The set of reported IDs plus the
 * BSP's must equal the MADT's, each exactly once (and smp.expect, if given).
 */
#include "rt/rt.h"

const char guest_name[] = "smp";

int guest_main(void)
{
    uint32_t ids[AP_MAX];
    uint64_t expect = cmdline_get_u64("smp.expect", 0);
    uint32_t bsp = cpu_apic_id();
    int n = 0, started;

    started = smp_start_aps(NULL, ids, AP_MAX, &n);
    if (started < 0)
        return started;
    if (expect && (uint64_t)n != expect) {
        printf("smp: expected %lu CPUs in the MADT, found %d\n", expect, n);
        return -EINVAL;
    }
    for (int i = 0; i < n; i++) {
        int seen = ids[i] == bsp ? 1 : 0;

        for (int j = 0; j < started; j++)
            seen += smp_reported_id((uint32_t)j) == ids[i];
        if (seen != 1) {
            printf("smp: APIC ID %u reported %d times\n", ids[i], seen);
            return -EPROTO;
        }
    }
    printf("smp: all %d CPUs started\n", n);
    return 0;
}
