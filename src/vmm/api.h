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

#endif
