/* SPDX-License-Identifier: Apache-2.0 */
/* The PVH command line: space-separated key=value words. */
#include "rt.h"

#define CMDLINE_MAX 1024

static char rt_cmdline[CMDLINE_MAX];

void cmdline_init(void)
{
    const char *src = (const char *)rt_start_info.cmdline_paddr;
    size_t i;

    rt_cmdline[0] = '\0';
    if (!src)
        return;
    for (i = 0; i + 1 < sizeof(rt_cmdline) && src[i]; i++)
        rt_cmdline[i] = src[i];
    rt_cmdline[i] = '\0';
}

const char *cmdline_raw(void)
{
    return rt_cmdline;
}

/* Copies the value of key into buf; NULL when key is absent or its value does not fit. */
const char *cmdline_get(const char *key, char *buf, size_t size)
{
    size_t klen = strlen(key);
    const char *p = rt_cmdline;

    while (*p) {
        const char *word = p;
        size_t wlen = 0;

        while (word[wlen] && word[wlen] != ' ')
            wlen++;
        p = word + wlen;
        while (*p == ' ')
            p++;
        if (wlen > klen && !strncmp(word, key, klen) && word[klen] == '=') {
            size_t vlen = wlen - klen - 1;

            if (vlen + 1 > size)
                return NULL;
            memcpy(buf, word + klen + 1, vlen);
            buf[vlen] = '\0';
            return buf;
        }
    }
    return NULL;
}

/* Decimal or 0x-hex value of key, def when absent or malformed. */
uint64_t cmdline_get_u64(const char *key, uint64_t def)
{
    char buf[32];
    const char *s = cmdline_get(key, buf, sizeof(buf));
    uint64_t v = 0;
    unsigned base = 10;

    if (!s || !*s)
        return def;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
        if (!*s)
            return def;
    }
    for (; *s; s++) {
        unsigned d;

        if (*s >= '0' && *s <= '9')
            d = (unsigned)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (unsigned)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = (unsigned)(*s - 'A' + 10);
        else
            return def;
        v = v * base + d;
    }
    return v;
}
