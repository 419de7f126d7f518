/* SPDX-License-Identifier: Apache-2.0 */
/* The control API on a VM without KVM: routing, state changes, errors. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "fake_vm.h"
#include "vmm/api.h"

struct fixture {
    struct vm *vm;
    struct vm_config cfg;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    static uint8_t ram[4 << 20];

    vm_config_init(&f->cfg);
    f->cfg.kernel = strdup("/boot/guest.elf");
    f->vm = fake_vm_new(sizeof(ram), ram);
    f->vm->cfg = &f->cfg;
    f->vm->n_vcpus = 0; /* no vCPU threads: pause completes at once */
    f->vm->state = VM_STATE_RUNNING;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    fake_vm_free(f->vm);
    vm_config_free(&f->cfg);
    free(f);
    return 0;
}

/* Run one request through the handler; returns the status, *body the JSON (caller puts). */
static int call(struct fixture *f, const char *method, const char *path, const char *body,
                json_object **out)
{
    struct http_request req = {.method = method,
                               .path = path,
                               .body = body ? body : "",
                               .body_len = body ? strlen(body) : 0};
    struct http_response resp = {.status = 200};

    req.json = body ? json_tokener_parse(body) : NULL;
    api_handle(f->vm, &req, &resp);
    if (req.json)
        json_object_put(req.json);
    if (out)
        *out = resp.body;
    else if (resp.body)
        json_object_put(resp.body);
    return resp.status;
}

static const char *jstr(json_object *o, const char *key)
{
    json_object *v;

    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static void test_get_and_state_changes(void **state)
{
    struct fixture *f = *state;
    json_object *o, *cfg, *k;
    uint64_t n;

    assert_int_equal(call(f, "GET", "/api/v1/vm", NULL, &o), 200);
    assert_string_equal(jstr(o, "state"), "running");
    assert_true(json_object_object_get_ex(o, "config", &cfg));
    assert_true(json_object_object_get_ex(cfg, "kernel", &k));
    assert_string_equal(json_object_get_string(k), "/boot/guest.elf");
    assert_int_equal(json_object_get_int64(json_object_object_get(o, "memory")), 4 << 20);
    assert_true(json_object_is_type(json_object_object_get(o, "devices"), json_type_array));
    json_object_put(o);

    assert_int_equal(call(f, "PUT", "/api/v1/vm/pause", NULL, &o), 200);
    assert_string_equal(jstr(o, "state"), "paused");
    json_object_put(o);
    assert_int_equal(vm_get_state(f->vm), VM_STATE_PAUSED);
    assert_int_equal(call(f, "PUT", "/api/v1/vm/pause", NULL, NULL), 200); /* idempotent */
    assert_int_equal(call(f, "PUT", "/api/v1/vm/resume", "{}", &o), 200);
    assert_string_equal(jstr(o, "state"), "running");
    json_object_put(o);
    /* No ACPI PM device in this fake VM: the button cannot be pressed. */
    assert_int_equal(call(f, "PUT", "/api/v1/vm/power-button", NULL, &o), 409);
    assert_non_null(jstr(o, "error"));
    json_object_put(o);

    assert_int_equal(read(f->vm->exit_eventfd, &n, sizeof(n)), -1); /* nothing requested yet */
    assert_int_equal(call(f, "PUT", "/api/v1/vm/shutdown", NULL, NULL), 200);
    assert_int_equal(f->vm->exit_code, 0);
    assert_int_equal(read(f->vm->exit_eventfd, &n, sizeof(n)), sizeof(n));
    f->vm->state = VM_STATE_SHUTDOWN;
    assert_int_equal(call(f, "PUT", "/api/v1/vm/resume", NULL, NULL), 409);
}

static void test_errors(void **state)
{
    struct fixture *f = *state;
    json_object *o;

    assert_int_equal(call(f, "GET", "/api/v1/vms", NULL, &o), 404);
    assert_non_null(strstr(jstr(o, "error"), "/api/v1/vms"));
    json_object_put(o);
    assert_int_equal(call(f, "GET", "/", NULL, NULL), 404);
    assert_int_equal(call(f, "PUT", "/api/v1/vm/reboot", NULL, NULL), 404);
    assert_int_equal(call(f, "PUT", "/api/v1/vm/pause/now", NULL, NULL), 404);
    assert_int_equal(call(f, "DELETE", "/api/v1/vm", NULL, &o), 405);
    assert_non_null(strstr(jstr(o, "error"), "GET"));
    json_object_put(o);
    assert_int_equal(call(f, "GET", "/api/v1/vm/pause", NULL, NULL), 405);
    assert_int_equal(call(f, "PUT", "/api/v1/vm/pause", "{\"force\": true}", NULL), 400);
    assert_int_equal(call(f, "PUT", "/api/v1/vm/pause", "[]", NULL), 400);
    assert_int_equal(vm_get_state(f->vm), VM_STATE_RUNNING);
}

/* The same over a real unix socket through libmicrohttpd and libcurl. */
static void test_over_socket(void **state)
{
    struct fixture *f = *state;
    struct httpd *h = NULL;
    char path[64], *body = NULL;
    long status = 0;

    snprintf(path, sizeof(path), "/tmp/qtvmm-api-test-%d.sock", (int)getpid());
    assert_int_equal(api_start(&h, f->vm, path), 0);
    assert_int_equal(httpc_unix(path, "GET", "/api/v1/vm", NULL, &status, &body), 0);
    assert_int_equal(status, 200);
    assert_non_null(strstr(body, "\"running\""));
    free(body);
    assert_int_equal(httpc_unix(path, "PUT", "/api/v1/vm/pause", NULL, &status, &body), 0);
    assert_int_equal(status, 200);
    free(body);
    assert_int_equal(httpc_unix(path, "PUT", "/api/v1/vm/pause", "{oops", &status, &body), 0);
    assert_int_equal(status, 400);
    free(body);
    assert_int_equal(httpc_unix(path, "POST", "/api/v1/vm", NULL, &status, &body), 0);
    assert_int_equal(status, 405);
    free(body);
    api_stop(h);
    assert_int_equal(access(path, F_OK), -1); /* the socket is removed */
    assert_int_equal(vm_get_state(f->vm), VM_STATE_PAUSED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_and_state_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_over_socket, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
