/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Application processors: INIT-SIPI-SIPI to every enabled MADT entry through
 * the local APIC (xAPIC MMIO, or x2APIC MSRs when x2APIC is enabled). Each AP
 * runs the trampoline in start.S into long mode, records its APIC ID and
 * runs the caller's function with its index (or halts).
 */
#include "rt.h"
#include "io.h"

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
static void (*volatile ap_fn)(uint32_t index);

uint32_t cpu_apic_id(void)
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
    void (*fn)(uint32_t);

    idt_load();
    slot = __atomic_fetch_add(&ap_count, 1, __ATOMIC_SEQ_CST);
    if (slot < AP_MAX)
        ap_reported[slot] = cpu_apic_id();
    fn = ap_fn;
    if (fn && slot < AP_MAX)
        fn(slot);
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

int smp_start_aps(void (*fn)(uint32_t index), uint32_t *madt_ids, int max_ids, int *n_cpus)
{
    uint32_t ids[AP_MAX];
    uint64_t lapic, apic_base;
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
    for (int i = 0; i < n && i < max_ids; i++)
        madt_ids[i] = ids[i];
    *n_cpus = n;
    apic_base = rdmsr(MSR_APIC_BASE);
    x2apic = apic_base & APIC_BASE_X2APIC;
    printf("smp: MADT lists %d CPUs, LAPIC at 0x%lx (%s), BSP APIC ID %u\n", n, lapic,
           x2apic ? "x2APIC" : "xAPIC", bsp);
    if (!(apic_base & APIC_BASE_ENABLE)) {
        printf("smp: local APIC globally disabled (APIC_BASE 0x%lx)\n", apic_base);
        return -ENODEV;
    }
    if (tramp_len > 4096)
        return -EINVAL;
    memcpy((void *)AP_TRAMPOLINE_BASE, ap_tramp_start, tramp_len);
    (void)tsc_khz(); /* calibrate before APs may need time */
    ap_fn = fn;

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
    return (int)started;
}

uint32_t smp_reported_id(uint32_t index)
{
    return index < AP_MAX ? ap_reported[index] : 0xffffffff;
}
