/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The contract between the VM core (KVM, memory, vCPUs, interrupts) and the
 * device models. Devices see guest memory and register I/O handlers through
 * these functions only.
 */
#ifndef QT_VMM_VM_H
#define QT_VMM_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;

/*
 * Translate [gpa, gpa+len) to a host pointer. Returns NULL unless the whole
 * range lies in guest RAM (one contiguous region). This is the ONLY way a
 * device may turn a guest-supplied address into a pointer.
 */
void *vm_gpa_to_hva(struct vm *vm, uint64_t gpa, uint64_t len);

/* One guest RAM region as a vhost-user frontend shares it. */
struct vm_mem_region {
    uint64_t gpa;
    uint64_t size;
    void *hva;
    int fd; /* the memfd backing guest RAM */
    uint64_t fd_offset;
};
/* Fills at most max regions; returns the number of regions. */
int vm_mem_regions(struct vm *vm, struct vm_mem_region *out, int max);

/*
 * Access handler for a PIO or MMIO range. offset is relative to the range
 * base; len is 1, 2, 4 or 8. For reads the handler fills data (it is zeroed
 * before the call). Called from vCPU threads: handlers must lock their own
 * state.
 */
typedef void (*vm_io_fn)(void *opaque, uint64_t offset, void *data, uint32_t len, bool is_write);

enum vm_io_space { VM_IO_PIO, VM_IO_MMIO };
/* -EEXIST when the range overlaps an existing one. */
int vm_io_register(struct vm *vm, enum vm_io_space space, uint64_t base, uint64_t len, vm_io_fn fn,
                   void *opaque);
int vm_io_unregister(struct vm *vm, enum vm_io_space space, uint64_t base);
/* Move a registered range (PCI BAR reprogramming). */
int vm_io_move(struct vm *vm, enum vm_io_space space, uint64_t old_base, uint64_t new_base);

/* Drive a legacy interrupt line (IOAPIC/PIC GSI). */
int vm_irq_line(struct vm *vm, uint32_t gsi, int level);

/* MSI routes: allocate a GSI routed to (addr, data), update it, free it. */
int vm_msi_route_alloc(struct vm *vm, uint64_t addr, uint32_t data, uint32_t *gsi);
int vm_msi_route_update(struct vm *vm, uint32_t gsi, uint64_t addr, uint32_t data);
void vm_msi_route_free(struct vm *vm, uint32_t gsi);
/*
 * Inject one MSI directly (KVM_SIGNAL_MSI): 0 delivered, -EBUSY when the guest
 * did not accept it (no destination / masked), other -errno on error.
 */
int vm_msi_signal(struct vm *vm, uint64_t addr, uint32_t data);

/* KVM_IRQFD / KVM_IOEVENTFD wrappers. */
int vm_irqfd(struct vm *vm, int eventfd, uint32_t gsi, bool assign);
int vm_ioeventfd(struct vm *vm, enum vm_io_space space, uint64_t addr, uint32_t len, int eventfd,
                 bool datamatch, uint64_t data, bool assign);

/*
 * The guest asked for a platform reset (e.g. a byte write with RST_CPU, bit 2,
 * to the reset control register 0xcf9, which lies in the PCI config-address
 * range): qtvmm stops the VM and exits with status 3.
 */
void vm_request_reset(struct vm *vm);

/* Guest-visible facts devices need. */
uint64_t vm_ram_size(struct vm *vm);
int vm_num_vcpus(struct vm *vm);

/*
 * Per-VM state of the device models (the PCI bus, the list of virtio devices
 * of each type), stored in the VM under a constant key string. The table is
 * embedded in struct vm; vmm/devices/devstate.h has the accessors.
 */
#define VM_DEVSTATE_MAX 16
struct vm_devstate {
    pthread_mutex_t lock;
    struct {
        const char *key;
        void *ptr;
    } slot[VM_DEVSTATE_MAX];
};
struct vm_devstate *vm_devstate(struct vm *vm);

#endif
