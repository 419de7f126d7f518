/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A fake implementation of src/vmm/vm.h for tests without KVM: guest RAM is a
 * memfd mapped at guest address 0, I/O ranges are dispatched by
 * fake_vm_access() the way a vCPU exit would be, ioeventfds are honoured on
 * that path, and irqfds are "delivered" by fake_vm_poll_irqs().
 */
#ifndef QT_TESTS_FAKE_VM_H
#define QT_TESTS_FAKE_VM_H

#include <stdbool.h>
#include <stdint.h>

#include "vmm/vm.h"

struct vm *fake_vm_new(uint64_t ram_size);
void fake_vm_free(struct vm *vm);
uint8_t *fake_vm_ram(struct vm *vm);
/* Dispatch a guest access; returns 0, or -ENOENT when nothing is mapped there. */
int fake_vm_access(struct vm *vm, enum vm_io_space space, uint64_t addr, void *data, uint32_t len,
                   bool is_write);
uint32_t fake_vm_read(struct vm *vm, enum vm_io_space space, uint64_t addr, uint32_t len);
void fake_vm_write(struct vm *vm, enum vm_io_space space, uint64_t addr, uint32_t len,
                   uint64_t val);
/* Consume signalled irqfds; returns how many MSIs with this data value arrived so far. */
int fake_vm_msi_count(struct vm *vm, uint32_t data);
/* Number of assigned irqfds / ioeventfds. */
int fake_vm_irqfd_count(struct vm *vm);
int fake_vm_ioeventfd_count(struct vm *vm);
/* Number of vm_request_reset() calls so far. */
int fake_vm_reset_count(struct vm *vm);
bool fake_vm_io_mapped(struct vm *vm, enum vm_io_space space, uint64_t addr);

#endif
