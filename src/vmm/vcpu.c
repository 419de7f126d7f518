/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vCPUs: creation, CPUID/MSR/LAPIC set-up, the boot register state, the run
 * loop and pause/resume/stop. One thread per vCPU.
 */
#include "vmm/vmm.h"
#include "vmm/layout.h"
#include "common/log.h"

#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define VCPU_KICK_SIGNAL  SIGUSR1
#define CPUID_MAX_ENTRIES 256

#define MSR_IA32_TSC          0x10
#define MSR_IA32_SYSENTER_CS  0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE  0x1a0
#define MSR_MTRR_DEF_TYPE     0x2ff
#define MSR_STAR              0xc0000081
#define MSR_LSTAR             0xc0000082
#define MSR_CSTAR             0xc0000083
#define MSR_SYSCALL_MASK      0xc0000084
#define MSR_KERNEL_GS_BASE    0xc0000102

#define APIC_LVT_LINT0   0x350
#define APIC_LVT_LINT1   0x360
#define APIC_MODE_NMI    0x400
#define APIC_MODE_EXTINT 0x700
#define APIC_LVT_MASKED  0x10000

/* ---- CPUID ------------------------------------------------------------ */

static uint32_t bits_for(uint32_t n) /* ceil(log2(n)) */
{
    uint32_t b = 0;

    while ((1u << b) < n)
        b++;
    return b;
}

static void cpuid_set_topology_leaf(struct kvm_cpuid_entry2 *e, uint32_t fn, uint32_t idx,
                                    uint32_t apic_id, uint32_t n)
{
    memset(e, 0, sizeof(*e));
    e->function = fn;
    e->index = idx;
    e->flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    e->edx = apic_id;
    if (idx == 0) { /* SMT level: one thread per core */
        e->eax = 0;
        e->ebx = 1;
        e->ecx = (1u << 8) | idx;
    } else if (idx == 1) { /* core level: every vCPU is a core of one package */
        e->eax = bits_for(n);
        e->ebx = n;
        e->ecx = (2u << 8) | idx;
    } else {
        e->ecx = idx;
    }
}

/*
 * Adapt KVM's supported CPUID to this vCPU: one package of n cores with one
 * thread each, APIC ID = vCPU index, hypervisor bit and the KVM signature.
 */
void vcpu_cpuid_patch(struct kvm_cpuid2 *c, uint32_t apic_id, uint32_t n, uint32_t max)
{
    uint32_t pow2 = 1u << bits_for(n), out = 0, max_basic = 0;

    for (uint32_t i = 0; i < c->nent; i++)
        if (c->entries[i].function == 0)
            max_basic = c->entries[i].eax;
    for (uint32_t i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];

        switch (e->function) {
        case 0xb:
        case 0x1f:
            continue; /* rewritten below */
        case 1:
            e->ebx = (e->ebx & 0xffffu) | (apic_id << 24) | ((pow2 > 255 ? 255 : pow2) << 16);
            if (n > 1)
                e->edx |= 1u << 28; /* HTT: the package has more than one logical CPU */
            e->ecx |= 1u << 31;     /* running on a hypervisor */
            break;
        case 4:
            if (e->eax & 0x1f) { /* a cache is described */
                uint32_t level = (e->eax >> 5) & 7;

                e->eax &= 0x3fffu;
                e->eax |= ((pow2 - 1) & 0x3f) << 26;
                if (level == 3)
                    e->eax |= ((pow2 - 1) & 0xfff) << 14;
            }
            break;
        case 0x40000000:
            if (e->eax < 0x40000001)
                e->eax = 0x40000001;
            memcpy(&e->ebx, "KVMK", 4);
            memcpy(&e->ecx, "VMKV", 4);
            memcpy(&e->edx, "M\0\0\0", 4);
            break;
        case 0x40000001:
            /* KVM reports KVM_HINTS_REALTIME (EDX bit 0) as supported, but it promises the
             * guest that its vCPUs are never preempted, which holds only for vCPUs pinned
             * to dedicated host CPUs. qtvmm does not pin, so the hints stay clear. */
            e->edx = 0;
            break;
        case 0x80000008:
            e->ecx = (e->ecx & ~0xf0ffu) | (bits_for(n) << 12) | ((n - 1) & 0xff);
            break;
        default:
            break;
        }
        c->entries[out++] = *e;
    }
    for (uint32_t idx = 0; idx < 3 && max_basic >= 0xb && out < max; idx++)
        cpuid_set_topology_leaf(&c->entries[out++], 0xb, idx, apic_id, n);
    for (uint32_t idx = 0; idx < 3 && max_basic >= 0x1f && out < max; idx++)
        cpuid_set_topology_leaf(&c->entries[out++], 0x1f, idx, apic_id, n);
    c->nent = out;
}

static int vcpu_setup_cpuid(struct vcpu *v, const struct kvm_cpuid2 *supported)
{
    size_t sz = sizeof(struct kvm_cpuid2) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *c = malloc(sz);
    int ret = 0;

    if (!c)
        return -ENOMEM;
    memcpy(c, supported, sizeof(*c) + supported->nent * sizeof(supported->entries[0]));
    vcpu_cpuid_patch(c, (uint32_t)v->index, (uint32_t)v->vm->n_vcpus, CPUID_MAX_ENTRIES);
    if (ioctl(v->fd, KVM_SET_CPUID2, c) < 0) {
        ret = -errno;
        log_err("vCPU %d: KVM_SET_CPUID2 (%u entries) failed: %s", v->index, c->nent,
                strerror(errno));
    }
    free(c);
    return ret;
}

/* ---- MSRs, LAPIC, registers ------------------------------------------- */

static void vcpu_setup_msrs(struct vcpu *v)
{
    static const struct {
        uint32_t index;
        uint64_t value;
    } msrs[] = {
        {MSR_IA32_TSC, 0},
        {MSR_IA32_MISC_ENABLE, 1}, /* fast strings */
        {MSR_IA32_SYSENTER_CS, 0},
        {MSR_IA32_SYSENTER_ESP, 0},
        {MSR_IA32_SYSENTER_EIP, 0},
        {MSR_STAR, 0},
        {MSR_LSTAR, 0},
        {MSR_CSTAR, 0},
        {MSR_SYSCALL_MASK, 0},
        {MSR_KERNEL_GS_BASE, 0},
        {MSR_MTRR_DEF_TYPE, (1u << 11) | 6}, /* MTRRs on, default write-back */
    };
    /* struct kvm_msrs followed by one entry, without a flexible member in the middle. */
    uint64_t buf[(sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)) / 8 + 1];
    struct kvm_msrs *one = (struct kvm_msrs *)buf;

    /* One at a time: a back end lacking one MSR must not drop the others. */
    for (size_t i = 0; i < sizeof(msrs) / sizeof(msrs[0]); i++) {
        memset(buf, 0, sizeof(buf));
        one->nmsrs = 1;
        one->entries[0].index = msrs[i].index;
        one->entries[0].data = msrs[i].value;
        if (ioctl(v->fd, KVM_SET_MSRS, one) != 1)
            log_debug("vCPU %d: MSR 0x%x not settable (ignored)", v->index, msrs[i].index);
    }
}

static int vcpu_setup_lapic(struct vcpu *v)
{
    struct kvm_lapic_state la;
    uint32_t lint0 = v->index == 0 ? APIC_MODE_EXTINT : APIC_MODE_EXTINT | APIC_LVT_MASKED;
    uint32_t lint1 = APIC_MODE_NMI;

    if (ioctl(v->fd, KVM_GET_LAPIC, &la) < 0) {
        log_warn("vCPU %d: KVM_GET_LAPIC: %s (LINT0/LINT1 left as reset)", v->index,
                 strerror(errno));
        return 0;
    }
    memcpy(&la.regs[APIC_LVT_LINT0], &lint0, 4);
    memcpy(&la.regs[APIC_LVT_LINT1], &lint1, 4);
    if (ioctl(v->fd, KVM_SET_LAPIC, &la) < 0) {
        int ret = -errno;

        log_err("vCPU %d: KVM_SET_LAPIC failed: %s", v->index, strerror(errno));
        return ret;
    }
    return 0;
}

static void seg_flat(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code64)
{
    memset(s, 0, sizeof(*s));
    s->base = 0;
    s->limit = 0xffffffff;
    s->selector = sel;
    s->type = type;
    s->present = 1;
    s->s = 1;
    s->g = 1;
    s->l = code64;
    s->db = !code64;
}

/* The BSP's entry state: 32-bit flat protected mode (PVH) or 64-bit long mode (bzImage). */
static int vcpu_setup_boot_regs(struct vcpu *v)
{
    const struct boot_info *bi = &v->vm->boot;
    struct kvm_sregs sr;
    struct kvm_regs r;
    struct kvm_fpu fpu;
    bool lm = bi->kind == BOOT_BZIMAGE;

    if (ioctl(v->fd, KVM_GET_SREGS, &sr) < 0)
        return -errno;
    seg_flat(&sr.cs, lm ? BOOT_GDT_CODE64 : BOOT_GDT_CODE32, 0xb, lm);
    seg_flat(&sr.ds, BOOT_GDT_DATA, 0x3, false);
    sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
    memset(&sr.tr, 0, sizeof(sr.tr));
    sr.tr.type = 0xb;
    sr.tr.present = 1;
    sr.tr.limit = 0xffff;
    sr.gdt.base = LAYOUT_GDT_ADDR;
    sr.gdt.limit = BOOT_GDT_ENTRIES * 8 - 1;
    sr.idt.base = 0;
    sr.idt.limit = 0;
    if (lm) {
        sr.cr3 = LAYOUT_PML4;
        sr.cr4 = 0x20;                    /* PAE */
        sr.cr0 = 0x80050033;              /* PG WP NE ET MP PE */
        sr.efer = (1u << 8) | (1u << 10); /* LME LMA */
    } else {
        sr.cr0 = 0x11; /* ET PE */
        sr.cr4 = 0;
        sr.efer = 0;
    }
    if (ioctl(v->fd, KVM_SET_SREGS, &sr) < 0) {
        int ret = -errno;

        log_err("vCPU %d: KVM_SET_SREGS (%s entry) failed: %s", v->index, lm ? "64-bit" : "32-bit",
                strerror(errno));
        return ret;
    }
    memset(&r, 0, sizeof(r));
    r.rflags = 2;
    r.rip = bi->entry;
    if (lm)
        r.rsi = bi->params;
    else
        r.rbx = bi->params;
    if (ioctl(v->fd, KVM_SET_REGS, &r) < 0)
        return -errno;
    memset(&fpu, 0, sizeof(fpu));
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    if (ioctl(v->fd, KVM_SET_FPU, &fpu) < 0)
        log_debug("vCPU %d: KVM_SET_FPU: %s (ignored)", v->index, strerror(errno));
    return 0;
}

static void vcpu_dump(struct vcpu *v)
{
    struct kvm_regs r;
    struct kvm_sregs s;

    if (ioctl(v->fd, KVM_GET_REGS, &r) == 0)
        log_err("vCPU %d: rip=%#llx rsp=%#llx rflags=%#llx rax=%#llx rbx=%#llx rcx=%#llx "
                "rdx=%#llx rsi=%#llx rdi=%#llx rbp=%#llx",
                v->index, r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp);
    if (ioctl(v->fd, KVM_GET_SREGS, &s) == 0)
        log_err("vCPU %d: cr0=%#llx cr2=%#llx cr3=%#llx cr4=%#llx efer=%#llx cs=%#x(base %#llx "
                "l=%u db=%u) ss=%#x gdt=%#llx/%#x idt=%#llx/%#x",
                v->index, s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector, s.cs.base, s.cs.l,
                s.cs.db, s.ss.selector, s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit);
}

/* ---- creation --------------------------------------------------------- */

int vcpu_create_all(struct vm *vm)
{
    size_t sz = sizeof(struct kvm_cpuid2) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *supported = calloc(1, sz);
    int ret = 0;

    if (!supported)
        return -ENOMEM;
    supported->nent = CPUID_MAX_ENTRIES;
    if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, supported) < 0) {
        ret = -errno;
        log_err("KVM_GET_SUPPORTED_CPUID failed: %s", strerror(errno));
        goto out;
    }
    vm->vcpus = calloc((size_t)vm->n_vcpus, sizeof(*vm->vcpus));
    if (!vm->vcpus) {
        ret = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < vm->n_vcpus; i++)
        vm->vcpus[i].fd = -1;
    for (int i = 0; i < vm->n_vcpus; i++) {
        struct vcpu *v = &vm->vcpus[i];

        v->vm = vm;
        v->index = i;
        v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)i);
        if (v->fd < 0) {
            ret = -errno;
            log_err("vCPU %d: KVM_CREATE_VCPU failed: %s", i, strerror(errno));
            goto out;
        }
        v->run = mmap(NULL, (size_t)vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
        if (v->run == MAP_FAILED) {
            v->run = NULL;
            ret = -errno;
            log_err("vCPU %d: mmap of kvm_run failed: %s", i, strerror(errno));
            goto out;
        }
        ret = vcpu_setup_cpuid(v, supported);
        if (ret)
            goto out;
        vcpu_setup_msrs(v);
        ret = vcpu_setup_lapic(v);
        if (ret)
            goto out;
        if (i > 0) { /* APs wait for INIT/SIPI from the BSP */
            struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_UNINITIALIZED};

            if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0)
                log_warn("vCPU %d: KVM_SET_MP_STATE(wait-for-SIPI): %s", i, strerror(errno));
        }
    }
out:
    free(supported);
    return ret;
}

/* ---- run loop --------------------------------------------------------- */

static void vcpu_handle_io(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    bool is_write = run->io.direction == KVM_EXIT_IO_OUT;

    v->io_exits++;
    for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
        if (!vm_io_dispatch(v->vm, VM_IO_PIO, run->io.port, data, run->io.size, is_write)) {
            __atomic_add_fetch(&v->vm->unhandled_pio, 1, __ATOMIC_RELAXED);
            log_debug("vCPU %d: unhandled port %s 0x%x/%u", v->index, is_write ? "write" : "read",
                      run->io.port, run->io.size);
            if (!is_write)
                memset(data, 0xff, run->io.size);
        }
    }
}

static void vcpu_handle_mmio(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    uint32_t len = run->mmio.len;

    v->mmio_exits++;
    if (len > sizeof(run->mmio.data))
        len = sizeof(run->mmio.data);
    if (!vm_io_dispatch(v->vm, VM_IO_MMIO, run->mmio.phys_addr, run->mmio.data, len,
                        run->mmio.is_write)) {
        __atomic_add_fetch(&v->vm->unhandled_mmio, 1, __ATOMIC_RELAXED);
        log_debug("vCPU %d: unhandled MMIO %s 0x%llx/%u", v->index,
                  run->mmio.is_write ? "write" : "read", (unsigned long long)run->mmio.phys_addr,
                  len);
        if (!run->mmio.is_write)
            memset(run->mmio.data, 0xff, len);
    }
}

/* Returns false when the loop must end. */
static bool vcpu_handle_exit(struct vcpu *v)
{
    struct kvm_run *run = v->run;

    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        vcpu_handle_io(v);
        return true;
    case KVM_EXIT_MMIO:
        vcpu_handle_mmio(v);
        return true;
    case KVM_EXIT_INTR:
    case KVM_EXIT_IRQ_WINDOW_OPEN:
        return true;
    case KVM_EXIT_HLT:
        /* Only without an in-kernel LAPIC, which qtvmm always has. */
        log_info("vCPU %d: halted with no interrupt source; powering off", v->index);
        vm_request_exit(v->vm, VM_EXIT_POWEROFF);
        return false;
    case KVM_EXIT_SHUTDOWN:
        log_warn("vCPU %d: triple fault (KVM_EXIT_SHUTDOWN)", v->index);
        vcpu_dump(v);
        vm_request_exit(v->vm, VM_EXIT_TRIPLE_FAULT);
        return false;
    case KVM_EXIT_SYSTEM_EVENT:
        switch (run->system_event.type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN:
            vm_request_exit(v->vm, VM_EXIT_POWEROFF);
            break;
        case KVM_SYSTEM_EVENT_RESET:
            vm_request_exit(v->vm, VM_EXIT_RESET);
            break;
        default:
            log_err("vCPU %d: system event %u (crash)", v->index, run->system_event.type);
            vm_request_exit(v->vm, VM_EXIT_INTERNAL);
            break;
        }
        return false;
    case KVM_EXIT_INTERNAL_ERROR:
        log_err("vCPU %d: KVM internal error, suberror %u", v->index, run->internal.suberror);
        vcpu_dump(v);
        vm_request_exit(v->vm, VM_EXIT_INTERNAL);
        return false;
    case KVM_EXIT_FAIL_ENTRY:
        log_err("vCPU %d: VM entry failed, hardware reason %#llx", v->index,
                (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        vcpu_dump(v);
        vm_request_exit(v->vm, VM_EXIT_INTERNAL);
        return false;
    default:
        log_err("vCPU %d: unexpected KVM exit reason %u", v->index, run->exit_reason);
        vcpu_dump(v);
        vm_request_exit(v->vm, VM_EXIT_INTERNAL);
        return false;
    }
}

/* Park while paused; false when the vCPU must stop. */
static bool vcpu_wait_runnable(struct vcpu *v)
{
    struct vm *vm = v->vm;
    bool stop;

    __atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_RELAXED);
    pthread_mutex_lock(&vm->state_lock);
    while (vm->pause && !vm->stop) {
        vm->n_parked++;
        pthread_cond_broadcast(&vm->state_cond);
        pthread_cond_wait(&vm->state_cond, &vm->state_lock);
        vm->n_parked--;
    }
    stop = vm->stop;
    pthread_mutex_unlock(&vm->state_lock);
    return !stop;
}

static void *vcpu_thread(void *arg)
{
    struct vcpu *v = arg;
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, VCPU_KICK_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    while (vcpu_wait_runnable(v)) {
        if (ioctl(v->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            log_err("vCPU %d: KVM_RUN failed: %s", v->index, strerror(errno));
            vcpu_dump(v);
            vm_request_exit(v->vm, VM_EXIT_INTERNAL);
            break;
        }
        v->exits++;
        if (!vcpu_handle_exit(v))
            break;
    }
    return NULL;
}

static void vcpu_kick_handler(int sig)
{
    (void)sig; /* only interrupts KVM_RUN */
}

static void vcpu_kick_all(struct vm *vm)
{
    for (int i = 0; i < vm->n_vcpus; i++) {
        struct vcpu *v = &vm->vcpus[i];

        if (!v->thread_started)
            continue;
        __atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_RELEASE);
        pthread_kill(v->thread, VCPU_KICK_SIGNAL);
    }
}

int vcpu_start_all(struct vm *vm)
{
    struct sigaction sa;
    sigset_t set, old;
    int ret;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = vcpu_kick_handler; /* no SA_RESTART: KVM_RUN must return EINTR */
    sigaction(VCPU_KICK_SIGNAL, &sa, NULL);
    ret = vcpu_setup_boot_regs(&vm->vcpus[0]);
    if (ret) {
        log_err("vCPU 0: setting the boot registers failed: %s", strerror(-ret));
        return ret;
    }
    /* Threads start with every signal blocked; each unblocks only the kick. */
    sigfillset(&set);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    pthread_mutex_lock(&vm->state_lock);
    vm->state = VM_STATE_RUNNING;
    pthread_mutex_unlock(&vm->state_lock);
    for (int i = 0; i < vm->n_vcpus; i++) {
        ret = -pthread_create(&vm->vcpus[i].thread, NULL, vcpu_thread, &vm->vcpus[i]);
        if (ret) {
            log_err("vCPU %d: cannot start its thread: %s", i, strerror(-ret));
            break;
        }
        vm->vcpus[i].thread_started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return ret;
}

void vcpu_stop_all(struct vm *vm)
{
    pthread_mutex_lock(&vm->state_lock);
    vm->stop = true;
    vm->state = VM_STATE_SHUTDOWN;
    pthread_cond_broadcast(&vm->state_cond);
    pthread_mutex_unlock(&vm->state_lock);
    vcpu_kick_all(vm);
    for (int i = 0; vm->vcpus && i < vm->n_vcpus; i++) {
        if (vm->vcpus[i].thread_started) {
            pthread_join(vm->vcpus[i].thread, NULL);
            vm->vcpus[i].thread_started = false;
        }
    }
}

int vm_pause(struct vm *vm)
{
    int running = 0;

    pthread_mutex_lock(&vm->state_lock);
    if (vm->state != VM_STATE_RUNNING) {
        int ret = vm->state == VM_STATE_PAUSED ? 0 : -EINVAL;

        pthread_mutex_unlock(&vm->state_lock);
        return ret;
    }
    vm->pause = true;
    pthread_mutex_unlock(&vm->state_lock);
    vcpu_kick_all(vm);
    pthread_mutex_lock(&vm->state_lock);
    for (int i = 0; i < vm->n_vcpus; i++)
        running += vm->vcpus[i].thread_started;
    /* A vCPU that left its loop (VM ending) never parks: stop waiting then. */
    while (vm->n_parked < running && !vm->stop && vm->exit_code < 0)
        pthread_cond_wait(&vm->state_cond, &vm->state_lock);
    if (!vm->stop)
        vm->state = VM_STATE_PAUSED;
    pthread_mutex_unlock(&vm->state_lock);
    return 0;
}

int vm_resume(struct vm *vm)
{
    int ret = 0;

    pthread_mutex_lock(&vm->state_lock);
    if (vm->state == VM_STATE_PAUSED) {
        vm->pause = false;
        vm->state = VM_STATE_RUNNING;
        pthread_cond_broadcast(&vm->state_cond);
    } else if (vm->state != VM_STATE_RUNNING) {
        ret = -EINVAL;
    }
    pthread_mutex_unlock(&vm->state_lock);
    return ret;
}

enum vm_state vm_get_state(struct vm *vm)
{
    enum vm_state s;

    pthread_mutex_lock(&vm->state_lock);
    s = vm->state;
    pthread_mutex_unlock(&vm->state_lock);
    return s;
}

const char *vm_state_name(enum vm_state s)
{
    static const char *const names[] = {"created", "running", "paused", "shutdown"};

    return (unsigned)s < 4 ? names[s] : "unknown";
}
