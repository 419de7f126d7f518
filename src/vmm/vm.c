/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The VM object: KVM VM and irqchip, guest RAM in a memfd, the PIO/MMIO range
 * tables, interrupt routing and the exit request. Implements vm.h.
 */
#include "vmm/vmm.h"
#include "vmm/layout.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21 << 26)
#endif

/* ---- guest memory ----------------------------------------------------- */

static int vm_setup_memory(struct vm *vm)
{
    const struct vm_config *cfg = vm->cfg;
    unsigned int flags = MFD_CLOEXEC | (cfg->hugepages ? MFD_HUGETLB | MFD_HUGE_2MB : 0);
    uint8_t *base;
    int fd, ret;

    fd = memfd_create("qtvmm-ram", flags);
    if (fd < 0) {
        ret = -errno;
        log_err("guest RAM: memfd_create(%s) failed: %s", cfg->hugepages ? "hugetlb" : "shmem",
                strerror(errno));
        return ret;
    }
    if (ftruncate(fd, (off_t)cfg->mem_size) < 0) {
        ret = -errno;
        log_err("guest RAM: cannot size memfd to %llu bytes: %s", (unsigned long long)cfg->mem_size,
                strerror(errno));
        goto fail_fd;
    }
    /*
     * hugetlb pages are reserved at mmap time (no MAP_NORESERVE), so a short
     * pool fails here instead of as SIGBUS when the guest touches the memory.
     */
    base = mmap(NULL, cfg->mem_size, PROT_READ | PROT_WRITE,
                MAP_SHARED | (cfg->hugepages ? 0 : MAP_NORESERVE), fd, 0);
    if (base == MAP_FAILED) {
        ret = -errno;
        log_err("guest RAM: mmap of %llu bytes failed: %s%s", (unsigned long long)cfg->mem_size,
                strerror(errno),
                cfg->hugepages ? " (not enough free 2 MiB hugepages? see /proc/meminfo)" : "");
        goto fail_fd;
    }
    vm->mem_map_size = cfg->mem_size;
    ret = guest_mem_layout(&vm->mem, cfg->mem_size, base);
    if (ret) {
        log_err("guest RAM: %llu bytes is not a valid size", (unsigned long long)cfg->mem_size);
        goto fail_map;
    }
    vm->mem.fd = fd;
    for (int i = 0; i < vm->mem.n; i++) {
        struct kvm_userspace_memory_region r = {
            .slot = (uint32_t)i,
            .guest_phys_addr = vm->mem.r[i].gpa,
            .memory_size = vm->mem.r[i].size,
            .userspace_addr = (uint64_t)(uintptr_t)vm->mem.r[i].hva,
        };
        if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
            ret = -errno;
            log_err("guest RAM: KVM_SET_USER_MEMORY_REGION slot %d at 0x%llx failed: %s", i,
                    (unsigned long long)r.guest_phys_addr, strerror(errno));
            goto fail_map;
        }
    }
    return 0;
fail_map:
    munmap(base, cfg->mem_size);
    vm->mem.r[0].hva = NULL;
fail_fd:
    close(fd);
    vm->mem.fd = -1;
    return ret;
}

void *vm_gpa_to_hva(struct vm *vm, uint64_t gpa, uint64_t len)
{
    return guest_mem_ptr(&vm->mem, gpa, len);
}

int vm_mem_regions(struct vm *vm, struct vm_mem_region *out, int max)
{
    int n = 0;

    for (int i = 0; i < vm->mem.n && n < max; i++, n++)
        out[n] = (struct vm_mem_region){.gpa = vm->mem.r[i].gpa,
                                        .size = vm->mem.r[i].size,
                                        .hva = vm->mem.r[i].hva,
                                        .fd = vm->mem.fd,
                                        .fd_offset = vm->mem.r[i].fd_offset};
    return n;
}

uint64_t vm_ram_size(struct vm *vm)
{
    return vm->mem.total;
}

int vm_num_vcpus(struct vm *vm)
{
    return vm->n_vcpus;
}

/* ---- I/O range tables ------------------------------------------------- */

static struct io_range *io_table_find(struct io_table *t, uint64_t addr)
{
    int lo = 0, hi = t ? t->n - 1 : -1;

    while (lo <= hi) { /* last range with base <= addr */
        int mid = lo + (hi - lo) / 2;

        if (t->r[mid].base <= addr)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    if (hi < 0 || addr - t->r[hi].base >= t->r[hi].len)
        return NULL;
    return &t->r[hi];
}

bool vm_io_dispatch(struct vm *vm, enum vm_io_space space, uint64_t addr, void *data, uint32_t len,
                    bool is_write)
{
    struct io_table *t = __atomic_load_n(&vm->io[space], __ATOMIC_ACQUIRE);
    struct io_range *r = io_table_find(t, addr);

    if (!r || len > r->len - (addr - r->base))
        return false;
    if (!is_write)
        memset(data, 0, len);
    r->fn(r->opaque, addr - r->base, data, len, is_write);
    return true;
}

/* Publish a copy of the current table with range idx removed and/or nr inserted. */
static int io_table_replace(struct vm *vm, enum vm_io_space space, int remove_idx,
                            const struct io_range *add)
{
    struct io_table *old = vm->io[space], *t;
    int n_old = old ? old->n : 0, n = 0;
    bool added = false;

    t = malloc(sizeof(*t) + sizeof(t->r[0]) * (size_t)(n_old + 1));
    if (!t)
        return -ENOMEM;
    t->retired_next = NULL;
    for (int i = 0; i < n_old; i++) {
        if (i == remove_idx)
            continue;
        if (add && !added && add->base < old->r[i].base) {
            t->r[n++] = *add;
            added = true;
        }
        t->r[n++] = old->r[i];
    }
    if (add && !added)
        t->r[n++] = *add;
    t->n = n;
    __atomic_store_n(&vm->io[space], t, __ATOMIC_RELEASE);
    /* vCPUs may still read the old table: keep it until the VM is destroyed. */
    if (old) {
        old->retired_next = vm->io_retired;
        vm->io_retired = old;
    }
    return 0;
}

static int io_table_index(struct io_table *t, uint64_t base)
{
    for (int i = 0; t && i < t->n; i++)
        if (t->r[i].base == base)
            return i;
    return -1;
}

static bool io_table_overlaps(struct io_table *t, uint64_t base, uint64_t len, int skip)
{
    for (int i = 0; t && i < t->n; i++)
        if (i != skip && base < t->r[i].base + t->r[i].len && t->r[i].base < base + len)
            return true;
    return false;
}

int vm_io_register(struct vm *vm, enum vm_io_space space, uint64_t base, uint64_t len, vm_io_fn fn,
                   void *opaque)
{
    struct io_range r = {.base = base, .len = len, .fn = fn, .opaque = opaque};
    int ret;

    if ((space != VM_IO_PIO && space != VM_IO_MMIO) || !fn || len == 0 || base + len < base ||
        (space == VM_IO_PIO && base + len > 0x10000))
        return -EINVAL;
    pthread_mutex_lock(&vm->io_lock);
    if (io_table_overlaps(vm->io[space], base, len, -1))
        ret = -EEXIST;
    else
        ret = io_table_replace(vm, space, -1, &r);
    pthread_mutex_unlock(&vm->io_lock);
    if (ret == -EEXIST)
        log_debug("%s range [0x%llx, +0x%llx) overlaps a registered one",
                  space == VM_IO_PIO ? "port" : "MMIO", (unsigned long long)base,
                  (unsigned long long)len);
    return ret;
}

int vm_io_unregister(struct vm *vm, enum vm_io_space space, uint64_t base)
{
    int idx, ret = -ENOENT;

    if (space != VM_IO_PIO && space != VM_IO_MMIO)
        return -EINVAL;
    pthread_mutex_lock(&vm->io_lock);
    idx = io_table_index(vm->io[space], base);
    if (idx >= 0)
        ret = io_table_replace(vm, space, idx, NULL);
    pthread_mutex_unlock(&vm->io_lock);
    return ret;
}

int vm_io_move(struct vm *vm, enum vm_io_space space, uint64_t old_base, uint64_t new_base)
{
    struct io_range r;
    int idx, ret;

    if (space != VM_IO_PIO && space != VM_IO_MMIO)
        return -EINVAL;
    pthread_mutex_lock(&vm->io_lock);
    idx = io_table_index(vm->io[space], old_base);
    if (idx < 0) {
        ret = -ENOENT;
        goto out;
    }
    r = vm->io[space]->r[idx];
    r.base = new_base;
    if (new_base + r.len < new_base || (space == VM_IO_PIO && new_base + r.len > 0x10000)) {
        ret = -EINVAL;
        goto out;
    }
    if (io_table_overlaps(vm->io[space], new_base, r.len, idx)) {
        ret = -EEXIST;
        goto out;
    }
    ret = io_table_replace(vm, space, idx, &r);
out:
    pthread_mutex_unlock(&vm->io_lock);
    return ret;
}

/* ---- interrupts ------------------------------------------------------- */

int vm_irq_line(struct vm *vm, uint32_t gsi, int level)
{
    struct kvm_irq_level l = {.irq = gsi, .level = level ? 1 : 0};

    if (ioctl(vm->vm_fd, KVM_IRQ_LINE, &l) < 0)
        return -errno;
    return 0;
}

static void routing_add(struct kvm_irq_routing *rt, uint32_t gsi, uint32_t chip, uint32_t pin)
{
    struct kvm_irq_routing_entry *e = &rt->entries[rt->nr++];

    memset(e, 0, sizeof(*e));
    e->gsi = gsi;
    e->type = KVM_IRQ_ROUTING_IRQCHIP;
    e->u.irqchip.irqchip = chip;
    e->u.irqchip.pin = pin;
}

/*
 * Legacy routing as QEMU sets it up for the in-kernel irqchip: ISA IRQs go to
 * both the PIC and the IOAPIC, except that IRQ0 (the PIT) reaches IOAPIC pin 2
 * (the MADT override) and nothing is routed to IOAPIC pin 0.
 */
static void routing_init_legacy(struct kvm_irq_routing *rt)
{
    rt->nr = 0;
    for (uint32_t i = 0; i < 16; i++)
        if (i != 2)
            routing_add(rt, i, i < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, i % 8);
    for (uint32_t i = 0; i < 24; i++) {
        if (i == 0)
            routing_add(rt, 0, KVM_IRQCHIP_IOAPIC, 2);
        else if (i != 2)
            routing_add(rt, i, KVM_IRQCHIP_IOAPIC, i);
    }
}

static int routing_commit(struct vm *vm)
{
    if (ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, vm->routing) < 0) {
        int ret = -errno;

        log_err("KVM_SET_GSI_ROUTING (%u entries) failed: %s", vm->routing->nr, strerror(errno));
        return ret;
    }
    return 0;
}

static struct kvm_irq_routing_entry *routing_find(struct vm *vm, uint32_t gsi)
{
    for (uint32_t i = 0; i < vm->routing->nr; i++)
        if (vm->routing->entries[i].gsi == gsi &&
            vm->routing->entries[i].type == KVM_IRQ_ROUTING_MSI)
            return &vm->routing->entries[i];
    return NULL;
}

static void msi_fill(struct kvm_irq_routing_entry *e, uint32_t gsi, uint64_t addr, uint32_t data)
{
    memset(e, 0, sizeof(*e));
    e->gsi = gsi;
    e->type = KVM_IRQ_ROUTING_MSI;
    e->u.msi.address_lo = (uint32_t)addr;
    e->u.msi.address_hi = (uint32_t)(addr >> 32);
    e->u.msi.data = data;
}

int vm_msi_route_alloc(struct vm *vm, uint64_t addr, uint32_t data, uint32_t *gsi)
{
    int ret = -ENOSPC;

    if (!vm->routing)
        return -ENOTSUP;
    pthread_mutex_lock(&vm->irq_lock);
    for (uint32_t g = VM_GSI_MSI_BASE; g < vm->routing_max && g < VM_MAX_MSI_ROUTES; g++) {
        if (vm->gsi_used[g])
            continue;
        msi_fill(&vm->routing->entries[vm->routing->nr++], g, addr, data);
        ret = routing_commit(vm);
        if (ret) {
            vm->routing->nr--;
            break;
        }
        vm->gsi_used[g] = 1;
        *gsi = g;
        break;
    }
    pthread_mutex_unlock(&vm->irq_lock);
    return ret;
}

int vm_msi_route_update(struct vm *vm, uint32_t gsi, uint64_t addr, uint32_t data)
{
    struct kvm_irq_routing_entry *e, saved;
    int ret;

    if (!vm->routing)
        return -ENOTSUP;
    pthread_mutex_lock(&vm->irq_lock);
    e = routing_find(vm, gsi);
    if (!e) {
        ret = -ENOENT;
        goto out;
    }
    saved = *e;
    msi_fill(e, gsi, addr, data);
    ret = routing_commit(vm);
    if (ret)
        *e = saved;
out:
    pthread_mutex_unlock(&vm->irq_lock);
    return ret;
}

void vm_msi_route_free(struct vm *vm, uint32_t gsi)
{
    struct kvm_irq_routing_entry *e;

    if (!vm->routing)
        return;
    pthread_mutex_lock(&vm->irq_lock);
    e = routing_find(vm, gsi);
    if (e) {
        *e = vm->routing->entries[--vm->routing->nr];
        vm->gsi_used[gsi] = 0;
        routing_commit(vm);
    }
    pthread_mutex_unlock(&vm->irq_lock);
}

int vm_msi_signal(struct vm *vm, uint64_t addr, uint32_t data)
{
    struct kvm_msi msi = {
        .address_lo = (uint32_t)addr, .address_hi = (uint32_t)(addr >> 32), .data = data};
    int ret = ioctl(vm->vm_fd, KVM_SIGNAL_MSI, &msi);

    if (ret < 0)
        return -errno;
    return ret > 0 ? 0 : -EBUSY; /* 0: blocked by the guest (masked / no destination) */
}

int vm_irqfd(struct vm *vm, int eventfd, uint32_t gsi, bool assign)
{
    struct kvm_irqfd f = {
        .fd = (uint32_t)eventfd, .gsi = gsi, .flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN};

    if (ioctl(vm->vm_fd, KVM_IRQFD, &f) < 0)
        return -errno;
    return 0;
}

int vm_ioeventfd(struct vm *vm, enum vm_io_space space, uint64_t addr, uint32_t len, int eventfd,
                 bool datamatch, uint64_t data, bool assign)
{
    struct kvm_ioeventfd f = {.datamatch = datamatch ? data : 0,
                              .addr = addr,
                              .len = len,
                              .fd = eventfd,
                              .flags = (space == VM_IO_PIO ? KVM_IOEVENTFD_FLAG_PIO : 0) |
                                       (datamatch ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0) |
                                       (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN)};

    if (ioctl(vm->vm_fd, KVM_IOEVENTFD, &f) < 0)
        return -errno;
    return 0;
}

/* ---- lifecycle -------------------------------------------------------- */

void vm_request_exit(struct vm *vm, enum vm_exit_kind kind)
{
    uint64_t one = 1;

    pthread_mutex_lock(&vm->state_lock);
    if (vm->exit_code < 0) {
        vm->exit_code = (int)kind;
        log_info("VM exit requested: status %d", (int)kind);
    }
    pthread_cond_broadcast(&vm->state_cond); /* wakes a vm_pause() waiting for vCPUs */
    pthread_mutex_unlock(&vm->state_lock);
    if (write(vm->exit_eventfd, &one, sizeof(one)) < 0)
        log_warn("exit eventfd: %s", strerror(errno));
}

void vm_request_reset(struct vm *vm)
{
    log_info("guest requested a platform reset");
    vm_request_exit(vm, VM_EXIT_RESET);
}

static int kvm_check_cap(struct vm *vm, long cap)
{
    int r = ioctl(vm->vm_fd >= 0 ? vm->vm_fd : vm->kvm_fd, KVM_CHECK_EXTENSION, cap);

    if (r < 0)
        r = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
}

static int vm_setup_irqchip(struct vm *vm)
{
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    int nr = kvm_check_cap(vm, KVM_CAP_IRQ_ROUTING);

    /* VMX needs these two pages below 4 GiB; other back ends (SVM, PVM) ignore or lack them. */
    if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &(uint64_t){0xfeffc000ull}) < 0)
        log_debug("KVM_SET_IDENTITY_MAP_ADDR: %s (ignored)", strerror(errno));
    if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, 0xfeffd000ul) < 0)
        log_debug("KVM_SET_TSS_ADDR: %s (ignored)", strerror(errno));
    if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
        int ret = -errno;

        log_err("KVM_CREATE_IRQCHIP failed: %s", strerror(errno));
        return ret;
    }
    if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
        log_warn("KVM_CREATE_PIT2 failed: %s; the guest has no PIT", strerror(errno));
    if (nr <= 0) {
        log_warn("KVM has no IRQ routing: MSI routes are unavailable");
        return 0;
    }
    vm->routing_max = (uint32_t)(nr < VM_MAX_MSI_ROUTES ? nr : VM_MAX_MSI_ROUTES);
    vm->routing = calloc(1, sizeof(*vm->routing) +
                                (vm->routing_max + 64) * sizeof(struct kvm_irq_routing_entry));
    if (!vm->routing)
        return -ENOMEM;
    routing_init_legacy(vm->routing);
    return routing_commit(vm);
}

int vm_create(struct vm **out, const struct vm_config *cfg)
{
    struct vm *vm = calloc(1, sizeof(*vm));
    int ret, api;

    if (!vm)
        return -ENOMEM;
    vm->cfg = cfg;
    vm->kvm_fd = vm->vm_fd = vm->exit_eventfd = -1;
    vm->mem.fd = -1;
    vm->exit_code = -1;
    vm->n_vcpus = (int)cfg->cpus_boot;
    pthread_mutex_init(&vm->io_lock, NULL);
    pthread_mutex_init(&vm->devstate.lock, NULL);
    pthread_mutex_init(&vm->irq_lock, NULL);
    pthread_mutex_init(&vm->state_lock, NULL);
    pthread_cond_init(&vm->state_cond, NULL);
    *out = vm;

    vm->exit_eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (vm->exit_eventfd < 0)
        return -errno;
    vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0) {
        ret = -errno;
        log_err("/dev/kvm: cannot open: %s", strerror(errno));
        return ret;
    }
    api = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION) {
        log_err("/dev/kvm: API version %d, qtvmm needs %d", api, KVM_API_VERSION);
        return -ENOTSUP;
    }
    vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    if (vm->vm_fd < 0) {
        ret = -errno;
        log_err("KVM_CREATE_VM failed: %s", strerror(errno));
        return ret;
    }
    {
        int max = kvm_check_cap(vm, KVM_CAP_MAX_VCPUS);

        if (max <= 0)
            max = kvm_check_cap(vm, KVM_CAP_NR_VCPUS);
        if (max > 0 && vm->n_vcpus > max) {
            log_err("--cpus boot=%d: KVM supports at most %d vCPUs", vm->n_vcpus, max);
            return -EINVAL;
        }
    }
    vm->run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (vm->run_size <= 0) {
        log_err("KVM_GET_VCPU_MMAP_SIZE failed: %s", strerror(errno));
        return -ENOTSUP;
    }
    if (kvm_check_cap(vm, KVM_CAP_IMMEDIATE_EXIT) <= 0)
        log_warn("KVM lacks KVM_CAP_IMMEDIATE_EXIT: a pause or stop racing a vCPU entry "
                 "waits for that vCPU's next exit");
    /*
     * RAM before the irqchip: KVM_SET_USER_MEMORY_REGION waits for an SRCU
     * grace period on kvm->srcu. On a fresh VM that wait is short; once the
     * irqchip and PIT have registered their I/O devices (which leave SRCU
     * callbacks pending) it becomes a normal grace period of one or two
     * jiffies. Measured here: 2.4 ms vs 9.1 ms median (docs/vmm.md).
     */
    ret = vm_setup_memory(vm);
    if (ret)
        return ret;
    ret = vm_setup_irqchip(vm);
    if (ret)
        return ret;
    return vcpu_create_all(vm);
}

void vm_destroy(struct vm *vm)
{
    struct io_table *t, *next;

    if (!vm)
        return;
    for (int i = 0; vm->vcpus && i < vm->n_vcpus; i++) {
        if (vm->vcpus[i].run)
            munmap(vm->vcpus[i].run, (size_t)vm->run_size);
        if (vm->vcpus[i].fd >= 0)
            close(vm->vcpus[i].fd);
    }
    free(vm->vcpus);
    if (vm->mem.n && vm->mem.r[0].hva)
        munmap(vm->mem.r[0].hva, vm->mem_map_size);
    if (vm->mem.fd >= 0)
        close(vm->mem.fd);
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    if (vm->exit_eventfd >= 0)
        close(vm->exit_eventfd);
    for (int s = 0; s < 2; s++)
        free(vm->io[s]);
    for (t = vm->io_retired; t; t = next) {
        next = t->retired_next;
        free(t);
    }
    free(vm->routing);
    pthread_mutex_destroy(&vm->io_lock);
    pthread_mutex_destroy(&vm->devstate.lock);
    pthread_mutex_destroy(&vm->irq_lock);
    pthread_mutex_destroy(&vm->state_lock);
    pthread_cond_destroy(&vm->state_cond);
    free(vm);
}

/* Map a whole file read-only; *len = its size. */
static int vm_map_file(const char *what, const char *path, const uint8_t **data, size_t *len)
{
    struct stat st;
    void *p;
    int fd = open(path, O_RDONLY | O_CLOEXEC), ret;

    if (fd < 0) {
        ret = -errno;
        log_err("%s '%s': cannot open: %s", what, path, strerror(errno));
        return ret;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
        log_err("%s '%s': not a non-empty regular file", what, path);
        close(fd);
        return -EINVAL;
    }
    p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        ret = -errno;
        log_err("%s '%s': mmap failed: %s", what, path, strerror(errno));
        return ret;
    }
    *data = p;
    *len = (size_t)st.st_size;
    return 0;
}

int vm_load_kernel(struct vm *vm)
{
    struct boot_images img = {.cmdline = vm->cfg->cmdline};
    char err[256];
    int ret;

    ret = acpi_build_tables(&vm->mem, vm->n_vcpus, &img.rsdp);
    if (ret) {
        log_err("ACPI: building the tables failed (%d)", ret);
        return ret;
    }
    ret = vm_map_file("kernel", vm->cfg->kernel, &img.kernel, &img.kernel_len);
    if (ret)
        return ret;
    if (vm->cfg->initramfs) {
        ret = vm_map_file("initramfs", vm->cfg->initramfs, &img.initrd, &img.initrd_len);
        if (ret)
            goto out;
    }
    ret = boot_load(&vm->mem, &img, &vm->boot, err, sizeof(err));
    if (ret)
        log_err("'%s': %s", vm->cfg->kernel, err);
    else
        log_debug("kernel '%s': %s entry 0x%llx", vm->cfg->kernel,
                  vm->boot.kind == BOOT_PVH ? "PVH" : "bzImage",
                  (unsigned long long)vm->boot.entry);
out:
    munmap((void *)img.kernel, img.kernel_len);
    if (img.initrd)
        munmap((void *)img.initrd, img.initrd_len);
    return ret;
}

struct vm_devstate *vm_devstate(struct vm *vm)
{
    return &vm->devstate;
}
