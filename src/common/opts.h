/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parsing of "key=value,key=value" option strings (cloud-hypervisor style
 * flags such as --disk path=a.img,readonly=on) and of sizes ("512M").
 */
#ifndef QT_COMMON_OPTS_H
#define QT_COMMON_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OPTS_MAX 32

struct opt_kv {
    char *key;
    char *value; /* "" when the item had no '=' */
    bool used;   /* set by opts_get*; lets callers reject unknown keys */
};

struct opts {
    struct opt_kv kv[OPTS_MAX];
    size_t n;
    char *buf;
};

/* Split s into pairs. Returns 0 or -EINVAL (empty key, too many items, duplicate key). */
int opts_parse(struct opts *o, const char *s);
void opts_free(struct opts *o);
/* NULL when absent. */
const char *opts_get(struct opts *o, const char *key);
/* on/off/true/false/yes/no/1/0. -ENOENT when absent (out untouched), -EINVAL when malformed. */
int opts_get_bool(struct opts *o, const char *key, bool *out);
int opts_get_u64(struct opts *o, const char *key, uint64_t *out);
int opts_get_size(struct opts *o, const char *key, uint64_t *out);
/* First key not consumed by an opts_get* call, or NULL. */
const char *opts_first_unused(const struct opts *o);

/* "4096", "4K", "512M", "2G", "1T" (binary units, optional "iB"/"B"). */
int parse_size(const char *s, uint64_t *out);
int parse_u64(const char *s, uint64_t *out);
int parse_bool(const char *s, bool *out);

#endif
