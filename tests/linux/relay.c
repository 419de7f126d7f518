/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lab-relay: runs inside the Linux lab's L1 guest. It starts the L2 VMM,
 * relays the L2 console (the VMM's stdout and stderr) line by line with a
 * prefix, keeps a copy in a log file, enforces a time limit and measures,
 * with CLOCK_MONOTONIC, the time from the VMM's start to the first console
 * line that contains a marker (the L2 init's first line).
 *
 *   lab-relay [-t SECONDS] [-a SECONDS] [-p PREFIX] [-m MARKER] [-o LOGFILE] -- VMM ARGS...
 *
 * -t is the limit for the whole run (default 120 s); -a, when given, also
 * limits the time after the marker line appeared (a guest whose init hangs
 * is cut short however long its boot took). Both count as a timeout.
 *
 * When it is done it prints one summary line:
 *   LAB-L1 relay exit=N signal=N timeout=0|1 panic=0|1 init_ms=N total_ms=N stuck=0|1
 * init_ms is -1 when the marker never appeared. Its exit status is the VMM's
 * exit status, 124 on timeout, 128+N when the VMM died of signal N, 125 when
 * the VMM survived SIGKILL for 10 s (stuck in the kernel; its /proc wchan and
 * stack are printed) -- the relay never waits forever.
 *
 * A "Kernel panic - not syncing" line on the L2 console gives the VMM a few
 * seconds of grace (to print the trace and exit on its own) before it is
 * killed: a panicked guest that reboots or halts must never hang the lab.
 *
 * This is built statically by tests/linux/lab.py and copied into L1's
 * initramfs, which has no C library of its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RELAY_LINE_MAX       4096
#define RELAY_PANIC_GRACE_MS 3000
#define RELAY_KILL_WAIT_MS   10000

struct relay {
    const char *prefix;
    const char *marker;
    FILE *log;
    int64_t t0_ms;
    int64_t init_ms;
    int64_t panic_at_ms;
    char line[RELAY_LINE_MAX];
    size_t len;
};

static int64_t relay_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void relay_emit_line(struct relay *r)
{
    int64_t now = relay_now_ms();

    r->line[r->len] = '\0';
    if (r->len > 0 && r->line[r->len - 1] == '\r')
        r->line[--r->len] = '\0';
    if (r->init_ms < 0 && r->marker && strstr(r->line, r->marker))
        r->init_ms = now - r->t0_ms;
    if (r->panic_at_ms < 0 && strstr(r->line, "Kernel panic - not syncing"))
        r->panic_at_ms = now;
    printf("%s%s\n", r->prefix, r->line);
    fflush(stdout);
    if (r->log) {
        fprintf(r->log, "%s\n", r->line);
        fflush(r->log);
    }
    r->len = 0;
}

static void relay_feed(struct relay *r, const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || r->len == sizeof(r->line) - 1) {
            relay_emit_line(r);
            if (buf[i] == '\n')
                continue;
        }
        r->line[r->len++] = buf[i];
    }
}

/* Wait for PID until DEADLINE_MS (monotonic); 0 when reaped. */
static int relay_reap(pid_t pid, int64_t deadline_ms, int *status)
{
    for (;;) {
        pid_t w = waitpid(pid, status, WNOHANG);

        if (w == pid)
            return 0;
        if (w < 0 && errno != EINTR)
            return -errno;
        if (relay_now_ms() >= deadline_ms)
            return -ETIMEDOUT;
        usleep(20 * 1000);
    }
}

/* Print where an unkillable VMM is stuck: its state, wait channel and
 * kernel stack, as far as /proc tells. */
static void relay_report_stuck(pid_t pid)
{
    static const char *const files[] = {"wchan", "stack", "status"};
    char path[64], buf[2048];

    printf("lab-relay: VMM pid %d did not exit %d ms after SIGKILL\n", (int)pid,
           RELAY_KILL_WAIT_MS);
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, files[i]);
        int fd = open(path, O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

        if (fd >= 0)
            close(fd);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        printf("lab-relay: %s:\n%s%s", path, buf, buf[n - 1] == '\n' ? "" : "\n");
    }
    fflush(stdout);
}

/* A time limit in whole seconds, 1..86400. */
static int relay_parse_seconds(const char *arg, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno || end == arg || *end != '\0' || v <= 0 || v > 86400) {
        fprintf(stderr, "lab-relay: bad time limit '%s' (seconds, 1..86400)\n", arg);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

static void relay_usage(void)
{
    fprintf(stderr, "usage: lab-relay [-t SECONDS] [-a SECONDS] [-p PREFIX] [-m MARKER] "
                    "[-o LOGFILE] -- VMM ARGS...\n");
}

static pid_t relay_spawn(char **argv, int *out_fd)
{
    int fds[2];
    pid_t pid;

    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    pid = fork();
    if (pid < 0) {
        int err = -errno;

        close(fds[0]);
        close(fds[1]);
        return err;
    }
    if (pid == 0) {
        int null_fd = open("/dev/null", O_RDONLY);

        setpgid(0, 0); /* its own group: a kill reaches its children too */

        if (null_fd >= 0)
            dup2(null_fd, STDIN_FILENO);
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        execvp(argv[0], argv);
        fprintf(stderr, "lab-relay: cannot execute '%s': %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    *out_fd = fds[0];
    return pid;
}

int main(int argc, char **argv)
{
    struct relay r = {.prefix = "", .init_ms = -1, .panic_at_ms = -1};
    const char *log_path = NULL;
    long timeout_s = 120, after_marker_s = 0;
    bool timed_out = false, killed = false;
    int status = 0, fd = -1, opt, rc;
    pid_t pid;

    while ((opt = getopt(argc, argv, "+t:a:p:m:o:")) != -1) {
        switch (opt) {
        case 't':
            if (relay_parse_seconds(optarg, &timeout_s) < 0)
                return 2;
            break;
        case 'a':
            if (relay_parse_seconds(optarg, &after_marker_s) < 0)
                return 2;
            break;
        case 'p':
            r.prefix = optarg;
            break;
        case 'm':
            r.marker = optarg;
            break;
        case 'o':
            log_path = optarg;
            break;
        default:
            relay_usage();
            return 2;
        }
    }
    if (optind >= argc) {
        relay_usage();
        return 2;
    }
    if (log_path) {
        r.log = fopen(log_path, "w");
        if (!r.log) {
            fprintf(stderr, "lab-relay: log file '%s': %s\n", log_path, strerror(errno));
            return 2;
        }
    }

    r.t0_ms = relay_now_ms();
    pid = relay_spawn(&argv[optind], &fd);
    if (pid < 0) {
        fprintf(stderr, "lab-relay: cannot start '%s': %s\n", argv[optind], strerror((int)-pid));
        return 2;
    }

    for (;;) {
        int64_t now = relay_now_ms();
        int64_t deadline = r.t0_ms + timeout_s * 1000;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        char buf[4096];
        ssize_t n;

        if (after_marker_s > 0 && r.init_ms >= 0 &&
            r.t0_ms + r.init_ms + after_marker_s * 1000 < deadline)
            deadline = r.t0_ms + r.init_ms + after_marker_s * 1000;
        if (r.panic_at_ms >= 0 && r.panic_at_ms + RELAY_PANIC_GRACE_MS < deadline)
            deadline = r.panic_at_ms + RELAY_PANIC_GRACE_MS;
        if (now >= deadline) {
            timed_out = r.panic_at_ms < 0;
            killed = true;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            break;
        }
        rc = poll(&pfd, 1, (int)(deadline - now));
        if (rc < 0 && errno != EINTR)
            break;
        if (rc <= 0)
            continue;
        n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the VMM closed its output: it is exiting */
        relay_feed(&r, buf, (size_t)n);
    }
    if (r.len > 0)
        relay_emit_line(&r);
    close(fd);

    /* The VMM closed its output; give it the rest of its time to exit. */
    bool stuck = false;

    if (!killed) {
        int64_t until = r.t0_ms + timeout_s * 1000;

        if (r.panic_at_ms >= 0 && r.panic_at_ms + RELAY_PANIC_GRACE_MS < until)
            until = r.panic_at_ms + RELAY_PANIC_GRACE_MS;
        if (relay_reap(pid, until, &status) < 0) {
            timed_out = r.panic_at_ms < 0;
            killed = true;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
        }
    }
    if (killed && relay_reap(pid, relay_now_ms() + RELAY_KILL_WAIT_MS, &status) < 0) {
        /* SIGKILL did not end it: it is stuck in the kernel (D state) */
        stuck = true;
        relay_report_stuck(pid);
    }
    int64_t total = relay_now_ms() - r.t0_ms;
    int code = stuck ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    int sig = !stuck && WIFSIGNALED(status) ? WTERMSIG(status) : 0;

    printf("LAB-L1 relay exit=%d signal=%d timeout=%d panic=%d init_ms=%lld "
           "total_ms=%lld stuck=%d\n",
           code, sig, timed_out ? 1 : 0, r.panic_at_ms >= 0 ? 1 : 0, (long long)r.init_ms,
           (long long)total, stuck ? 1 : 0);
    fflush(stdout);
    if (r.log)
        fclose(r.log);
    if (stuck)
        return 125;
    if (timed_out)
        return 124;
    if (sig)
        return 128 + sig;
    return code;
}
