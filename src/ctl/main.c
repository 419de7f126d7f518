/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qtctl: command-line client for the control APIs of qtvmm and qtcard
 * (HTTP/1.1 + JSON on a unix socket).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/http.h"
#include "common/log.h"

#define QTCTL_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f, "Usage: qtctl [OPTIONS] vm|card COMMAND [ARGS]\n"
               "\n"
               "Client for the control APIs of qtvmm and qtcard.\n"
               "\n"
               "Options:\n"
               "  -s, --api-socket PATH  control socket of the process to talk to (required)\n"
               "  -l, --log-level LEVEL  error|warn|info|debug (default warn)\n"
               "  -h, --help             show this help\n"
               "  -V, --version          show the version\n"
               "\n"
               "vm commands (qtvmm):\n"
               "  info                   config, state and per-device counters (GET /api/v1/vm)\n"
               "  pause | resume         stop or restart all vCPUs\n"
               "  power-button           press the ACPI power button (the guest shuts down)\n"
               "  shutdown               power the VM off now\n"
               "\n"
               "card commands (qtcard):\n"
               "  get PATH               GET /api/v1/PATH (e.g. 'get ports')\n"
               "  put|post|patch PATH [JSON]\n"
               "                         PUT/POST/PATCH a JSON body to /api/v1/PATH (e.g.\n"
               "                         patch ports/bond0 '{\"members\":[\"eth1\",\"eth2\"]}')\n"
               "  delete PATH            DELETE /api/v1/PATH\n"
               "\n"
               "Exit status: 0 on a 2xx answer, 1 on an error answer or a failed\n"
               "connection, 2 on bad usage.\n");
}

static int do_request(const char *sock, const char *method, const char *path, const char *body)
{
    long status = 0;
    char *resp = NULL;
    int ret = httpc_unix(sock, method, path, body, &status, &resp);

    if (ret) {
        fprintf(stderr, "qtctl: %s %s via '%s': %s\n", method, path, sock,
                ret == -ECONNREFUSED ? "connection refused (is the process running?)"
                                     : "request failed");
        return 1;
    }
    if (resp && *resp) {
        json_object *j = json_tokener_parse(resp);
        if (j) {
            puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY |
                                                       JSON_C_TO_STRING_SPACED |
                                                       JSON_C_TO_STRING_NOSLASHESCAPE));
            json_object_put(j);
        } else {
            puts(resp);
        }
    }
    free(resp);
    if (status < 200 || status > 299) {
        fprintf(stderr, "qtctl: %s %s: HTTP %ld\n", method, path, status);
        return 1;
    }
    return 0;
}

static int cmd_vm(const char *sock, int argc, char **argv)
{
    static const char *const actions[] = {"pause", "resume", "power-button", "shutdown"};
    char path[128];

    if (argc < 1) {
        fprintf(stderr, "qtctl vm: missing command (see --help)\n");
        return 2;
    }
    if (strcmp(argv[0], "info") == 0)
        return do_request(sock, "GET", "/api/v1/vm", NULL);
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        if (strcmp(argv[0], actions[i]) == 0) {
            snprintf(path, sizeof(path), "/api/v1/vm/%s", actions[i]);
            return do_request(sock, "PUT", path, NULL);
        }
    }
    fprintf(stderr, "qtctl vm: unknown command '%s' (see --help)\n", argv[0]);
    return 2;
}

static int cmd_card(const char *sock, int argc, char **argv)
{
    static const struct {
        const char *cmd, *method;
        int takes_body;
    } verbs[] = {{"get", "GET", 0},
                 {"put", "PUT", 1},
                 {"post", "POST", 1},
                 {"patch", "PATCH", 1},
                 {"delete", "DELETE", 0}};
    char path[512];

    if (argc < 2) {
        fprintf(stderr, "qtctl card: expected COMMAND PATH (see --help)\n");
        return 2;
    }
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (strcmp(argv[0], verbs[i].cmd) != 0)
            continue;
        if (argc > 2 + verbs[i].takes_body) {
            fprintf(stderr, "qtctl card %s: too many arguments\n", argv[0]);
            return 2;
        }
        snprintf(path, sizeof(path), "/api/v1/%s", argv[1][0] == '/' ? argv[1] + 1 : argv[1]);
        return do_request(sock, verbs[i].method, path,
                          verbs[i].takes_body && argc > 2 ? argv[2] : NULL);
    }
    fprintf(stderr, "qtctl card: unknown command '%s' (see --help)\n", argv[0]);
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"api-socket", required_argument, NULL, 's'},
                                             {"log-level", required_argument, NULL, 'l'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"version", no_argument, NULL, 'V'},
                                             {NULL, 0, NULL, 0}};
    const char *sock = NULL;
    int c;

    log_init("qtctl", LOG_LVL_WARN);
    while ((c = getopt_long(argc, argv, "+s:l:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            sock = optarg;
            break;
        case 'l':
            if (log_set_level_arg("qtctl", optarg))
                return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("qtctl %s\n", QTCTL_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    if (!sock) {
        fprintf(stderr, "qtctl: --api-socket is required\n");
        return 2;
    }
    if (strcmp(argv[optind], "vm") == 0)
        return cmd_vm(sock, argc - optind - 1, argv + optind + 1);
    if (strcmp(argv[optind], "card") == 0)
        return cmd_card(sock, argc - optind - 1, argv + optind + 1);
    fprintf(stderr, "qtctl: unknown target '%s' (expected vm or card)\n", argv[optind]);
    return 2;
}
