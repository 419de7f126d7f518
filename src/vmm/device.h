/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device self-registration (kvmtool style): each device file declares
 *   VMM_DEVICE(virtio_blk, DEV_LEVEL_VIRTIO, virtio_blk_init, virtio_blk_exit);
 * and the VM core calls every registered init in level order after guest RAM
 * and the irqchip exist, so main() never lists devices.
 */
#ifndef QT_VMM_DEVICE_H
#define QT_VMM_DEVICE_H

#include <json-c/json.h>

struct vm;
struct vm_config;

enum dev_level {
    DEV_LEVEL_CORE = 0,
    DEV_LEVEL_LEGACY,
    DEV_LEVEL_PCI,
    DEV_LEVEL_VIRTIO,
    DEV_LEVEL_LATE,
    DEV_LEVEL_MAX
};

struct vmm_device_type {
    const char *name;
    enum dev_level level;
    /* Create this type's devices from cfg (may create none). 0 or -errno. */
    int (*init)(struct vm *vm, const struct vm_config *cfg);
    void (*exit)(struct vm *vm);
    /* Add per-device counters to the API's "devices" array (optional). */
    void (*stats)(struct vm *vm, json_object *devices);
};

void vmm_device_type_register(const struct vmm_device_type *t);
int vmm_devices_init(struct vm *vm, const struct vm_config *cfg);
void vmm_devices_exit(struct vm *vm);
void vmm_devices_stats(struct vm *vm, json_object *devices);
/* The registered type with this name, or NULL (tests initialise single types). */
const struct vmm_device_type *vmm_device_type_find(const char *name);

#define VMM_DEVICE(tag, lvl, init_fn, exit_fn, stats_fn)                                           \
    static const struct vmm_device_type vmm_dev_##tag = {                                          \
        .name = #tag, .level = lvl, .init = init_fn, .exit = exit_fn, .stats = stats_fn};          \
    __attribute__((constructor)) static void vmm_dev_register_##tag(void)                          \
    {                                                                                              \
        vmm_device_type_register(&vmm_dev_##tag);                                                  \
    }

#endif
