/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MC146818 RTC/CMOS at 0x70/0x71: host wall-clock time plus a guest-set
 * offset, BCD or binary and 12/24-hour per register B, registers A-D, and the
 * memory-size bytes firmware and Linux read (0x15-0x18, 0x30/0x31, 0x34/0x35,
 * 0x5b-0x5d). No alarm or periodic interrupts.
 */
#include "vmm/vmm.h"
#include "vmm/device.h"
#include "vmm/layout.h"
#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RTC_SEC     0x00
#define RTC_MIN     0x02
#define RTC_HOUR    0x04
#define RTC_WDAY    0x06
#define RTC_MDAY    0x07
#define RTC_MONTH   0x08
#define RTC_YEAR    0x09
#define RTC_REG_A   0x0a
#define RTC_REG_B   0x0b
#define RTC_REG_C   0x0c
#define RTC_REG_D   0x0d
#define RTC_CENTURY 0x32

#define REG_B_SET 0x80
#define REG_B_DM  0x04 /* binary */
#define REG_B_24H 0x02
#define REG_D_VRT 0x80

#define CMOS_SIZE 128

struct rtc_dev {
    struct vm *vm;
    pthread_mutex_t lock;
    uint8_t index;
    uint8_t cmos[CMOS_SIZE];
    int64_t offset; /* guest time - host time, seconds */
};

static uint8_t rtc_to_guest(const struct rtc_dev *r, int v)
{
    if (r->cmos[RTC_REG_B] & REG_B_DM)
        return (uint8_t)v;
    return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static int rtc_from_guest(const struct rtc_dev *r, uint8_t v)
{
    if (r->cmos[RTC_REG_B] & REG_B_DM)
        return v;
    return ((v >> 4) & 0xf) * 10 + (v & 0xf);
}

static void rtc_now(const struct rtc_dev *r, struct tm *tm)
{
    time_t t = time(NULL) + (time_t)r->offset;

    gmtime_r(&t, tm);
}

static uint8_t rtc_hour_to_guest(const struct rtc_dev *r, int hour)
{
    uint8_t pm = 0;

    if (r->cmos[RTC_REG_B] & REG_B_24H)
        return rtc_to_guest(r, hour);
    if (hour >= 12) {
        pm = 0x80;
        hour -= 12;
    }
    return (uint8_t)(rtc_to_guest(r, hour ? hour : 12) | pm);
}

static int rtc_hour_from_guest(const struct rtc_dev *r, uint8_t v)
{
    int h;

    if (r->cmos[RTC_REG_B] & REG_B_24H)
        return rtc_from_guest(r, v);
    h = rtc_from_guest(r, v & 0x7f) % 12;
    return (v & 0x80) ? h + 12 : h;
}

static uint8_t rtc_read(struct rtc_dev *r, uint8_t idx)
{
    struct tm tm;
    uint8_t v;

    if (idx > RTC_YEAR && idx != RTC_CENTURY && idx != RTC_REG_C) {
        if (idx == RTC_REG_A)
            return r->cmos[idx] & 0x7f; /* UIP never set: reads are atomic here */
        return r->cmos[idx];
    }
    if (idx == RTC_REG_C) {
        v = r->cmos[idx];
        r->cmos[idx] = 0; /* flags clear on read */
        return v;
    }
    rtc_now(r, &tm);
    switch (idx) {
    case RTC_SEC:
        return rtc_to_guest(r, tm.tm_sec > 59 ? 59 : tm.tm_sec);
    case RTC_MIN:
        return rtc_to_guest(r, tm.tm_min);
    case RTC_HOUR:
        return rtc_hour_to_guest(r, tm.tm_hour);
    case RTC_WDAY:
        return rtc_to_guest(r, tm.tm_wday + 1);
    case RTC_MDAY:
        return rtc_to_guest(r, tm.tm_mday);
    case RTC_MONTH:
        return rtc_to_guest(r, tm.tm_mon + 1);
    case RTC_YEAR:
        return rtc_to_guest(r, tm.tm_year % 100);
    case RTC_CENTURY:
        return rtc_to_guest(r, (tm.tm_year + 1900) / 100);
    default:
        return r->cmos[idx]; /* alarm registers */
    }
}

/* The guest set one time field: move the offset so that the clock shows it. */
static void rtc_set_field(struct rtc_dev *r, uint8_t idx, uint8_t v)
{
    struct tm tm;
    time_t host = time(NULL), guest;
    int val = idx == RTC_HOUR ? rtc_hour_from_guest(r, v) : rtc_from_guest(r, v);

    rtc_now(r, &tm);
    switch (idx) {
    case RTC_SEC:
        tm.tm_sec = val;
        break;
    case RTC_MIN:
        tm.tm_min = val;
        break;
    case RTC_HOUR:
        tm.tm_hour = val;
        break;
    case RTC_MDAY:
        tm.tm_mday = val;
        break;
    case RTC_MONTH:
        tm.tm_mon = val - 1;
        break;
    case RTC_YEAR:
        tm.tm_year = (tm.tm_year / 100) * 100 + val;
        break;
    case RTC_CENTURY:
        tm.tm_year = (val * 100 - 1900) + tm.tm_year % 100;
        break;
    default:
        return; /* day of week follows from the date */
    }
    if (val < 0 || val > 99 || (idx != RTC_YEAR && idx != RTC_CENTURY && val > 59))
        return; /* nonsense from the guest: keep the clock */
    guest = timegm(&tm);
    if (guest != (time_t)-1)
        r->offset = (int64_t)(guest - host);
}

static void rtc_write(struct rtc_dev *r, uint8_t idx, uint8_t v)
{
    switch (idx) {
    case RTC_REG_A:
        r->cmos[idx] = v & 0x7f;
        break;
    case RTC_REG_B:
        r->cmos[idx] = v;
        break;
    case RTC_REG_C:
    case RTC_REG_D:
        break; /* read-only */
    case RTC_SEC:
    case RTC_MIN:
    case RTC_HOUR:
    case RTC_WDAY:
    case RTC_MDAY:
    case RTC_MONTH:
    case RTC_YEAR:
    case RTC_CENTURY:
        rtc_set_field(r, idx, v);
        break;
    default:
        r->cmos[idx] = v;
        break;
    }
}

static void rtc_io(void *opaque, uint64_t offset, void *data, uint32_t len, bool is_write)
{
    struct rtc_dev *r = opaque;
    uint8_t *v = data;

    if (len != 1) {
        if (!is_write)
            memset(data, 0xff, len);
        return;
    }
    pthread_mutex_lock(&r->lock);
    if (offset == 0) {
        if (is_write)
            r->index = *v & 0x7f; /* bit 7 is the NMI mask */
        else
            *v = 0xff;
    } else if (is_write) {
        rtc_write(r, r->index, *v);
    } else {
        *v = rtc_read(r, r->index);
    }
    pthread_mutex_unlock(&r->lock);
}

/* Memory size bytes as SeaBIOS lays them out. */
static void rtc_fill_memory(struct rtc_dev *r, uint64_t low_end, uint64_t high_size)
{
    uint64_t ext_kb = low_end > MiB ? (low_end - MiB) / KiB : 0;
    uint64_t above16 = low_end > 16 * MiB ? (low_end - 16 * MiB) / (64 * KiB) : 0;
    uint64_t above4g = high_size / (64 * KiB);

    if (ext_kb > 0xffff)
        ext_kb = 0xffff;
    if (above16 > 0xffff)
        above16 = 0xffff;
    r->cmos[0x15] = 640 & 0xff; /* base memory in KiB */
    r->cmos[0x16] = 640 >> 8;
    r->cmos[0x17] = r->cmos[0x30] = (uint8_t)ext_kb;
    r->cmos[0x18] = r->cmos[0x31] = (uint8_t)(ext_kb >> 8);
    r->cmos[0x34] = (uint8_t)above16;
    r->cmos[0x35] = (uint8_t)(above16 >> 8);
    r->cmos[0x5b] = (uint8_t)above4g;
    r->cmos[0x5c] = (uint8_t)(above4g >> 8);
    r->cmos[0x5d] = (uint8_t)(above4g >> 16);
}

static void rtc_exit(struct vm *vm)
{
    if (!vm->rtc)
        return;
    vm_io_unregister(vm, VM_IO_PIO, PORT_RTC_INDEX);
    pthread_mutex_destroy(&vm->rtc->lock);
    free(vm->rtc);
    vm->rtc = NULL;
}

static int rtc_init(struct vm *vm, const struct vm_config *cfg)
{
    struct rtc_dev *r = calloc(1, sizeof(*r));
    int ret;

    (void)cfg;
    if (!r)
        return -ENOMEM;
    r->vm = vm;
    pthread_mutex_init(&r->lock, NULL);
    r->cmos[RTC_REG_A] = 0x26; /* 32.768 kHz time base, 1024 Hz rate */
    r->cmos[RTC_REG_B] = REG_B_24H;
    r->cmos[RTC_REG_D] = REG_D_VRT;
    rtc_fill_memory(r, guest_mem_low_end(&vm->mem), vm->mem.n > 1 ? vm->mem.r[1].size : 0);
    vm->rtc = r;
    ret = vm_io_register(vm, VM_IO_PIO, PORT_RTC_INDEX, 2, rtc_io, r);
    if (ret) {
        log_err("RTC: cannot register ports 0x70/0x71: %s", strerror(-ret));
        rtc_exit(vm);
    }
    return ret;
}

VMM_DEVICE(rtc, DEV_LEVEL_LEGACY, rtc_init, rtc_exit, NULL)
