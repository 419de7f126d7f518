/* SPDX-License-Identifier: Apache-2.0 */
/* qtvmm configuration: built from the command line or a JSON config file. */
#ifndef QT_VMM_CONFIG_H
#define QT_VMM_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#define VM_MAX_DISKS 16
#define VM_MAX_NETS  8

struct disk_config {
    char *path;         /* raw file (in-process backend) */
    char *vhost_socket; /* vhost-user-blk backend socket instead of path */
    char *serial;       /* VIRTIO_BLK_F_GET_ID string, at most 20 bytes */
    bool readonly;
    bool direct;        /* O_DIRECT */
    uint32_t num_queues;
    uint32_t queue_size;
};

struct net_config {
    char *tap;          /* tap interface name (created if missing) */
    char *vhost_socket; /* vhost-user-net backend socket instead of tap */
    uint8_t mac[6];
    bool has_mac;
    uint32_t num_queues; /* queue pairs * 2 */
    uint32_t queue_size;
};

enum serial_mode { SERIAL_TTY, SERIAL_FILE, SERIAL_SOCKET, SERIAL_NULL, SERIAL_OFF };

struct vm_config {
    uint32_t cpus_boot;
    uint64_t mem_size;
    bool hugepages;
    char *kernel;
    char *initramfs;
    char *cmdline;
    struct disk_config disks[VM_MAX_DISKS];
    int n_disks;
    struct net_config nets[VM_MAX_NETS];
    int n_nets;
    bool rng;
    enum serial_mode serial;
    char *serial_path;
    char *api_socket;
};

#endif
