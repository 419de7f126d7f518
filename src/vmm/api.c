/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Control API on --api-socket (HTTP/1.1 + JSON, src/common/http.h):
 *   GET /api/v1/vm                 configuration, state, vCPUs, memory, counters
 *   PUT /api/v1/vm/pause|resume    park / restart every vCPU
 *   PUT /api/v1/vm/power-button    ACPI power button (SCI)
 *   PUT /api/v1/vm/shutdown        immediate power-off (exit status 0)
 */
#include "vmm/api.h"
#include "vmm/device.h"
#include "common/http.h"
#include "common/log.h"

#include <errno.h>
#include <string.h>

#define API_PREFIX "/api/v1/vm"

static json_object *api_vm_info(struct vm *vm)
{
    json_object *o = json_object_new_object(), *devs = json_object_new_array(), *c, *cpus;
    uint64_t exits = 0, io = 0, mmio = 0;

    json_object_object_add(o, "config", vm->cfg ? vm_config_to_json(vm->cfg) : NULL);
    json_object_object_add(o, "state", json_object_new_string(vm_state_name(vm_get_state(vm))));
    json_object_object_add(o, "vcpus", json_object_new_int(vm->n_vcpus));
    json_object_object_add(o, "memory", json_object_new_int64((int64_t)vm->mem.total));
    cpus = json_object_new_array();
    for (int i = 0; vm->vcpus && i < vm->n_vcpus; i++) {
        json_object *v = json_object_new_object();
        const struct vcpu *cpu = &vm->vcpus[i];
        uint64_t e = __atomic_load_n(&cpu->exits, __ATOMIC_RELAXED);

        json_object_object_add(v, "id", json_object_new_int(i));
        json_object_object_add(v, "exits", json_object_new_int64((int64_t)e));
        json_object_array_add(cpus, v);
        exits += e;
        io += __atomic_load_n(&cpu->io_exits, __ATOMIC_RELAXED);
        mmio += __atomic_load_n(&cpu->mmio_exits, __ATOMIC_RELAXED);
    }
    json_object_object_add(o, "vcpu_stats", cpus);
    c = json_object_new_object();
    json_object_object_add(c, "exits", json_object_new_int64((int64_t)exits));
    json_object_object_add(c, "io_exits", json_object_new_int64((int64_t)io));
    json_object_object_add(c, "mmio_exits", json_object_new_int64((int64_t)mmio));
    json_object_object_add(
        c, "unhandled_pio",
        json_object_new_int64((int64_t)__atomic_load_n(&vm->unhandled_pio, __ATOMIC_RELAXED)));
    json_object_object_add(
        c, "unhandled_mmio",
        json_object_new_int64((int64_t)__atomic_load_n(&vm->unhandled_mmio, __ATOMIC_RELAXED)));
    json_object_object_add(o, "counters", c);
    vmm_devices_stats(vm, devs);
    json_object_object_add(o, "devices", devs);
    return o;
}

static json_object *api_state_body(struct vm *vm)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "state", json_object_new_string(vm_state_name(vm_get_state(vm))));
    return o;
}

void api_handle(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct vm *vm = opaque;
    const char *action;
    int ret;

    if (strncmp(req->path, API_PREFIX, strlen(API_PREFIX)) != 0) {
        http_error(resp, 404, "no resource at '%s'", req->path);
        return;
    }
    action = req->path + strlen(API_PREFIX);
    if (*action == 0) {
        if (strcmp(req->method, "GET") != 0) {
            http_error(resp, 405, "%s not allowed on %s (use GET)", req->method, req->path);
            return;
        }
        resp->body = api_vm_info(vm);
        return;
    }
    if (*action != '/' ||
        (strcmp(action, "/pause") != 0 && strcmp(action, "/resume") != 0 &&
         strcmp(action, "/power-button") != 0 && strcmp(action, "/shutdown") != 0)) {
        http_error(resp, 404, "no resource at '%s'", req->path);
        return;
    }
    if (strcmp(req->method, "PUT") != 0) {
        http_error(resp, 405, "%s not allowed on %s (use PUT)", req->method, req->path);
        return;
    }
    if (req->body_len && (!req->json || !json_object_is_type(req->json, json_type_object) ||
                          json_object_object_length(req->json) != 0)) {
        http_error(resp, 400, "%s takes no arguments", req->path);
        return;
    }
    if (vm_get_state(vm) == VM_STATE_SHUTDOWN) {
        http_error(resp, 409, "the VM is shutting down");
        return;
    }
    if (strcmp(action, "/pause") == 0)
        ret = vm_pause(vm);
    else if (strcmp(action, "/resume") == 0)
        ret = vm_resume(vm);
    else if (strcmp(action, "/power-button") == 0)
        ret = vm_power_button(vm);
    else {
        __atomic_store_n(&vm->exit_via_api, true, __ATOMIC_RELEASE);
        vm_request_exit(vm, VM_EXIT_POWEROFF);
        ret = 0;
    }
    if (ret) {
        http_error(resp, 409, "%s: not possible in state '%s' (%s)", action + 1,
                   vm_state_name(vm_get_state(vm)), strerror(-ret));
        return;
    }
    resp->body = api_state_body(vm);
}

int api_start(struct httpd **out, struct vm *vm, const char *path)
{
    int ret = httpd_start_unix(out, path, api_handle, vm);

    if (ret)
        log_err("API socket '%s': cannot listen: %s", path, strerror(-ret));
    return ret;
}

void api_stop(struct httpd *h)
{
    if (h)
        httpd_stop(h);
}

/* Looked up by api_module_start() when this file is built as qtvmm-api.so. */
const struct api_module_ops qtvmm_api_module_ops = {.start = api_start, .stop = api_stop};
