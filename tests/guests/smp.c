/* SPDX-License-Identifier: Apache-2.0 */
/*
 * smp: start every processor the MADT lists with INIT-SIPI-SIPI through the
 * local APIC (xAPIC MMIO, or x2APIC MSRs when the firmware enabled x2APIC).
 * Each AP goes real mode -> protected mode -> long mode through the
 * trampoline in start.S, reports its APIC ID and halts. The BSP checks that
 * the set of reported IDs equals the MADT's (and smp.expect, if given).
 */
#include "rt/rt.h"
#include "rt/io.h"

const char guest_name[] = "smp";

#define MSR_APIC_BASE    0x1b
#define APIC_BASE_X2APIC (1u << 10)
#define APIC_BASE_ENABLE (1u << 11)
#define XAPIC_ICR_LO     0x300
#define XAPIC_ICR_HI     0x310
#define X2APIC_ICR       0x830
#define ICR_INIT         0x00004500u /* INIT, level assert */
#define ICR_STARTUP      0x00004600u
#define ICR_BUSY         (1u << 12)
#define AP_WAIT_MS       1000

static volatile uint32_t ap_reported[AP_MAX];
static volatile uint32_t ap_count;

static uint32_t cpu_apic_id(void)
{
    uint32_t a, b, c, d;

    cpuid(0, 0, &a, &b, &c, &d);
    if (a >= 0xb) {
        cpuid(0xb, 0, &a, &b, &c, &d);
        if (b) /* leaf 0xb valid: x2APIC ID in EDX */
            return d;
    }
    cpuid(1, 0, &a, &b, &c, &d);
    return b >> 24;
}

void ap_main(void)
{
    uint32_t slot;

    idt_load();
    slot = __atomic_fetch_add(&ap_count, 1, __ATOMIC_SEQ_CST);
    if (slot < AP_MAX)
        ap_reported[slot] = cpu_apic_id();
    for (;;)
        __asm__ volatile("cli; hlt");
}

static void apic_send_ipi(bool x2apic, uint64_t lapic, uint32_t dest, uint32_t icr)
{
    if (x2apic) {
        wrmsr(X2APIC_ICR, ((uint64_t)dest << 32) | icr);
        return;
    }
    for (int i = 0; i < 100000 && (mmio_read32(lapic + XAPIC_ICR_LO) & ICR_BUSY); i++)
        cpu_relax();
    mmio_write32(lapic + XAPIC_ICR_HI, dest << 24);
    mmio_write32(lapic + XAPIC_ICR_LO, icr);
}

static bool ap_wait(uint32_t want, uint64_t ms)
{
    uint64_t end = rdtsc() + ms * tsc_khz();

    while (rdtsc() < end) {
        if (__atomic_load_n(&ap_count, __ATOMIC_SEQ_CST) >= want)
            return true;
        cpu_relax();
    }
    return false;
}

int guest_main(void)
{
    uint32_t ids[AP_MAX];
    uint64_t lapic, apic_base;
    uint64_t expect = cmdline_get_u64("smp.expect", 0);
    uint32_t bsp = cpu_apic_id(), started = 0;
    size_t tramp_len = (size_t)(ap_tramp_end - ap_tramp_start);
    bool x2apic;
    int n;

    n = acpi_madt_cpus(ids, AP_MAX, &lapic);
    if (n < 0) {
        printf("smp: no usable MADT (%d)\n", n);
        return n;
    }
    if (n > AP_MAX) {
        printf("smp: MADT lists %d CPUs, only %d supported\n", n, AP_MAX);
        return -ENOSPC;
    }
    apic_base = rdmsr(MSR_APIC_BASE);
    x2apic = apic_base & APIC_BASE_X2APIC;
    printf("smp: MADT lists %d CPUs, LAPIC at 0x%lx (%s), BSP APIC ID %u\n", n, lapic,
           x2apic ? "x2APIC" : "xAPIC", bsp);
    if (expect && (uint64_t)n != expect) {
        printf("smp: expected %lu CPUs in the MADT\n", expect);
        return -EINVAL;
    }
    if (!(apic_base & APIC_BASE_ENABLE)) {
        printf("smp: local APIC globally disabled (APIC_BASE 0x%lx)\n", apic_base);
        return -ENODEV;
    }
    if (tramp_len > 4096)
        return -EINVAL;
    memcpy((void *)AP_TRAMPOLINE_BASE, ap_tramp_start, tramp_len);

    for (int i = 0; i < n; i++) {
        uint64_t t0;

        if (ids[i] == bsp)
            continue;
        t0 = time_ns();
        apic_send_ipi(x2apic, lapic, ids[i], ICR_INIT);
        udelay(10000);
        apic_send_ipi(x2apic, lapic, ids[i], ICR_STARTUP | (AP_TRAMPOLINE_BASE >> 12));
        if (!ap_wait(started + 1, 1)) {
            apic_send_ipi(x2apic, lapic, ids[i], ICR_STARTUP | (AP_TRAMPOLINE_BASE >> 12));
            if (!ap_wait(started + 1, AP_WAIT_MS)) {
                printf("smp: APIC ID %u did not start within %d ms\n", ids[i], AP_WAIT_MS);
                return -ETIMEDOUT;
            }
        }
        started++;
        printf("smp: AP with APIC ID %u online (reported %u) after %lu us\n", ids[i],
               ap_reported[started - 1], (time_ns() - t0) / 1000);
    }

    /* Every MADT entry except the BSP reported exactly once. */
    for (int i = 0; i < n; i++) {
        int seen = ids[i] == bsp ? 1 : 0;

        for (uint32_t j = 0; j < started; j++)
            seen += ap_reported[j] == ids[i];
        if (seen != 1) {
            printf("smp: APIC ID %u reported %d times\n", ids[i], seen);
            return -EPROTO;
        }
    }
    printf("smp: all %d CPUs started\n", n);
    return 0;
}
