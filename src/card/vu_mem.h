/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Guest memory as the vhost-user frontend shared it: a table of mmap'ed
 * regions with bounds-checked, overflow-safe translation of guest-physical
 * and frontend-virtual addresses, plus the dirty-page log used for live
 * migration (one bit per 4 KiB guest page, VHOST_F_LOG_ALL).
 */
#ifndef QT_CARD_VU_MEM_H
#define QT_CARD_VU_MEM_H

#include "card/vu_proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VU_LOG_PAGE 4096u

struct vu_mem_map {
    uint64_t gpa;    /* guest-physical start */
    uint64_t uva;    /* frontend virtual start */
    uint64_t size;   /* bytes */
    uint8_t *host;   /* our pointer to gpa */
    void *mmap_addr; /* what mmap returned (includes mmap_offset) */
    size_t mmap_size;
};

struct vu_mem {
    unsigned nregions;
    struct vu_mem_map r[VHOST_USER_MAX_MEM_REGIONS];
};

/*
 * Map the regions of a SET_MEM_TABLE message. fds[i] backs region i and is
 * not consumed (the caller closes it). Rejects empty/overlapping/overflowing
 * regions and files shorter than offset + size (a short file would SIGBUS).
 */
int vu_mem_map_table(struct vu_mem **out, const struct vhost_user_mem_table *t, const int *fds,
                     unsigned nfds, const char *who);
void vu_mem_free(struct vu_mem *m);

/*
 * VHOST_USER_ADD_MEM_REG / REM_MEM_REG (CONFIGURE_MEM_SLOTS): build a new table from
 * old with one region added (mapped from fd, not consumed; checked like a table's and
 * against the others for overlap; -ENOSPC when all slots are used) or removed (the one
 * with the same gpa, size and uva; -ENOENT when none; its mapping is returned in
 * *removed). The new table shares old's mappings: drop old with vu_mem_free_table(),
 * and unmap a removed region with vu_mem_unmap_region() once nothing uses it.
 */
int vu_mem_add_region(struct vu_mem **out, const struct vu_mem *old,
                      const struct vhost_user_mem_region *reg, int fd, const char *who);
int vu_mem_remove_region(struct vu_mem **out, const struct vu_mem *old,
                         const struct vhost_user_mem_region *reg, struct vu_mem_map *removed,
                         const char *who);
void vu_mem_unmap_region(struct vu_mem_map *r);
/* Free a table whose mappings now belong to another one. */
void vu_mem_free_table(struct vu_mem *m);

/*
 * Translate [gpa, gpa + *len) to a local pointer. On success returns the
 * pointer and trims *len to the bytes contiguous in one region; NULL when
 * gpa is not mapped or *len is 0.
 */
static inline void *vu_mem_gpa_ptr(const struct vu_mem *m, uint64_t gpa, uint64_t *len)
{
    for (unsigned i = 0; m && i < m->nregions; i++) {
        const struct vu_mem_map *r = &m->r[i];
        uint64_t off = gpa - r->gpa;
        if (gpa >= r->gpa && off < r->size) {
            uint64_t avail = r->size - off;
            if (*len > avail)
                *len = avail;
            return *len ? r->host + off : NULL;
        }
    }
    return NULL;
}

/* [gpa, gpa + len) must lie inside one region. */
static inline void *vu_mem_gpa_range(const struct vu_mem *m, uint64_t gpa, uint64_t len)
{
    uint64_t l = len;
    void *p = vu_mem_gpa_ptr(m, gpa, &l);
    return (p && l == len) ? p : NULL;
}

/* Frontend virtual address (ring addresses) to a local pointer, whole range or NULL. */
void *vu_mem_uva_range(const struct vu_mem *m, uint64_t uva, uint64_t len);
/* Frontend virtual address to guest-physical (for dirty logging of rings). */
int vu_mem_uva_to_gpa(const struct vu_mem *m, uint64_t uva, uint64_t *gpa);

struct vu_log_area {
    uint8_t *bitmap;
    uint64_t size; /* bytes of bitmap */
    void *mmap_addr;
    size_t mmap_size;
};

/* Map a SET_LOG_BASE area; fd not consumed. */
int vu_log_map(struct vu_log_area **out, int fd, uint64_t size, uint64_t offset, const char *who);
void vu_log_free(struct vu_log_area *l);
/* Mark [gpa, gpa + len) dirty; pages beyond the bitmap are ignored. */
void vu_log_write(struct vu_log_area *l, uint64_t gpa, uint64_t len);

#endif
