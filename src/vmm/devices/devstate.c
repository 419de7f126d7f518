/* SPDX-License-Identifier: Apache-2.0 */
#include "vmm/devices/devstate.h"
#include "vmm/vm.h"

#include <errno.h>
#include <string.h>

static int devstate_find(struct vm_devstate *t, const char *key)
{
    for (int i = 0; i < VM_DEVSTATE_MAX; i++)
        if (t->slot[i].key && !strcmp(t->slot[i].key, key))
            return i;
    return -1;
}

int devstate_set(struct vm *vm, const char *key, void *ptr)
{
    struct vm_devstate *t = vm_devstate(vm);
    int i, ret = 0;

    pthread_mutex_lock(&t->lock);
    i = devstate_find(t, key);
    for (int j = 0; i < 0 && j < VM_DEVSTATE_MAX; j++)
        if (!t->slot[j].key)
            i = j;
    if (i >= 0) {
        t->slot[i].key = key;
        t->slot[i].ptr = ptr;
    } else {
        ret = -ENOSPC;
    }
    pthread_mutex_unlock(&t->lock);
    return ret;
}

void *devstate_get(struct vm *vm, const char *key)
{
    struct vm_devstate *t = vm_devstate(vm);
    void *ptr = NULL;
    int i;

    pthread_mutex_lock(&t->lock);
    i = devstate_find(t, key);
    if (i >= 0)
        ptr = t->slot[i].ptr;
    pthread_mutex_unlock(&t->lock);
    return ptr;
}

void devstate_clear(struct vm *vm, const char *key)
{
    struct vm_devstate *t = vm_devstate(vm);
    int i;

    pthread_mutex_lock(&t->lock);
    i = devstate_find(t, key);
    if (i >= 0) {
        t->slot[i].key = NULL;
        t->slot[i].ptr = NULL;
    }
    pthread_mutex_unlock(&t->lock);
}
