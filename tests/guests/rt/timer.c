/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Time from the TSC. Its frequency is calibrated once against the ACPI PM
 * timer (3.579545 MHz, from the FADT); without one, CPUID leaves 0x40000010
 * (hypervisor TSC kHz), 0x15 and 0x16, then the i8254 PIT are tried.
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

static uint16_t pit_read_ch0(void)
{
    uint8_t lo, hi;

    outb(0x43, 0x00); /* latch channel 0 */
    lo = inb(0x40);
    hi = inb(0x40);
    return (uint16_t)(lo | hi << 8);
}

/*
 * i8254 channel 0 as a free-running down-counter (mode 2, 1.193182 MHz),
 * 10 ms of it: the fallback on hardware-reduced ACPI platforms without a PM
 * timer. Interrupts stay disabled, so its IRQ 0 is never taken. Returns 0
 * when no PIT counts.
 */
static uint64_t tsc_khz_from_pit(void)
{
    const uint32_t ticks = 11932; /* 10 ms */
    uint32_t elapsed = 0, reads = 0;
    uint16_t prev, cur;
    uint64_t t0;

    outb(0x43, 0x34); /* channel 0, lo/hi byte, mode 2 */
    outb(0x40, 0xff);
    outb(0x40, 0xff);
    prev = pit_read_ch0();
    t0 = rdtsc();
    while (elapsed < ticks) {
        cur = pit_read_ch0();
        elapsed += (uint16_t)(prev - cur);
        prev = cur;
        if (++reads == 1000 && elapsed == 0)
            return 0; /* not counting: no PIT */
        if (reads > 200000)
            return 0;
    }
    return (rdtsc() - t0) * 1193182ull / elapsed / 1000;
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
    if (!rt_tsc_khz)
        rt_tsc_khz = tsc_khz_from_pit();
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
