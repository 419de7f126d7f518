/* SPDX-License-Identifier: Apache-2.0 */
#include "common/opts.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (!s || !*s || *s == '-' || isspace((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno || *end)
        return -EINVAL;
    *out = v;
    return 0;
}

int parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    unsigned shift = 0;

    if (!s || !*s || *s == '-' || isspace((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -EINVAL;
    switch (toupper((unsigned char)*end)) {
    case 0:
        break;
    case 'K':
        shift = 10;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    case 'T':
        shift = 40;
        break;
    case 'B':
        break;
    default:
        return -EINVAL;
    }
    if (*end) {
        end++;
        if (shift && (*end == 'i' || *end == 'I'))
            end++;
        if (shift && (*end == 'b' || *end == 'B'))
            end++;
        if (*end)
            return -EINVAL;
    }
    if (shift && v > (UINT64_MAX >> shift))
        return -ERANGE;
    *out = (uint64_t)v << shift;
    return 0;
}

int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"on", "true", "yes", "1"};
    static const char *const no[] = {"off", "false", "no", "0"};

    if (!s)
        return -EINVAL;
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

void opts_free(struct opts *o)
{
    free(o->buf);
    memset(o, 0, sizeof(*o));
}

int opts_parse(struct opts *o, const char *s)
{
    char *p, *save = NULL, *item;

    memset(o, 0, sizeof(*o));
    if (!s)
        return -EINVAL;
    o->buf = strdup(s);
    if (!o->buf)
        return -ENOMEM;
    for (p = o->buf; (item = strtok_r(p, ",", &save)); p = NULL) {
        char *eq = strchr(item, '=');

        if (o->n == OPTS_MAX)
            goto bad;
        if (eq)
            *eq = 0;
        if (!*item)
            goto bad;
        for (size_t i = 0; i < o->n; i++)
            if (strcmp(o->kv[i].key, item) == 0)
                goto bad;
        o->kv[o->n].key = item;
        o->kv[o->n].value = eq ? eq + 1 : item + strlen(item);
        o->kv[o->n].used = false;
        o->n++;
    }
    return 0;
bad:
    opts_free(o);
    return -EINVAL;
}

static struct opt_kv *opts_find(struct opts *o, const char *key)
{
    for (size_t i = 0; i < o->n; i++) {
        if (strcmp(o->kv[i].key, key) == 0) {
            o->kv[i].used = true;
            return &o->kv[i];
        }
    }
    return NULL;
}

const char *opts_get(struct opts *o, const char *key)
{
    struct opt_kv *kv = opts_find(o, key);

    return kv ? kv->value : NULL;
}

int opts_get_bool(struct opts *o, const char *key, bool *out)
{
    struct opt_kv *kv = opts_find(o, key);

    if (!kv)
        return -ENOENT;
    if (!*kv->value) { /* bare "readonly" means on */
        *out = true;
        return 0;
    }
    return parse_bool(kv->value, out);
}

int opts_get_u64(struct opts *o, const char *key, uint64_t *out)
{
    struct opt_kv *kv = opts_find(o, key);

    return kv ? parse_u64(kv->value, out) : -ENOENT;
}

int opts_get_size(struct opts *o, const char *key, uint64_t *out)
{
    struct opt_kv *kv = opts_find(o, key);

    return kv ? parse_size(kv->value, out) : -ENOENT;
}

const char *opts_first_unused(const struct opts *o)
{
    for (size_t i = 0; i < o->n; i++)
        if (!o->kv[i].used)
            return o->kv[i].key;
    return NULL;
}
