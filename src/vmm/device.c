/* SPDX-License-Identifier: Apache-2.0 */
#include "vmm/device.h"
#include "common/log.h"

#include <string.h>

#define MAX_DEVICE_TYPES 64

/* Filled by constructors before main(); read-only afterwards. */
static const struct vmm_device_type *device_types[MAX_DEVICE_TYPES];
static int n_device_types;

void vmm_device_type_register(const struct vmm_device_type *t)
{
    if (n_device_types < MAX_DEVICE_TYPES)
        device_types[n_device_types++] = t;
}

int vmm_devices_init(struct vm *vm, const struct vm_config *cfg)
{
    for (int lvl = 0; lvl < DEV_LEVEL_MAX; lvl++) {
        for (int i = 0; i < n_device_types; i++) {
            const struct vmm_device_type *t = device_types[i];
            int ret;

            if ((int)t->level != lvl || !t->init)
                continue;
            ret = t->init(vm, cfg);
            if (ret < 0) {
                log_err("device '%s': initialisation failed (%d)", t->name, ret);
                return ret;
            }
        }
    }
    return 0;
}

void vmm_devices_exit(struct vm *vm)
{
    for (int lvl = DEV_LEVEL_MAX - 1; lvl >= 0; lvl--)
        for (int i = n_device_types - 1; i >= 0; i--)
            if ((int)device_types[i]->level == lvl && device_types[i]->exit)
                device_types[i]->exit(vm);
}

void vmm_devices_stats(struct vm *vm, json_object *devices)
{
    for (int i = 0; i < n_device_types; i++)
        if (device_types[i]->stats)
            device_types[i]->stats(vm, devices);
}

const struct vmm_device_type *vmm_device_type_find(const char *name)
{
    for (int i = 0; i < n_device_types; i++)
        if (strcmp(device_types[i]->name, name) == 0)
            return device_types[i];
    return NULL;
}
