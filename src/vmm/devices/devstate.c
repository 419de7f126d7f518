/* SPDX-License-Identifier: Apache-2.0 */
#include "vmm/devices/devstate.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#define DEVSTATE_MAX 64

struct devstate_entry {
    struct vm *vm;
    const char *key;
    void *ptr;
};

/*
 * The only mutable file-scope state in the device models; see devstate.h.
 * One qtvmm process runs one VM, so this holds a handful of entries.
 */
static pthread_mutex_t devstate_lock = PTHREAD_MUTEX_INITIALIZER;
static struct devstate_entry devstate_table[DEVSTATE_MAX];

static struct devstate_entry *devstate_find(struct vm *vm, const char *key)
{
    for (int i = 0; i < DEVSTATE_MAX; i++)
        if (devstate_table[i].vm == vm && devstate_table[i].key &&
            !strcmp(devstate_table[i].key, key))
            return &devstate_table[i];
    return NULL;
}

int devstate_set(struct vm *vm, const char *key, void *ptr)
{
    struct devstate_entry *e;
    int ret = 0;

    pthread_mutex_lock(&devstate_lock);
    e = devstate_find(vm, key);
    for (int i = 0; !e && i < DEVSTATE_MAX; i++)
        if (!devstate_table[i].key)
            e = &devstate_table[i];
    if (e)
        *e = (struct devstate_entry){vm, key, ptr};
    else
        ret = -ENOSPC;
    pthread_mutex_unlock(&devstate_lock);
    return ret;
}

void *devstate_get(struct vm *vm, const char *key)
{
    struct devstate_entry *e;
    void *ptr;

    pthread_mutex_lock(&devstate_lock);
    e = devstate_find(vm, key);
    ptr = e ? e->ptr : NULL;
    pthread_mutex_unlock(&devstate_lock);
    return ptr;
}

void devstate_clear(struct vm *vm, const char *key)
{
    struct devstate_entry *e;

    pthread_mutex_lock(&devstate_lock);
    e = devstate_find(vm, key);
    if (e)
        *e = (struct devstate_entry){0};
    pthread_mutex_unlock(&devstate_lock);
}
