/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qtvmm configuration: cloud-hypervisor style flags ("--disk path=a,readonly=on")
 * and the same content as a JSON file (--config). Both feed the same per-flag
 * parsers through struct opts, so the two syntaxes cannot drift apart.
 */
#include "vmm/config.h"
#include "common/log.h"
#include "common/opts.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_VCPUS     255
#define CONFIG_MIN_MEM       (8ull << 20)
#define CONFIG_MAX_MEM       (1ull << 40)
#define CONFIG_MAX_QUEUES    64
#define CONFIG_MAX_QUEUE_SZ  32768
#define CONFIG_DEF_QUEUE_SZ  256
#define CONFIG_SERIAL_ID_MAX 20

static const char config_usage_text[] =
    "Usage: qtvmm [OPTIONS]\n"
    "  --cpus boot=N                     number of vCPUs (default 1)\n"
    "  --memory size=SIZE[,hugepages=on] guest RAM, e.g. 512M (default 512M)\n"
    "  --kernel PATH                     bzImage or PVH ELF kernel (required)\n"
    "  --initramfs PATH                  initial ramdisk\n"
    "  --cmdline STRING                  kernel command line\n"
    "  --disk path=FILE|vhost_socket=SOCK[,readonly=on][,serial=ID][,direct=on]\n"
    "         [,num_queues=N][,queue_size=N]   virtio-blk disk (repeatable)\n"
    "  --net tap=NAME|vhost_socket=SOCK[,mac=xx:xx:xx:xx:xx:xx][,num_queues=N]\n"
    "         [,queue_size=N]             virtio-net interface (repeatable)\n"
    "  --rng                             virtio-rng device\n"
    "  --serial tty|file=PATH|socket=PATH|null|off   COM1 backend (default tty)\n"
    "  --api-socket PATH                 control API (HTTP/JSON on a unix socket)\n"
    "  --config FILE                     JSON file with the same settings\n"
    "  --log-level error|warn|info|debug\n"
    "  --help, --version\n"
    "Exit status: 0 guest powered off, 1 VMM error, 2 bad usage, 3 guest reset,\n"
    "4 triple fault, 5 KVM internal/emulation error.\n";

const char *vm_config_usage(void)
{
    return config_usage_text;
}

static int config_error(char *err, size_t errlen, int ret, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int config_error(char *err, size_t errlen, int ret, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return ret;
}

static int config_set_str(char **dst, const char *src)
{
    char *s = strdup(src);

    if (!s)
        return -ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

void vm_config_init(struct vm_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->cpus_boot = 1;
    cfg->mem_size = 512ull << 20;
    cfg->serial = SERIAL_TTY;
    cfg->log_level = -1;
}

void vm_config_free(struct vm_config *cfg)
{
    free(cfg->kernel);
    free(cfg->initramfs);
    free(cfg->cmdline);
    for (int i = 0; i < cfg->n_disks; i++) {
        free(cfg->disks[i].path);
        free(cfg->disks[i].vhost_socket);
        free(cfg->disks[i].serial);
    }
    for (int i = 0; i < cfg->n_nets; i++) {
        free(cfg->nets[i].tap);
        free(cfg->nets[i].vhost_socket);
    }
    free(cfg->serial_path);
    free(cfg->api_socket);
    memset(cfg, 0, sizeof(*cfg));
}

/* Reject the first key no parser consumed. */
static int config_check_unused(struct opts *o, const char *flag, char *err, size_t errlen)
{
    const char *k = opts_first_unused(o);

    if (k)
        return config_error(err, errlen, -EINVAL, "%s: unknown key '%s'", flag, k);
    return 0;
}

/* A u64 key within [min, max]; absent keeps *out. */
static int config_get_u32(struct opts *o, const char *flag, const char *key, uint32_t min,
                          uint32_t max, uint32_t *out, char *err, size_t errlen)
{
    uint64_t v;
    int ret = opts_get_u64(o, key, &v);

    if (ret == -ENOENT)
        return 0;
    if (ret < 0 || v < min || v > max)
        return config_error(err, errlen, -EINVAL, "%s: %s='%s' must be an integer in [%u, %u]",
                            flag, key, opts_get(o, key), min, max);
    *out = (uint32_t)v;
    return 0;
}

static int config_get_bool(struct opts *o, const char *flag, const char *key, bool *out, char *err,
                           size_t errlen)
{
    int ret = opts_get_bool(o, key, out);

    if (ret == -ENOENT)
        return 0;
    if (ret < 0)
        return config_error(err, errlen, -EINVAL, "%s: %s='%s' is not on/off", flag, key,
                            opts_get(o, key));
    return 0;
}

static int config_get_str(struct opts *o, const char *flag, const char *key, char **out, char *err,
                          size_t errlen)
{
    const char *v = opts_get(o, key);

    if (!v)
        return 0;
    if (!*v)
        return config_error(err, errlen, -EINVAL, "%s: %s= needs a value", flag, key);
    return config_set_str(out, v);
}

static bool is_pow2(uint32_t v)
{
    return v && !(v & (v - 1));
}

static int config_parse_cpus(struct vm_config *cfg, struct opts *o, char *err, size_t errlen)
{
    int ret =
        config_get_u32(o, "--cpus", "boot", 1, CONFIG_MAX_VCPUS, &cfg->cpus_boot, err, errlen);

    return ret ? ret : config_check_unused(o, "--cpus", err, errlen);
}

static int config_parse_memory(struct vm_config *cfg, struct opts *o, char *err, size_t errlen)
{
    uint64_t size;
    int ret = opts_get_size(o, "size", &size);

    if (ret == 0) {
        if (size < CONFIG_MIN_MEM || size > CONFIG_MAX_MEM || size % 4096)
            return config_error(err, errlen, -EINVAL,
                                "--memory: size='%s' must be a multiple of 4K between 8M and 1T",
                                opts_get(o, "size"));
        cfg->mem_size = size;
    } else if (ret != -ENOENT) {
        return config_error(err, errlen, -EINVAL, "--memory: size='%s' is not a size",
                            opts_get(o, "size"));
    }
    ret = config_get_bool(o, "--memory", "hugepages", &cfg->hugepages, err, errlen);
    if (ret)
        return ret;
    if (cfg->hugepages && cfg->mem_size % (2ull << 20))
        return config_error(err, errlen, -EINVAL,
                            "--memory: size must be a multiple of 2M with hugepages=on");
    return config_check_unused(o, "--memory", err, errlen);
}

static int config_parse_disk(struct vm_config *cfg, struct opts *o, char *err, size_t errlen)
{
    struct disk_config d = {.num_queues = 1, .queue_size = CONFIG_DEF_QUEUE_SZ};
    int ret;

    if (cfg->n_disks == VM_MAX_DISKS)
        return config_error(err, errlen, -E2BIG, "--disk: at most %d disks", VM_MAX_DISKS);
    if ((ret = config_get_str(o, "--disk", "path", &d.path, err, errlen)) ||
        (ret = config_get_str(o, "--disk", "vhost_socket", &d.vhost_socket, err, errlen)) ||
        (ret = config_get_str(o, "--disk", "serial", &d.serial, err, errlen)) ||
        (ret = config_get_bool(o, "--disk", "readonly", &d.readonly, err, errlen)) ||
        (ret = config_get_bool(o, "--disk", "direct", &d.direct, err, errlen)) ||
        (ret = config_get_u32(o, "--disk", "num_queues", 1, CONFIG_MAX_QUEUES, &d.num_queues, err,
                              errlen)) ||
        (ret = config_get_u32(o, "--disk", "queue_size", 1, CONFIG_MAX_QUEUE_SZ, &d.queue_size, err,
                              errlen)) ||
        (ret = config_check_unused(o, "--disk", err, errlen)))
        goto fail;
    ret = -EINVAL;
    if (!d.path == !d.vhost_socket) {
        config_error(err, errlen, ret, "--disk: exactly one of path= or vhost_socket= is needed");
        goto fail;
    }
    if (!is_pow2(d.queue_size)) {
        config_error(err, errlen, ret, "--disk: queue_size=%u is not a power of two", d.queue_size);
        goto fail;
    }
    if (d.serial && strlen(d.serial) > CONFIG_SERIAL_ID_MAX) {
        config_error(err, errlen, ret, "--disk: serial='%s' is longer than %d bytes", d.serial,
                     CONFIG_SERIAL_ID_MAX);
        goto fail;
    }
    if (d.vhost_socket && d.direct) {
        config_error(err, errlen, ret, "--disk: direct=on needs path=, not vhost_socket=");
        goto fail;
    }
    cfg->disks[cfg->n_disks++] = d;
    return 0;
fail:
    free(d.path);
    free(d.vhost_socket);
    free(d.serial);
    return ret;
}

/* "52:54:00:12:34:56": six hex bytes, unicast. */
static int config_parse_mac(const char *s, uint8_t mac[6])
{
    unsigned int b[6];
    char tail;

    if (strlen(s) != 17 || sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4],
                                  &b[5], &tail) != 6)
        return -EINVAL;
    for (int i = 0; i < 17; i++)
        if ((i % 3 == 2) != (s[i] == ':'))
            return -EINVAL;
    if (b[0] & 1)
        return -EINVAL; /* multicast */
    for (int i = 0; i < 6; i++)
        mac[i] = (uint8_t)b[i];
    return 0;
}

static int config_parse_net(struct vm_config *cfg, struct opts *o, char *err, size_t errlen)
{
    struct net_config n = {.num_queues = 2, .queue_size = CONFIG_DEF_QUEUE_SZ};
    const char *mac = opts_get(o, "mac");
    int ret;

    if (cfg->n_nets == VM_MAX_NETS)
        return config_error(err, errlen, -E2BIG, "--net: at most %d interfaces", VM_MAX_NETS);
    if ((ret = config_get_str(o, "--net", "tap", &n.tap, err, errlen)) ||
        (ret = config_get_str(o, "--net", "vhost_socket", &n.vhost_socket, err, errlen)) ||
        (ret = config_get_u32(o, "--net", "num_queues", 2, CONFIG_MAX_QUEUES, &n.num_queues, err,
                              errlen)) ||
        (ret = config_get_u32(o, "--net", "queue_size", 1, CONFIG_MAX_QUEUE_SZ, &n.queue_size, err,
                              errlen)) ||
        (ret = config_check_unused(o, "--net", err, errlen)))
        goto fail;
    ret = -EINVAL;
    if (mac) {
        if (config_parse_mac(mac, n.mac) < 0) {
            config_error(err, errlen, ret, "--net: mac='%s' is not a unicast xx:xx:xx:xx:xx:xx",
                         mac);
            goto fail;
        }
        n.has_mac = true;
    }
    if (!n.tap == !n.vhost_socket) {
        config_error(err, errlen, ret, "--net: exactly one of tap= or vhost_socket= is needed");
        goto fail;
    }
    if (n.tap && strlen(n.tap) >= 16) {
        config_error(err, errlen, ret, "--net: tap='%s' is longer than 15 characters", n.tap);
        goto fail;
    }
    if (n.num_queues % 2 || !is_pow2(n.queue_size)) {
        config_error(err, errlen, ret,
                     "--net: num_queues must be even and queue_size a power of two");
        goto fail;
    }
    cfg->nets[cfg->n_nets++] = n;
    return 0;
fail:
    free(n.tap);
    free(n.vhost_socket);
    return ret;
}

static int config_parse_serial(struct vm_config *cfg, const char *s, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        enum serial_mode mode;
    } simple[] = {{"tty", SERIAL_TTY}, {"null", SERIAL_NULL}, {"off", SERIAL_OFF}};

    for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
        if (strcmp(s, simple[i].name) == 0) {
            cfg->serial = simple[i].mode;
            free(cfg->serial_path);
            cfg->serial_path = NULL;
            return 0;
        }
    }
    if (strncmp(s, "file=", 5) == 0 && s[5]) {
        cfg->serial = SERIAL_FILE;
        return config_set_str(&cfg->serial_path, s + 5);
    }
    if (strncmp(s, "socket=", 7) == 0 && s[7]) {
        cfg->serial = SERIAL_SOCKET;
        return config_set_str(&cfg->serial_path, s + 7);
    }
    return config_error(err, errlen, -EINVAL,
                        "--serial: '%s' is not tty, file=PATH, socket=PATH, null or off", s);
}

static int config_parse_log_level(struct vm_config *cfg, const char *s, char *err, size_t errlen)
{
    enum log_level lvl;

    if (log_parse_level(s, &lvl) < 0)
        return config_error(err, errlen, -EINVAL,
                            "--log-level: '%s' is not error, warn, info or debug", s);
    cfg->log_level = (int)lvl;
    return 0;
}

typedef int (*config_opts_fn)(struct vm_config *cfg, struct opts *o, char *err, size_t errlen);

static int config_apply_opts_string(struct vm_config *cfg, const char *flag, const char *s,
                                    config_opts_fn fn, char *err, size_t errlen)
{
    struct opts o;
    int ret;

    if (opts_parse(&o, s) < 0)
        return config_error(err, errlen, -EINVAL,
                            "%s: '%s' is not key=value[,key=value...] (empty or duplicate key?)",
                            flag, s);
    ret = fn(cfg, &o, err, errlen);
    opts_free(&o);
    return ret;
}

/*
 * Turn a flat JSON object into struct opts so that the flag parsers read it.
 * Scalars become strings; true/false become on/off.
 */
static int config_opts_from_json(struct opts *o, json_object *obj, const char *flag, char *err,
                                 size_t errlen)
{
    size_t need = 0, pos = 0;

    memset(o, 0, sizeof(*o));
    if (!json_object_is_type(obj, json_type_object))
        return config_error(err, errlen, -EINVAL, "config: \"%s\" must be an object", flag);
    json_object_object_foreach(obj, key, val)
    {
        json_type t = json_object_get_type(val);

        if (t == json_type_object || t == json_type_array || t == json_type_null)
            return config_error(err, errlen, -EINVAL, "config: %s.%s must be a scalar", flag, key);
        need += strlen(key) + strlen(json_object_get_string(val)) + 4;
    }
    o->buf = malloc(need + 1);
    if (!o->buf)
        return -ENOMEM;
    json_object_object_foreach(obj, k2, v2)
    {
        const char *vs = json_object_is_type(v2, json_type_boolean)
                             ? (json_object_get_boolean(v2) ? "on" : "off")
                             : json_object_get_string(v2);

        if (o->n == OPTS_MAX) {
            opts_free(o);
            return config_error(err, errlen, -EINVAL, "config: %s has too many keys", flag);
        }
        o->kv[o->n].key = strcpy(o->buf + pos, k2);
        pos += strlen(k2) + 1;
        o->kv[o->n].value = strcpy(o->buf + pos, vs);
        pos += strlen(vs) + 1;
        o->n++;
    }
    return 0;
}

static int config_apply_json_opts(struct vm_config *cfg, json_object *obj, const char *flag,
                                  config_opts_fn fn, char *err, size_t errlen)
{
    struct opts o;
    int ret = config_opts_from_json(&o, obj, flag, err, errlen);

    if (ret)
        return ret;
    ret = fn(cfg, &o, err, errlen);
    opts_free(&o);
    return ret;
}

static int config_json_string(json_object *v, const char *key, const char **out, char *err,
                              size_t errlen)
{
    if (!json_object_is_type(v, json_type_string))
        return config_error(err, errlen, -EINVAL, "config: \"%s\" must be a string", key);
    *out = json_object_get_string(v);
    return 0;
}

static int config_json_array(struct vm_config *cfg, json_object *v, const char *key,
                             config_opts_fn fn, char *err, size_t errlen)
{
    if (!json_object_is_type(v, json_type_array))
        return config_error(err, errlen, -EINVAL, "config: \"%s\" must be an array", key);
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        int ret =
            config_apply_json_opts(cfg, json_object_array_get_idx(v, i), key, fn, err, errlen);
        if (ret)
            return ret;
    }
    return 0;
}

int vm_config_parse_json(struct vm_config *cfg, json_object *root, char *err, size_t errlen)
{
    if (!json_object_is_type(root, json_type_object))
        return config_error(err, errlen, -EINVAL, "config: the document must be a JSON object");
    json_object_object_foreach(root, key, val)
    {
        const char *s = NULL;
        int ret;

        if (strcmp(key, "cpus") == 0) {
            ret = config_apply_json_opts(cfg, val, "cpus", config_parse_cpus, err, errlen);
        } else if (strcmp(key, "memory") == 0) {
            ret = config_apply_json_opts(cfg, val, "memory", config_parse_memory, err, errlen);
        } else if (strcmp(key, "disks") == 0) {
            ret = config_json_array(cfg, val, "disks", config_parse_disk, err, errlen);
        } else if (strcmp(key, "nets") == 0) {
            ret = config_json_array(cfg, val, "nets", config_parse_net, err, errlen);
        } else if (strcmp(key, "rng") == 0) {
            if (!json_object_is_type(val, json_type_boolean))
                return config_error(err, errlen, -EINVAL, "config: \"rng\" must be a boolean");
            cfg->rng = json_object_get_boolean(val);
            ret = 0;
        } else if (strcmp(key, "kernel") == 0 || strcmp(key, "initramfs") == 0 ||
                   strcmp(key, "cmdline") == 0 || strcmp(key, "api_socket") == 0 ||
                   strcmp(key, "serial") == 0 || strcmp(key, "log_level") == 0) {
            ret = config_json_string(val, key, &s, err, errlen);
            if (ret)
                return ret;
            if (strcmp(key, "kernel") == 0)
                ret = config_set_str(&cfg->kernel, s);
            else if (strcmp(key, "initramfs") == 0)
                ret = config_set_str(&cfg->initramfs, s);
            else if (strcmp(key, "cmdline") == 0)
                ret = config_set_str(&cfg->cmdline, s);
            else if (strcmp(key, "api_socket") == 0)
                ret = config_set_str(&cfg->api_socket, s);
            else if (strcmp(key, "serial") == 0)
                ret = config_parse_serial(cfg, s, err, errlen);
            else
                ret = config_parse_log_level(cfg, s, err, errlen);
        } else {
            return config_error(err, errlen, -EINVAL, "config: unknown key \"%s\"", key);
        }
        if (ret)
            return ret;
    }
    return 0;
}

int vm_config_load_file(struct vm_config *cfg, const char *path, char *err, size_t errlen)
{
    json_object *root = json_object_from_file(path);
    int ret;

    if (!root)
        return config_error(err, errlen, -EINVAL, "config '%s': cannot read or parse: %s", path,
                            json_util_get_last_err() ? json_util_get_last_err() : "unknown");
    ret = vm_config_parse_json(cfg, root, err, errlen);
    json_object_put(root);
    return ret;
}

enum {
    OPT_CPUS = 256,
    OPT_MEMORY,
    OPT_KERNEL,
    OPT_INITRAMFS,
    OPT_CMDLINE,
    OPT_DISK,
    OPT_NET,
    OPT_RNG,
    OPT_SERIAL,
    OPT_API_SOCKET,
    OPT_CONFIG,
    OPT_LOG_LEVEL,
    OPT_HELP,
    OPT_VERSION,
};

static const struct option config_long_opts[] = {
    {"cpus", required_argument, NULL, OPT_CPUS},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"kernel", required_argument, NULL, OPT_KERNEL},
    {"initramfs", required_argument, NULL, OPT_INITRAMFS},
    {"cmdline", required_argument, NULL, OPT_CMDLINE},
    {"disk", required_argument, NULL, OPT_DISK},
    {"net", required_argument, NULL, OPT_NET},
    {"rng", no_argument, NULL, OPT_RNG},
    {"serial", required_argument, NULL, OPT_SERIAL},
    {"api-socket", required_argument, NULL, OPT_API_SOCKET},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

int vm_config_parse_args(struct vm_config *cfg, int argc, char *argv[],
                         enum vm_config_action *action, char *err, size_t errlen)
{
    int c, ret = 0;

    *action = VM_CONFIG_RUN;
    optind = 0; /* GNU: full re-initialisation, so the parser can run more than once */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", config_long_opts, NULL)) != -1) {
        switch (c) {
        case OPT_CPUS:
            ret = config_apply_opts_string(cfg, "--cpus", optarg, config_parse_cpus, err, errlen);
            break;
        case OPT_MEMORY:
            ret =
                config_apply_opts_string(cfg, "--memory", optarg, config_parse_memory, err, errlen);
            break;
        case OPT_DISK:
            ret = config_apply_opts_string(cfg, "--disk", optarg, config_parse_disk, err, errlen);
            break;
        case OPT_NET:
            ret = config_apply_opts_string(cfg, "--net", optarg, config_parse_net, err, errlen);
            break;
        case OPT_KERNEL:
            ret = config_set_str(&cfg->kernel, optarg);
            break;
        case OPT_INITRAMFS:
            ret = config_set_str(&cfg->initramfs, optarg);
            break;
        case OPT_CMDLINE:
            ret = config_set_str(&cfg->cmdline, optarg);
            break;
        case OPT_RNG:
            cfg->rng = true;
            break;
        case OPT_SERIAL:
            ret = config_parse_serial(cfg, optarg, err, errlen);
            break;
        case OPT_API_SOCKET:
            ret = config_set_str(&cfg->api_socket, optarg);
            break;
        case OPT_CONFIG:
            ret = vm_config_load_file(cfg, optarg, err, errlen);
            break;
        case OPT_LOG_LEVEL:
            ret = config_parse_log_level(cfg, optarg, err, errlen);
            break;
        case OPT_HELP:
            *action = VM_CONFIG_HELP;
            return 0;
        case OPT_VERSION:
            *action = VM_CONFIG_VERSION;
            return 0;
        case ':':
            return config_error(err, errlen, -EINVAL, "%s needs a value", argv[optind - 1]);
        default:
            if (optopt)
                return config_error(err, errlen, -EINVAL, "unknown or malformed option '%s'",
                                    argv[optind - 1]);
            return config_error(err, errlen, -EINVAL, "unknown option '%s' (see --help)",
                                argv[optind - 1]);
        }
        if (ret == -ENOMEM)
            return config_error(err, errlen, ret, "out of memory");
        if (ret)
            return ret;
    }
    if (optind < argc)
        return config_error(err, errlen, -EINVAL, "unexpected argument '%s'", argv[optind]);
    return 0;
}

int vm_config_validate(const struct vm_config *cfg, char *err, size_t errlen)
{
    if (!cfg->kernel)
        return config_error(err, errlen, -EINVAL, "no --kernel given");
    if ((cfg->serial == SERIAL_FILE || cfg->serial == SERIAL_SOCKET) && !cfg->serial_path)
        return config_error(err, errlen, -EINVAL, "--serial: missing path");
    return 0;
}

static void json_add_str(json_object *o, const char *key, const char *v)
{
    if (v)
        json_object_object_add(o, key, json_object_new_string(v));
}

json_object *vm_config_to_json(const struct vm_config *cfg)
{
    static const char *const serial_names[] = {"tty", "file", "socket", "null", "off"};
    json_object *root = json_object_new_object(), *o, *arr;
    char buf[32];

    if (!root)
        return NULL;
    o = json_object_new_object();
    json_object_object_add(o, "boot", json_object_new_int64(cfg->cpus_boot));
    json_object_object_add(root, "cpus", o);
    o = json_object_new_object();
    json_object_object_add(o, "size", json_object_new_int64((int64_t)cfg->mem_size));
    json_object_object_add(o, "hugepages", json_object_new_boolean(cfg->hugepages));
    json_object_object_add(root, "memory", o);
    json_add_str(root, "kernel", cfg->kernel);
    json_add_str(root, "initramfs", cfg->initramfs);
    json_add_str(root, "cmdline", cfg->cmdline);
    arr = json_object_new_array();
    for (int i = 0; i < cfg->n_disks; i++) {
        const struct disk_config *d = &cfg->disks[i];

        o = json_object_new_object();
        json_add_str(o, "path", d->path);
        json_add_str(o, "vhost_socket", d->vhost_socket);
        json_add_str(o, "serial", d->serial);
        json_object_object_add(o, "readonly", json_object_new_boolean(d->readonly));
        json_object_object_add(o, "direct", json_object_new_boolean(d->direct));
        json_object_object_add(o, "num_queues", json_object_new_int64(d->num_queues));
        json_object_object_add(o, "queue_size", json_object_new_int64(d->queue_size));
        json_object_array_add(arr, o);
    }
    json_object_object_add(root, "disks", arr);
    arr = json_object_new_array();
    for (int i = 0; i < cfg->n_nets; i++) {
        const struct net_config *n = &cfg->nets[i];

        o = json_object_new_object();
        json_add_str(o, "tap", n->tap);
        json_add_str(o, "vhost_socket", n->vhost_socket);
        if (n->has_mac) {
            snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", n->mac[0], n->mac[1],
                     n->mac[2], n->mac[3], n->mac[4], n->mac[5]);
            json_add_str(o, "mac", buf);
        }
        json_object_object_add(o, "num_queues", json_object_new_int64(n->num_queues));
        json_object_object_add(o, "queue_size", json_object_new_int64(n->queue_size));
        json_object_array_add(arr, o);
    }
    json_object_object_add(root, "nets", arr);
    json_object_object_add(root, "rng", json_object_new_boolean(cfg->rng));
    if (cfg->serial_path) {
        char *v = NULL;

        if (asprintf(&v, "%s=%s", serial_names[cfg->serial], cfg->serial_path) >= 0) {
            json_add_str(root, "serial", v);
            free(v);
        }
    } else {
        json_add_str(root, "serial", serial_names[cfg->serial]);
    }
    json_add_str(root, "api_socket", cfg->api_socket);
    return root;
}
