/* SPDX-License-Identifier: Apache-2.0 */
#include "common/http.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define HTTP_MAX_BODY (1u << 20)

struct httpd {
    struct MHD_Daemon *mhd;
    int listen_fd;
    char *unix_path;
    http_handler_fn fn;
    void *opaque;
};

/* Per-connection upload buffer. */
struct http_conn {
    char *buf;
    size_t len;
    int too_big;
};

void http_error(struct http_response *resp, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (resp->body)
        json_object_put(resp->body);
    resp->status = status;
    resp->body = json_object_new_object();
    json_object_object_add(resp->body, "error", json_object_new_string(msg));
}

static enum MHD_Result http_send(struct MHD_Connection *conn, struct http_response *r)
{
    const char *text = "";
    struct MHD_Response *mr;
    enum MHD_Result ret;

    if (r->body)
        text = json_object_to_json_string_ext(r->body, JSON_C_TO_STRING_PLAIN);
    mr = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!mr)
        return MHD_NO;
    if (r->body)
        MHD_add_response_header(mr, "Content-Type", "application/json");
    ret = MHD_queue_response(conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    return ret;
}

static enum MHD_Result http_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                       const char *method, const char *version,
                                       const char *upload_data, size_t *upload_size, void **con_cls)
{
    struct httpd *h = cls;
    struct http_conn *c = *con_cls;
    struct http_response resp = {.status = 200, .body = NULL};
    struct http_request req;
    enum MHD_Result ret;

    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return MHD_NO;
        *con_cls = c;
        return MHD_YES;
    }
    if (*upload_size) {
        if (c->len + *upload_size > HTTP_MAX_BODY) {
            c->too_big = 1;
        } else {
            char *nb = realloc(c->buf, c->len + *upload_size + 1);
            if (!nb)
                return MHD_NO;
            c->buf = nb;
            memcpy(c->buf + c->len, upload_data, *upload_size);
            c->len += *upload_size;
            c->buf[c->len] = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }

    memset(&req, 0, sizeof(req));
    req.method = method;
    req.path = url;
    req.body = c->buf ? c->buf : "";
    req.body_len = c->len;
    if (c->too_big) {
        http_error(&resp, 413, "request body larger than %u bytes", HTTP_MAX_BODY);
    } else if (c->len) {
        enum json_tokener_error jerr;
        json_tokener *tok = json_tokener_new();

        if (!tok)
            return MHD_NO;
        req.json = json_tokener_parse_ex(tok, req.body, (int)c->len);
        jerr = json_tokener_get_error(tok);
        if (!req.json || jerr != json_tokener_success ||
            json_tokener_get_parse_end(tok) != c->len) {
            http_error(&resp, 400, "request body is not valid JSON: %s",
                       jerr == json_tokener_success ? "trailing data"
                                                    : json_tokener_error_desc(jerr));
            if (req.json)
                json_object_put(req.json);
            req.json = NULL;
            json_tokener_free(tok);
            goto send;
        }
        json_tokener_free(tok);
        h->fn(h->opaque, &req, &resp);
    } else {
        h->fn(h->opaque, &req, &resp);
    }
send:
    (void)version;
    ret = http_send(conn, &resp);
    if (resp.body)
        json_object_put(resp.body);
    if (req.json)
        json_object_put(req.json);
    return ret;
}

static void http_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    struct http_conn *c = *con_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (c) {
        free(c->buf);
        free(c);
        *con_cls = NULL;
    }
}

static int httpd_start_fd(struct httpd *h)
{
    h->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_LINUX_ONLY, 0, NULL,
                              NULL, http_on_request, h, MHD_OPTION_LISTEN_SOCKET, h->listen_fd,
                              MHD_OPTION_NOTIFY_COMPLETED, http_on_completed, h,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    return h->mhd ? 0 : -EIO;
}

int httpd_start_unix(struct httpd **out, const char *path, http_handler_fn fn, void *opaque)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct httpd *h;
    int ret;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        log_err("api socket '%s': path too long (max %zu)", path, sizeof(sa.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->fn = fn;
    h->opaque = opaque;
    h->unix_path = strdup(path);
    strcpy(sa.sun_path, path);
    h->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (h->listen_fd < 0 || !h->unix_path) {
        ret = -errno;
        goto fail;
    }
    /* Replace a stale socket, but never another kind of file. */
    {
        struct stat st;
        if (lstat(path, &st) == 0) {
            if (!S_ISSOCK(st.st_mode)) {
                log_err("api socket '%s': exists and is not a socket", path);
                ret = -EEXIST;
                goto fail;
            }
            unlink(path);
        }
    }
    if (bind(h->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(h->listen_fd, 64) < 0) {
        ret = -errno;
        log_err("api socket '%s': %s", path, strerror(errno));
        goto fail;
    }
    ret = httpd_start_fd(h);
    if (ret) {
        log_err("api socket '%s': cannot start HTTP server", path);
        unlink(path);
        goto fail;
    }
    *out = h;
    return 0;
fail:
    if (h->listen_fd >= 0)
        close(h->listen_fd);
    free(h->unix_path);
    free(h);
    return ret;
}

int httpd_start_tcp(struct httpd **out, const char *addr, uint16_t port, http_handler_fn fn,
                    void *opaque)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct httpd *h;
    int one = 1, ret;

    if (addr && inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        log_err("listen address '%s': not an IPv4 address", addr);
        return -EINVAL;
    }
    h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->fn = fn;
    h->opaque = opaque;
    h->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (h->listen_fd < 0) {
        ret = -errno;
        goto fail;
    }
    setsockopt(h->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(h->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(h->listen_fd, 128) < 0) {
        ret = -errno;
        log_err("listen %s:%u: %s", addr ? addr : "0.0.0.0", port, strerror(errno));
        goto fail;
    }
    ret = httpd_start_fd(h);
    if (ret)
        goto fail;
    *out = h;
    return 0;
fail:
    if (h->listen_fd >= 0)
        close(h->listen_fd);
    free(h);
    return ret;
}

void httpd_stop(struct httpd *h)
{
    if (!h)
        return;
    if (h->mhd)
        MHD_stop_daemon(h->mhd);
    if (h->listen_fd >= 0)
        close(h->listen_fd);
    if (h->unix_path) {
        unlink(h->unix_path);
        free(h->unix_path);
    }
    free(h);
}
