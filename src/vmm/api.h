/* SPDX-License-Identifier: Apache-2.0 */
/* qtvmm control API (see api.c and docs/vmm.md). */
#ifndef QT_VMM_API_H
#define QT_VMM_API_H

#include "common/http.h"
#include "vmm/vmm.h"

int api_start(struct httpd **out, struct vm *vm, const char *path);
void api_stop(struct httpd *h);
/* The request handler (exposed for tests). */
void api_handle(void *opaque, const struct http_request *req, struct http_response *resp);

/*
 * qtvmm itself does not link the HTTP server: libmicrohttpd brings GnuTLS and
 * eight more shared objects whose loading and constructors cost milliseconds
 * of start-up and about a MiB of RSS in every VM. api.c and the server are
 * built into the module qtvmm-api.so, which qtvmm loads with dlopen() only
 * when --api-socket is given, after the vCPUs have started. The module
 * exports one symbol, API_MODULE_SYMBOL, of type struct api_module_ops.
 */
#define API_MODULE_NAME   "qtvmm-api.so"
#define API_MODULE_SYMBOL "qtvmm_api_module_ops"

struct api_module_ops {
    int (*start)(struct httpd **out, struct vm *vm, const char *path);
    void (*stop)(struct httpd *h);
};

/* Defined by api.c; named API_MODULE_SYMBOL for dlsym(). */
extern const struct api_module_ops qtvmm_api_module_ops;

struct api_module;

/*
 * Load the module and start the API on the unix socket 'path'. The module is
 * looked up in this order: $QTVMM_API_MODULE (a full path), the directory of
 * the qtvmm executable, then QTVMM_MODULE_DIR (set at build time to the
 * installed libdir/qingtian). Returns 0 or -errno (-ENOENT: no module found).
 */
int api_module_start(struct api_module **out, struct vm *vm, const char *path);
/* Stop the API and unload the module; NULL is a no-op. */
void api_module_stop(struct api_module *m);

#endif
