/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio 1.2 definitions shared by the device models of qtvmm and the
 * vhost-user back-ends of qtcard: device status bits, device IDs, reserved
 * feature bits, the split-ring layout (section 2.7), virtio-net (5.1) and
 * virtio-blk (5.2). Only what the specification fixes lives here; limits a
 * program chooses for itself (queue counts, iovec sizes) stay with it.
 *
 * Names follow the specification (struct virtq_desc, VIRTQ_DESC_F_NEXT), except
 * the two ring feature bits, which keep the VIRTIO_RING_F_ names every driver
 * and back-end uses. Multi-byte fields are little-endian in guest memory; the
 * hosts we run on are little-endian, so they are plain integers here.
 */
#ifndef QT_COMMON_VIRTIO_DEFS_H
#define QT_COMMON_VIRTIO_DEFS_H

#include <stdbool.h>
#include <stdint.h>

/* Device status field (2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER      0x02
#define VIRTIO_STATUS_DRIVER_OK   0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED      0x80

/* Device IDs (5). */
#define VIRTIO_ID_NET   1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_RNG   4

/* PCI transport (4.1). */
#define VIRTIO_PCI_VENDOR      0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040 /* + device ID: the modern PCI device ID */
#define VIRTIO_MSI_NO_VECTOR   0xffff

#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG    3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG    5

#define VIRTIO_PCI_ISR_QUEUE  0x1
#define VIRTIO_PCI_ISR_CONFIG 0x2

/* Vendor-specific PCI capability locating one structure in a BAR (4.1.4). */
struct virtio_pci_cap {
    uint8_t cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2];
    uint32_t offset, length;
};

/* Field offsets in struct virtio_pci_common_cfg (4.1.4.3). */
#define VIRTIO_PCI_COMMON_DFSELECT 0x00
#define VIRTIO_PCI_COMMON_DF       0x04
#define VIRTIO_PCI_COMMON_GFSELECT 0x08
#define VIRTIO_PCI_COMMON_GF       0x0c
#define VIRTIO_PCI_COMMON_MSIX     0x10
#define VIRTIO_PCI_COMMON_NUMQ     0x12
#define VIRTIO_PCI_COMMON_STATUS   0x14
#define VIRTIO_PCI_COMMON_CFGGEN   0x15
#define VIRTIO_PCI_COMMON_Q_SELECT 0x16
#define VIRTIO_PCI_COMMON_Q_SIZE   0x18
#define VIRTIO_PCI_COMMON_Q_MSIX   0x1a
#define VIRTIO_PCI_COMMON_Q_ENABLE 0x1c
#define VIRTIO_PCI_COMMON_Q_NOFF   0x1e
#define VIRTIO_PCI_COMMON_Q_DESC   0x20
#define VIRTIO_PCI_COMMON_Q_DRIVER 0x28
#define VIRTIO_PCI_COMMON_Q_DEVICE 0x30

_Static_assert(sizeof(struct virtio_pci_cap) == 16, "virtio_pci_cap size");

/* Reserved feature bits (6). */
#define VIRTIO_F_NOTIFY_ON_EMPTY    24
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX     29
#define VIRTIO_F_VERSION_1          32
#define VIRTIO_F_ACCESS_PLATFORM    33
#define VIRTIO_F_RING_PACKED        34
#define VIRTIO_F_IN_ORDER           35

/* Split virtqueues (2.7). */
#define VIRTQ_MAX_SIZE 32768 /* largest queue size a device may offer */

#define VIRTQ_DESC_F_NEXT     1
#define VIRTQ_DESC_F_WRITE    2
#define VIRTQ_DESC_F_INDIRECT 4

#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY     1

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

/* Followed by used_event (uint16_t) when VIRTIO_RING_F_EVENT_IDX is negotiated. */
struct virtq_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[];
};

struct virtq_used_elem {
    uint32_t id;
    uint32_t len;
};

/* Followed by avail_event (uint16_t) when VIRTIO_RING_F_EVENT_IDX is negotiated. */
struct virtq_used {
    uint16_t flags;
    uint16_t idx;
    struct virtq_used_elem ring[];
};

_Static_assert(sizeof(struct virtq_desc) == 16, "virtq_desc is 16 bytes");

/*
 * Event-index suppression (2.7.7, 2.7.10): whether moving an index from
 * old_idx to new_idx passed the other side's event index, i.e. whether it
 * asked to be notified of this update. All arithmetic is modulo 2^16.
 */
static inline bool virtq_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx)
{
    return (uint16_t)(new_idx - event_idx - 1) < (uint16_t)(new_idx - old_idx);
}
_Static_assert(sizeof(struct virtq_used_elem) == 8, "virtq_used_elem is 8 bytes");

/* Packed virtqueues (2.8): one descriptor ring both sides write; a descriptor is
 * available when its AVAIL flag equals the driver's wrap counter and its USED flag does
 * not, used when both equal the device's. The buffer ID is in a chain's last
 * descriptor; the device writes one used descriptor per chain and skips its length. */
#define PVIRTQ_DESC_F_AVAIL (1u << 7)
#define PVIRTQ_DESC_F_USED  (1u << 15)

struct pvirtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t id;
    uint16_t flags;
};
_Static_assert(sizeof(struct pvirtq_desc) == 16, "pvirtq_desc is 16 bytes");

/* Event suppression (2.8.10): the driver area holds the driver's (read by the device:
 * used buffer notifications), the device area the device's (read by the driver: kicks). */
#define PVIRTQ_EVENT_ENABLE  0
#define PVIRTQ_EVENT_DISABLE 1
#define PVIRTQ_EVENT_DESC    2 /* only with VIRTIO_RING_F_EVENT_IDX: at off_wrap */

struct pvirtq_event {
    uint16_t off_wrap; /* bits 0-14 descriptor offset, bit 15 wrap counter */
    uint16_t flags;
};

/* virtio-net (5.1). */
#define VIRTIO_NET_F_CSUM       0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MTU        3
#define VIRTIO_NET_F_MAC        5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_HOST_TSO4  11
#define VIRTIO_NET_F_HOST_TSO6  12
#define VIRTIO_NET_F_MRG_RXBUF  15
#define VIRTIO_NET_F_STATUS     16
#define VIRTIO_NET_F_MQ         22

#define VIRTIO_NET_S_LINK_UP 1

#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_GSO_NONE     0

struct virtio_net_hdr_v1 {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
    uint16_t num_buffers;
};

#define VIRTIO_NET_HDR_LEN 12 /* sizeof(struct virtio_net_hdr_v1) */
/* Without num_buffers: a legacy device that negotiated neither VERSION_1 nor MRG_RXBUF. */
#define VIRTIO_NET_HDR_LEN_LEGACY 10
_Static_assert(sizeof(struct virtio_net_hdr_v1) == VIRTIO_NET_HDR_LEN, "virtio_net_hdr_v1 size");

/* Device configuration up to mtu. */
struct virtio_net_config {
    uint8_t mac[6];
    uint16_t status;
    uint16_t max_virtqueue_pairs;
    uint16_t mtu;
} __attribute__((packed));

_Static_assert(sizeof(struct virtio_net_config) == 12, "virtio_net_config size");

/* virtio-blk (5.2). */
#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_GEOMETRY     4
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_TOPOLOGY     10
#define VIRTIO_BLK_F_CONFIG_WCE   11
#define VIRTIO_BLK_F_MQ           12
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES      20 /* GET_ID answer, not NUL-terminated when full */
#define VIRTIO_BLK_WZ_FLAG_UNMAP 1  /* write-zeroes segment flag */

/* Request header, the first 16 device-readable bytes of every request. */
struct virtio_blk_outhdr {
    uint32_t type;
    uint32_t ioprio;
    uint64_t sector;
};

/* Segment of a DISCARD / WRITE_ZEROES request. */
struct virtio_blk_discard_write_zeroes {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};

/* Device configuration up to write_zeroes_may_unmap (5.2.4). */
struct virtio_blk_config {
    uint64_t capacity;
    uint32_t size_max;
    uint32_t seg_max;
    uint16_t cylinders;
    uint8_t heads;
    uint8_t sectors;
    uint32_t blk_size;
    uint8_t physical_block_exp;
    uint8_t alignment_offset;
    uint16_t min_io_size;
    uint32_t opt_io_size;
    uint8_t writeback;
    uint8_t unused0;
    uint16_t num_queues;
    uint32_t max_discard_sectors;
    uint32_t max_discard_seg;
    uint32_t discard_sector_alignment;
    uint32_t max_write_zeroes_sectors;
    uint32_t max_write_zeroes_seg;
    uint8_t write_zeroes_may_unmap;
    uint8_t unused1[3];
} __attribute__((packed));

_Static_assert(sizeof(struct virtio_blk_outhdr) == 16, "virtio_blk_outhdr size");
_Static_assert(sizeof(struct virtio_blk_discard_write_zeroes) == 16, "discard segment size");
_Static_assert(sizeof(struct virtio_blk_config) == 60, "virtio_blk_config size");

#endif
