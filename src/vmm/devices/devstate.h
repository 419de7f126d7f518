/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-VM state of the device models (the PCI bus, the list of virtio devices
 * of each type), looked up by (vm, key) in the table the VM core keeps for
 * them (struct vm_devstate, vm.h). Keys are string constants.
 */
#ifndef QT_VMM_DEVICES_DEVSTATE_H
#define QT_VMM_DEVICES_DEVSTATE_H

struct vm;

/* Store ptr under key for vm (replaces a previous value); -ENOSPC when full. */
int devstate_set(struct vm *vm, const char *key, void *ptr);
/* The stored pointer, or NULL. */
void *devstate_get(struct vm *vm, const char *key);
void devstate_clear(struct vm *vm, const char *key);

#endif
