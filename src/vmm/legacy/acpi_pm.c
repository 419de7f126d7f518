/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ACPI fixed hardware (PM1a event/control blocks and the PM timer at the
 * ports in layout.h, SCI on IRQ_SCI), plus the test-guest exit port
 * PORT_DEBUG_EXIT. S5 (SLP_TYP = ACPI_S5_SLP_TYP with SLP_EN) powers off.
 */
#include "vmm/vmm.h"
#include "vmm/acpi.h"
#include "vmm/device.h"
#include "vmm/layout.h"
#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PM1_TMR_STS    (1u << 0)
#define PM1_PWRBTN_STS (1u << 8)
#define PM1_WAK_STS    (1u << 15)
#define PM1_SCI_EN     (1u << 0)
#define PM1_SLP_EN     (1u << 13)
#define PM1_SLP_TYP(v) (((v) >> 10) & 7)

#define PM_TIMER_HZ 3579545ull

struct acpi_pm_dev {
    struct vm *vm;
    pthread_mutex_t lock;
    uint16_t sts, en, cnt;
    int sci_level;
    struct timespec t0;
    uint64_t power_button_presses;
};

static void pm_update_sci(struct acpi_pm_dev *pm)
{
    int level = (pm->sts & pm->en) != 0;

    if (level != pm->sci_level) {
        pm->sci_level = level;
        vm_irq_line(pm->vm, IRQ_SCI, level);
    }
}

static uint32_t pm_timer_read(struct acpi_pm_dev *pm)
{
    struct timespec now;
    uint64_t ns;

    clock_gettime(CLOCK_MONOTONIC, &now);
    ns = (uint64_t)(now.tv_sec - pm->t0.tv_sec) * 1000000000ull + (uint64_t)now.tv_nsec -
         (uint64_t)pm->t0.tv_nsec;
    /* 128-bit product: ns * 3.58M overflows 64 bits after ~85 minutes. */
    return (uint32_t)(((unsigned __int128)ns * PM_TIMER_HZ / 1000000000ull) & 0xffffff);
}

/* A 1- or 2-byte write at byte offset off into a 16-bit register. */
static uint16_t reg16_merge(uint16_t old, uint64_t off, const uint8_t *v, uint32_t len)
{
    uint8_t b[2];

    memcpy(b, &old, 2);
    for (uint32_t i = 0; i < len && off + i < 2; i++)
        b[off + i] = v[i];
    memcpy(&old, b, 2);
    return old;
}

/* PM1a_EVT_BLK: status (bytes 0-1, write 1 to clear), enable (bytes 2-3). */
static void pm_evt_io(void *opaque, uint64_t offset, void *data, uint32_t len, bool is_write)
{
    struct acpi_pm_dev *pm = opaque;
    uint8_t regs[4];

    pthread_mutex_lock(&pm->lock);
    if (is_write) {
        const uint8_t *v = data;

        for (uint32_t i = 0; i < len; i++) {
            uint64_t idx = offset + i;

            if (idx < 2) {
                pm->sts &= (uint16_t) ~(v[i] << (8 * idx));
            } else {
                pm->en &= (uint16_t) ~(0xffu << (8 * (idx - 2)));
                pm->en |= (uint16_t)(v[i] << (8 * (idx - 2)));
            }
        }
        pm_update_sci(pm);
    } else {
        memcpy(regs, &pm->sts, 2);
        memcpy(regs + 2, &pm->en, 2);
        memcpy(data, regs + offset, len);
    }
    pthread_mutex_unlock(&pm->lock);
}

static void pm_cnt_io(void *opaque, uint64_t offset, void *data, uint32_t len, bool is_write)
{
    struct acpi_pm_dev *pm = opaque;
    bool poweroff = false;

    pthread_mutex_lock(&pm->lock);
    if (is_write) {
        uint16_t v = reg16_merge(pm->cnt, offset, data, len);

        if ((v & PM1_SLP_EN) && PM1_SLP_TYP(v) == ACPI_S5_SLP_TYP)
            poweroff = true;
        else if (v & PM1_SLP_EN)
            log_warn("ACPI: sleep type %u requested; only S5 is supported", PM1_SLP_TYP(v));
        pm->cnt = (uint16_t)((v & ~PM1_SLP_EN) | PM1_SCI_EN); /* SCI_EN is fixed on */
    } else {
        uint8_t b[2];

        memcpy(b, &pm->cnt, 2);
        memcpy(data, b + offset, len);
    }
    pthread_mutex_unlock(&pm->lock);
    if (poweroff) {
        log_info("ACPI: guest entered S5, powering off");
        vm_request_exit(pm->vm, VM_EXIT_POWEROFF);
    }
}

static void pm_tmr_io(void *opaque, uint64_t offset, void *data, uint32_t len, bool is_write)
{
    struct acpi_pm_dev *pm = opaque;
    uint32_t v;

    if (is_write)
        return;
    v = pm_timer_read(pm);
    memcpy(data, (uint8_t *)&v + offset, len);
}

/* Test guests: writing byte B ends qtvmm with status B (0 = power-off). */
static void debug_exit_io(void *opaque, uint64_t offset, void *data, uint32_t len, bool is_write)
{
    struct acpi_pm_dev *pm = opaque;
    uint8_t code = *(uint8_t *)data;

    if (!is_write)
        return;
    log_info("debug-exit port: guest asked for exit status %u", code);
    vm_request_exit(pm->vm, (enum vm_exit_kind)code);
}

void acpi_pm_power_button(struct acpi_pm_dev *pm)
{
    pthread_mutex_lock(&pm->lock);
    pm->sts |= PM1_PWRBTN_STS;
    pm->power_button_presses++;
    pm_update_sci(pm);
    pthread_mutex_unlock(&pm->lock);
}

int vm_power_button(struct vm *vm)
{
    if (!vm->pm)
        return -ENODEV;
    acpi_pm_power_button(vm->pm);
    return 0;
}

static const struct {
    uint16_t port, len;
    vm_io_fn fn;
} pm_ranges[] = {
    {PORT_ACPI_PM1A_EVT, 4, pm_evt_io},
    {PORT_ACPI_PM1A_CNT, 2, pm_cnt_io},
    {PORT_ACPI_PM_TMR, 4, pm_tmr_io},
    {PORT_DEBUG_EXIT, 1, debug_exit_io},
};

static void acpi_pm_exit(struct vm *vm)
{
    if (!vm->pm)
        return;
    for (size_t i = 0; i < sizeof(pm_ranges) / sizeof(pm_ranges[0]); i++)
        vm_io_unregister(vm, VM_IO_PIO, pm_ranges[i].port);
    pthread_mutex_destroy(&vm->pm->lock);
    free(vm->pm);
    vm->pm = NULL;
}

static int acpi_pm_init(struct vm *vm, const struct vm_config *cfg)
{
    struct acpi_pm_dev *pm = calloc(1, sizeof(*pm));
    int ret;

    (void)cfg;
    if (!pm)
        return -ENOMEM;
    pm->vm = vm;
    pm->cnt = PM1_SCI_EN; /* no SMI_CMD: ACPI mode is always on */
    pthread_mutex_init(&pm->lock, NULL);
    clock_gettime(CLOCK_MONOTONIC, &pm->t0);
    vm->pm = pm;
    for (size_t i = 0; i < sizeof(pm_ranges) / sizeof(pm_ranges[0]); i++) {
        ret =
            vm_io_register(vm, VM_IO_PIO, pm_ranges[i].port, pm_ranges[i].len, pm_ranges[i].fn, pm);
        if (ret) {
            log_err("ACPI PM: cannot register port 0x%x: %s", pm_ranges[i].port, strerror(-ret));
            acpi_pm_exit(vm);
            return ret;
        }
    }
    return 0;
}

static void acpi_pm_stats(struct vm *vm, json_object *devices)
{
    json_object *o;

    if (!vm->pm)
        return;
    o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string("acpi-pm"));
    pthread_mutex_lock(&vm->pm->lock);
    json_object_object_add(o, "pm1_sts", json_object_new_int(vm->pm->sts));
    json_object_object_add(o, "pm1_en", json_object_new_int(vm->pm->en));
    json_object_object_add(o, "power_button_presses",
                           json_object_new_int64((int64_t)vm->pm->power_button_presses));
    pthread_mutex_unlock(&vm->pm->lock);
    json_object_array_add(devices, o);
}

VMM_DEVICE(acpi_pm, DEV_LEVEL_LEGACY, acpi_pm_init, acpi_pm_exit, acpi_pm_stats)
