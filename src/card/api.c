/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qtcard control API: HTTP/1.1 + JSON on a unix socket (src/common/http.h).
 * Routes are documented in docs/qtcard.md.
 */
#include "card/card.h"
#include "common/http.h"
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define API_PREFIX "/api/v1/"

static int api_status_of(int err)
{
    switch (err) {
    case -EINVAL:
    case -ENODEV: /* a named host interface does not exist */
        return 400;
    case -ENOENT:
        return 404;
    case -EEXIST:
    case -EBUSY:
        return 409;
    case -ENOSPC:
        return 507;
    default:
        return 500;
    }
}

static void api_result(struct http_response *resp, int ret, const char *err, int ok_status)
{
    if (ret) {
        http_error(resp, api_status_of(ret), "%s", err[0] ? err : strerror(-ret));
        return;
    }
    resp->status = ok_status;
}

/* Split "ports/vm1/policy" into up to 3 components (NUL-terminated in buf). */
static unsigned api_split(const char *path, char *buf, size_t len, char **parts)
{
    unsigned n = 0;
    char *save = NULL, *tok;
    snprintf(buf, len, "%s", path);
    for (tok = strtok_r(buf, "/", &save); tok && n < 4; tok = strtok_r(NULL, "/", &save))
        parts[n++] = tok;
    return tok ? 5 : n;
}

static void api_handle(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct card *c = opaque;
    char buf[512], err[256] = "";
    char *parts[4] = {0};
    const char *m = req->method;
    unsigned n;
    int ret;

    if (strncmp(req->path, API_PREFIX, strlen(API_PREFIX)) != 0) {
        http_error(resp, 404, "no such route '%s' (routes start with %s)", req->path, API_PREFIX);
        return;
    }
    n = api_split(req->path + strlen(API_PREFIX), buf, sizeof(buf), parts);
    if (n == 0 || n > 3) {
        http_error(resp, 404, "no such route '%s'", req->path);
        return;
    }
    if (!strcmp(parts[0], "status") && n == 1 && !strcmp(m, "GET")) {
        pthread_mutex_lock(&c->lock);
        resp->body = card_status_json(c);
        pthread_mutex_unlock(&c->lock);
        return;
    }
    if (!strcmp(parts[0], "config") && n == 1 && !strcmp(m, "GET")) {
        pthread_mutex_lock(&c->lock);
        resp->body = card_config_json(c);
        pthread_mutex_unlock(&c->lock);
        return;
    }
    if (!strcmp(parts[0], "switches")) {
        if (n == 1 && !strcmp(m, "GET")) {
            json_object *a = json_object_new_array();
            pthread_mutex_lock(&c->lock);
            for (unsigned i = 1; i < CARD_MAX_SWITCHES; i++)
                if (c->switches[i])
                    json_object_array_add(a, card_switch_json(c, c->switches[i]));
            pthread_mutex_unlock(&c->lock);
            resp->body = a;
            return;
        }
        if (n == 1 && (!strcmp(m, "POST") || !strcmp(m, "PUT"))) {
            if (!req->json) {
                http_error(resp, 400, "switch: a JSON object body is required");
                return;
            }
            ret = card_switch_add(c, req->json, err, sizeof(err));
            api_result(resp, ret, err, 201);
            return;
        }
        if (n == 2 && !strcmp(m, "GET")) {
            struct vswitch *sw;
            pthread_mutex_lock(&c->lock);
            sw = card_switch_find(c, parts[1]);
            if (sw)
                resp->body = card_switch_json(c, sw);
            pthread_mutex_unlock(&c->lock);
            if (!sw)
                http_error(resp, 404, "switch '%s' not found", parts[1]);
            return;
        }
        if (n == 2 && !strcmp(m, "DELETE")) {
            ret = card_switch_del(c, parts[1], err, sizeof(err));
            api_result(resp, ret, err, 204);
            return;
        }
    }
    if (!strcmp(parts[0], "ports")) {
        if (n == 1 && !strcmp(m, "GET")) {
            json_object *a = json_object_new_array();
            pthread_mutex_lock(&c->lock);
            for (unsigned i = 1; i < CARD_MAX_PORTS; i++)
                if (c->ports[i])
                    json_object_array_add(a, card_port_json(c, c->ports[i], true));
            pthread_mutex_unlock(&c->lock);
            resp->body = a;
            return;
        }
        if (n == 1 && (!strcmp(m, "POST") || !strcmp(m, "PUT"))) {
            if (!req->json) {
                http_error(resp, 400, "port: a JSON object body is required");
                return;
            }
            ret = card_port_add(c, req->json, err, sizeof(err));
            api_result(resp, ret, err, 201);
            return;
        }
        if (n == 2 && !strcmp(m, "GET")) {
            struct port *p;
            pthread_mutex_lock(&c->lock);
            p = card_port_find(c, parts[1]);
            if (p)
                resp->body = card_port_json(c, p, true);
            pthread_mutex_unlock(&c->lock);
            if (!p)
                http_error(resp, 404, "port '%s' not found", parts[1]);
            return;
        }
        if (n == 2 && !strcmp(m, "DELETE")) {
            ret = card_port_del(c, parts[1], err, sizeof(err));
            api_result(resp, ret, err, 204);
            return;
        }
        if (n == 2 && !strcmp(m, "PATCH")) {
            ret = card_port_patch(c, parts[1], req->json, err, sizeof(err));
            api_result(resp, ret, err, 204);
            return;
        }
        if (n == 3 && !strcmp(parts[2], "policy") && (!strcmp(m, "PUT") || !strcmp(m, "PATCH"))) {
            ret = card_port_set_policy(c, parts[1], req->json, err, sizeof(err));
            api_result(resp, ret, err, 204);
            return;
        }
    }
    if (!strcmp(parts[0], "bonds")) {
        http_error(resp, 404, "bonds are ports: POST /api/v1/ports with \"type\": \"bond\"");
        return;
    }
    if (!strcmp(parts[0], "tunnels")) {
        http_error(resp, 404,
                   "VXLAN tunnels are ports: POST /api/v1/ports with \"type\": "
                   "\"vxlan\"");
        return;
    }
    http_error(resp, (!strcmp(parts[0], "switches") || !strcmp(parts[0], "ports")) ? 405 : 404,
               "no route for %s %s", m, req->path);
}

int card_api_start(struct card *c, struct httpd **out)
{
    return httpd_start_unix(out, c->cfg.api_socket, api_handle, c);
}
