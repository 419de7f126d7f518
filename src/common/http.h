/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control-plane transport every qingtian process shares: HTTP/1.1 + JSON
 * on a unix socket (and TCP for qtvrm), served by libmicrohttpd; the client
 * side is libcurl. Handlers run on the server's own thread.
 */
#ifndef QT_COMMON_HTTP_H
#define QT_COMMON_HTTP_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

struct http_request {
    const char *method; /* "GET", "PUT", ... */
    const char *path;   /* "/api/v1/vm" (no query string) */
    const char *body;   /* NUL-terminated, "" when empty */
    size_t body_len;
    /* Parsed body when it was non-empty JSON; NULL otherwise. When the body is
     * non-empty and not valid JSON the server answers 400 itself. */
    json_object *json;
};

struct http_response {
    int status;        /* defaults to 200 */
    json_object *body; /* owned by the response; NULL for an empty body */
};

typedef void (*http_handler_fn)(void *opaque, const struct http_request *req,
                                struct http_response *resp);

struct httpd;

/* Listen on a unix socket (an existing stale socket file is replaced). */
int httpd_start_unix(struct httpd **out, const char *path, http_handler_fn fn, void *opaque);
/* Listen on TCP (addr NULL or "0.0.0.0" for all). */
int httpd_start_tcp(struct httpd **out, const char *addr, uint16_t port, http_handler_fn fn,
                    void *opaque);
void httpd_stop(struct httpd *h); /* also unlinks the unix socket */

/* Set status and a body {"error": "<message>"}. */
void http_error(struct http_response *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Client: one request to a unix socket. body may be NULL. On success returns 0,
 * *status is the HTTP status and *resp_body a malloc'd NUL-terminated string
 * (may be ""), to be freed by the caller.
 */
int httpc_unix(const char *sock_path, const char *method, const char *path, const char *body,
               long *status, char **resp_body);
/* Same over TCP: url such as "http://127.0.0.1:8080/api/v1/hosts". */
int httpc_url(const char *url, const char *method, const char *body, long *status,
              char **resp_body);

#endif
