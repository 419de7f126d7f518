/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The VM core's private view of struct vm: KVM handles, guest RAM, vCPU
 * threads, the I/O dispatch tables and the lifecycle state. Device models use
 * vm.h only; this header is for the core files (vm.c, vcpu.c, main.c, api.c
 * and the legacy devices in legacy/).
 */
#ifndef QT_VMM_VMM_H
#define QT_VMM_VMM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/boot.h"
#include "vmm/config.h"
#include "vmm/mem.h"
#include "vmm/vm.h"

/* How the guest (or the VMM) ended; the values are qtvmm's exit status. */
enum vm_exit_kind {
    VM_EXIT_POWEROFF = 0, /* ACPI S5, PVH debug-exit port, SYSTEM_EVENT shutdown, API */
    VM_EXIT_ERROR = 1,    /* VMM error */
    VM_EXIT_USAGE = 2,    /* bad command line / configuration */
    VM_EXIT_RESET = 3,    /* i8042 0xFE, ACPI reset, SYSTEM_EVENT reset */
    VM_EXIT_TRIPLE_FAULT = 4,
    VM_EXIT_INTERNAL = 5, /* KVM internal error, entry failure */
};

enum vm_state { VM_STATE_CREATED, VM_STATE_RUNNING, VM_STATE_PAUSED, VM_STATE_SHUTDOWN };

struct io_range {
    uint64_t base;
    uint64_t len;
    vm_io_fn fn;
    void *opaque;
};

/* Immutable sorted snapshot; replaced as a whole on every change. */
struct io_table {
    struct io_table *retired_next; /* chain of replaced tables, freed at vm_destroy */
    int n;
    struct io_range r[];
};

struct vcpu {
    struct vm *vm;
    int index;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool thread_started;
    uint64_t exits, io_exits, mmio_exits;
};

#define VM_MAX_MSI_ROUTES 1024
#define VM_GSI_MSI_BASE   24

struct kvm_irq_routing;
struct serial_dev;
struct acpi_pm_dev;
struct rtc_dev;
struct i8042_dev;

struct vm {
    const struct vm_config *cfg;
    int kvm_fd;
    int vm_fd;
    int run_size;
    struct guest_mem mem;
    size_t mem_map_size;
    struct boot_info boot;

    int n_vcpus;
    struct vcpu *vcpus;

    pthread_mutex_t io_lock; /* serialises writers of io[]; readers take no lock */
    struct io_table *io[2];  /* indexed by enum vm_io_space */
    struct io_table *io_retired;

    pthread_mutex_t irq_lock; /* GSI routing table */
    struct kvm_irq_routing *routing;
    uint32_t routing_max;
    uint8_t gsi_used[VM_MAX_MSI_ROUTES];

    /* Lifecycle. */
    pthread_mutex_t state_lock;
    pthread_cond_t state_cond;
    enum vm_state state;
    bool stop;  /* vCPUs must leave their loops */
    bool pause; /* vCPUs must park */
    int n_parked;
    int exit_code;     /* first exit request wins */
    int exit_eventfd;  /* written when an exit is requested */
    bool exit_via_api; /* the API asked for it: its reply is still in flight */

    /* Legacy devices owned by the core (legacy/). */
    struct serial_dev *serial;
    struct acpi_pm_dev *pm;
    struct rtc_dev *rtc;
    struct i8042_dev *i8042;
    uint64_t unhandled_pio, unhandled_mmio;

    struct vm_devstate devstate; /* the device models' own per-VM state */
};

/* vm.c */
int vm_create(struct vm **out, const struct vm_config *cfg);
void vm_destroy(struct vm *vm);
int vm_load_kernel(struct vm *vm);
/* Dispatch an access through the range table: false when nobody handles it. */
bool vm_io_dispatch(struct vm *vm, enum vm_io_space space, uint64_t addr, void *data, uint32_t len,
                    bool is_write);
/* Ask the main loop to end the VM with this status (first request wins). */
void vm_request_exit(struct vm *vm, enum vm_exit_kind kind);
/* ACPI power button (API). */
int vm_power_button(struct vm *vm);

/* vcpu.c */
struct kvm_cpuid2;
/*
 * Turn KVM's supported CPUID into vCPU apic_id's view of an n-vCPU VM (one
 * package of n single-thread cores); c has room for max entries.
 */
void vcpu_cpuid_patch(struct kvm_cpuid2 *c, uint32_t apic_id, uint32_t n, uint32_t max);
int vcpu_create_all(struct vm *vm);
int vcpu_start_all(struct vm *vm);
/* Stop and join every vCPU thread. */
void vcpu_stop_all(struct vm *vm);
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);
enum vm_state vm_get_state(struct vm *vm);
const char *vm_state_name(enum vm_state s);

/* acpi.c: build the tables into guest memory; returns the RSDP address. */
int acpi_build_tables(const struct guest_mem *gm, int n_vcpus, uint64_t *rsdp);

/* legacy/ devices */
void acpi_pm_power_button(struct acpi_pm_dev *pm);

#endif
