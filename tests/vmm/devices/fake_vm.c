/* SPDX-License-Identifier: Apache-2.0 */
/* Fake vm.h over a memfd, for device tests without KVM. */
#include "fake_vm.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FAKE_MAX_RANGES 64
#define FAKE_MAX_ROUTES 256
#define FAKE_MAX_FDS    256

struct fake_range {
    enum vm_io_space space;
    uint64_t base, len;
    vm_io_fn fn;
    void *opaque;
    bool used;
};

struct fake_route {
    uint64_t addr;
    uint32_t data;
    bool used;
};

struct fake_irqfd {
    int fd;
    uint32_t gsi;
    bool used;
};

struct fake_ioeventfd {
    enum vm_io_space space;
    uint64_t addr;
    uint32_t len;
    int fd;
    bool datamatch;
    uint64_t data;
    bool used;
};

struct fake_msi_count {
    uint32_t data;
    int count;
};

struct vm {
    pthread_mutex_t lock;
    uint8_t *ram;
    uint64_t ram_size;
    int memfd;
    struct fake_range ranges[FAKE_MAX_RANGES];
    struct fake_route routes[FAKE_MAX_ROUTES];
    struct fake_irqfd irqfds[FAKE_MAX_FDS];
    struct fake_ioeventfd ioeventfds[FAKE_MAX_FDS];
    struct fake_msi_count msis[FAKE_MAX_ROUTES];
    int resets;
    struct vm_devstate devstate;
};

struct vm *fake_vm_new(uint64_t ram_size)
{
    struct vm *vm = calloc(1, sizeof(*vm));

    if (!vm)
        return NULL;
    pthread_mutex_init(&vm->lock, NULL);
    pthread_mutex_init(&vm->devstate.lock, NULL);
    vm->memfd = memfd_create("fake-guest-ram", MFD_CLOEXEC);
    if (vm->memfd < 0 || ftruncate(vm->memfd, (off_t)ram_size) < 0)
        goto fail;
    vm->ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->memfd, 0);
    if (vm->ram == MAP_FAILED)
        goto fail;
    vm->ram_size = ram_size;
    return vm;
fail:
    if (vm->memfd >= 0)
        close(vm->memfd);
    free(vm);
    return NULL;
}

void fake_vm_free(struct vm *vm)
{
    if (!vm)
        return;
    munmap(vm->ram, vm->ram_size);
    close(vm->memfd);
    pthread_mutex_destroy(&vm->lock);
    pthread_mutex_destroy(&vm->devstate.lock);
    free(vm);
}

uint8_t *fake_vm_ram(struct vm *vm)
{
    return vm->ram;
}

void *vm_gpa_to_hva(struct vm *vm, uint64_t gpa, uint64_t len)
{
    if (gpa >= vm->ram_size || len > vm->ram_size - gpa)
        return NULL;
    return vm->ram + gpa;
}

int vm_mem_regions(struct vm *vm, struct vm_mem_region *out, int max)
{
    if (max < 1)
        return 0;
    out[0] = (struct vm_mem_region){
        .gpa = 0, .size = vm->ram_size, .hva = vm->ram, .fd = vm->memfd, .fd_offset = 0};
    return 1;
}

static bool fake_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

int vm_io_register(struct vm *vm, enum vm_io_space space, uint64_t base, uint64_t len, vm_io_fn fn,
                   void *opaque)
{
    int ret = -ENOSPC;

    pthread_mutex_lock(&vm->lock);
    for (int i = 0; i < FAKE_MAX_RANGES; i++) {
        struct fake_range *r = &vm->ranges[i];

        if (r->used && r->space == space && fake_overlap(base, len, r->base, r->len)) {
            ret = -EEXIST;
            goto out;
        }
    }
    for (int i = 0; i < FAKE_MAX_RANGES; i++) {
        if (!vm->ranges[i].used) {
            vm->ranges[i] = (struct fake_range){space, base, len, fn, opaque, true};
            ret = 0;
            break;
        }
    }
out:
    pthread_mutex_unlock(&vm->lock);
    return ret;
}

int vm_io_unregister(struct vm *vm, enum vm_io_space space, uint64_t base)
{
    int ret = -ENOENT;

    pthread_mutex_lock(&vm->lock);
    for (int i = 0; i < FAKE_MAX_RANGES; i++) {
        struct fake_range *r = &vm->ranges[i];

        if (r->used && r->space == space && r->base == base) {
            r->used = false;
            ret = 0;
            break;
        }
    }
    pthread_mutex_unlock(&vm->lock);
    return ret;
}

int vm_io_move(struct vm *vm, enum vm_io_space space, uint64_t old_base, uint64_t new_base)
{
    struct fake_range *found = NULL;
    int ret = 0;

    pthread_mutex_lock(&vm->lock);
    for (int i = 0; i < FAKE_MAX_RANGES; i++) {
        struct fake_range *r = &vm->ranges[i];

        if (r->used && r->space == space && r->base == old_base)
            found = r;
    }
    if (!found) {
        ret = -ENOENT;
        goto out;
    }
    for (int i = 0; i < FAKE_MAX_RANGES; i++) {
        struct fake_range *r = &vm->ranges[i];

        if (r != found && r->used && r->space == space &&
            fake_overlap(new_base, found->len, r->base, r->len)) {
            ret = -EEXIST;
            goto out;
        }
    }
    found->base = new_base;
out:
    pthread_mutex_unlock(&vm->lock);
    return ret;
}

bool fake_vm_io_mapped(struct vm *vm, enum vm_io_space space, uint64_t addr)
{
    bool mapped = false;

    pthread_mutex_lock(&vm->lock);
    for (int i = 0; i < FAKE_MAX_RANGES; i++) {
        struct fake_range *r = &vm->ranges[i];

        if (r->used && r->space == space && addr >= r->base && addr - r->base < r->len)
            mapped = true;
    }
    pthread_mutex_unlock(&vm->lock);
    return mapped;
}

int fake_vm_access(struct vm *vm, enum vm_io_space space, uint64_t addr, void *data, uint32_t len,
                   bool is_write)
{
    vm_io_fn fn = NULL;
    void *opaque = NULL;
    uint64_t off = 0;

    pthread_mutex_lock(&vm->lock);
    if (is_write) {
        for (int i = 0; i < FAKE_MAX_FDS; i++) {
            struct fake_ioeventfd *e = &vm->ioeventfds[i];
            uint64_t v = 0;

            memcpy(&v, data, len);
            if (e->used && e->space == space && e->addr == addr && (!e->len || e->len == len) &&
                (!e->datamatch || e->data == v)) {
                uint64_t one = 1;

                pthread_mutex_unlock(&vm->lock);
                return write(e->fd, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
            }
        }
    }
    for (int i = 0; i < FAKE_MAX_RANGES; i++) {
        struct fake_range *r = &vm->ranges[i];

        if (r->used && r->space == space && addr >= r->base && addr - r->base < r->len) {
            fn = r->fn;
            opaque = r->opaque;
            off = addr - r->base;
            break;
        }
    }
    pthread_mutex_unlock(&vm->lock);
    if (!fn)
        return -ENOENT;
    if (!is_write)
        memset(data, 0, len);
    fn(opaque, off, data, len, is_write);
    return 0;
}

uint32_t fake_vm_read(struct vm *vm, enum vm_io_space space, uint64_t addr, uint32_t len)
{
    uint64_t v = 0;

    if (len > 8)
        return 0;
    if (fake_vm_access(vm, space, addr, &v, len, false) < 0)
        return len >= 4 ? 0xffffffffu : (uint32_t)((1ull << (8 * len)) - 1);
    return (uint32_t)v;
}

void fake_vm_write(struct vm *vm, enum vm_io_space space, uint64_t addr, uint32_t len, uint64_t val)
{
    fake_vm_access(vm, space, addr, &val, len, true);
}

int vm_irq_line(struct vm *vm, uint32_t gsi, int level)
{
    return 0;
}

int vm_msi_route_alloc(struct vm *vm, uint64_t addr, uint32_t data, uint32_t *gsi)
{
    int ret = -ENOSPC;

    pthread_mutex_lock(&vm->lock);
    for (uint32_t i = 0; i < FAKE_MAX_ROUTES; i++) {
        if (!vm->routes[i].used) {
            vm->routes[i] = (struct fake_route){addr, data, true};
            *gsi = 24 + i;
            ret = 0;
            break;
        }
    }
    pthread_mutex_unlock(&vm->lock);
    return ret;
}

int vm_msi_route_update(struct vm *vm, uint32_t gsi, uint64_t addr, uint32_t data)
{
    if (gsi < 24 || gsi >= 24 + FAKE_MAX_ROUTES || !vm->routes[gsi - 24].used)
        return -ENOENT;
    pthread_mutex_lock(&vm->lock);
    vm->routes[gsi - 24].addr = addr;
    vm->routes[gsi - 24].data = data;
    pthread_mutex_unlock(&vm->lock);
    return 0;
}

void vm_msi_route_free(struct vm *vm, uint32_t gsi)
{
    if (gsi >= 24 && gsi < 24 + FAKE_MAX_ROUTES)
        vm->routes[gsi - 24].used = false;
}

static void fake_msi_record(struct vm *vm, uint32_t data, int n)
{
    for (int i = 0; i < FAKE_MAX_ROUTES; i++) {
        if (vm->msis[i].count && vm->msis[i].data == data) {
            vm->msis[i].count += n;
            return;
        }
    }
    for (int i = 0; i < FAKE_MAX_ROUTES; i++) {
        if (!vm->msis[i].count) {
            vm->msis[i] = (struct fake_msi_count){data, n};
            return;
        }
    }
}

int vm_msi_signal(struct vm *vm, uint64_t addr, uint32_t data)
{
    pthread_mutex_lock(&vm->lock);
    fake_msi_record(vm, data, 1);
    pthread_mutex_unlock(&vm->lock);
    return 0;
}

/* Deliver what an assigned irqfd has accumulated (KVM would inject it). */
static void fake_irqfd_drain(struct vm *vm, struct fake_irqfd *f)
{
    uint64_t v;
    struct fake_route *r = &vm->routes[f->gsi - 24];

    if (read(f->fd, &v, sizeof(v)) == sizeof(v) && r->used)
        fake_msi_record(vm, r->data, (int)v);
}

int vm_irqfd(struct vm *vm, int eventfd, uint32_t gsi, bool assign)
{
    int ret = assign ? -ENOSPC : -ENOENT;

    if (gsi < 24 || gsi >= 24 + FAKE_MAX_ROUTES)
        return -EINVAL;
    pthread_mutex_lock(&vm->lock);
    for (int i = 0; i < FAKE_MAX_FDS; i++) {
        struct fake_irqfd *f = &vm->irqfds[i];

        if (!assign && f->used && f->fd == eventfd && f->gsi == gsi) {
            f->used = false;
            ret = 0;
            break;
        }
        if (assign && !f->used) {
            *f = (struct fake_irqfd){eventfd, gsi, true};
            /* Like KVM: an event already pending at assignment is injected. */
            fake_irqfd_drain(vm, f);
            ret = 0;
            break;
        }
    }
    pthread_mutex_unlock(&vm->lock);
    return ret;
}

int fake_vm_msi_count(struct vm *vm, uint32_t data)
{
    int n = 0;

    pthread_mutex_lock(&vm->lock);
    for (int i = 0; i < FAKE_MAX_FDS; i++)
        if (vm->irqfds[i].used)
            fake_irqfd_drain(vm, &vm->irqfds[i]);
    for (int i = 0; i < FAKE_MAX_ROUTES; i++)
        if (vm->msis[i].count && vm->msis[i].data == data)
            n = vm->msis[i].count;
    pthread_mutex_unlock(&vm->lock);
    return n;
}

int fake_vm_irqfd_count(struct vm *vm)
{
    int n = 0;

    for (int i = 0; i < FAKE_MAX_FDS; i++)
        n += vm->irqfds[i].used;
    return n;
}

int vm_ioeventfd(struct vm *vm, enum vm_io_space space, uint64_t addr, uint32_t len, int eventfd,
                 bool datamatch, uint64_t data, bool assign)
{
    int ret = assign ? -ENOSPC : -ENOENT;

    pthread_mutex_lock(&vm->lock);
    for (int i = 0; i < FAKE_MAX_FDS; i++) {
        struct fake_ioeventfd *e = &vm->ioeventfds[i];

        if (!assign && e->used && e->fd == eventfd && e->addr == addr && e->space == space) {
            e->used = false;
            ret = 0;
            break;
        }
        if (assign && !e->used) {
            *e = (struct fake_ioeventfd){space, addr, len, eventfd, datamatch, data, true};
            ret = 0;
            break;
        }
    }
    pthread_mutex_unlock(&vm->lock);
    return ret;
}

int fake_vm_ioeventfd_count(struct vm *vm)
{
    int n = 0;

    for (int i = 0; i < FAKE_MAX_FDS; i++)
        n += vm->ioeventfds[i].used;
    return n;
}

uint64_t vm_ram_size(struct vm *vm)
{
    return vm->ram_size;
}

int vm_num_vcpus(struct vm *vm)
{
    return 1;
}

void vm_request_reset(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    vm->resets++;
    pthread_mutex_unlock(&vm->lock);
}

int fake_vm_reset_count(struct vm *vm)
{
    int n;

    pthread_mutex_lock(&vm->lock);
    n = vm->resets;
    pthread_mutex_unlock(&vm->lock);
    return n;
}

struct vm_devstate *vm_devstate(struct vm *vm)
{
    return &vm->devstate;
}
