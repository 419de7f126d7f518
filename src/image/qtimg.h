/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libqtimg: disk images (raw, qcow2) behind one block-driver interface.
 *
 * Synchronous calls (qtimg_pread ...) are for tools; the data plane uses
 * the io_uring API in qtimg_aio_* (submit + completion callback, polled).
 * All functions return 0 (or a byte count where stated) or -errno, and log
 * a message naming the image and the reason on failure.
 */
#ifndef QT_IMAGE_QTIMG_H
#define QT_IMAGE_QTIMG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qtimg;

enum qtimg_fmt { QTIMG_FMT_AUTO = 0, QTIMG_FMT_RAW, QTIMG_FMT_QCOW2, QTIMG_FMT_VHD };

/* qtimg_open flags */
#define QTIMG_O_RDONLY     (1u << 0)
#define QTIMG_O_DIRECT     (1u << 1) /* O_DIRECT for guest data (cache=none) */
#define QTIMG_O_NO_BACKING (1u << 2) /* do not open the backing chain */
#define QTIMG_O_CHECK      (1u << 3) /* open for check/repair: tolerate corrupt/dirty bits */

/* Maximum backing chain depth accepted when opening. */
#define QTIMG_MAX_CHAIN 64

struct qtimg_open_opts {
    uint32_t flags;
    enum qtimg_fmt fmt;           /* QTIMG_FMT_AUTO: probe */
    const char *key_secret;       /* passphrase for encrypted images, or NULL */
    uint32_t l2_cache_tables;     /* 0: default */
    uint32_t refblock_cache_size; /* 0: default */
};

int qtimg_open(const char *path, const struct qtimg_open_opts *opts, struct qtimg **out);
/* Flushes and closes; returns the flush result. */
int qtimg_close(struct qtimg *img);

/* Synchronous I/O. Offsets/lengths are bytes; must stay below the virtual size. */
int qtimg_pread(struct qtimg *img, void *buf, uint64_t len, uint64_t off);
int qtimg_pwrite(struct qtimg *img, const void *buf, uint64_t len, uint64_t off);
int qtimg_flush(struct qtimg *img);
/* Deallocates: later reads return backing data, or zeroes without backing (qcow2
 * writes zero clusters when a backing file exists so that reads stay zero). */
int qtimg_discard(struct qtimg *img, uint64_t off, uint64_t len);
int qtimg_write_zeroes(struct qtimg *img, uint64_t off, uint64_t len);

/* Online resize: safe while the image is in use through the same handle. */
#define QTIMG_RESIZE_SHRINK (1u << 0)
int qtimg_resize(struct qtimg *img, uint64_t new_size, uint32_t flags);

struct qtimg_info {
    enum qtimg_fmt fmt;
    uint64_t virtual_size;
    uint64_t actual_size; /* bytes allocated on the host file system */
    uint32_t cluster_size;
    bool has_backing;
    char backing_file[1024];
    char backing_fmt[32];
    /* qcow2 */
    uint32_t version;
    uint32_t refcount_bits;
    bool lazy_refcounts;
    bool corrupt;
    bool dirty;
    bool extended_l2;
    bool encrypted;
    uint32_t nb_snapshots;
};
int qtimg_get_info(struct qtimg *img, struct qtimg_info *info);
const char *qtimg_fmt_name(enum qtimg_fmt fmt);
int qtimg_fmt_parse(const char *name, enum qtimg_fmt *out);
const char *qtimg_path(const struct qtimg *img);
uint64_t qtimg_size(const struct qtimg *img);
struct qtimg *qtimg_backing(struct qtimg *img);

/* Block status of [off, off+len): fills the first run of equal status. */
enum qtimg_map_kind {
    QTIMG_MAP_DATA = 1,  /* data in this image at host_off (or compressed) */
    QTIMG_MAP_ZERO,      /* reads as zero, defined in this image */
    QTIMG_MAP_UNALLOC,   /* not defined here: backing or zero */
    QTIMG_MAP_COMPRESSED /* data, compressed (host_off is the compressed start) */
};
struct qtimg_map {
    enum qtimg_map_kind kind;
    uint64_t len;
    uint64_t host_off; /* UINT64_MAX when there is no host cluster */
    bool host_zero;    /* QTIMG_MAP_DATA: the host range is a hole (reads as zero) */
};
int qtimg_map_range(struct qtimg *img, uint64_t off, uint64_t len, struct qtimg_map *out);

/* Creation. */
struct qtimg_create_opts {
    enum qtimg_fmt fmt;
    uint64_t size; /* 0 with a backing file: the backing file's size */
    uint32_t cluster_size;
    uint32_t refcount_bits;
    uint32_t compat; /* 2 or 3 (qcow2 version) */
    bool lazy_refcounts;
    bool extended_l2;
    const char *backing_file;
    const char *backing_fmt;
    /* encryption (qcow2 + LUKS) */
    const char *encrypt_format; /* "luks" or NULL */
    const char *key_secret;
    uint32_t encrypt_iter_time_ms; /* PBKDF2 time per key slot; 0: 2000 ms as qemu-img */
};
int qtimg_create(const char *path, const struct qtimg_create_opts *opts);

/* Internal snapshots (qcow2). */
struct qtimg_snapshot {
    char id[32];
    char name[256];
    uint64_t vm_state_size;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t disk_size;
    uint64_t icount;
};
int qtimg_snapshot_list(struct qtimg *img, struct qtimg_snapshot **out, int *count);
int qtimg_snapshot_create(struct qtimg *img, const char *name);
int qtimg_snapshot_apply(struct qtimg *img, const char *name_or_id);
int qtimg_snapshot_delete(struct qtimg *img, const char *name_or_id);

/* Backing file pointer change (no data copied): rebase -u and the tail of rebase. */
int qtimg_set_backing(struct qtimg *img, const char *backing_file, const char *backing_fmt);

/* Consistency check of image metadata. */
struct qtimg_check_result {
    uint64_t corruptions;
    uint64_t leaks;
    uint64_t corruptions_fixed;
    uint64_t leaks_fixed;
    uint64_t allocated_clusters;
    uint64_t total_clusters;
    uint64_t fragmented_clusters;
    uint64_t compressed_clusters;
    uint64_t image_end_offset;
    int check_errors;
};
#define QTIMG_CHECK_FIX_LEAKS  (1u << 0)
#define QTIMG_CHECK_FIX_ERRORS (1u << 1)
int qtimg_check(struct qtimg *img, uint32_t fix, struct qtimg_check_result *res);

/* Lazy refcounts on or off on an open image (qtimg_amend() changes the rest). */
int qtimg_amend_lazy_refcounts(struct qtimg *img, bool on);

/* Writes compressed cluster data (convert -c). off must be cluster aligned and
 * len one cluster (or the tail of the image). Falls back to a normal write
 * when compression does not save space. */
int qtimg_pwrite_compressed(struct qtimg *img, const void *buf, uint64_t len, uint64_t off);

/*
 * Asynchronous I/O on io_uring, for a poll-mode thread: once the queue is set
 * up, submit and poll make no blocking I/O call (metadata misses, write-backs,
 * refcount-table growth, flushes, discards, write-zeroes and VHD sector
 * bitmaps run on the ring too; see docs/qtimg.md, "io_uring data path").
 * Completion callbacks run from qtimg_aio_poll().
 */
struct qtimg_aio;
typedef void (*qtimg_aio_cb)(void *opaque, int ret);
/*
 * QTIMG_AIO_DISCARD (buf unused): like qtimg_discard(): whole (sub)clusters
 * become unallocated (reads go to the backing file, or zero without one);
 * partial (sub)clusters are left as they are (discard is advisory). Raw: a
 * hole is punched (FALLOC_FL_PUNCH_HOLE), nothing done where the file system
 * refuses. QTIMG_AIO_WRITE_ZEROES (buf unused): the range reads as zeroes
 * afterwards: whole (sub)clusters get the zero flag (qcow2 v3, encrypted
 * images too, as QEMU), partial ones and qcow2 v2 images are written with
 * zeroes (encrypted zeroes on encrypted images); raw: FALLOC_FL_ZERO_RANGE,
 * else zeroes written. Both are ordered against earlier requests as writes
 * are: they wait for allocations in flight in the same clusters.
 */
enum qtimg_aio_op {
    QTIMG_AIO_READ,
    QTIMG_AIO_WRITE,
    QTIMG_AIO_FLUSH,
    QTIMG_AIO_DISCARD,
    QTIMG_AIO_WRITE_ZEROES
};
int qtimg_aio_init(struct qtimg *img, unsigned depth, struct qtimg_aio **out);
void qtimg_aio_fini(struct qtimg_aio *aio);
/* -EAGAIN when the queue is full: poll and retry. */
int qtimg_aio_submit(struct qtimg_aio *aio, enum qtimg_aio_op op, void *buf, uint64_t len,
                     uint64_t off, qtimg_aio_cb cb, void *opaque);
/* Reaps completions; returns how many requests completed. wait: block for at least one. */
int qtimg_aio_poll(struct qtimg_aio *aio, bool wait);
/* Requests in flight, plus one while the queue's own metadata write-back is
 * on the ring: 0 means no I/O at all (the synchronous API may be used). */
unsigned qtimg_aio_inflight(const struct qtimg_aio *aio);
/* The ring's file descriptor: readable (epoll/poll) when completions are
 * waiting, for event loops that sleep instead of spinning. Call
 * qtimg_aio_poll(aio, false) before sleeping so that queued requests are
 * submitted. */
int qtimg_aio_fd(const struct qtimg_aio *aio);

/* Amend (qemu-img amend -o for qcow2): changes an image in place. Every
 * option is validated before the first write; each change is crash safe
 * (the old or the new image, leaked clusters at worst). */
struct qtimg_amend_opts {
    uint32_t compat;        /* 0: unchanged; 2 (0.10) or 3 (1.1) */
    uint32_t refcount_bits; /* 0: unchanged; 1, 2, 4, ... 64 */
    int lazy_refcounts;     /* -1: unchanged; 0 off; 1 on */
    uint64_t size;          /* 0: unchanged; shrinking refuses to drop data */
};
int qtimg_amend(struct qtimg *img, const struct qtimg_amend_opts *opts);

#endif
