/* SPDX-License-Identifier: Apache-2.0 */
/* Internal block-driver interface of libqtimg. */
#ifndef QT_IMAGE_IMG_INTERNAL_H
#define QT_IMAGE_IMG_INTERNAL_H

#include "image/qtimg.h"

#include <stdint.h>
#include <sys/types.h>

/* Where a guest range lives, as seen by the data path (aio). */
enum img_ext_kind {
    IMG_EXT_HOST,      /* plain data at host_off in img->data_fd */
    IMG_EXT_ZERO,      /* reads as zero */
    IMG_EXT_BACKING,   /* defer to the backing image (or zero past its end) */
    IMG_EXT_SLOW,      /* needs the synchronous path */
    IMG_EXT_COMPRESSED /* compressed cluster: clen bytes at host_off, inflate, take
                          [coff, coff+len) of the cluster */
};
struct img_ext {
    enum img_ext_kind kind;
    uint64_t len;
    uint64_t host_off;
    bool crypt;    /* IMG_EXT_HOST holds encrypted data: drv->crypt() around the I/O */
    uint64_t clen; /* IMG_EXT_COMPRESSED: compressed bytes, */
    uint64_t coff; /* offset of the range in the cluster, */
    uint64_t ulen; /* cluster size */
    bool alt_fd;   /* IMG_EXT_HOST: the data is in fd (a file of the driver's */
    int fd;        /* own chain, e.g. a VHD parent), not in img->fd */
};

/*
 * Non-blocking mode (set by aio.c while it calls into a driver): a driver
 * that would have to wait for metadata I/O fills *img->nowait and returns
 * -EWOULDBLOCK instead; the caller parks the request and retries it.
 */
enum img_need_kind {
    IMG_NEED_READ = 1, /* read the table at [off, off+len) and hand it to meta_insert */
    IMG_NEED_ROOM,     /* the metadata cache is full of dirty tables: write back first */
    IMG_NEED_RETRY     /* wait for in-flight work (an allocation, ring slots) to finish */
};
struct img_need {
    enum img_need_kind kind;
    struct qtimg *img; /* the image whose metadata is needed */
    int table;         /* driver-defined: which cache */
    uint64_t off;
    uint32_t len;
    bool alt_fd; /* read it from fd, not from img->fd */
    int fd;
};

/* Ring access for drivers' asynchronous metadata I/O (provided by aio.c). */
enum img_io_op { IMG_IO_READ, IMG_IO_WRITE, IMG_IO_FDATASYNC };
typedef void (*img_io_done)(void *arg, int res);
struct img_io {
    void *ctx;
    /* buf must stay valid until done(arg, res) runs (from the reap path);
     * res is the byte count or -errno. */
    int (*queue)(void *ctx, struct qtimg *img, enum img_io_op op, void *buf, uint64_t len,
                 uint64_t off, img_io_done done, void *arg);
};

/* An allocation reserved by write_prepare, published by write_commit. */
struct img_ticket {
    uint64_t gc;    /* guest cluster */
    uint64_t l2off; /* L2 table holding its entry */
    uint64_t host;  /* host cluster */
    uint32_t mask;  /* subclusters the write covers */
    bool new_cluster;
    /* copy-on-write: the caller writes [cow_lo, cow_hi) of the cluster, the
     * parts around its data filled from zeroes or the backing file */
    bool cow;
    bool head_zero, tail_zero;
    /* replace: the cluster replaces a shared or compressed one; the fill comes
     * from the image itself (its current mapping), old_* is released on commit */
    bool replace;
    bool crypt; /* encrypt the written span (host offset as the XTS sector) */
    uint64_t old_l2e[2];
    uint64_t cow_lo, cow_hi;
    uint64_t guest_base; /* guest offset of the cluster */
};

struct img_driver {
    const char *name;
    enum qtimg_fmt fmt;
    int (*probe)(const uint8_t *buf, size_t len); /* score > 0 when recognised */
    int (*open)(struct qtimg *img, const struct qtimg_open_opts *opts);
    void (*close)(struct qtimg *img);
    int (*pread)(struct qtimg *img, void *buf, uint64_t len, uint64_t off);
    int (*pwrite)(struct qtimg *img, const void *buf, uint64_t len, uint64_t off);
    int (*flush)(struct qtimg *img);
    int (*discard)(struct qtimg *img, uint64_t off, uint64_t len, bool zero);
    int (*get_info)(struct qtimg *img, struct qtimg_info *info);
    int (*resize)(struct qtimg *img, uint64_t new_size, uint32_t flags);
    int (*map)(struct qtimg *img, uint64_t off, uint64_t len, struct qtimg_map *out);
    /* Data-path lookup: for_write asks for an in-place writable host range. */
    int (*map_io)(struct qtimg *img, uint64_t off, uint64_t len, bool for_write,
                  struct img_ext *ext);
    int (*create)(const char *path, const struct qtimg_create_opts *opts);
    /* Asynchronous allocating writes (optional). write_prepare reserves host
     * space for [off, off+ext->len) when no copy-on-write read is needed and
     * returns ext->kind HOST with *t filled (the caller writes the data, then
     * calls write_commit with the result), SLOW when the synchronous path
     * must run, or -EBUSY while the cluster has an allocation in flight. */
    int (*write_prepare)(struct qtimg *img, uint64_t off, uint64_t len, struct img_ext *ext,
                         struct img_ticket *t);
    int (*write_commit)(struct qtimg *img, const struct img_ticket *t, int result);
    /* Asynchronous discard / write-zeroes (optional): one step at off, at
     * most to the end of its cluster, *np bytes handled; metadata changes
     * are made in the cache (a miss: -EWOULDBLOCK with nothing changed);
     * *wz: the caller writes zeroes over the step through the write path;
     * -EBUSY while the cluster has an allocation in flight. */
    int (*zero_step)(struct qtimg *img, uint64_t off, uint64_t len, bool zero, uint64_t *np,
                     bool *wz);
    /* Encrypts / decrypts len bytes that live (or will live) at host offset. */
    int (*crypt)(struct qtimg *img, bool encrypt, uint64_t host, void *buf, uint64_t len);
    /* Asynchronous metadata (optional; see struct img_need). aio_attach runs
     * once when an io_uring queue is set up (may block: part of opening).
     * meta_insert takes a table read for an IMG_NEED_READ (owns buf on 0;
     * -EWOULDBLOCK: no room yet). meta_flush writes dirty metadata on the
     * ring in crash-safe order; final: also the L1 table and an fdatasync at
     * the end (a flush), else only what frees cache room. */
    int (*aio_attach)(struct qtimg *img);
    int (*meta_insert)(struct qtimg *img, const struct img_need *need, void *buf);
    int (*meta_flush)(struct qtimg *img, const struct img_io *io, bool final, img_io_done done,
                      void *arg);
    /* Inflates one compressed cluster (in: clen bytes read at host) into out. */
    int (*inflate)(struct qtimg *img, const uint8_t *in, uint64_t clen, uint64_t host,
                   uint8_t *out);
};

struct qtimg {
    const struct img_driver *drv;
    char *path;
    int fd;      /* buffered: metadata and unaligned data */
    int data_fd; /* O_DIRECT when requested, else == fd */
    bool read_only;
    bool direct;
    uint64_t size; /* virtual size */
    struct qtimg *backing;
    void *priv;
    uint32_t open_flags;
    int chain_depth;
    const char *const *chain;        /* realpaths of the images above, during open */
    struct img_need *nowait;         /* non-blocking mode (aio.c) when set */
    bool want_writeback;             /* driver: cache over its bound, write back soon */
    bool want_flush;                 /* driver: deferred frees piling up, flush soon */
    uint64_t falloc_off, falloc_len; /* driver: preallocation to run on the ring */
    uint64_t sync_io; /* synchronous pread/pwrite/fdatasync/fallocate on this image's fds */
};

extern const struct img_driver img_raw_driver;
extern const struct img_driver img_qcow2_driver;
extern const struct img_driver img_vhd_driver;

/* Helpers shared by the drivers. */
int img_pread_full(int fd, void *buf, size_t len, uint64_t off);
int img_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
/* Reads from an image's backing chain for [off, off+len), zero-filling past its end. */
int img_read_backing(struct qtimg *img, void *buf, uint64_t len, uint64_t off);
/* Opens the backing image named by a child image (path relative to the child's dir). */
int img_open_backing(struct qtimg *img, const char *name, const char *fmt);
/* Counted synchronous I/O on an image's metadata fd (img->fd). */
int img_meta_pread(struct qtimg *img, void *buf, size_t len, uint64_t off);
int img_meta_pwrite(struct qtimg *img, const void *buf, size_t len, uint64_t off);
int img_fdatasync(struct qtimg *img); /* 0 or -1 with errno, as fdatasync(2) */
int img_fallocate(struct qtimg *img, int mode, uint64_t off, uint64_t len); /* idem */
/* Test/diagnostic: synchronous I/O calls made on the image and its backing chain. */
uint64_t img_sync_io_count(const struct qtimg *img);
int img_data_pread(struct qtimg *img, void *buf, size_t len, uint64_t off);
int img_data_pwrite(struct qtimg *img, const void *buf, size_t len, uint64_t off);
int img_open_internal(const char *path, const struct qtimg_open_opts *opts, int depth,
                      const char *const *chain, struct qtimg **out);
char *img_resolve_backing(const char *child_path, const char *name);

/* Direct I/O alignment used for the data fd. */
#define IMG_DIO_ALIGN 4096u

#endif
