/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Minimal i8042 keyboard controller: enough for firmware-style probing (self
 * test, command byte) and for the reset line: command 0xFE, or clearing bit 0
 * of the output port through 0xD1, ends the VM with status 3 (reset). No
 * keyboard is attached (the DSDT declares none, so Linux does not probe it).
 */
#include "vmm/vmm.h"
#include "vmm/device.h"
#include "vmm/layout.h"
#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define I8042_STS_OBF    0x01
#define I8042_STS_SYS    0x04
#define I8042_STS_CMD    0x08 /* last write was to the command port */
#define I8042_STS_UNLOCK 0x10

#define I8042_CMD_READ_CTR    0x20
#define I8042_CMD_WRITE_CTR   0x60
#define I8042_CMD_AUX_DISABLE 0xa7
#define I8042_CMD_AUX_ENABLE  0xa8
#define I8042_CMD_AUX_TEST    0xa9
#define I8042_CMD_SELF_TEST   0xaa
#define I8042_CMD_KBD_TEST    0xab
#define I8042_CMD_KBD_DISABLE 0xad
#define I8042_CMD_KBD_ENABLE  0xae
#define I8042_CMD_READ_OUTP   0xd0
#define I8042_CMD_WRITE_OUTP  0xd1
#define I8042_CMD_RESET       0xfe

#define I8042_QUEUE 8

struct i8042_dev {
    struct vm *vm;
    pthread_mutex_t lock;
    uint8_t ctr, outp, status, pending_cmd;
    uint8_t q[I8042_QUEUE];
    int q_head, q_count;
    uint64_t resets;
};

static void i8042_push(struct i8042_dev *k, uint8_t v)
{
    if (k->q_count == I8042_QUEUE)
        return;
    k->q[(k->q_head + k->q_count++) % I8042_QUEUE] = v;
}

/* Returns true when the guest pulsed the reset line. */
static bool i8042_command(struct i8042_dev *k, uint8_t cmd)
{
    switch (cmd) {
    case I8042_CMD_READ_CTR:
        i8042_push(k, k->ctr);
        break;
    case I8042_CMD_WRITE_CTR:
    case I8042_CMD_WRITE_OUTP:
        k->pending_cmd = cmd;
        break;
    case I8042_CMD_SELF_TEST:
        i8042_push(k, 0x55);
        break;
    case I8042_CMD_KBD_TEST:
    case I8042_CMD_AUX_TEST:
        i8042_push(k, 0x00);
        break;
    case I8042_CMD_READ_OUTP:
        i8042_push(k, k->outp);
        break;
    case I8042_CMD_KBD_DISABLE:
        k->ctr |= 0x10;
        break;
    case I8042_CMD_KBD_ENABLE:
        k->ctr &= (uint8_t)~0x10;
        break;
    case I8042_CMD_AUX_DISABLE:
        k->ctr |= 0x20;
        break;
    case I8042_CMD_AUX_ENABLE:
        k->ctr &= (uint8_t)~0x20;
        break;
    case I8042_CMD_RESET:
        return true;
    default:
        log_debug("i8042: command 0x%02x ignored", cmd);
        break;
    }
    return false;
}

static void i8042_io(void *opaque, uint64_t offset, void *data, uint32_t len, bool is_write)
{
    struct i8042_dev *k = opaque;
    uint8_t *v = data;
    bool reset = false;

    if (len != 1) {
        if (!is_write)
            memset(data, 0xff, len);
        return;
    }
    pthread_mutex_lock(&k->lock);
    if (offset == 0) { /* data port 0x60 */
        if (is_write) {
            k->status &= (uint8_t)~I8042_STS_CMD;
            if (k->pending_cmd == I8042_CMD_WRITE_CTR) {
                k->ctr = *v;
            } else if (k->pending_cmd == I8042_CMD_WRITE_OUTP) {
                k->outp = *v;
                reset = !(*v & 1); /* bit 0 low holds the CPU in reset */
            } else {
                i8042_push(k, 0xfe); /* no keyboard: "resend" */
            }
            k->pending_cmd = 0;
        } else if (k->q_count) {
            *v = k->q[k->q_head];
            k->q_head = (k->q_head + 1) % I8042_QUEUE;
            k->q_count--;
        }
    } else { /* command/status port 0x64 */
        if (is_write) {
            k->status |= I8042_STS_CMD;
            k->pending_cmd = 0;
            reset = i8042_command(k, *v);
        } else {
            *v = k->status | (k->q_count ? I8042_STS_OBF : 0);
        }
    }
    if (reset)
        k->resets++;
    pthread_mutex_unlock(&k->lock);
    if (reset) {
        log_info("i8042: guest pulsed the reset line");
        vm_request_exit(k->vm, VM_EXIT_RESET);
    }
}

static void i8042_exit(struct vm *vm)
{
    if (!vm->i8042)
        return;
    vm_io_unregister(vm, VM_IO_PIO, PORT_I8042_DATA);
    vm_io_unregister(vm, VM_IO_PIO, PORT_I8042_CMD);
    pthread_mutex_destroy(&vm->i8042->lock);
    free(vm->i8042);
    vm->i8042 = NULL;
}

/* Ports 0x60 and 0x64 are separate ranges: 0x61 (speaker) belongs to the PIT. */
static void i8042_io_cmd(void *opaque, uint64_t offset, void *data, uint32_t len, bool is_write)
{
    i8042_io(opaque, offset + 4, data, len, is_write);
}

static int i8042_init(struct vm *vm, const struct vm_config *cfg)
{
    struct i8042_dev *k = calloc(1, sizeof(*k));
    int ret;

    (void)cfg;
    if (!k)
        return -ENOMEM;
    k->vm = vm;
    k->ctr = 0x30;  /* keyboard and aux disabled, no interrupts */
    k->outp = 0x01; /* reset line high (inactive) */
    k->status = I8042_STS_SYS | I8042_STS_UNLOCK;
    pthread_mutex_init(&k->lock, NULL);
    vm->i8042 = k;
    ret = vm_io_register(vm, VM_IO_PIO, PORT_I8042_DATA, 1, i8042_io, k);
    if (!ret)
        ret = vm_io_register(vm, VM_IO_PIO, PORT_I8042_CMD, 1, i8042_io_cmd, k);
    if (ret) {
        log_err("i8042: cannot register ports 0x60/0x64: %s", strerror(-ret));
        i8042_exit(vm);
    }
    return ret;
}

VMM_DEVICE(i8042, DEV_LEVEL_LEGACY, i8042_init, i8042_exit, NULL)
