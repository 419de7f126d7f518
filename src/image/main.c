/* SPDX-License-Identifier: Apache-2.0 */
/* qtimg: disk image tool with qemu-img's option names. */
#include "common/log.h"
#include "common/opts.h"
#include "image/qtimg.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1u << 20)

struct secret {
    char id[64];
    char *data;
};

/* --object secret,id=X,data=Y (qemu syntax); at most a few per command. */
struct cli {
    struct secret secrets[4];
    int nsecrets;
};

static void usage_main(void)
{
    printf("usage: qtimg <command> [options]\n"
           "commands: create info check map compare convert resize snapshot commit rebase\n"
           "          amend bench io\n"
           "'qtimg <command> --help' describes each command.\n");
}

static int parse_object(struct cli *cli, const char *arg)
{
    struct opts o = {0};
    const char *id, *data;
    int ret = opts_parse(&o, arg);

    if (ret < 0 || !opts_get(&o, "secret")) {
        fprintf(stderr, "qtimg: --object: only 'secret,id=...,data=...' is supported\n");
        opts_free(&o);
        return -EINVAL;
    }
    id = opts_get(&o, "id");
    data = opts_get(&o, "data");
    if (!id || !data || cli->nsecrets >= 4) {
        fprintf(stderr, "qtimg: --object secret needs id= and data=\n");
        opts_free(&o);
        return -EINVAL;
    }
    snprintf(cli->secrets[cli->nsecrets].id, sizeof(cli->secrets[0].id), "%s", id);
    cli->secrets[cli->nsecrets].data = strdup(data);
    cli->nsecrets++;
    opts_free(&o);
    return 0;
}

static const char *cli_secret(struct cli *cli, const char *id)
{
    for (int i = 0; i < cli->nsecrets; i++)
        if (!strcmp(cli->secrets[i].id, id))
            return cli->secrets[i].data;
    return NULL;
}

/* Opens an image; the first --object secret is the passphrase of encrypted images. */
static int open_image(struct cli *cli, const char *path, const char *fmt, uint32_t flags,
                      struct qtimg **out)
{
    struct qtimg_open_opts o = {.flags = flags,
                                .key_secret = cli->nsecrets ? cli->secrets[0].data : NULL};
    if (fmt && qtimg_fmt_parse(fmt, &o.fmt) < 0) {
        fprintf(stderr, "qtimg: unknown format '%s'\n", fmt);
        return -EINVAL;
    }
    return qtimg_open(path, &o, out);
}

static int parse_size_arg(const char *s, uint64_t *out)
{
    if (parse_size(s, out) < 0) {
        fprintf(stderr, "qtimg: invalid size '%s'\n", s);
        return -EINVAL;
    }
    return 0;
}

/* -o key=value list shared by create, convert and amend */
static int parse_create_opts(struct cli *cli, const char *s, struct qtimg_create_opts *co,
                             char **bfile, char **bfmt)
{
    struct opts o = {0};
    const char *v;
    uint64_t u;
    bool b;
    int ret = opts_parse(&o, s);

    if (ret < 0) {
        fprintf(stderr, "qtimg: invalid -o '%s'\n", s);
        return ret;
    }
    if (opts_get_size(&o, "cluster_size", &u) == 0)
        co->cluster_size = (uint32_t)u;
    if (opts_get_u64(&o, "refcount_bits", &u) == 0)
        co->refcount_bits = (uint32_t)u;
    if (opts_get_size(&o, "size", &u) == 0)
        co->size = u;
    if (opts_get_bool(&o, "lazy_refcounts", &b) == 0)
        co->lazy_refcounts = b;
    if (opts_get_bool(&o, "extended_l2", &b) == 0)
        co->extended_l2 = b;
    if ((v = opts_get(&o, "compat"))) {
        if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
            co->compat = 3;
        else if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
            co->compat = 2;
        else {
            fprintf(stderr, "qtimg: compat must be 0.10 or 1.1\n");
            ret = -EINVAL;
        }
    }
    if ((v = opts_get(&o, "backing_file")))
        *bfile = strdup(v);
    if ((v = opts_get(&o, "backing_fmt")))
        *bfmt = strdup(v);
    if ((v = opts_get(&o, "encrypt.format"))) {
        if (strcmp(v, "luks")) {
            fprintf(stderr, "qtimg: encrypt.format '%s' not supported (only luks)\n", v);
            ret = -EINVAL;
        }
        co->encrypt_format = "luks";
    }
    if (opts_get_u64(&o, "encrypt.iter-time", &u) == 0)
        co->encrypt_iter_time_ms = (uint32_t)u;
    if ((v = opts_get(&o, "encrypt.key-secret"))) {
        co->key_secret = cli_secret(cli, v);
        if (!co->key_secret) {
            fprintf(stderr, "qtimg: no secret with id '%s' (use --object secret,id=...)\n", v);
            ret = -EINVAL;
        }
    }
    opts_get(&o, "preallocation"); /* only 'off' */
    opts_get(&o, "compression_type");
    if (ret == 0 && (v = opts_first_unused(&o))) {
        fprintf(stderr, "qtimg: unknown option '%s'\n", v);
        ret = -EINVAL;
    }
    opts_free(&o);
    return ret;
}

/* ---- create ---- */

static int cmd_create(struct cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {
        {"help", no_argument, 0, 'h'}, {"object", required_argument, 0, 256}, {0, 0, 0, 0}};
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_RAW};
    char *bfile = NULL, *bfmt = NULL;
    const char *fmt = "raw";
    bool quiet = false;
    int c, ret;

    while ((c = getopt_long(argc, argv, "hf:o:b:F:uq", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'o':
            if (parse_create_opts(cli, optarg, &co, &bfile, &bfmt) < 0)
                return 1;
            break;
        case 'b':
            bfile = strdup(optarg);
            break;
        case 'F':
            bfmt = strdup(optarg);
            break;
        case 'u':
            break;
        case 'q':
            quiet = true;
            break;
        case 256:
            if (parse_object(cli, optarg) < 0)
                return 1;
            break;
        default:
            printf("usage: qtimg create [-f fmt] [-o options] [-b backing_file [-F backing_fmt]] "
                   "[--object secret,id=ID,data=PASS] filename [size]\n"
                   "  -o cluster_size=N,refcount_bits=N,compat=0.10|1.1,lazy_refcounts=on|off,\n"
                   "     extended_l2=on|off,backing_file=F,backing_fmt=FMT,encrypt.format=luks,\n"
                   "     encrypt.key-secret=ID\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "qtimg create: missing filename\n");
        return 1;
    }
    if (qtimg_fmt_parse(fmt, &co.fmt) < 0) {
        fprintf(stderr, "qtimg create: unknown format '%s'\n", fmt);
        return 1;
    }
    if (optind + 1 < argc && parse_size_arg(argv[optind + 1], &co.size) < 0)
        return 1;
    if (optind + 1 >= argc && !bfile && !co.size) {
        fprintf(stderr, "qtimg create: size required without a backing file\n");
        return 1;
    }
    co.backing_file = bfile;
    co.backing_fmt = bfmt;
    if (!quiet && co.size)
        printf("Formatting '%s', fmt=%s size=%" PRIu64 "\n", argv[optind], fmt, co.size);
    else if (!quiet)
        printf("Formatting '%s', fmt=%s backing_file=%s (size of the backing file)\n", argv[optind],
               fmt, bfile);
    ret = qtimg_create(argv[optind], &co);
    free(bfile);
    free(bfmt);
    if (ret < 0) {
        fprintf(stderr, "qtimg create: %s: %s\n", argv[optind], strerror(-ret));
        return 1;
    }
    return 0;
}

/* ---- info ---- */

static json_object *info_json(struct qtimg *img)
{
    struct qtimg_info in;
    json_object *o = json_object_new_object();
    struct qtimg_snapshot *sn = NULL;
    int nsn = 0;

    qtimg_get_info(img, &in);
    json_object_object_add(o, "virtual-size", json_object_new_int64((int64_t)in.virtual_size));
    json_object_object_add(o, "filename", json_object_new_string(qtimg_path(img)));
    if (in.cluster_size)
        json_object_object_add(o, "cluster-size", json_object_new_int64(in.cluster_size));
    json_object_object_add(o, "format", json_object_new_string(qtimg_fmt_name(in.fmt)));
    json_object_object_add(o, "actual-size", json_object_new_int64((int64_t)in.actual_size));
    if (in.has_backing) {
        json_object_object_add(o, "backing-filename", json_object_new_string(in.backing_file));
        if (qtimg_backing(img))
            json_object_object_add(o, "full-backing-filename",
                                   json_object_new_string(qtimg_path(qtimg_backing(img))));
        if (in.backing_fmt[0])
            json_object_object_add(o, "backing-filename-format",
                                   json_object_new_string(in.backing_fmt));
    }
    if (in.fmt == QTIMG_FMT_QCOW2) {
        json_object *fs = json_object_new_object(), *d = json_object_new_object();
        json_object_object_add(fs, "type", json_object_new_string("qcow2"));
        json_object_object_add(d, "compat",
                               json_object_new_string(in.version >= 3 ? "1.1" : "0.10"));
        json_object_object_add(d, "compression-type", json_object_new_string("zlib"));
        if (in.version >= 3)
            json_object_object_add(d, "lazy-refcounts", json_object_new_boolean(in.lazy_refcounts));
        json_object_object_add(d, "refcount-bits", json_object_new_int(in.refcount_bits));
        if (in.version >= 3) {
            json_object_object_add(d, "corrupt", json_object_new_boolean(in.corrupt));
            json_object_object_add(d, "extended-l2", json_object_new_boolean(in.extended_l2));
        }
        if (in.encrypted) {
            json_object *e = json_object_new_object();
            json_object_object_add(e, "format", json_object_new_string("luks"));
            json_object_object_add(d, "encrypt", e);
        }
        json_object_object_add(fs, "data", d);
        json_object_object_add(o, "format-specific", fs);
        if (in.encrypted)
            json_object_object_add(o, "encrypted", json_object_new_boolean(true));
        if (qtimg_snapshot_list(img, &sn, &nsn) == 0 && nsn > 0) {
            json_object *a = json_object_new_array();
            for (int i = 0; i < nsn; i++) {
                json_object *s = json_object_new_object();
                json_object_object_add(
                    s, "icount",
                    json_object_new_int64(sn[i].icount == UINT64_MAX ? 0 : (int64_t)sn[i].icount));
                json_object_object_add(
                    s, "vm-clock-nsec",
                    json_object_new_int64((int64_t)(sn[i].vm_clock_nsec % 1000000000)));
                json_object_object_add(s, "name", json_object_new_string(sn[i].name));
                json_object_object_add(s, "date-sec", json_object_new_int64(sn[i].date_sec));
                json_object_object_add(s, "date-nsec", json_object_new_int64(sn[i].date_nsec));
                json_object_object_add(
                    s, "vm-clock-sec",
                    json_object_new_int64((int64_t)(sn[i].vm_clock_nsec / 1000000000)));
                json_object_object_add(s, "id", json_object_new_string(sn[i].id));
                json_object_object_add(s, "vm-state-size",
                                       json_object_new_int64((int64_t)sn[i].vm_state_size));
                json_object_array_add(a, s);
            }
            json_object_object_add(o, "snapshots", a);
        }
        free(sn);
    }
    json_object_object_add(o, "dirty-flag", json_object_new_boolean(in.dirty));
    return o;
}

static void human_size(uint64_t v, char *buf, size_t len)
{
    static const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double d = (double)v;
    int i = 0;
    while (d >= 1024 && i < 5) {
        d /= 1024;
        i++;
    }
    if (i == 0)
        snprintf(buf, len, "%" PRIu64 " B", v);
    else
        snprintf(buf, len, "%.3g %s", d, u[i]);
}

static void print_snapshots(struct qtimg *img)
{
    struct qtimg_snapshot *sn = NULL;
    int n = 0;

    if (qtimg_snapshot_list(img, &sn, &n) < 0)
        return;
    printf("ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n");
    for (int i = 0; i < n; i++) {
        char date[64], vs[32];
        time_t t = sn[i].date_sec;
        struct tm tm;
        uint64_t secs = sn[i].vm_clock_nsec / 1000000000;
        localtime_r(&t, &tm);
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
        human_size(sn[i].vm_state_size, vs, sizeof(vs));
        printf("%-9s %-17s %7s %s %02" PRIu64 ":%02" PRIu64 ":%02" PRIu64 ".%03" PRIu64
               " %10" PRIu64 "\n",
               sn[i].id, sn[i].name, vs, date, secs / 3600, (secs / 60) % 60, secs % 60,
               (sn[i].vm_clock_nsec / 1000000) % 1000,
               sn[i].icount == UINT64_MAX ? 0 : sn[i].icount);
    }
    free(sn);
}

static int cmd_info(struct cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {
        {"help", no_argument, 0, 'h'},          {"output", required_argument, 0, 'o'},
        {"backing-chain", no_argument, 0, 'B'}, {"object", required_argument, 0, 256},
        {"force-share", no_argument, 0, 'U'},   {0, 0, 0, 0}};
    const char *fmt = NULL, *output = "human";
    bool chain = false;
    struct qtimg *img;
    int c, ret;

    while ((c = getopt_long(argc, argv, "hf:U", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        case 'B':
            chain = true;
            break;
        case 'U':
            break;
        case 256:
            if (parse_object(cli, optarg) < 0)
                return 1;
            break;
        default:
            printf("usage: qtimg info [-f fmt] [--output human|json] [--backing-chain] filename\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "qtimg info: missing filename\n");
        return 1;
    }
    ret = open_image(cli, argv[optind], fmt, QTIMG_O_RDONLY | QTIMG_O_CHECK, &img);
    if (ret < 0) {
        fprintf(stderr, "qtimg info: cannot open '%s': %s\n", argv[optind], strerror(-ret));
        return 1;
    }
    if (!strcmp(output, "json")) {
        if (chain) {
            json_object *a = json_object_new_array();
            for (struct qtimg *i = img; i; i = qtimg_backing(i))
                json_object_array_add(a, info_json(i));
            printf("%s\n", json_object_to_json_string_ext(a, JSON_C_TO_STRING_PRETTY |
                                                                 JSON_C_TO_STRING_NOSLASHESCAPE |
                                                                 JSON_C_TO_STRING_SPACED));
            json_object_put(a);
        } else {
            json_object *o = info_json(img);
            printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                                 JSON_C_TO_STRING_NOSLASHESCAPE |
                                                                 JSON_C_TO_STRING_SPACED));
            json_object_put(o);
        }
    } else {
        for (struct qtimg *i = img; i; i = chain ? qtimg_backing(i) : NULL) {
            struct qtimg_info in;
            char vs[32], as[32];
            qtimg_get_info(i, &in);
            human_size(in.virtual_size, vs, sizeof(vs));
            human_size(in.actual_size, as, sizeof(as));
            printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRIu64
                   " bytes)\ndisk size: %s\n",
                   qtimg_path(i), qtimg_fmt_name(in.fmt), vs, in.virtual_size, as);
            if (in.cluster_size)
                printf("cluster_size: %u\n", in.cluster_size);
            if (in.has_backing) {
                printf("backing file: %s\n", in.backing_file);
                if (in.backing_fmt[0])
                    printf("backing file format: %s\n", in.backing_fmt);
            }
            if (in.nb_snapshots) {
                printf("Snapshot list:\n");
                print_snapshots(i);
            }
            if (in.fmt == QTIMG_FMT_QCOW2) {
                printf("Format specific information:\n    compat: %s\n",
                       in.version >= 3 ? "1.1" : "0.10");
                if (in.version >= 3)
                    printf("    compression type: zlib\n    lazy refcounts: %s\n",
                           in.lazy_refcounts ? "true" : "false");
                printf("    refcount bits: %u\n    corrupt: %s\n    extended l2: %s\n",
                       in.refcount_bits, in.corrupt ? "true" : "false",
                       in.extended_l2 ? "true" : "false");
                if (in.encrypted)
                    printf("    encrypt:\n        format: luks\n");
            }
            if (chain && qtimg_backing(i))
                printf("\n");
        }
    }
    qtimg_close(img);
    return 0;
}

/* ---- check ---- */

static int cmd_check(struct cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {{"help", no_argument, 0, 'h'},
                                       {"output", required_argument, 0, 'o'},
                                       {"object", required_argument, 0, 256},
                                       {0, 0, 0, 0}};
    const char *fmt = NULL, *output = "human";
    struct qtimg_check_result r;
    uint32_t fix = 0;
    struct qtimg *img;
    bool quiet = false;
    int c, ret;

    while ((c = getopt_long(argc, argv, "hf:r:qU", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'r':
            if (!strcmp(optarg, "leaks"))
                fix = QTIMG_CHECK_FIX_LEAKS;
            else if (!strcmp(optarg, "all"))
                fix = QTIMG_CHECK_FIX_LEAKS | QTIMG_CHECK_FIX_ERRORS;
            else {
                fprintf(stderr, "qtimg check: -r takes 'leaks' or 'all'\n");
                return 1;
            }
            break;
        case 'o':
            output = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case 'U':
            break;
        case 256:
            if (parse_object(cli, optarg) < 0)
                return 1;
            break;
        default:
            printf("usage: qtimg check [-f fmt] [-r leaks|all] [--output human|json] filename\n"
                   "exit status: 0 clean, 1 check failed, 2 corruptions, 3 leaks only\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "qtimg check: missing filename\n");
        return 1;
    }
    ret = open_image(cli, argv[optind], fmt,
                     QTIMG_O_NO_BACKING | QTIMG_O_CHECK | (fix ? 0 : QTIMG_O_RDONLY), &img);
    if (ret < 0) {
        fprintf(stderr, "qtimg check: cannot open '%s': %s\n", argv[optind], strerror(-ret));
        return 1;
    }
    ret = qtimg_check(img, fix, &r);
    if (ret == -ENOTSUP) {
        fprintf(stderr, "qtimg: This image format does not support checks\n");
        qtimg_close(img);
        return 63;
    }
    if (ret < 0) {
        fprintf(stderr, "qtimg check: '%s': check failed: %s\n", argv[optind], strerror(-ret));
        qtimg_close(img);
        return 1;
    }
    if (!strcmp(output, "json")) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "image-end-offset",
                               json_object_new_int64((int64_t)r.image_end_offset));
        json_object_object_add(o, "total-clusters",
                               json_object_new_int64((int64_t)r.total_clusters));
        json_object_object_add(o, "check-errors", json_object_new_int(r.check_errors));
        if (r.corruptions)
            json_object_object_add(o, "corruptions", json_object_new_int64((int64_t)r.corruptions));
        if (r.leaks)
            json_object_object_add(o, "leaks", json_object_new_int64((int64_t)r.leaks));
        if (r.leaks_fixed)
            json_object_object_add(o, "leaks-fixed", json_object_new_int64((int64_t)r.leaks_fixed));
        if (r.corruptions_fixed)
            json_object_object_add(o, "corruptions-fixed",
                                   json_object_new_int64((int64_t)r.corruptions_fixed));
        json_object_object_add(o, "allocated-clusters",
                               json_object_new_int64((int64_t)r.allocated_clusters));
        json_object_object_add(o, "filename", json_object_new_string(argv[optind]));
        json_object_object_add(o, "format", json_object_new_string("qcow2"));
        if (r.compressed_clusters)
            json_object_object_add(o, "compressed-clusters",
                                   json_object_new_int64((int64_t)r.compressed_clusters));
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE |
                                                             JSON_C_TO_STRING_SPACED));
        json_object_put(o);
    } else if (!quiet) {
        if (r.leaks_fixed || r.corruptions_fixed)
            printf("The following inconsistencies were found and repaired:\n\n    %" PRIu64
                   " leaked clusters\n    %" PRIu64 " corruptions\n\n",
                   r.leaks_fixed, r.corruptions_fixed);
        if (!r.corruptions && !r.leaks)
            printf("No errors were found on the image.\n");
        if (r.corruptions)
            printf("\n%" PRIu64 " errors were found on the image.\nData may be corrupted, or "
                   "further writes to the image may corrupt it.\n",
                   r.corruptions);
        if (r.leaks)
            printf("\n%" PRIu64 " leaked clusters were found on the image.\nThis means waste of "
                   "disk space, but no harm to data.\n",
                   r.leaks);
        if (r.total_clusters)
            printf("%" PRIu64 "/%" PRIu64 " = %.2f%% allocated, 0.00%% fragmented, %.2f%% "
                   "compressed clusters\n",
                   r.allocated_clusters, r.total_clusters,
                   100.0 * (double)r.allocated_clusters / (double)r.total_clusters,
                   r.allocated_clusters
                       ? 100.0 * (double)r.compressed_clusters / (double)r.allocated_clusters
                       : 0.0);
        printf("Image end offset: %" PRIu64 "\n", r.image_end_offset);
    }
    ret = qtimg_close(img);
    if (r.corruptions)
        return 2;
    if (r.leaks)
        return 3;
    return ret < 0 ? 1 : 0;
}

/* ---- map ---- */

struct chain_status {
    int depth;
    bool present, zero, data, compressed;
    uint64_t len, host;
};

/* Status of the first run at off through the whole backing chain. */
static int chain_status(struct qtimg *img, uint64_t off, uint64_t len, struct chain_status *st)
{
    int depth = 0;

    memset(st, 0, sizeof(*st));
    st->host = UINT64_MAX;
    for (struct qtimg *i = img; i; i = qtimg_backing(i), depth++) {
        struct qtimg_map m;
        int ret;
        if (off >= qtimg_size(i)) {
            st->depth = depth;
            st->zero = true;
            st->len = len;
            return 0;
        }
        if (len > qtimg_size(i) - off)
            len = qtimg_size(i) - off;
        ret = qtimg_map_range(i, off, len, &m);
        if (ret < 0)
            return ret;
        len = m.len;
        if (m.kind == QTIMG_MAP_UNALLOC && qtimg_backing(i)) {
            continue;
        }
        if (m.kind == QTIMG_MAP_UNALLOC) { /* bottom of the chain */
            st->depth = depth;
            st->len = len;
            st->zero = true;
            st->host = m.host_off;
            return 0;
        }
        st->depth = depth;
        st->len = len;
        st->present = true;
        st->zero = m.kind == QTIMG_MAP_ZERO;
        st->data = m.kind == QTIMG_MAP_DATA || m.kind == QTIMG_MAP_COMPRESSED;
        if (m.kind == QTIMG_MAP_DATA && m.host_zero)
            st->zero = true;
        st->compressed = m.kind == QTIMG_MAP_COMPRESSED;
        st->host = m.kind == QTIMG_MAP_COMPRESSED ? UINT64_MAX : m.host_off;
        return 0;
    }
    st->depth = depth;
    st->zero = true;
    st->len = len;
    return 0;
}

static int cmd_map(struct cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {{"help", no_argument, 0, 'h'},
                                       {"output", required_argument, 0, 'o'},
                                       {"object", required_argument, 0, 256},
                                       {0, 0, 0, 0}};
    const char *fmt = NULL, *output = "human";
    struct chain_status prev = {0};
    uint64_t start = 0, off = 0, size;
    struct qtimg *img;
    bool first = true;
    int c, ret;

    while ((c = getopt_long(argc, argv, "hf:U", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        case 'U':
            break;
        case 256:
            if (parse_object(cli, optarg) < 0)
                return 1;
            break;
        default:
            printf("usage: qtimg map [-f fmt] [--output human|json] filename\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "qtimg map: missing filename\n");
        return 1;
    }
    ret = open_image(cli, argv[optind], fmt, QTIMG_O_RDONLY, &img);
    if (ret < 0) {
        fprintf(stderr, "qtimg map: cannot open '%s': %s\n", argv[optind], strerror(-ret));
        return 1;
    }
    size = qtimg_size(img);
    bool json = !strcmp(output, "json");
    if (json)
        printf("[");
    else
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    while (off <= size) {
        struct chain_status st = {0};
        bool flush_prev;
        if (off < size) {
            ret = chain_status(img, off, size - off, &st);
            if (ret < 0)
                break;
        }
        flush_prev =
            !first &&
            (off == size || st.depth != prev.depth || st.present != prev.present ||
             st.zero != prev.zero || st.data != prev.data || st.compressed != prev.compressed ||
             ((prev.host == UINT64_MAX) != (st.host == UINT64_MAX)) ||
             (prev.host != UINT64_MAX && (st.host != prev.host + (off - start))));
        if (flush_prev) {
            if (json) {
                printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
                       ", \"depth\": %d, \"present\": %s, \"zero\": %s, \"data\": %s",
                       start ? ",\n" : "", start, off - start, prev.depth,
                       prev.present ? "true" : "false", prev.zero ? "true" : "false",
                       prev.data ? "true" : "false");
                if (prev.host != UINT64_MAX)
                    printf(", \"offset\": %" PRIu64, prev.host);
                printf("}");
            } else if (prev.data && prev.host != UINT64_MAX) {
                struct qtimg *f = img;
                for (int d = 0; d < prev.depth && qtimg_backing(f); d++)
                    f = qtimg_backing(f);
                printf("0x%-14" PRIx64 "0x%-14" PRIx64 "0x%-14" PRIx64 "%s\n", start, off - start,
                       prev.host, qtimg_path(f));
            }
            start = off;
        }
        if (off == size)
            break;
        if (first || flush_prev) {
            prev = st;
            start = off;
        }
        first = false;
        off += st.len;
    }
    if (json)
        printf("]\n");
    qtimg_close(img);
    return ret < 0 ? 1 : 0;
}

/* ---- compare ---- */

static bool is_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static int cmd_compare(struct cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {
        {"help", no_argument, 0, 'h'}, {"object", required_argument, 0, 256}, {0, 0, 0, 0}};
    const char *fmt1 = NULL, *fmt2 = NULL;
    struct qtimg *a = NULL, *b = NULL;
    uint8_t *ba = NULL, *bb = NULL;
    bool strict = false, quiet = false;
    uint64_t sa, sb, common;
    int c, ret, rc = 0;

    while ((c = getopt_long(argc, argv, "hf:F:sqpU", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt1 = optarg;
            break;
        case 'F':
            fmt2 = optarg;
            break;
        case 's':
            strict = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'p':
        case 'U':
            break;
        case 256:
            if (parse_object(cli, optarg) < 0)
                return 1;
            break;
        default:
            printf("usage: qtimg compare [-f fmt] [-F fmt] [-s] [-q] file1 file2\n"
                   "exit status: 0 identical, 1 different, 2 error\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (optind + 2 > argc) {
        fprintf(stderr, "qtimg compare: two filenames needed\n");
        return 2;
    }
    if ((ret = open_image(cli, argv[optind], fmt1, QTIMG_O_RDONLY, &a)) < 0 ||
        (ret = open_image(cli, argv[optind + 1], fmt2, QTIMG_O_RDONLY, &b)) < 0) {
        fprintf(stderr, "qtimg compare: cannot open: %s\n", strerror(-ret));
        rc = 2;
        goto out;
    }
    ba = malloc(CHUNK);
    bb = malloc(CHUNK);
    if (!ba || !bb) {
        rc = 2;
        goto out;
    }
    sa = qtimg_size(a);
    sb = qtimg_size(b);
    if (strict && sa != sb) {
        if (!quiet)
            printf("Strict mode: Image size mismatch!\n");
        rc = 1;
        goto out;
    }
    common = sa < sb ? sa : sb;
    for (uint64_t off = 0; off < (sa > sb ? sa : sb);) {
        uint64_t n = CHUNK;
        if (off < common) {
            if (n > common - off)
                n = common - off;
            if ((ret = qtimg_pread(a, ba, n, off)) < 0 || (ret = qtimg_pread(b, bb, n, off)) < 0) {
                rc = 2;
                goto out;
            }
            if (memcmp(ba, bb, n)) {
                uint64_t i = 0;
                while (ba[i] == bb[i])
                    i++;
                if (!quiet)
                    printf("Content mismatch at offset %" PRIu64 "!\n",
                           (uint64_t)((off + i) & ~(uint64_t)511));
                rc = 1;
                goto out;
            }
        } else {
            struct qtimg *big = sa > sb ? a : b;
            uint64_t end = sa > sb ? sa : sb;
            if (n > end - off)
                n = end - off;
            if ((ret = qtimg_pread(big, ba, n, off)) < 0) {
                rc = 2;
                goto out;
            }
            if (!is_zero(ba, n)) {
                if (!quiet)
                    printf("Content mismatch at offset %" PRIu64 "!\n", off);
                rc = 1;
                goto out;
            }
        }
        off += n;
    }
    if (!quiet) {
        if (sa != sb)
            printf("Warning: Image size mismatch!\n");
        printf("Images are identical.\n");
    }
out:
    free(ba);
    free(bb);
    if (a)
        qtimg_close(a);
    if (b)
        qtimg_close(b);
    return rc;
}

/* ---- convert ---- */

static int cmd_convert(struct cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {
        {"help", no_argument, 0, 'h'}, {"object", required_argument, 0, 256}, {0, 0, 0, 0}};
    struct qtimg_create_opts co = {.fmt = QTIMG_FMT_RAW};
    const char *fmt = NULL, *ofmt = "raw";
    char *bfile = NULL, *bfmt = NULL;
    struct qtimg *src = NULL, *dst = NULL;
    bool compress = false;
    uint8_t *buf = NULL;
    uint64_t size, cs;
    int c, ret, rc = 1;

    while ((c = getopt_long(argc, argv, "hf:O:co:pqnU", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'O':
            ofmt = optarg;
            break;
        case 256:
            if (parse_object(cli, optarg) < 0)
                return 1;
            break;
        case 'c':
            compress = true;
            break;
        case 'o':
            if (parse_create_opts(cli, optarg, &co, &bfile, &bfmt) < 0)
                return 1;
            break;
        case 'p':
        case 'q':
        case 'n':
        case 'U':
            break;
        default:
            printf("usage: qtimg convert [-f fmt] [-O output_fmt] [-c] [-o options] "
                   "[--object secret,...] source dest\n"
                   "  formats: raw, qcow2 (and vpc/vhd as a source when built with VHD)\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (optind + 2 > argc) {
        fprintf(stderr, "qtimg convert: source and destination needed\n");
        return 1;
    }
    if (qtimg_fmt_parse(ofmt, &co.fmt) < 0) {
        fprintf(stderr, "qtimg convert: unknown output format '%s'\n", ofmt);
        return 1;
    }
    if (compress && co.fmt != QTIMG_FMT_QCOW2) {
        fprintf(stderr, "qtimg convert: -c needs -O qcow2\n");
        return 1;
    }
    ret = open_image(cli, argv[optind], fmt, QTIMG_O_RDONLY, &src);
    if (ret < 0) {
        fprintf(stderr, "qtimg convert: cannot open '%s': %s\n", argv[optind], strerror(-ret));
        goto out;
    }
    size = qtimg_size(src);
    if (!co.size)
        co.size = size;
    co.backing_file = bfile;
    co.backing_fmt = bfmt;
    ret = qtimg_create(argv[optind + 1], &co);
    if (ret < 0) {
        fprintf(stderr, "qtimg convert: cannot create '%s': %s\n", argv[optind + 1],
                strerror(-ret));
        goto out;
    }
    {
        struct qtimg_open_opts oo = {.fmt = co.fmt, .key_secret = co.key_secret};
        ret = qtimg_open(argv[optind + 1], &oo, &dst);
        if (ret < 0)
            goto out;
    }
    {
        struct qtimg_info di;
        qtimg_get_info(dst, &di);
        cs = di.cluster_size ? di.cluster_size : 65536;
    }
    buf = malloc(cs > CHUNK ? cs : CHUNK);
    if (!buf)
        goto out;
    for (uint64_t off = 0; off < size;) {
        struct chain_status st;
        uint64_t n;
        ret = chain_status(src, off, size - off, &st);
        if (ret < 0)
            goto out;
        n = st.len;
        if (!st.data) { /* zero or unallocated down the chain: leave it thin */
            off += n;
            continue;
        }
        /* copy in destination-cluster-sized pieces */
        {
            uint64_t piece = compress ? cs - (off % cs) : CHUNK;
            if (n > piece)
                n = piece;
        }
        ret = qtimg_pread(src, buf, n, off);
        if (ret < 0)
            goto out;
        if (!is_zero(buf, n)) {
            if (compress && off % cs == 0 && (n == cs || off + n == size))
                ret = qtimg_pwrite_compressed(dst, buf, n, off);
            else
                ret = qtimg_pwrite(dst, buf, n, off);
            if (ret < 0)
                goto out;
        }
        off += n;
    }
    ret = qtimg_close(dst);
    dst = NULL;
    if (ret < 0)
        goto out;
    rc = 0;
out:
    if (rc && ret < 0)
        fprintf(stderr, "qtimg convert: failed: %s\n", strerror(-ret));
    free(buf);
    free(bfile);
    free(bfmt);
    if (src)
        qtimg_close(src);
    if (dst)
        qtimg_close(dst);
    return rc;
}

/* ---- resize ---- */

static int cmd_resize(struct cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {{"help", no_argument, 0, 'h'},
                                       {"shrink", no_argument, 0, 'S'},
                                       {"object", required_argument, 0, 256},
                                       {0, 0, 0, 0}};
    const char *fmt = NULL, *sz;
    bool shrink = false;
    struct qtimg *img;
    uint64_t v, cur, target;
    int c, ret;

    while ((c = getopt_long(argc, argv, "hf:q", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'S':
            shrink = true;
            break;
        case 'q':
            break;
        case 256:
            if (parse_object(cli, optarg) < 0)
                return 1;
            break;
        default:
            printf("usage: qtimg resize [-f fmt] [--shrink] filename [+|-]size\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (optind + 2 > argc) {
        fprintf(stderr, "qtimg resize: filename and size needed\n");
        return 1;
    }
    sz = argv[optind + 1];
    if (parse_size_arg(sz[0] == '+' || sz[0] == '-' ? sz + 1 : sz, &v) < 0)
        return 1;
    ret = open_image(cli, argv[optind], fmt, 0, &img);
    if (ret < 0) {
        fprintf(stderr, "qtimg resize: cannot open '%s': %s\n", argv[optind], strerror(-ret));
        return 1;
    }
    cur = qtimg_size(img);
    if (sz[0] == '+')
        target = cur + v;
    else if (sz[0] == '-') {
        if (v > cur) {
            fprintf(stderr, "qtimg resize: cannot shrink below zero\n");
            qtimg_close(img);
            return 1;
        }
        target = cur - v;
    } else
        target = v;
    ret = qtimg_resize(img, target, shrink ? QTIMG_RESIZE_SHRINK : 0);
    if (ret < 0) {
        fprintf(stderr, "qtimg resize: '%s': %s\n", argv[optind], strerror(-ret));
        qtimg_close(img);
        return 1;
    }
    ret = qtimg_close(img);
    if (ret < 0)
        return 1;
    printf("Image resized.\n");
    return 0;
}

/* ---- snapshot ---- */

static int cmd_snapshot(struct cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {
        {"help", no_argument, 0, 'h'}, {"object", required_argument, 0, 256}, {0, 0, 0, 0}};
    const char *fmt = NULL, *name = NULL;
    struct qtimg *img;
    char op = 0;
    int c, ret;

    while ((c = getopt_long(argc, argv, "hf:c:a:d:lqU", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'c':
        case 'a':
        case 'd':
            name = optarg;
            /* fallthrough */
        case 'l':
            if (op) {
                fprintf(stderr, "qtimg snapshot: only one of -c -a -d -l\n");
                return 1;
            }
            op = (char)c;
            break;
        case 'q':
        case 'U':
            break;
        case 256:
            if (parse_object(cli, optarg) < 0)
                return 1;
            break;
        default:
            printf("usage: qtimg snapshot [-f fmt] [-l | -c name | -a name | -d name] filename\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "qtimg snapshot: missing filename\n");
        return 1;
    }
    if (!op)
        op = 'l';
    ret = open_image(cli, argv[optind], fmt, op == 'l' ? QTIMG_O_RDONLY : 0, &img);
    if (ret < 0) {
        fprintf(stderr, "qtimg snapshot: cannot open '%s': %s\n", argv[optind], strerror(-ret));
        return 1;
    }
    switch (op) {
    case 'l':
        printf("Snapshot list:\n");
        print_snapshots(img);
        ret = 0;
        break;
    case 'c':
        ret = qtimg_snapshot_create(img, name);
        break;
    case 'a':
        ret = qtimg_snapshot_apply(img, name);
        break;
    default:
        ret = qtimg_snapshot_delete(img, name);
        break;
    }
    if (ret < 0)
        fprintf(stderr, "qtimg snapshot: '%s': %s\n", argv[optind], strerror(-ret));
    if (qtimg_close(img) < 0 && ret == 0)
        ret = -EIO;
    return ret < 0 ? 1 : 0;
}

/* Close img (if open) and return ret, or the close's error when ret was 0: a failed
 * close means metadata did not reach the disk, which must not go unreported. */
static int close_keep_first_error(struct qtimg *img, int ret)
{
    int r2;

    if (!img)
        return ret;
    r2 = qtimg_close(img);
    return ret == 0 ? r2 : ret;
}

/* ---- commit ---- */

static int cmd_commit(struct cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {
        {"help", no_argument, 0, 'h'}, {"object", required_argument, 0, 256}, {0, 0, 0, 0}};
    const char *fmt = NULL;
    struct qtimg *top = NULL, *base = NULL;
    bool keep = false;
    uint8_t *buf = NULL;
    uint64_t size;
    int c, ret;

    while ((c = getopt_long(argc, argv, "hf:dpq", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'd':
            keep = true;
            break;
        case 'p':
        case 'q':
            break;
        case 256:
            if (parse_object(cli, optarg) < 0)
                return 1;
            break;
        default:
            printf("usage: qtimg commit [-f fmt] [-d] filename\n"
                   "  writes the overlay's data into its backing file; -d keeps the overlay's "
                   "data\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "qtimg commit: missing filename\n");
        return 1;
    }
    ret = open_image(cli, argv[optind], fmt, 0, &top);
    if (ret < 0) {
        fprintf(stderr, "qtimg commit: cannot open '%s': %s\n", argv[optind], strerror(-ret));
        return 1;
    }
    if (!qtimg_backing(top)) {
        fprintf(stderr, "qtimg commit: '%s' has no backing file\n", argv[optind]);
        qtimg_close(top);
        return 1;
    }
    {
        struct qtimg_info bi;
        struct qtimg_open_opts bo = {0};
        qtimg_get_info(qtimg_backing(top), &bi);
        bo.fmt = bi.fmt;
        ret = qtimg_open(qtimg_path(qtimg_backing(top)), &bo, &base);
        if (ret < 0) {
            fprintf(stderr, "qtimg commit: cannot open the backing file for writing: %s\n",
                    strerror(-ret));
            goto out;
        }
    }
    buf = malloc(CHUNK);
    if (!buf) {
        ret = -ENOMEM;
        goto out;
    }
    size = qtimg_size(top);
    if (size > qtimg_size(base)) {
        ret = qtimg_resize(base, size, 0);
        if (ret < 0)
            goto out;
    }
    for (uint64_t off = 0; off < size;) {
        struct qtimg_map m;
        uint64_t n;
        ret = qtimg_map_range(top, off, size - off > CHUNK ? CHUNK : size - off, &m);
        if (ret < 0)
            goto out;
        n = m.len;
        if (m.kind == QTIMG_MAP_ZERO) {
            ret = qtimg_write_zeroes(base, off, n);
        } else if (m.kind != QTIMG_MAP_UNALLOC) {
            ret = qtimg_pread(top, buf, n, off);
            if (ret == 0)
                ret = qtimg_pwrite(base, buf, n, off);
        }
        if (ret < 0)
            goto out;
        off += n;
    }
    ret = qtimg_flush(base);
    if (ret < 0)
        goto out;
    if (!keep)
        ret = qtimg_discard(top, 0, size);
    if (ret == 0)
        printf("Image committed.\n");
out:
    free(buf);
    ret = close_keep_first_error(base, ret);
    ret = close_keep_first_error(top, ret);
    if (ret < 0)
        fprintf(stderr, "qtimg commit: %s\n", strerror(-ret));
    return ret < 0 ? 1 : 0;
}

/* ---- rebase ---- */

static int cmd_rebase(struct cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {
        {"help", no_argument, 0, 'h'}, {"object", required_argument, 0, 256}, {0, 0, 0, 0}};
    const char *fmt = NULL, *nb = NULL, *nbfmt = NULL;
    struct qtimg *top = NULL, *newb = NULL;
    uint8_t *a = NULL, *b = NULL;
    bool unsafe = false;
    int c, ret;

    while ((c = getopt_long(argc, argv, "hf:b:F:upqU", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'b':
            nb = optarg;
            break;
        case 'F':
            nbfmt = optarg;
            break;
        case 'u':
            unsafe = true;
            break;
        case 'p':
        case 'q':
        case 'U':
            break;
        case 256:
            if (parse_object(cli, optarg) < 0)
                return 1;
            break;
        default:
            printf("usage: qtimg rebase [-f fmt] [-u] -b backing_file [-F backing_fmt] filename\n"
                   "  -b '' removes the backing file (data is copied in unless -u)\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (optind >= argc || !nb) {
        fprintf(stderr, "qtimg rebase: -b and a filename are needed\n");
        return 1;
    }
    ret = open_image(cli, argv[optind], fmt, unsafe ? QTIMG_O_NO_BACKING : 0, &top);
    if (ret < 0) {
        fprintf(stderr, "qtimg rebase: cannot open '%s': %s\n", argv[optind], strerror(-ret));
        return 1;
    }
    if (!unsafe) {
        uint64_t size = qtimg_size(top);
        if (nb[0]) {
            struct qtimg_open_opts bo = {.flags = QTIMG_O_RDONLY};
            char *p = nb[0] == '/' ? strdup(nb) : NULL;
            if (!p) {
                const char *slash = strrchr(argv[optind], '/');
                if (slash &&
                    asprintf(&p, "%.*s/%s", (int)(slash - argv[optind]), argv[optind], nb) < 0)
                    p = NULL;
                else if (!slash)
                    p = strdup(nb);
            }
            if (nbfmt && qtimg_fmt_parse(nbfmt, &bo.fmt) < 0) {
                free(p);
                ret = -EINVAL;
                goto out;
            }
            ret = p ? qtimg_open(p, &bo, &newb) : -ENOMEM;
            free(p);
            if (ret < 0) {
                fprintf(stderr, "qtimg rebase: cannot open new backing file '%s'\n", nb);
                goto out;
            }
        }
        a = malloc(CHUNK);
        b = malloc(CHUNK);
        if (!a || !b) {
            ret = -ENOMEM;
            goto out;
        }
        for (uint64_t off = 0; off < size;) {
            struct qtimg_map m;
            uint64_t n;
            ret = qtimg_map_range(top, off, size - off > CHUNK ? CHUNK : size - off, &m);
            if (ret < 0)
                goto out;
            n = m.len;
            if (m.kind == QTIMG_MAP_UNALLOC) {
                /* old view: current backing; new view: new backing */
                struct qtimg *ob = qtimg_backing(top);
                memset(a, 0, n);
                memset(b, 0, n);
                if (ob && off < qtimg_size(ob)) {
                    uint64_t k = qtimg_size(ob) - off < n ? qtimg_size(ob) - off : n;
                    ret = qtimg_pread(ob, a, k, off);
                }
                if (ret == 0 && newb && off < qtimg_size(newb)) {
                    uint64_t k = qtimg_size(newb) - off < n ? qtimg_size(newb) - off : n;
                    ret = qtimg_pread(newb, b, k, off);
                }
                if (ret == 0 && memcmp(a, b, n))
                    ret = qtimg_pwrite(top, a, n, off);
                if (ret < 0)
                    goto out;
            }
            off += n;
        }
    }
    ret = qtimg_set_backing(top, nb[0] ? nb : NULL, nb[0] ? nbfmt : NULL);
out:
    free(a);
    free(b);
    if (newb)
        qtimg_close(newb);
    ret = close_keep_first_error(top, ret);
    if (ret < 0)
        fprintf(stderr, "qtimg rebase: %s\n", strerror(-ret));
    return ret < 0 ? 1 : 0;
}

/* ---- amend ---- */

static void amend_help_options(void)
{
    printf("Amendable qcow2 options (qemu-img amend names and meanings):\n"
           "  compat=0.10|1.1       qcow2 version 2 or 3 (0.10 refuses images using\n"
           "                        version 3 only features, see docs/qtimg.md)\n"
           "  refcount_bits=N       refcount width, a power of two from 1 to 64\n"
           "                        (needs compat=1.1 unless 16)\n"
           "  lazy_refcounts=on|off lazy refcounts (needs compat=1.1)\n"
           "  size=N                virtual size (K/M/G/T suffixes); shrinking refuses\n"
           "                        to drop allocated data and images with snapshots\n"
           "Not amendable: cluster_size, extended_l2, encryption, preallocation,\n"
           "backing_file/backing_fmt (use 'qtimg rebase -u').\n");
}

static int cmd_amend(struct cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {
        {"help", no_argument, 0, 'h'}, {"object", required_argument, 0, 256}, {0, 0, 0, 0}};
    struct qtimg_amend_opts ao = {.lazy_refcounts = -1};
    const char *fmt = NULL, *optstr = NULL, *v;
    struct qtimg *img;
    struct opts o = {0};
    uint64_t u;
    bool b;
    int c, ret = 0;

    while ((c = getopt_long(argc, argv, "hf:o:pq", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'o':
            optstr = optarg;
            break;
        case 'p':
        case 'q':
            break;
        case 256:
            if (parse_object(cli, optarg) < 0)
                return 1;
            break;
        default:
            printf("usage: qtimg amend [-f qcow2] -o option[,option...] filename\n"
                   "  -o compat=0.10|1.1,refcount_bits=N,lazy_refcounts=on|off,size=N\n"
                   "  -o help lists the options\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (optstr && (!strcmp(optstr, "help") || !strcmp(optstr, "?"))) {
        amend_help_options();
        return 0;
    }
    if (optind >= argc || !optstr) {
        fprintf(stderr, "qtimg amend: -o and a filename are needed\n");
        return 1;
    }
    if (fmt && strcmp(fmt, "qcow2")) {
        fprintf(stderr, "qtimg amend: format '%s' cannot be amended (qcow2 only)\n", fmt);
        return 1;
    }
    if (opts_parse(&o, optstr) < 0) {
        fprintf(stderr, "qtimg amend: invalid -o '%s'\n", optstr);
        return 1;
    }
    if ((v = opts_get(&o, "compat"))) {
        if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
            ao.compat = 3;
        else if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
            ao.compat = 2;
        else {
            fprintf(stderr, "qtimg amend: compat must be 0.10 or 1.1 (got '%s')\n", v);
            ret = -EINVAL;
        }
    }
    if (opts_get(&o, "refcount_bits")) {
        if (opts_get_u64(&o, "refcount_bits", &u) < 0 || u == 0 || u > 64 || (u & (u - 1))) {
            fprintf(stderr, "qtimg amend: refcount_bits must be a power of two from 1 to 64\n");
            ret = -EINVAL;
        } else {
            ao.refcount_bits = (uint32_t)u;
        }
    }
    if (opts_get(&o, "lazy_refcounts")) {
        if (opts_get_bool(&o, "lazy_refcounts", &b) < 0) {
            fprintf(stderr, "qtimg amend: lazy_refcounts must be on or off\n");
            ret = -EINVAL;
        } else {
            ao.lazy_refcounts = b;
        }
    }
    if (opts_get(&o, "size")) {
        if (opts_get_size(&o, "size", &u) < 0 || u == 0) {
            fprintf(stderr, "qtimg amend: invalid size\n");
            ret = -EINVAL;
        } else {
            ao.size = u;
        }
    }
    if (ret == 0 && (v = opts_first_unused(&o))) {
        fprintf(stderr, "qtimg amend: changing '%s' is not supported ('-o help' lists what is)\n",
                v);
        ret = -EINVAL;
    }
    opts_free(&o);
    if (ret < 0)
        return 1;
    ret = open_image(cli, argv[optind], fmt, 0, &img);
    if (ret < 0) {
        fprintf(stderr, "qtimg amend: cannot open '%s': %s\n", argv[optind], strerror(-ret));
        return 1;
    }
    ret = qtimg_amend(img, &ao);
    if (ret < 0)
        fprintf(stderr, "qtimg amend: '%s': %s\n", argv[optind], strerror(-ret));
    if (qtimg_close(img) < 0 && ret == 0)
        ret = -EIO;
    return ret < 0 ? 1 : 0;
}

/* ---- bench ---- */

struct bench {
    struct qtimg_aio *aio;
    uint64_t count, submitted, done;
    uint64_t offset, start, step, size, img_size;
    bool write;
    uint64_t flush_interval;
    int err;
    uint8_t **bufs;
    unsigned depth, next_buf;
};

static void bench_cb(void *opaque, int ret)
{
    struct bench *b = opaque;
    if (ret < 0 && !b->err)
        b->err = ret;
    b->done++;
}

static int cmd_bench(struct cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {{"help", no_argument, 0, 'h'},
                                       {"pattern", required_argument, 0, 'P'},
                                       {"flush-interval", required_argument, 0, 'I'},
                                       {"no-drain", no_argument, 0, 'D'},
                                       {"object", required_argument, 0, 256},
                                       {0, 0, 0, 0}};
    struct bench b = {.count = 75000, .depth = 64, .size = 4096};
    const char *fmt = NULL;
    bool direct = false, quiet = false, step_set = false;
    int pattern = 0xa5, c, ret;
    struct qtimg *img;
    struct timespec t0, t1;
    uint64_t v;

    while ((c = getopt_long(argc, argv, "hc:d:f:ni:o:qs:S:t:wU", lo, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (parse_u64(optarg, &b.count) < 0)
                goto bad;
            break;
        case 'd':
            if (parse_u64(optarg, &v) < 0 || !v || v > 4096)
                goto bad;
            b.depth = (unsigned)v;
            break;
        case 'f':
            fmt = optarg;
            break;
        case 'n':
        case 'U':
            break;
        case 'i':
            if (strcmp(optarg, "io_uring") && strcmp(optarg, "native") && strcmp(optarg, "threads"))
                goto bad;
            break;
        case 'o':
            if (parse_size(optarg, &b.offset) < 0)
                goto bad;
            break;
        case 'q':
            quiet = true;
            break;
        case 's':
            if (parse_size(optarg, &b.size) < 0 || !b.size)
                goto bad;
            break;
        case 'S':
            if (parse_size(optarg, &b.step) < 0)
                goto bad;
            step_set = true;
            break;
        case 't':
            if (!strcmp(optarg, "none") || !strcmp(optarg, "directsync"))
                direct = true;
            else if (strcmp(optarg, "writeback") && strcmp(optarg, "unsafe") &&
                     strcmp(optarg, "writethrough"))
                goto bad;
            break;
        case 'w':
            b.write = true;
            break;
        case 'P':
            pattern = atoi(optarg);
            break;
        case 'I':
            if (parse_u64(optarg, &b.flush_interval) < 0)
                goto bad;
            break;
        case 'D':
            break;
        case 256:
            if (parse_object(cli, optarg) < 0)
                return 1;
            break;
        default:
        bad:
            printf("usage: qtimg bench [-c count] [-d depth] [-f fmt] [-o offset] [-s size] "
                   "[-S step] [-t none|writeback] [-w] [--pattern=N] [--flush-interval=N] "
                   "filename\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "qtimg bench: missing filename\n");
        return 1;
    }
    if (!step_set)
        b.step = b.size;
    ret = open_image(cli, argv[optind], fmt,
                     (b.write ? 0 : QTIMG_O_RDONLY) | (direct ? QTIMG_O_DIRECT : 0), &img);
    if (ret < 0) {
        fprintf(stderr, "qtimg bench: cannot open '%s': %s\n", argv[optind], strerror(-ret));
        return 1;
    }
    b.img_size = qtimg_size(img);
    if (b.size > b.img_size) {
        fprintf(stderr, "qtimg bench: request size larger than the image\n");
        qtimg_close(img);
        return 1;
    }
    /* one more slot for a flush request (it does not stop the writes) */
    ret = qtimg_aio_init(img, b.depth + (b.flush_interval ? 1 : 0), &b.aio);
    if (ret < 0) {
        qtimg_close(img);
        return 1;
    }
    b.bufs = calloc(b.depth, sizeof(*b.bufs));
    for (unsigned i = 0; i < b.depth; i++) {
        if (posix_memalign((void **)&b.bufs[i], 4096, b.size)) {
            fprintf(stderr, "qtimg bench: out of memory\n");
            return 1;
        }
        memset(b.bufs[i], pattern, b.size);
    }
    if (!quiet)
        printf("Sending %" PRIu64 " %s requests, %" PRIu64 " bytes each, %u in parallel "
               "(starting at offset %" PRIu64 ", step size %" PRIu64 ")\n",
               b.count, b.write ? "write" : "read", b.size, b.depth, b.offset, b.step);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    b.start = b.offset;
    while (b.done < b.count && !b.err) {
        while (b.submitted < b.count && qtimg_aio_inflight(b.aio) < b.depth) {
            uint8_t *buf = b.bufs[b.next_buf++ % b.depth];
            ret = qtimg_aio_submit(b.aio, b.write ? QTIMG_AIO_WRITE : QTIMG_AIO_READ, buf, b.size,
                                   b.offset, bench_cb, &b);
            if (ret == -EAGAIN)
                break;
            if (ret < 0) {
                b.err = ret;
                break;
            }
            b.submitted++;
            /* the same offset sequence as qemu-img bench (7.2): wrap modulo the size */
            b.offset = b.img_size ? (b.offset + b.step) % b.img_size : 0;
            if (b.flush_interval && b.write && b.submitted % b.flush_interval == 0) {
                while ((ret = qtimg_aio_submit(b.aio, QTIMG_AIO_FLUSH, NULL, 0, 0, NULL, NULL)) ==
                           -EAGAIN &&
                       qtimg_aio_poll(b.aio, true) >= 0)
                    ;
                if (ret < 0)
                    b.err = ret;
            }
        }
        if (b.done < b.count && qtimg_aio_poll(b.aio, true) < 0)
            break;
    }
    while (qtimg_aio_inflight(b.aio)) /* a flush request may still be on the ring */
        if (qtimg_aio_poll(b.aio, true) < 0)
            break;
    if (b.write && !b.err)
        qtimg_flush(img);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    qtimg_aio_fini(b.aio);
    for (unsigned i = 0; i < b.depth; i++)
        free(b.bufs[i]);
    free(b.bufs);
    ret = qtimg_close(img);
    if (b.err) {
        fprintf(stderr, "qtimg bench: I/O error: %s\n", strerror(-b.err));
        return 1;
    }
    printf("Run completed in %.3f seconds.\n",
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    return ret < 0 ? 1 : 0;
}

/* ---- io (a small qemu-io: write/read with patterns, zero, discard, flush) ---- */

static void io_aio_done(void *opaque, int ret)
{
    int *res = opaque;
    *res = ret;
}

/* One request through the io_uring queue (qtimg io --aio), waited for. */
static int io_aio_run(struct qtimg_aio *aio, enum qtimg_aio_op op, void *buf, uint64_t len,
                      uint64_t off)
{
    int res = 1, ret = qtimg_aio_submit(aio, op, buf, len, off, io_aio_done, &res);

    while (ret == 0 && res == 1)
        ret = qtimg_aio_poll(aio, true) < 0 ? -EIO : 0;
    return ret < 0 ? ret : res;
}

static int io_one(struct qtimg *img, struct qtimg_aio *aio, const char *cmd)
{
    char verb[16], a1[32] = "", a2[32] = "", a3[32] = "", a4[32] = "";
    uint64_t off, len;
    int pattern = -1, n, ret;
    bool zero = false;
    uint8_t *buf;

    n = sscanf(cmd, "%15s %31s %31s %31s %31s", verb, a1, a2, a3, a4);
    if (n < 1)
        return -EINVAL;
    if (!strcmp(verb, "flush"))
        return aio ? io_aio_run(aio, QTIMG_AIO_FLUSH, NULL, 0, 0) : qtimg_flush(img);
    if (!strcmp(a1, "-P")) {
        pattern = (int)strtol(a2, NULL, 0);
        snprintf(a1, sizeof(a1), "%s", a3);
        snprintf(a2, sizeof(a2), "%s", a4);
    } else if (!strcmp(a1, "-z")) {
        zero = true;
        snprintf(a1, sizeof(a1), "%s", a2);
        snprintf(a2, sizeof(a2), "%s", a3);
    }
    if (parse_size(a1, &off) < 0 || parse_size(a2, &len) < 0) {
        fprintf(stderr, "qtimg io: cannot parse '%s'\n", cmd);
        return -EINVAL;
    }
    if (!strcmp(verb, "discard"))
        return aio ? io_aio_run(aio, QTIMG_AIO_DISCARD, NULL, len, off)
                   : qtimg_discard(img, off, len);
    if (!strcmp(verb, "write") && zero)
        return aio ? io_aio_run(aio, QTIMG_AIO_WRITE_ZEROES, NULL, len, off)
                   : qtimg_write_zeroes(img, off, len);
    if (posix_memalign((void **)&buf, 4096, len ? len : 1))
        return -ENOMEM;
    if (!strcmp(verb, "write")) {
        memset(buf, pattern < 0 ? 0xcd : pattern, len);
        ret = aio ? io_aio_run(aio, QTIMG_AIO_WRITE, buf, len, off)
                  : qtimg_pwrite(img, buf, len, off);
    } else if (!strcmp(verb, "read")) {
        ret =
            aio ? io_aio_run(aio, QTIMG_AIO_READ, buf, len, off) : qtimg_pread(img, buf, len, off);
        if (ret == 0 && pattern >= 0) {
            for (uint64_t i = 0; i < len; i++) {
                if (buf[i] != (uint8_t)pattern) {
                    printf("Pattern verification failed at offset %" PRIu64 "\n", off + i);
                    ret = -EILSEQ;
                    break;
                }
            }
        }
    } else {
        fprintf(stderr, "qtimg io: unknown command '%s'\n", verb);
        ret = -EINVAL;
    }
    free(buf);
    return ret;
}

static int cmd_io(struct cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {{"help", no_argument, 0, 'h'},
                                       {"object", required_argument, 0, 256},
                                       {"aio", no_argument, 0, 257},
                                       {0, 0, 0, 0}};
    const char *fmt = NULL, *cmds[64];
    int ncmd = 0, c, ret = 0;
    struct qtimg_aio *aio = NULL;
    struct qtimg *img;
    bool use_aio = false;

    while ((c = getopt_long(argc, argv, "hf:c:", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'c':
            if (ncmd < 64)
                cmds[ncmd++] = optarg;
            break;
        case 256:
            if (parse_object(cli, optarg) < 0)
                return 1;
            break;
        case 257:
            use_aio = true;
            break;
        default:
            printf(
                "usage: qtimg io [--aio] [-f fmt] -c 'write [-P pattern|-z] off len' -c 'read [-P "
                "pattern] off len' -c 'discard off len' -c flush ... filename\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "qtimg io: missing filename\n");
        return 1;
    }
    ret = open_image(cli, argv[optind], fmt, 0, &img);
    if (ret < 0) {
        fprintf(stderr, "qtimg io: cannot open '%s': %s\n", argv[optind], strerror(-ret));
        return 1;
    }
    if (use_aio) {
        ret = qtimg_aio_init(img, 4, &aio);
        if (ret < 0) {
            fprintf(stderr, "qtimg io: '%s': io_uring queue: %s\n", argv[optind], strerror(-ret));
            qtimg_close(img);
            return 1;
        }
    }
    for (int i = 0; i < ncmd && ret == 0; i++) {
        ret = io_one(img, aio, cmds[i]);
        if (ret < 0)
            fprintf(stderr, "qtimg io: '%s': %s\n", cmds[i],
                    ret == -EILSEQ ? "data differs from the pattern" : strerror(-ret));
    }
    qtimg_aio_fini(aio);
    if (qtimg_close(img) < 0 && ret == 0)
        ret = -EIO;
    return ret < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(struct cli *, int, char **);
    } cmds[] = {{"create", cmd_create}, {"info", cmd_info},         {"check", cmd_check},
                {"map", cmd_map},       {"compare", cmd_compare},   {"convert", cmd_convert},
                {"resize", cmd_resize}, {"snapshot", cmd_snapshot}, {"commit", cmd_commit},
                {"rebase", cmd_rebase}, {"amend", cmd_amend},       {"bench", cmd_bench},
                {"io", cmd_io}};
    struct cli cli = {0};
    int rc = 1;

    log_init("qtimg", LOG_LVL_ERROR);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage_main();
        return argc < 2 ? 1 : 0;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (!strcmp(argv[1], cmds[i].name)) {
            optind = 1;
            rc = cmds[i].fn(&cli, argc - 1, argv + 1);
            goto out;
        }
    }
    fprintf(stderr, "qtimg: unknown command '%s'\n", argv[1]);
    usage_main();
out:
    for (int i = 0; i < cli.nsecrets; i++)
        free(cli.secrets[i].data);
    return rc;
}
