/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qtvmm: one process per VM. Parse the configuration, create the VM and its
 * devices, load the kernel, run the vCPUs and wait for the guest (or a
 * signal, or the API) to end it. The exit status tells how it ended (see
 * enum vm_exit_kind and docs/vmm.md).
 */
#include "vmm/api.h"
#include "vmm/config.h"
#include "vmm/device.h"
#include "vmm/vmm.h"
#include "common/log.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define QTVMM_VERSION "0.1.0"

/* Wait for an exit request or SIGTERM/SIGINT; returns the exit status. */
static int main_wait(struct vm *vm, int sig_fd)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = vm->exit_eventfd, .events = POLLIN},
                              {.fd = sig_fd, .events = POLLIN}};

        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            log_err("main loop: poll failed: %s", strerror(errno));
            return VM_EXIT_ERROR;
        }
        if (p[1].revents) {
            struct signalfd_siginfo si;

            if (read(sig_fd, &si, sizeof(si)) == sizeof(si))
                log_info("received signal %u: stopping the VM", si.ssi_signo);
            vm_request_exit(vm, VM_EXIT_POWEROFF);
        }
        if (p[0].revents) {
            int code;

            pthread_mutex_lock(&vm->state_lock);
            code = vm->exit_code;
            pthread_mutex_unlock(&vm->state_lock);
            if (code >= 0)
                return code;
        }
    }
}

int main(int argc, char *argv[])
{
    struct vm_config cfg;
    enum vm_config_action action;
    struct api_module *api = NULL;
    struct vm *vm = NULL;
    char err[512];
    sigset_t sigs;
    int ret, status = VM_EXIT_ERROR, sig_fd = -1;
    bool devices_up = false;

    log_init("qtvmm", LOG_LVL_INFO);
    vm_config_init(&cfg);
    ret = vm_config_parse_args(&cfg, argc, argv, &action, err, sizeof(err));
    if (ret == 0 && action == VM_CONFIG_RUN)
        ret = vm_config_validate(&cfg, err, sizeof(err));
    if (ret) {
        fprintf(stderr, "qtvmm: %s\n", err);
        vm_config_free(&cfg);
        return VM_EXIT_USAGE;
    }
    if (action != VM_CONFIG_RUN) {
        fputs(action == VM_CONFIG_HELP ? vm_config_usage() : "qtvmm " QTVMM_VERSION "\n", stdout);
        vm_config_free(&cfg);
        return 0;
    }
    if (cfg.log_level >= 0)
        log_set_level((enum log_level)cfg.log_level);

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* inherited by every thread */
    sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sig_fd < 0) {
        log_err("signalfd: %s", strerror(errno));
        goto out;
    }

    log_debug("startup: configuration parsed");
    ret = vm_create(&vm, &cfg);
    if (ret) {
        status = ret == -EINVAL ? VM_EXIT_USAGE : VM_EXIT_ERROR;
        goto out;
    }
    /* Load the kernel first: a bad image is refused before devices open their backends. */
    log_debug("startup: VM, RAM and vCPUs created");
    ret = vm_load_kernel(vm);
    if (ret) {
        status = VM_EXIT_USAGE;
        goto out;
    }
    log_debug("startup: kernel and ACPI tables loaded");
    ret = vmm_devices_init(vm, &cfg);
    devices_up = true;
    log_debug("startup: devices initialised");
    if (ret)
        goto out;
    ret = vcpu_start_all(vm);
    /*
     * The API comes up after the vCPUs: loading its module and binding the
     * socket are not on the path to the guest's first instruction. Clients
     * wait for the socket to accept connections, as they always had to.
     */
    if (ret == 0 && cfg.api_socket)
        ret = api_module_start(&api, vm, cfg.api_socket);
    if (ret) {
        vm_request_exit(vm, VM_EXIT_ERROR);
        status = VM_EXIT_ERROR;
    } else {
        status = main_wait(vm, sig_fd);
    }
    vcpu_stop_all(vm);
    log_info("VM stopped, exit status %d", status);
    /*
     * httpd_stop() drops open connections: when the API itself asked for the
     * shutdown, give its thread a moment to send that reply first.
     */
    if (api && __atomic_load_n(&vm->exit_via_api, __ATOMIC_ACQUIRE))
        usleep(50 * 1000);
out:
    api_module_stop(api);
    if (devices_up)
        vmm_devices_exit(vm);
    vm_destroy(vm);
    if (sig_fd >= 0)
        close(sig_fd);
    vm_config_free(&cfg);
    return status;
}
