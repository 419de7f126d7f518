/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Loads the control API module (qtvmm-api.so, see api.h) on demand, so that
 * a VM started without --api-socket never maps libmicrohttpd and GnuTLS.
 */
#include "vmm/api.h"
#include "common/log.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef QTVMM_MODULE_DIR
#define QTVMM_MODULE_DIR "/usr/local/lib/qingtian"
#endif

struct api_module {
    void *handle;
    const struct api_module_ops *ops;
    struct httpd *httpd;
};

/* dlopen() 'path'; a missing file is -ENOENT, anything else is logged as -ELIBBAD. */
static int api_module_open(const char *path, void **handle)
{
    if (access(path, F_OK) < 0)
        return -errno;
    *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!*handle) {
        const char *why = dlerror();

        log_err("API module '%s': cannot load: %s", path, why ? why : "unknown error");
        return -ELIBBAD;
    }
    return 0;
}

/* Directory of the running executable, with a trailing '/', or "" when unknown. */
static void api_module_exe_dir(char *dir, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", dir, size - 1);
    char *slash;

    if (n <= 0 || (size_t)n >= size - 1) {
        dir[0] = '\0';
        return;
    }
    dir[n] = '\0';
    slash = strrchr(dir, '/');
    if (slash)
        slash[1] = '\0';
    else
        dir[0] = '\0';
}

static int api_module_find(void **handle, char *used, size_t used_size)
{
    const char *env = getenv("QTVMM_API_MODULE");
    char dir[PATH_MAX];
    int ret;

    if (env && env[0]) {
        snprintf(used, used_size, "%s", env);
        ret = api_module_open(env, handle);
        if (ret == -ENOENT)
            log_err("API module '%s' (from QTVMM_API_MODULE): no such file", env);
        return ret;
    }
    api_module_exe_dir(dir, sizeof(dir));
    if (dir[0]) {
        if ((size_t)snprintf(used, used_size, "%s%s", dir, API_MODULE_NAME) < used_size) {
            ret = api_module_open(used, handle);
            if (ret != -ENOENT)
                return ret;
        }
    }
    snprintf(used, used_size, "%s/%s", QTVMM_MODULE_DIR, API_MODULE_NAME);
    ret = api_module_open(used, handle);
    if (ret == -ENOENT)
        log_err("API module %s: not found beside the qtvmm executable (%s) nor in %s; "
                "set QTVMM_API_MODULE to its path",
                API_MODULE_NAME, dir[0] ? dir : "unknown", QTVMM_MODULE_DIR);
    return ret;
}

int api_module_start(struct api_module **out, struct vm *vm, const char *path)
{
    struct api_module *m = calloc(1, sizeof(*m));
    char used[PATH_MAX];
    int ret;

    *out = NULL;
    if (!m)
        return -ENOMEM;
    ret = api_module_find(&m->handle, used, sizeof(used));
    if (ret)
        goto fail;
    m->ops = dlsym(m->handle, API_MODULE_SYMBOL);
    if (!m->ops || !m->ops->start || !m->ops->stop) {
        log_err("API module '%s': no usable symbol %s", used, API_MODULE_SYMBOL);
        ret = -ELIBBAD;
        goto fail;
    }
    ret = m->ops->start(&m->httpd, vm, path);
    if (ret)
        goto fail;
    log_debug("API module '%s' serving %s", used, path);
    *out = m;
    return 0;
fail:
    if (m->handle)
        dlclose(m->handle);
    free(m);
    return ret;
}

void api_module_stop(struct api_module *m)
{
    if (!m)
        return;
    m->ops->stop(m->httpd);
    dlclose(m->handle);
    free(m);
}
