/* SPDX-License-Identifier: Apache-2.0 */
/* qcow2 driver internals (format: QEMU docs/interop/qcow2.txt). */
#ifndef QT_IMAGE_QCOW2_H
#define QT_IMAGE_QCOW2_H

#include "image/img_internal.h"
#include "image/luks.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QCOW2_MAGIC            0x514649fbu
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES     (32u << 20)
#define QCOW2_MAX_REFTABLE     (8u << 20)
#define QCOW2_MAX_SNAPSHOTS    65536
#define QCOW2_MAX_SNAP_TABLE   (64u << 20)
#define QCOW2_MAX_BACKING_NAME 1023
#define QCOW2_OFFSET_MASK      0x00fffffffffffe00ull
#define QCOW2_OFLAG_COPIED     (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO       1ull
#define QCOW2_L1_RESERVED      0x7f000000000001ffull

#define QCOW2_INCOMPAT_DIRTY    (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT  (1ull << 1)
#define QCOW2_INCOMPAT_DATAFILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPTYPE (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2    (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN    0x1full
#define QCOW2_COMPAT_LAZY       (1ull << 0)
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << 0)

#define QCOW2_EXT_END           0x00000000u
#define QCOW2_EXT_BACKING_FMT   0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_BITMAPS       0x23852875u
#define QCOW2_EXT_CRYPTO        0x0537be77u
#define QCOW2_EXT_DATAFILE      0x44415441u

#define QCOW2_MAX_EXT 32

enum l2e_type { L2E_UNALLOC, L2E_NORMAL, L2E_COMPRESSED };

/* A decoded L2 entry; bitmaps have one bit per subcluster (1 subcluster
 * without extended L2 entries). */
struct qcow2_l2e {
    enum l2e_type type;
    bool copied;
    uint64_t host;  /* cluster offset (normal) or byte offset (compressed) */
    uint64_t csize; /* compressed: bytes to read */
    uint32_t alloc;
    uint32_t zero;
};

struct qcow2_cache_ent {
    uint64_t off; /* 0: free slot */
    uint8_t *data;
    uint64_t lru;
    uint64_t gen; /* bumped on every change: a write-back copy older than this keeps it dirty */
    unsigned pin; /* in-flight allocations publishing into this table: not evictable */
    bool dirty;
};

/* Non-blocking mode may take this many entries past the bound while dirty
 * tables are written back on the ring. */
#define QCOW2_CACHE_SLACK 8

struct qcow2_cache {
    struct qcow2_cache_ent *ent; /* base + QCOW2_CACHE_SLACK slots */
    unsigned n;                  /* slots in use (data allocated) */
    unsigned base;               /* the configured bound */
    uint64_t tick;
    unsigned last;
};

struct qcow2_flush;

struct qcow2_snap {
    uint64_t l1_off;
    uint32_t l1_size;
    char *id;
    char *name;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size;
    uint64_t icount;
    uint32_t extra_size; /* as read (kept >= 24 when written) */
};

struct qcow2_ext {
    uint32_t type;
    uint32_t len;
    uint8_t *data;
};

struct qcow2 {
    struct qtimg *img;
    uint32_t version;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint32_t l2_bits;  /* log2 entries per L2 table */
    uint32_t l2_esize; /* 8 or 16 bytes */
    uint32_t sc_bits;  /* log2 subcluster size */
    uint32_t nb_sc;    /* subclusters per cluster (1 or 32) */
    uint32_t sc_all;   /* bitmap with all subclusters set */
    bool extended_l2;

    uint64_t l1_off;
    uint32_t l1_size;
    uint64_t *l1; /* host byte order */
    bool l1_dirty;
    uint64_t l1_gen;

    uint64_t rt_off;
    uint32_t rt_clusters;
    uint64_t rt_size; /* entries */
    uint64_t *rt;
    uint64_t rt_dirty_lo, rt_dirty_hi; /* entries changed in memory only: [lo, hi) */
    bool rt_hdr_dirty;                 /* the header does not point to the (grown) table yet */
    uint32_t refcount_order;
    uint32_t rb_bits; /* log2 refcount entries per block */
    uint64_t refcount_max;

    uint64_t incompat, compat, autoclear;
    uint32_t header_length;
    uint32_t crypt_method;
    uint64_t crypto_off, crypto_len;

    char *backing_file;
    char *backing_fmt;

    uint32_t nb_snaps;
    uint64_t snap_off;
    uint64_t snap_table_size; /* bytes */
    struct qcow2_snap *snaps;

    struct qcow2_ext ext[QCOW2_MAX_EXT]; /* unknown extensions, preserved */
    unsigned next;

    struct qcow2_cache l2c;
    struct qcow2_cache rbc;

    uint64_t free_hint;    /* cluster index */
    uint64_t zero_above;   /* every file byte at or above this reads as zero */
    uint64_t prealloc_end; /* the file is fallocated up to here */
    uint64_t file_size;    /* end of the last cluster in use or allocated */

    uint64_t *dec; /* deferred refcount decrements (cluster indexes) */
    size_t ndec, capdec;

    uint64_t comp_cur, comp_end; /* compressed-write packing cursor */

    uint8_t *zbuf; /* one cluster of zeroes */
    uint8_t *dcache;
    uint64_t dcache_key; /* last decompressed cluster */
    bool dirty_set;
    bool corrupt_signalled;
    struct luks *luks;          /* LUKS volume when encrypted and unlocked */
    struct luks_cipher *crypto; /* its cipher; NULL: no key given (no data access) */
    uint64_t *inflight;         /* guest clusters with an asynchronous allocation in flight */
    unsigned ninflight, capinflight;
    struct qcow2_flush *flushing; /* asynchronous metadata flush in progress */
};

static inline uint64_t qcow2_cluster_of(const struct qcow2 *s, uint64_t off)
{
    return off >> s->cluster_bits;
}

/* qcow2.c */
int qcow2_cache_get(struct qcow2 *s, struct qcow2_cache *c, uint64_t off, bool read, uint8_t **out);
void qcow2_cache_mark_dirty(struct qcow2_cache *c, uint64_t off);
void qcow2_mark_l1_dirty(struct qcow2 *s);
int qcow2_refcount_get(struct qcow2 *s, uint64_t cluster, uint64_t *out);
int qcow2_refcount_set(struct qcow2 *s, uint64_t cluster, uint64_t val);
int qcow2_refcount_add(struct qcow2 *s, uint64_t cluster, int64_t addend);
int qcow2_alloc_clusters(struct qcow2 *s, uint64_t n, uint64_t *off);
int qcow2_flush_meta(struct qcow2 *s);
int qcow2_write_header(struct qcow2 *s);
int qcow2_l2e_decode(const struct qcow2 *s, const uint8_t *p, struct qcow2_l2e *e,
                     const char **why);
/* Entry j of the L2 table at l2off (its data at l2), or the image marked corrupt
 * with a message naming the table and the entry. */
int qcow2_l2e_get(struct qcow2 *s, const uint8_t *l2, uint64_t l2off, uint64_t j,
                  struct qcow2_l2e *e);
void qcow2_l2e_encode(const struct qcow2 *s, const struct qcow2_l2e *e, uint8_t *p);
int qcow2_signal_corrupt(struct qcow2 *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int qcow2_write_l1(struct qcow2 *s);
int qcow2_fix_copied(struct qcow2 *s);
int qcow2_l1_walk_refcount(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, int addend);
int qcow2_write_snapshots(struct qcow2 *s);
void qcow2_snaps_free(struct qcow2_snap *snaps, uint32_t n);
int qcow2_grow_l1(struct qcow2 *s, uint64_t min_size);
int qcow2_parse_snapshots(struct qcow2 *s);

/* Pure helpers (unit tested). */
uint64_t qcow2_rb_get(const uint8_t *rb, uint32_t order, uint64_t idx);
void qcow2_rb_set(uint8_t *rb, uint32_t order, uint64_t idx, uint64_t val);
/* Validates a header buffer; returns 0 or -EINVAL and sets *why. */
int qcow2_header_check(const uint8_t *buf, size_t len, uint64_t file_size, const char **why);

/* qcow2_check.c */
int qcow2_check(struct qtimg *img, uint32_t fix, struct qtimg_check_result *res);

#endif
