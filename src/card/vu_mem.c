/* SPDX-License-Identifier: Apache-2.0 */
#include "card/vu_mem.h"
#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static bool range_overflows(uint64_t start, uint64_t len)
{
    return len == 0 || start + len < start;
}

static void vu_mem_unmap_all(struct vu_mem *m)
{
    for (unsigned i = 0; i < m->nregions; i++) {
        if (m->r[i].mmap_addr)
            munmap(m->r[i].mmap_addr, m->r[i].mmap_size);
    }
}

void vu_mem_free(struct vu_mem *m)
{
    if (!m)
        return;
    vu_mem_unmap_all(m);
    free(m);
}

static int vu_mem_check_region(const struct vhost_user_mem_region *reg, unsigned idx,
                               const char *who)
{
    uint64_t map_len = reg->mmap_offset + reg->memory_size;

    if (range_overflows(reg->guest_phys_addr, reg->memory_size) ||
        range_overflows(reg->userspace_addr, reg->memory_size) || map_len < reg->mmap_offset ||
        map_len > (uint64_t)SIZE_MAX) {
        log_err("%s: memory region %u (gpa 0x%llx size 0x%llx uva 0x%llx offset 0x%llx): "
                "empty or overflowing",
                who, idx, (unsigned long long)reg->guest_phys_addr,
                (unsigned long long)reg->memory_size, (unsigned long long)reg->userspace_addr,
                (unsigned long long)reg->mmap_offset);
        return -EINVAL;
    }
    return 0;
}

int vu_mem_map_table(struct vu_mem **out, const struct vhost_user_mem_table *t, const int *fds,
                     unsigned nfds, const char *who)
{
    struct vu_mem *m;
    int ret;

    if (t->nregions == 0 || t->nregions > VHOST_USER_MAX_MEM_REGIONS) {
        log_err("%s: memory table with %u regions (1..%u allowed)", who, t->nregions,
                VHOST_USER_MAX_MEM_REGIONS);
        return -EINVAL;
    }
    if (nfds != t->nregions) {
        log_err("%s: memory table has %u regions but %u fds", who, t->nregions, nfds);
        return -EINVAL;
    }
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    for (unsigned i = 0; i < t->nregions; i++) {
        const struct vhost_user_mem_region *reg = &t->regions[i];
        struct stat st;
        size_t map_len;
        void *p;

        ret = vu_mem_check_region(reg, i, who);
        if (ret)
            goto fail;
        for (unsigned j = 0; j < i; j++) {
            const struct vu_mem_map *o = &m->r[j];
            if (reg->guest_phys_addr < o->gpa + o->size &&
                o->gpa < reg->guest_phys_addr + reg->memory_size) {
                log_err("%s: memory region %u overlaps region %u in guest-physical space", who, i,
                        j);
                ret = -EINVAL;
                goto fail;
            }
        }
        map_len = (size_t)(reg->mmap_offset + reg->memory_size);
        if (fstat(fds[i], &st) < 0) {
            ret = -errno;
            log_err("%s: memory region %u: fstat: %s", who, i, strerror(errno));
            goto fail;
        }
        if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < map_len) {
            log_err("%s: memory region %u: backing file is %s of %lld bytes, need %zu", who, i,
                    S_ISREG(st.st_mode) ? "a file" : "not a regular file", (long long)st.st_size,
                    map_len);
            ret = -EINVAL;
            goto fail;
        }
        p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fds[i], 0);
        if (p == MAP_FAILED) {
            ret = -errno;
            log_err("%s: memory region %u: mmap of %zu bytes: %s", who, i, map_len,
                    strerror(errno));
            goto fail;
        }
        m->r[i].mmap_addr = p;
        m->r[i].mmap_size = map_len;
        m->r[i].gpa = reg->guest_phys_addr;
        m->r[i].uva = reg->userspace_addr;
        m->r[i].size = reg->memory_size;
        m->r[i].host = (uint8_t *)p + reg->mmap_offset;
        m->nregions = i + 1;
    }
    *out = m;
    return 0;
fail:
    vu_mem_free(m);
    return ret;
}

void *vu_mem_uva_range(const struct vu_mem *m, uint64_t uva, uint64_t len)
{
    for (unsigned i = 0; m && i < m->nregions; i++) {
        const struct vu_mem_map *r = &m->r[i];
        uint64_t off = uva - r->uva;
        if (uva >= r->uva && off < r->size && len <= r->size - off)
            return r->host + off;
    }
    return NULL;
}

int vu_mem_uva_to_gpa(const struct vu_mem *m, uint64_t uva, uint64_t *gpa)
{
    for (unsigned i = 0; m && i < m->nregions; i++) {
        const struct vu_mem_map *r = &m->r[i];
        if (uva >= r->uva && uva - r->uva < r->size) {
            *gpa = r->gpa + (uva - r->uva);
            return 0;
        }
    }
    return -EFAULT;
}

int vu_log_map(struct vu_log_area **out, int fd, uint64_t size, uint64_t offset, const char *who)
{
    struct vu_log_area *l;
    struct stat st;
    uint64_t map_len = size + offset;
    void *p;

    if (size == 0 || map_len < size || map_len > (uint64_t)SIZE_MAX) {
        log_err("%s: dirty log of 0x%llx bytes at offset 0x%llx: empty or overflowing", who,
                (unsigned long long)size, (unsigned long long)offset);
        return -EINVAL;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size < map_len) {
        log_err("%s: dirty log fd is not a file of at least %llu bytes", who,
                (unsigned long long)map_len);
        return -EINVAL;
    }
    p = mmap(NULL, (size_t)map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        log_err("%s: dirty log mmap: %s", who, strerror(errno));
        return -errno;
    }
    l = calloc(1, sizeof(*l));
    if (!l) {
        munmap(p, (size_t)map_len);
        return -ENOMEM;
    }
    l->mmap_addr = p;
    l->mmap_size = (size_t)map_len;
    l->bitmap = (uint8_t *)p + offset;
    l->size = size;
    *out = l;
    return 0;
}

void vu_log_free(struct vu_log_area *l)
{
    if (!l)
        return;
    munmap(l->mmap_addr, l->mmap_size);
    free(l);
}

void vu_log_write(struct vu_log_area *l, uint64_t gpa, uint64_t len)
{
    uint64_t first, last;

    if (!l || len == 0)
        return;
    first = gpa / VU_LOG_PAGE;
    last = (gpa + len - 1 < gpa ? UINT64_MAX : gpa + len - 1) / VU_LOG_PAGE;
    for (uint64_t page = first; page <= last; page++) {
        uint64_t byte = page / 8;
        if (byte >= l->size)
            break;
        __atomic_fetch_or(&l->bitmap[byte], (uint8_t)(1u << (page % 8)), __ATOMIC_RELAXED);
    }
}
