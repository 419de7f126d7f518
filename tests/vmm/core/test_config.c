/* SPDX-License-Identifier: Apache-2.0 */
/* qtvmm command line and JSON configuration parser. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "vmm/config.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

static int parse(struct vm_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    enum vm_config_action act;

    vm_config_init(cfg);
    return vm_config_parse_args(cfg, argc, argv, &act, err, errlen);
}

static void test_defaults(void **state)
{
    struct vm_config cfg;
    char err[256];
    char *argv[] = {"qtvmm", "--kernel", "k.elf", NULL};

    (void)state;
    assert_int_equal(parse(&cfg, ARGC(argv), argv, err, sizeof(err)), 0);
    assert_int_equal(cfg.cpus_boot, 1);
    assert_int_equal(cfg.mem_size, 512ull << 20);
    assert_int_equal(cfg.serial, SERIAL_TTY);
    assert_false(cfg.hugepages);
    assert_string_equal(cfg.kernel, "k.elf");
    assert_int_equal(cfg.log_level, -1);
    assert_int_equal(vm_config_validate(&cfg, err, sizeof(err)), 0);
    vm_config_free(&cfg);
}

static void test_full_command_line(void **state)
{
    struct vm_config cfg;
    char err[256];
    char *argv[] = {"qtvmm",
                    "--cpus",
                    "boot=4",
                    "--memory",
                    "size=1G,hugepages=on",
                    "--kernel",
                    "/k",
                    "--initramfs",
                    "/i",
                    "--cmdline",
                    "console=ttyS0 quiet",
                    "--disk",
                    "path=/a.img,readonly=on,serial=abc,direct=on,num_queues=2,queue_size=128",
                    "--disk",
                    "vhost_socket=/run/vu.sock",
                    "--net",
                    "tap=tap0,mac=52:54:00:12:34:56",
                    "--net",
                    "vhost_socket=/run/net.sock,num_queues=4",
                    "--rng",
                    "--serial",
                    "socket=/tmp/s.sock",
                    "--api-socket",
                    "/tmp/api.sock",
                    "--log-level",
                    "debug",
                    NULL};

    (void)state;
    assert_int_equal(parse(&cfg, ARGC(argv), argv, err, sizeof(err)), 0);
    assert_int_equal(cfg.cpus_boot, 4);
    assert_int_equal(cfg.mem_size, 1ull << 30);
    assert_true(cfg.hugepages);
    assert_string_equal(cfg.initramfs, "/i");
    assert_string_equal(cfg.cmdline, "console=ttyS0 quiet");
    assert_int_equal(cfg.n_disks, 2);
    assert_string_equal(cfg.disks[0].path, "/a.img");
    assert_true(cfg.disks[0].readonly);
    assert_true(cfg.disks[0].direct);
    assert_string_equal(cfg.disks[0].serial, "abc");
    assert_int_equal(cfg.disks[0].num_queues, 2);
    assert_int_equal(cfg.disks[0].queue_size, 128);
    assert_null(cfg.disks[1].path);
    assert_string_equal(cfg.disks[1].vhost_socket, "/run/vu.sock");
    assert_int_equal(cfg.disks[1].num_queues, 1);
    assert_int_equal(cfg.n_nets, 2);
    assert_string_equal(cfg.nets[0].tap, "tap0");
    assert_true(cfg.nets[0].has_mac);
    assert_int_equal(cfg.nets[0].mac[0], 0x52);
    assert_int_equal(cfg.nets[0].mac[5], 0x56);
    assert_false(cfg.nets[1].has_mac);
    assert_int_equal(cfg.nets[1].num_queues, 4);
    assert_true(cfg.rng);
    assert_int_equal(cfg.serial, SERIAL_SOCKET);
    assert_string_equal(cfg.serial_path, "/tmp/s.sock");
    assert_string_equal(cfg.api_socket, "/tmp/api.sock");
    assert_int_equal(cfg.log_level, 3);
    vm_config_free(&cfg);
}

/* Each bad command line fails with -EINVAL and a message naming the problem. */
static void test_errors(void **state)
{
    static const struct {
        const char *flag, *value, *needle;
    } cases[] = {
        {"--cpus", "boot=0", "boot='0'"},
        {"--cpus", "boot=256", "[1, 255]"},
        {"--cpus", "boot=2,max=4", "unknown key 'max'"},
        {"--cpus", "boot=x", "boot='x'"},
        {"--memory", "size=12Q", "not a size"},
        {"--memory", "size=1M", "between 8M and 1T"},
        {"--memory", "size=513K", "multiple of 4K"},
        {"--memory", "size=9M,hugepages=on", "multiple of 2M"},
        {"--memory", "size=512M,hugepages=maybe", "hugepages='maybe'"},
        {"--memory", "size=512M,size=1G", "duplicate"},
        {"--disk", "readonly=on", "exactly one of path="},
        {"--disk", "path=a,vhost_socket=b", "exactly one of path="},
        {"--disk", "path=a,queue_size=100", "power of two"},
        {"--disk", "path=a,num_queues=0", "num_queues='0'"},
        {"--disk", "path=a,serial=123456789012345678901", "longer than 20"},
        {"--disk", "path=a,cache=none", "unknown key 'cache'"},
        {"--disk", "path=", "needs a value"},
        {"--disk", "vhost_socket=s,direct=on", "direct=on needs path="},
        {"--net", "tap=t,mac=01:00:00:00:00:01", "unicast"},
        {"--net", "tap=t,mac=52:54:00:12:34", "unicast"},
        {"--net", "tap=t,mac=52-54-00-12-34-56", "unicast"},
        {"--net", "mac=52:54:00:12:34:56", "exactly one of tap="},
        {"--net", "tap=t,num_queues=3", "even"},
        {"--net", "tap=averyveryverylongname", "longer than 15"},
        {"--serial", "pipe", "not tty"},
        {"--serial", "file=", "not tty"},
        {"--log-level", "loud", "'loud'"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct vm_config cfg;
        char err[256] = "";
        char *argv[] = {"qtvmm", (char *)cases[i].flag, (char *)cases[i].value, NULL};
        int ret = parse(&cfg, 3, argv, err, sizeof(err));

        if (ret != -EINVAL || !strstr(err, cases[i].needle))
            fail_msg("%s %s: ret %d, message '%s' lacks '%s'", cases[i].flag, cases[i].value, ret,
                     err, cases[i].needle);
        vm_config_free(&cfg);
    }
}

static void test_bad_usage(void **state)
{
    struct vm_config cfg;
    char err[256];
    char *unknown[] = {"qtvmm", "--frobnicate", NULL};
    char *missing[] = {"qtvmm", "--kernel", NULL};
    char *stray[] = {"qtvmm", "--kernel", "k", "extra", NULL};
    char *too_many[] = {
        "qtvmm",  "--disk", "path=a", "--disk", "path=a", "--disk", "path=a", "--disk", "path=a",
        "--disk", "path=a", "--disk", "path=a", "--disk", "path=a", "--disk", "path=a", "--disk",
        "path=a", "--disk", "path=a", "--disk", "path=a", "--disk", "path=a", "--disk", "path=a",
        "--disk", "path=a", "--disk", "path=a", "--disk", "path=a", "--disk", "path=a", NULL};
    char *none[] = {"qtvmm", NULL};
    enum vm_config_action act;

    (void)state;
    assert_int_equal(parse(&cfg, ARGC(unknown), unknown, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "--frobnicate"));
    vm_config_free(&cfg);
    assert_int_equal(parse(&cfg, ARGC(missing), missing, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "--kernel"));
    vm_config_free(&cfg);
    assert_int_equal(parse(&cfg, ARGC(stray), stray, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "extra"));
    vm_config_free(&cfg);
    assert_int_equal(parse(&cfg, ARGC(too_many), too_many, err, sizeof(err)), -E2BIG);
    assert_non_null(strstr(err, "at most 16"));
    assert_int_equal(cfg.n_disks, 16);
    vm_config_free(&cfg);
    /* No kernel: parsing succeeds, validation refuses. */
    assert_int_equal(parse(&cfg, ARGC(none), none, err, sizeof(err)), 0);
    assert_int_equal(vm_config_validate(&cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "--kernel"));
    vm_config_free(&cfg);

    {
        char *help[] = {"qtvmm", "--cpus", "boot=2", "--help", NULL};

        vm_config_init(&cfg);
        assert_int_equal(vm_config_parse_args(&cfg, ARGC(help), help, &act, err, sizeof(err)), 0);
        assert_int_equal(act, VM_CONFIG_HELP);
        vm_config_free(&cfg);
        assert_non_null(strstr(vm_config_usage(), "--disk"));
    }
}

static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/qtvmm-test-config-XXXXXX");
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_json_file(void **state)
{
    struct vm_config cfg;
    char err[256], arg[128];
    char *path = write_temp("{\"cpus\": {\"boot\": 2}, \"memory\": {\"size\": \"256M\"},"
                            " \"kernel\": \"/k\", \"cmdline\": \"c\","
                            " \"disks\": [{\"path\": \"/d\", \"readonly\": true}],"
                            " \"nets\": [{\"tap\": \"t0\", \"mac\": \"02:00:00:00:00:01\"}],"
                            " \"rng\": true, \"serial\": \"null\", \"log_level\": \"warn\"}");
    char *argv[] = {"qtvmm", "--config", path, "--cpus", "boot=3", "--disk", "path=/e", NULL};

    (void)state;
    assert_int_equal(parse(&cfg, ARGC(argv), argv, err, sizeof(err)), 0);
    assert_int_equal(cfg.cpus_boot, 3); /* the later flag wins */
    assert_int_equal(cfg.mem_size, 256ull << 20);
    assert_string_equal(cfg.kernel, "/k");
    assert_int_equal(cfg.n_disks, 2);
    assert_true(cfg.disks[0].readonly);
    assert_string_equal(cfg.disks[1].path, "/e");
    assert_int_equal(cfg.nets[0].mac[5], 1);
    assert_true(cfg.rng);
    assert_int_equal(cfg.serial, SERIAL_NULL);
    assert_int_equal(cfg.log_level, 1);
    vm_config_free(&cfg);
    unlink(path);
    free(path);

    static const struct {
        const char *json, *needle;
    } bad[] = {
        {"{\"cpus\": {\"boot\": 2, \"max\": 4}}", "unknown key 'max'"},
        {"{\"kernel\": 5}", "must be a string"},
        {"{\"disks\": {\"path\": \"a\"}}", "must be an array"},
        {"{\"disks\": [{\"path\": {\"x\": 1}}]}", "must be a scalar"},
        {"{\"rng\": \"yes\"}", "boolean"},
        {"{\"bogus\": 1}", "unknown key \"bogus\""},
        {"[1, 2]", "must be a JSON object"},
        {"{\"memory\": {\"size\": \"lots\"}}", "not a size"},
        {"{not json", "cannot read or parse"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *p = write_temp(bad[i].json);

        snprintf(arg, sizeof(arg), "%s", p);
        {
            char *a[] = {"qtvmm", "--config", arg, NULL};
            int ret = parse(&cfg, 3, a, err, sizeof(err));

            if (ret != -EINVAL || !strstr(err, bad[i].needle))
                fail_msg("%s: ret %d, message '%s' lacks '%s'", bad[i].json, ret, err,
                         bad[i].needle);
        }
        vm_config_free(&cfg);
        unlink(p);
        free(p);
    }
    {
        char *a[] = {"qtvmm", "--config", "/nonexistent/qtvmm.json", NULL};

        assert_int_equal(parse(&cfg, 3, a, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "/nonexistent/qtvmm.json"));
        vm_config_free(&cfg);
    }
}

/* The API's view of the configuration parses back into the same configuration. */
static void test_json_round_trip(void **state)
{
    struct vm_config a, b;
    char err[256];
    char *argv[] = {"qtvmm",
                    "--cpus",
                    "boot=2",
                    "--memory",
                    "size=64M",
                    "--kernel",
                    "/k",
                    "--disk",
                    "path=/a,serial=s1,queue_size=64",
                    "--net",
                    "tap=t1,mac=52:54:00:00:00:07",
                    "--serial",
                    "file=/tmp/x.log",
                    NULL};
    json_object *j;

    (void)state;
    assert_int_equal(parse(&a, ARGC(argv), argv, err, sizeof(err)), 0);
    j = vm_config_to_json(&a);
    assert_non_null(j);
    vm_config_init(&b);
    assert_int_equal(vm_config_parse_json(&b, j, err, sizeof(err)), 0);
    assert_int_equal(b.cpus_boot, 2);
    assert_int_equal(b.mem_size, 64ull << 20);
    assert_string_equal(b.disks[0].serial, "s1");
    assert_int_equal(b.disks[0].queue_size, 64);
    assert_int_equal(b.nets[0].mac[5], 7);
    assert_int_equal(b.serial, SERIAL_FILE);
    assert_string_equal(b.serial_path, "/tmp/x.log");
    json_object_put(j);
    vm_config_free(&a);
    vm_config_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),  cmocka_unit_test(test_full_command_line),
        cmocka_unit_test(test_errors),    cmocka_unit_test(test_bad_usage),
        cmocka_unit_test(test_json_file), cmocka_unit_test(test_json_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
