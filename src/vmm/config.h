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
    bool direct; /* O_DIRECT */
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
    int log_level; /* LOG_LVL_* from common/log.h, -1 when not given */
};

#include <stddef.h>
#include <json-c/json.h>

/* What the command line asked for besides running a VM. */
enum vm_config_action { VM_CONFIG_RUN, VM_CONFIG_HELP, VM_CONFIG_VERSION };

/* Defaults: 1 vCPU, 512 MiB, serial on the tty, no devices. */
void vm_config_init(struct vm_config *cfg);
void vm_config_free(struct vm_config *cfg);
/*
 * Parse qtvmm's command line (argv[0] is the program name). --config FILE is
 * applied where it appears; later flags override scalars and append devices.
 * On error returns -EINVAL (or -errno) with a message in err.
 */
int vm_config_parse_args(struct vm_config *cfg, int argc, char *argv[],
                         enum vm_config_action *action, char *err, size_t errlen);
/* Apply a JSON document of the --config format (see docs/vmm.md). */
int vm_config_parse_json(struct vm_config *cfg, json_object *root, char *err, size_t errlen);
int vm_config_load_file(struct vm_config *cfg, const char *path, char *err, size_t errlen);
/* Cross-field checks done once everything is parsed (kernel given, ...). */
int vm_config_validate(const struct vm_config *cfg, char *err, size_t errlen);
/* The effective configuration in the --config format (for the API). */
json_object *vm_config_to_json(const struct vm_config *cfg);
/* Usage text for --help. */
const char *vm_config_usage(void);

#endif
