/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Time from the TSC. Its frequency is calibrated once against the ACPI PM
 * timer (3.579545 MHz, from the FADT); without one, CPUID leaves 0x40000010
 * (hypervisor TSC kHz), 0x15 and 0x16 are tried.
 */
#include "rt.h"
#include "io.h"

#define PM_TIMER_HZ 3579545ull

static uint64_t rt_tsc_khz;

static uint64_t tsc_khz_from_pm_timer(uint16_t port)
{
    const uint32_t mask = 0xffffff; /* the 24-bit timer also works for 32-bit ones */
    const uint32_t ticks = (uint32_t)(PM_TIMER_HZ / 50); /* 20 ms */
    uint32_t start, now, elapsed = 0;
    uint64_t t0, t1;

    start = inl(port) & mask;
    /* Wait for an edge so the measurement starts on a tick boundary. */
    while ((inl(port) & mask) == start)
        cpu_relax();
    start = inl(port) & mask;
    t0 = rdtsc();
    while (elapsed < ticks) {
        now = inl(port) & mask;
        elapsed = (now - start) & mask;
    }
    t1 = rdtsc();
    return (t1 - t0) * PM_TIMER_HZ / elapsed / 1000;
}

static uint64_t tsc_khz_from_cpuid(void)
{
    uint32_t a, b, c, d;

    cpuid(0x40000000, 0, &a, &b, &c, &d);
    if (a >= 0x40000010) {
        cpuid(0x40000010, 0, &a, &b, &c, &d);
        if (a)
            return a;
    }
    cpuid(0, 0, &a, &b, &c, &d);
    if (a >= 0x15) {
        uint32_t den, num, hz;

        cpuid(0x15, 0, &den, &num, &hz, &d);
        if (den && num && hz)
            return (uint64_t)hz * num / den / 1000;
    }
    if (a >= 0x16) {
        cpuid(0x16, 0, &a, &b, &c, &d);
        if (a)
            return (uint64_t)a * 1000;
    }
    return 0;
}

uint64_t tsc_khz(void)
{
    uint16_t port;

    if (rt_tsc_khz)
        return rt_tsc_khz;
    port = acpi_pm_timer_port();
    if (port)
        rt_tsc_khz = tsc_khz_from_pm_timer(port);
    if (!rt_tsc_khz)
        rt_tsc_khz = tsc_khz_from_cpuid();
    if (!rt_tsc_khz) {
        printf("WARN: TSC frequency unknown, assuming 1 GHz\n");
        rt_tsc_khz = 1000000;
    }
    return rt_tsc_khz;
}

uint64_t time_ns(void)
{
    uint64_t khz = tsc_khz();
    uint64_t t = rdtsc();

    /* Split to avoid overflowing t * 10^6 after a few hours of uptime. */
    return t / khz * 1000000 + (t % khz) * 1000000 / khz;
}

void udelay(uint64_t us)
{
    uint64_t end = rdtsc() + us * tsc_khz() / 1000;

    while (rdtsc() < end)
        cpu_relax();
}
