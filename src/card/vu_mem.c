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

/* Map one region (checked against the n regions already in m) into *out. */
static int vu_mem_map_region(struct vu_mem_map *out, const struct vu_mem *m,
                             const struct vhost_user_mem_region *reg, int fd, unsigned idx,
                             const char *who)
{
    struct stat st;
    size_t map_len;
    void *p;
    int ret = vu_mem_check_region(reg, idx, who);

    if (ret)
        return ret;
    for (unsigned j = 0; m && j < m->nregions; j++) {
        const struct vu_mem_map *o = &m->r[j];
        if (reg->guest_phys_addr < o->gpa + o->size &&
            o->gpa < reg->guest_phys_addr + reg->memory_size) {
            log_err("%s: memory region %u (gpa 0x%llx size 0x%llx) overlaps region %u in "
                    "guest-physical space",
                    who, idx, (unsigned long long)reg->guest_phys_addr,
                    (unsigned long long)reg->memory_size, j);
            return -EINVAL;
        }
    }
    map_len = (size_t)(reg->mmap_offset + reg->memory_size);
    if (fstat(fd, &st) < 0) {
        ret = -errno;
        log_err("%s: memory region %u: fstat: %s", who, idx, strerror(errno));
        return ret;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < map_len) {
        log_err("%s: memory region %u: backing file is %s of %lld bytes, need %zu", who, idx,
                S_ISREG(st.st_mode) ? "a file" : "not a regular file", (long long)st.st_size,
                map_len);
        return -EINVAL;
    }
    p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) {
        ret = -errno;
        log_err("%s: memory region %u: mmap of %zu bytes: %s", who, idx, map_len, strerror(errno));
        return ret;
    }
    out->mmap_addr = p;
    out->mmap_size = map_len;
    out->gpa = reg->guest_phys_addr;
    out->uva = reg->userspace_addr;
    out->size = reg->memory_size;
    out->host = (uint8_t *)p + reg->mmap_offset;
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
        ret = vu_mem_map_region(&m->r[i], m, &t->regions[i], fds[i], i, who);
        if (ret)
            goto fail;
        m->nregions = i + 1;
    }
    *out = m;
    return 0;
fail:
    vu_mem_free(m);
    return ret;
}

int vu_mem_add_region(struct vu_mem **out, const struct vu_mem *old,
                      const struct vhost_user_mem_region *reg, int fd, const char *who)
{
    unsigned n = old ? old->nregions : 0;
    struct vu_mem *m;
    int ret;

    if (n >= VHOST_USER_MAX_MEM_REGIONS) {
        log_err("%s: ADD_MEM_REG: all %u memory slots in use", who, VHOST_USER_MAX_MEM_REGIONS);
        return -ENOSPC;
    }
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    ret = vu_mem_map_region(&m->r[n], old, reg, fd, n, who);
    if (ret) {
        free(m);
        return ret;
    }
    for (unsigned i = 0; i < n; i++)
        m->r[i] = old->r[i]; /* shared mappings: old must be dropped with vu_mem_free_table */
    m->nregions = n + 1;
    *out = m;
    return 0;
}

int vu_mem_remove_region(struct vu_mem **out, const struct vu_mem *old,
                         const struct vhost_user_mem_region *reg, struct vu_mem_map *removed,
                         const char *who)
{
    struct vu_mem *m;
    unsigned k = 0, hit = ~0u;

    for (unsigned i = 0; old && i < old->nregions; i++)
        if (old->r[i].gpa == reg->guest_phys_addr && old->r[i].size == reg->memory_size &&
            old->r[i].uva == reg->userspace_addr)
            hit = i;
    if (hit == ~0u) {
        log_err("%s: REM_MEM_REG: no region at gpa 0x%llx size 0x%llx uva 0x%llx", who,
                (unsigned long long)reg->guest_phys_addr, (unsigned long long)reg->memory_size,
                (unsigned long long)reg->userspace_addr);
        return -ENOENT;
    }
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    for (unsigned i = 0; i < old->nregions; i++)
        if (i != hit)
            m->r[k++] = old->r[i];
    m->nregions = k;
    *removed = old->r[hit];
    *out = m;
    return 0;
}

void vu_mem_unmap_region(struct vu_mem_map *r)
{
    if (r->mmap_addr)
        munmap(r->mmap_addr, r->mmap_size);
    r->mmap_addr = NULL;
}

void vu_mem_free_table(struct vu_mem *m)
{
    free(m);
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
