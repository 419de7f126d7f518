/* SPDX-License-Identifier: Apache-2.0 */
/* qtcard: the offload-card daemon (vhost-user backends, virtual switch, control API). */
#include "card/card.h"
#include "common/http.h"
#include "common/log.h"
#include "common/opts.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct card g_card;

static void usage(FILE *f)
{
    fprintf(f, "Usage: qtcard --api-socket PATH [OPTIONS]\n"
               "\n"
               "The qingtian offload-card daemon: vhost-user-net backends, a poll-mode\n"
               "virtual switch and its HTTP/JSON control API on a unix socket.\n"
               "\n"
               "Options:\n"
               "  -a, --api-socket PATH  control API socket (required)\n"
               "  -d, --socket-dir DIR   where VM port sockets are created (default .)\n"
               "  -c, --cores N          poll-mode worker threads (default 1)\n"
               "  -s, --state-file PATH  persist configuration here; restored at start\n"
               "  -i, --idle-us N        busy-poll this long without traffic before a\n"
               "                         worker sleeps on the kick eventfds (default 200)\n"
               "  -C, --cpus LIST        pin worker i to the i-th CPU of LIST (e.g. 2,3)\n"
               "  -l, --log-level LEVEL  error|warn|info|debug (default info)\n"
               "  -h, --help             show this help\n"
               "  -V, --version          show the version\n"
               "\n"
               "SIGTERM or SIGINT stops the daemon cleanly; the state file keeps the\n"
               "configuration and server-mode sockets come back on restart.\n");
}

static void on_signal(int sig)
{
    (void)sig;
    card_stop(&g_card);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"api-socket", required_argument, NULL, 'a'}, {"socket-dir", required_argument, NULL, 'd'},
        {"cores", required_argument, NULL, 'c'},      {"state-file", required_argument, NULL, 's'},
        {"idle-us", required_argument, NULL, 'i'},    {"cpus", required_argument, NULL, 'C'},
        {"log-level", required_argument, NULL, 'l'},  {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},          {NULL, 0, NULL, 0}};
    struct card_config cfg = {.socket_dir = ".", .cores = 1, .idle_us = 200};
    struct httpd *api = NULL;
    struct sigaction sa;
    uint64_t v;
    int opt, ret;

    log_init("qtcard", LOG_LVL_INFO);
    while ((opt = getopt_long(argc, argv, "a:d:c:s:i:C:l:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'a':
            cfg.api_socket = optarg;
            break;
        case 'd':
            cfg.socket_dir = optarg;
            break;
        case 'c':
            if (parse_u64(optarg, &v) || v == 0 || v > CARD_MAX_WORKERS) {
                fprintf(stderr, "qtcard: --cores '%s': expected 1..%d\n", optarg, CARD_MAX_WORKERS);
                return 2;
            }
            cfg.cores = (unsigned)v;
            break;
        case 's':
            cfg.state_file = optarg;
            break;
        case 'i':
            if (parse_u64(optarg, &v) || v == 0 || v > 1000000) {
                fprintf(stderr, "qtcard: --idle-us '%s': expected 1..1000000\n", optarg);
                return 2;
            }
            cfg.idle_us = (unsigned)v;
            break;
        case 'C': {
            char *save = NULL, *tok, *list = strdup(optarg);
            cfg.n_cpus = 0;
            for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (parse_u64(tok, &v) || v >= 4096 || cfg.n_cpus == CARD_MAX_WORKERS) {
                    fprintf(stderr, "qtcard: --cpus '%s': expected a list such as 2,3\n", optarg);
                    free(list);
                    return 2;
                }
                cfg.cpus[cfg.n_cpus++] = (int)v;
            }
            free(list);
            break;
        }
        case 'l':
            if (log_set_level_arg("qtcard", optarg))
                return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("qtcard %s\n", QT_CARD_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || !cfg.api_socket) {
        fprintf(stderr, "qtcard: %s\n",
                optind != argc ? "unexpected argument" : "--api-socket is required");
        usage(stderr);
        return 2;
    }
    {
        struct stat st;
        if (stat(cfg.socket_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "qtcard: --socket-dir '%s' is not a directory\n", cfg.socket_dir);
            return 2;
        }
    }
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    ret = card_init(&g_card, &cfg);
    if (ret) {
        log_err("card: initialisation failed: %s", strerror(-ret));
        return 1;
    }
    ret = card_start_workers(&g_card);
    if (ret) {
        card_destroy(&g_card);
        return 1;
    }
    if (card_load_state(&g_card))
        log_warn("state file '%s': some objects could not be restored (see above)", cfg.state_file);
    ret = card_api_start(&g_card, &api);
    if (ret) {
        log_err("control API on '%s': %s", cfg.api_socket, strerror(-ret));
        card_destroy(&g_card);
        return 1;
    }
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    log_info("qtcard %s: %u worker(s), API on '%s', sockets in '%s'", QT_CARD_VERSION, cfg.cores,
             cfg.api_socket, cfg.socket_dir);
    ret = card_run_control(&g_card);
    log_info("shutting down");
    httpd_stop(api);
    card_destroy(&g_card);
    log_info("stopped");
    return ret ? 1 : 0;
}
