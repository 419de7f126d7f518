/* SPDX-License-Identifier: Apache-2.0 */
/* A struct vm without KVM for unit tests of the core's KVM-free parts. */
#ifndef QT_TEST_FAKE_VM_H
#define QT_TEST_FAKE_VM_H

#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vmm/vmm.h"

static inline struct vm *fake_vm_new(uint64_t ram_size, uint8_t *ram)
{
    struct vm *vm = calloc(1, sizeof(*vm));

    if (!vm)
        return NULL;
    vm->kvm_fd = vm->vm_fd = -1;
    vm->exit_code = -1;
    vm->exit_eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&vm->io_lock, NULL);
    pthread_mutex_init(&vm->irq_lock, NULL);
    pthread_mutex_init(&vm->state_lock, NULL);
    pthread_cond_init(&vm->state_cond, NULL);
    if (ram)
        guest_mem_layout(&vm->mem, ram_size, ram);
    return vm;
}

static inline void fake_vm_free(struct vm *vm)
{
    struct io_table *t, *next;

    for (int s = 0; s < 2; s++)
        free(vm->io[s]);
    for (t = vm->io_retired; t; t = next) {
        next = t->retired_next;
        free(t);
    }
    close(vm->exit_eventfd);
    pthread_mutex_destroy(&vm->io_lock);
    pthread_mutex_destroy(&vm->irq_lock);
    pthread_mutex_destroy(&vm->state_lock);
    pthread_cond_destroy(&vm->state_cond);
    free(vm);
}

#endif
