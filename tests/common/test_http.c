/* SPDX-License-Identifier: Apache-2.0 */
/* The shared HTTP-over-unix-socket server and client, end to end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/http.h"

static void handler(void *opaque, const struct http_request *req, struct http_response *resp)
{
    int *calls = opaque;

    (*calls)++;
    if (strcmp(req->path, "/echo") == 0 && req->json) {
        resp->body = json_object_get(req->json);
        return;
    }
    if (strcmp(req->method, "GET") == 0 && strcmp(req->path, "/ping") == 0) {
        resp->body = json_object_new_object();
        json_object_object_add(resp->body, "pong", json_object_new_boolean(1));
        return;
    }
    http_error(resp, 404, "no route for %s %s", req->method, req->path);
}

static void test_roundtrip(void **state)
{
    char path[64];
    struct httpd *h = NULL;
    int calls = 0;
    long status = 0;
    char *body = NULL;

    (void)state;
    snprintf(path, sizeof(path), "/tmp/qt-http-test-%d.sock", getpid());
    assert_int_equal(httpd_start_unix(&h, path, handler, &calls), 0);

    assert_int_equal(httpc_unix(path, "GET", "/ping", NULL, &status, &body), 0);
    assert_int_equal(status, 200);
    assert_non_null(strstr(body, "\"pong\":true"));
    free(body);

    assert_int_equal(httpc_unix(path, "PUT", "/echo", "{\"a\":[1,2]}", &status, &body), 0);
    assert_int_equal(status, 200);
    assert_non_null(strstr(body, "\"a\""));
    free(body);

    /* Malformed JSON is answered 400 by the server without calling the handler. */
    calls = 0;
    assert_int_equal(httpc_unix(path, "PUT", "/echo", "{\"a\":", &status, &body), 0);
    assert_int_equal(status, 400);
    assert_non_null(strstr(body, "error"));
    assert_int_equal(calls, 0);
    free(body);

    assert_int_equal(httpc_unix(path, "DELETE", "/nothing", NULL, &status, &body), 0);
    assert_int_equal(status, 404);
    free(body);

    httpd_stop(h);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_not_equal(httpc_unix(path, "GET", "/ping", NULL, &status, &body), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_roundtrip)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
