/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Read-only access to Microsoft VHD images ("vpc" in QEMU): fixed (type 2),
 * dynamic (type 3) and differencing (type 4) disks, so that images from other
 * platforms can be converted (qtimg convert -f vpc/vhd).
 *
 * MESON: part of libqtimg, see the top of luks.h (sources luks.c, vhd.c).
 *
 * Every field read from the file is validated at open: footer cookie
 * "conectix" and checksum (the end footer, or the copy at offset 0 when the
 * end is damaged), file format version, disk type, current size, geometry,
 * dynamic header cookie "cxsparse" / checksum / version, BAT offset and size
 * inside the file, block size a power of two in [512 B, 256 MiB], every BAT
 * entry either 0xFFFFFFFF or a block (bitmap + data) inside the file and not
 * overlapping the headers; differencing parents are found through the parent
 * locators (W2ru relative to the child's directory, W2ku, MacX), their unique
 * id must match the child's parent id, and the chain depth is limited to
 * VHD_MAX_CHAIN. Errors are -errno with a message naming the file and field.
 *
 * Virtual size follows QEMU's rule so that both tools agree: images whose
 * creator application is "win ", "qem2", "d2v ", "CTXS" or "tap\0" (or whose
 * geometry is the maximum 65535/16/255) use the footer's current size; others
 * (Virtual PC "vpc ", QEMU "qemu", ...) use cylinders*heads*sectors*512.
 *
 * Thread safety: a struct vhd is read-only after open; vhd_pread() may be
 * called from several threads at once.
 */
#ifndef QT_IMAGE_VHD_H
#define QT_IMAGE_VHD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VHD_SECTOR_SIZE 512u
#define VHD_MAX_CHAIN   16u /* differencing chain depth limit (child included) */

enum vhd_type {
    VHD_TYPE_FIXED = 2,
    VHD_TYPE_DYNAMIC = 3,
    VHD_TYPE_DIFF = 4,
};

struct vhd;

struct vhd_open_opts {
    /* Differencing disks: use this file as the parent instead of the
     * locators (like qemu-img's backing override). NULL = use locators. */
    const char *parent_path;
    /* true: do not open the parent; unallocated sectors of a differencing
     * disk read as zeros (for inspection only). */
    bool no_parent;
};

/* 1 when buf (the first bytes of a file, len >= 8) starts with "conectix"
 * (dynamic/differencing VHD); fixed VHDs only carry the footer at the end:
 * use vhd_probe_fd() for those. */
int vhd_probe(const void *buf, size_t len);
/* 1 when the file behind fd is a VHD of any type (start or end footer). */
int vhd_probe_fd(int fd);

/* Open path read-only with its parent chain. opts may be NULL. */
int vhd_open(struct vhd **out, const char *path, const struct vhd_open_opts *opts);
/* Same on an already open fd (dup'ed; the caller keeps its fd). path is
 * used for messages and to resolve relative parent locators. */
int vhd_open_fd(struct vhd **out, int fd, const char *path, const struct vhd_open_opts *opts);
void vhd_close(struct vhd *v);

uint64_t vhd_get_virtual_size(const struct vhd *v);
enum vhd_type vhd_get_type(const struct vhd *v);
/* Data block size of dynamic/differencing disks (0 for fixed). */
uint32_t vhd_get_block_size(const struct vhd *v);
/* Parent of a differencing disk (NULL otherwise) and its resolved path. */
const struct vhd *vhd_get_parent(const struct vhd *v);
const char *vhd_get_path(const struct vhd *v);
/* Layout for a reader that does its own I/O (the io_uring data path): the
 * file descriptor of this level, the size of a block's sector bitmap, the
 * number of block table entries and the entry (sector of the block's bitmap,
 * VHD_BAT_UNALLOCATED when the block is not in this file) of the block
 * holding offset. No I/O: the table is loaded at open. */
#define VHD_BAT_UNALLOCATED 0xffffffffu
int vhd_get_fd(const struct vhd *v);
uint32_t vhd_get_bitmap_size(const struct vhd *v);
uint32_t vhd_get_bat_entries(const struct vhd *v);
uint32_t vhd_get_bat_entry(const struct vhd *v, uint64_t offset);
/* Bytes of the file actually used (file size). */
uint64_t vhd_get_file_size(const struct vhd *v);

/* Read len bytes at offset (must lie inside the virtual size). Unallocated
 * data reads from the parent or as zeros. Returns 0 or -errno. */
int vhd_pread(const struct vhd *v, void *buf, size_t len, uint64_t offset);

/*
 * Allocation status at offset: *pnum gets the number of bytes from offset
 * (<= len) that share the status, *allocated whether they are stored in this
 * image or one of its parents (false: they read as zeros). For sparse
 * convert.
 */
int vhd_block_status(const struct vhd *v, uint64_t offset, uint64_t len, uint64_t *pnum,
                     bool *allocated);

/* libFuzzer-style entry: open data as a VHD (no parent) and read it all.
 * Never crashes on any input; returns 0. */
int vhd_fuzz_one(const uint8_t *data, size_t size);

#endif
