/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Legacy platform devices (16550A, RTC/CMOS, ACPI PM, i8042) driven through
 * the port dispatch table of a VM without KVM, as a guest would drive them.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "fake_vm.h"
#include "vmm/acpi.h"
#include "vmm/device.h"
#include "vmm/layout.h"

struct fixture {
    struct vm *vm;
    struct vm_config cfg;
    char serial_path[64];
};

static uint8_t ram[64 << 20];

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    vm_config_init(&f->cfg);
    snprintf(f->serial_path, sizeof(f->serial_path), "/tmp/qtvmm-test-serial-%d.log",
             (int)getpid());
    f->cfg.serial = SERIAL_FILE;
    f->cfg.serial_path = strdup(f->serial_path);
    f->vm = fake_vm_new(sizeof(ram), ram);
    f->vm->cfg = &f->cfg;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    unlink(f->serial_path);
    fake_vm_free(f->vm);
    vm_config_free(&f->cfg);
    free(f);
    return 0;
}

static void dev_init(struct fixture *f, const char *name)
{
    const struct vmm_device_type *t = vmm_device_type_find(name);

    assert_non_null(t);
    assert_int_equal(t->init(f->vm, &f->cfg), 0);
}

static void dev_exit(struct fixture *f, const char *name)
{
    vmm_device_type_find(name)->exit(f->vm);
}

static uint32_t in(struct fixture *f, uint16_t port, uint32_t len)
{
    uint32_t v = 0;

    assert_true(vm_io_dispatch(f->vm, VM_IO_PIO, port, &v, len, false));
    return v;
}

static void out(struct fixture *f, uint16_t port, uint32_t v, uint32_t len)
{
    assert_true(vm_io_dispatch(f->vm, VM_IO_PIO, port, &v, len, true));
}

static uint64_t pending_exit(struct fixture *f)
{
    uint64_t n = 0;

    if (read(f->vm->exit_eventfd, &n, sizeof(n)) != sizeof(n))
        return 0;
    return n;
}

/* ---- 16550A ---------------------------------------------------------- */

#define COM(r) (PORT_COM1 + (r))

static void test_serial(void **state)
{
    struct fixture *f = *state;
    char buf[64] = "";
    FILE *fp;

    dev_init(f, "serial");
    /* Reset state: no interrupt pending, THR empty, no data. */
    assert_int_equal(in(f, COM(2), 1) & 0x0f, 0x01);
    assert_int_equal(in(f, COM(5), 1), 0x60);
    /* Divisor latch: DLL/DLM alias data/IER while DLAB is set. */
    out(f, COM(3), 0x83, 1);
    out(f, COM(0), 0x01, 1);
    out(f, COM(1), 0x00, 1);
    assert_int_equal(in(f, COM(0), 1), 0x01);
    out(f, COM(3), 0x03, 1);
    assert_int_equal(in(f, COM(3), 1), 0x03);
    /* Transmit goes to the backend. */
    for (const char *p = "hi!"; *p; p++)
        out(f, COM(0), (uint8_t)*p, 1);
    /* THRE interrupt: raised when enabled with THR empty, cleared by reading IIR. */
    out(f, COM(4), 0x08, 1); /* OUT2 */
    out(f, COM(1), 0x02, 1);
    assert_int_equal(in(f, COM(2), 1) & 0x0f, 0x02);
    assert_int_equal(in(f, COM(2), 1) & 0x0f, 0x01);
    /* FIFO enable shows in IIR bits 7:6. */
    out(f, COM(2), 0x07, 1);
    assert_int_equal(in(f, COM(2), 1) & 0xc0, 0xc0);
    /* Loopback: MSR mirrors MCR, transmitted bytes come back as received data. */
    out(f, COM(4), 0x10 | 0x0f, 1);
    assert_int_equal(in(f, COM(6), 1) & 0xf0, 0xf0);
    out(f, COM(4), 0x10 | 0x02, 1); /* RTS only -> CTS */
    assert_int_equal(in(f, COM(6), 1) & 0xf0, 0x10);
    out(f, COM(1), 0x01, 1); /* RDI */
    out(f, COM(0), 'x', 1);
    out(f, COM(0), 'y', 1);
    assert_int_equal(in(f, COM(5), 1) & 0x01, 0x01);
    assert_int_equal(in(f, COM(2), 1) & 0x0f, 0x04);
    assert_int_equal(in(f, COM(0), 1), 'x');
    assert_int_equal(in(f, COM(0), 1), 'y');
    assert_int_equal(in(f, COM(5), 1) & 0x01, 0);
    assert_int_equal(in(f, COM(2), 1) & 0x0f, 0x01);
    /* Overrun: a 17th byte in loopback sets OE once. */
    for (int i = 0; i < 17; i++)
        out(f, COM(0), 'a' + i, 1);
    assert_int_equal(in(f, COM(5), 1) & 0x03, 0x03);
    assert_int_equal(in(f, COM(5), 1) & 0x02, 0);
    out(f, COM(2), 0x03, 1); /* clear RX FIFO */
    assert_int_equal(in(f, COM(5), 1) & 0x01, 0);
    /* Scratch register; a 2-byte access is ignored (reads all-ones). */
    out(f, COM(7), 0x5a, 1);
    assert_int_equal(in(f, COM(7), 1), 0x5a);
    assert_int_equal(in(f, COM(0), 2), 0xffff);
    dev_exit(f, "serial");
    fp = fopen(f->serial_path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(buf, sizeof(buf), fp));
    fclose(fp);
    assert_string_equal(buf, "hi!"); /* loopback bytes never reached the backend */
}

/* ---- RTC/CMOS --------------------------------------------------------- */

static uint8_t cmos(struct fixture *f, uint8_t reg)
{
    out(f, PORT_RTC_INDEX, reg, 1);
    return (uint8_t)in(f, PORT_RTC_DATA, 1);
}

static void cmos_write(struct fixture *f, uint8_t reg, uint8_t v)
{
    out(f, PORT_RTC_INDEX, reg, 1);
    out(f, PORT_RTC_DATA, v, 1);
}

static int bcd(uint8_t v)
{
    return (v >> 4) * 10 + (v & 0xf);
}

static void test_rtc(void **state)
{
    struct fixture *f = *state;
    time_t now = time(NULL);
    struct tm tm;
    uint8_t year;

    gmtime_r(&now, &tm);
    dev_init(f, "rtc");
    assert_int_equal(cmos(f, 0x0b), 0x02);     /* BCD, 24 h */
    assert_int_equal(cmos(f, 0x0d), 0x80);     /* valid RAM and time */
    assert_int_equal(cmos(f, 0x0a) & 0x80, 0); /* no update in progress */
    assert_int_equal(bcd(cmos(f, 0x32)), 20);  /* century */
    year = cmos(f, 0x09);
    assert_int_equal(bcd(year), tm.tm_year % 100);
    assert_int_equal(bcd(cmos(f, 0x08)), tm.tm_mon + 1);
    /* Binary mode. */
    cmos_write(f, 0x0b, 0x06);
    assert_int_equal(cmos(f, 0x09), tm.tm_year % 100);
    /* 12-hour binary: hour 1..12 with bit 7 for PM. */
    cmos_write(f, 0x0b, 0x04);
    {
        uint8_t h = cmos(f, 0x04);
        int h24 = (h & 0x7f) % 12 + ((h & 0x80) ? 12 : 0);
        time_t t2 = time(NULL);
        struct tm tm2;

        gmtime_r(&t2, &tm2);
        assert_true((h & 0x7f) >= 1 && (h & 0x7f) <= 12);
        assert_int_equal(h24, tm2.tm_hour);
    }
    /* Setting the year moves the guest clock only. */
    cmos_write(f, 0x0b, 0x06);
    cmos_write(f, 0x09, 42);
    assert_int_equal(cmos(f, 0x09), 42);
    /* Memory size bytes for 64 MiB: 63 MiB above 1 MiB, 48 MiB above 16 MiB. */
    assert_int_equal(cmos(f, 0x30) | cmos(f, 0x31) << 8, 63 * 1024);
    assert_int_equal(cmos(f, 0x34) | cmos(f, 0x35) << 8, (48 << 20) / (64 << 10));
    assert_int_equal(cmos(f, 0x5b) | cmos(f, 0x5c) << 8 | cmos(f, 0x5d) << 16, 0);
    /* Register C clears on read; NVRAM keeps what is written; NMI bit ignored. */
    assert_int_equal(cmos(f, 0x0c), 0);
    cmos_write(f, 0x80 | 0x40, 0x99);
    assert_int_equal(cmos(f, 0x40), 0x99);
    dev_exit(f, "rtc");
}

/* ---- ACPI PM and the debug-exit port ---------------------------------- */

static void test_acpi_pm(void **state)
{
    struct fixture *f = *state;
    uint32_t t1, t2;

    dev_init(f, "acpi_pm");
    assert_int_equal(in(f, PORT_ACPI_PM1A_CNT, 2) & 1, 1); /* SCI_EN fixed on */
    /* Power button: status set, write-1-to-clear, enable bit readable. */
    out(f, PORT_ACPI_PM1A_EVT + 2, 0x0100, 2);
    assert_int_equal(in(f, PORT_ACPI_PM1A_EVT + 2, 2), 0x0100);
    assert_int_equal(vm_power_button(f->vm), 0);
    assert_int_equal(in(f, PORT_ACPI_PM1A_EVT, 2) & 0x0100, 0x0100);
    assert_int_equal(in(f, PORT_ACPI_PM1A_EVT, 4), 0x01000100);
    out(f, PORT_ACPI_PM1A_EVT + 1, 0x01, 1); /* byte write clears bit 8 */
    assert_int_equal(in(f, PORT_ACPI_PM1A_EVT, 2) & 0x0100, 0);
    assert_int_equal(in(f, PORT_ACPI_PM1A_EVT + 2, 2), 0x0100); /* enable untouched */
    /*
     * PM timer: 24 bits at 3.579545 MHz. The ticks between two reads lie
     * between the host time strictly between the reads and the host time
     * around them (whatever the scheduler does).
     */
    {
        struct timespec a, b, c, d;
        double inner, outer, ticks;

        clock_gettime(CLOCK_MONOTONIC, &a);
        t1 = in(f, PORT_ACPI_PM_TMR, 4);
        clock_gettime(CLOCK_MONOTONIC, &b);
        usleep(2000);
        clock_gettime(CLOCK_MONOTONIC, &c);
        t2 = in(f, PORT_ACPI_PM_TMR, 4);
        clock_gettime(CLOCK_MONOTONIC, &d);
        assert_true(t1 <= 0xffffff && t2 <= 0xffffff);
        inner = (double)(c.tv_sec - b.tv_sec) * 1e9 + (double)(c.tv_nsec - b.tv_nsec);
        outer = (double)(d.tv_sec - a.tv_sec) * 1e9 + (double)(d.tv_nsec - a.tv_nsec);
        ticks = (double)((t2 - t1) & 0xffffff);
        assert_true(ticks >= inner * 3.579545e-3 - 1);
        assert_true(ticks <= outer * 3.579545e-3 + 1);
    }
    /* A sleep state other than S5 does not power off. */
    out(f, PORT_ACPI_PM1A_CNT, (1 << 10) | (1 << 13), 2);
    assert_int_equal(pending_exit(f), 0);
    assert_int_equal(f->vm->exit_code, -1);
    /* S5 powers off (status 0). */
    out(f, PORT_ACPI_PM1A_CNT, (ACPI_S5_SLP_TYP << 10) | (1 << 13), 2);
    assert_int_equal(pending_exit(f), 1);
    assert_int_equal(f->vm->exit_code, 0);
    dev_exit(f, "acpi_pm");
    assert_int_equal(vm_power_button(f->vm), -ENODEV);
}

static void test_debug_exit(void **state)
{
    struct fixture *f = *state;

    dev_init(f, "acpi_pm");
    out(f, PORT_DEBUG_EXIT, 0x42, 1);
    assert_int_equal(f->vm->exit_code, 0x42);
    out(f, PORT_DEBUG_EXIT, 0x00, 1); /* the first request wins */
    assert_int_equal(f->vm->exit_code, 0x42);
    dev_exit(f, "acpi_pm");
}

/* ---- i8042 ------------------------------------------------------------ */

static void test_i8042(void **state)
{
    struct fixture *f = *state;

    dev_init(f, "i8042");
    assert_int_equal(in(f, PORT_I8042_CMD, 1) & 0x01, 0);
    out(f, PORT_I8042_CMD, 0xaa, 1); /* self test */
    assert_int_equal(in(f, PORT_I8042_CMD, 1) & 0x01, 1);
    assert_int_equal(in(f, PORT_I8042_DATA, 1), 0x55);
    out(f, PORT_I8042_CMD, 0x60, 1); /* write command byte */
    out(f, PORT_I8042_DATA, 0x47, 1);
    out(f, PORT_I8042_CMD, 0x20, 1);
    assert_int_equal(in(f, PORT_I8042_DATA, 1), 0x47);
    /* 0x61 is not ours (the PIT's speaker port). */
    {
        uint32_t v;

        assert_false(vm_io_dispatch(f->vm, VM_IO_PIO, 0x61, &v, 1, false));
    }
    assert_int_equal(f->vm->exit_code, -1);
    out(f, PORT_I8042_CMD, 0xfe, 1); /* pulse reset */
    assert_int_equal(f->vm->exit_code, 3);
    dev_exit(f, "i8042");
}

static void test_i8042_output_port_reset(void **state)
{
    struct fixture *f = *state;

    dev_init(f, "i8042");
    out(f, PORT_I8042_CMD, 0xd1, 1);
    out(f, PORT_I8042_DATA, 0x03, 1); /* bit 0 high: no reset */
    assert_int_equal(f->vm->exit_code, -1);
    out(f, PORT_I8042_CMD, 0xd1, 1);
    out(f, PORT_I8042_DATA, 0x02, 1);
    assert_int_equal(f->vm->exit_code, 3);
    dev_exit(f, "i8042");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_serial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rtc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acpi_pm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_debug_exit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_i8042, setup, teardown),
        cmocka_unit_test_setup_teardown(test_i8042_output_port_reset, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
