/* SPDX-License-Identifier: Apache-2.0 */
/*
 * LUKS1 (the on-disk format of cryptsetup's LUKS version 1 and of QEMU's
 * "luks" block driver / qcow2 encrypt.format=luks) on top of OpenSSL
 * libcrypto: PBKDF2-HMAC, the anti-forensic splitter, AES-XTS.
 *
 * phdr layout (all integers big-endian):
 *   0 magic[6] "LUKS\xba\xbe"   6 version u16        8 cipher_name[32]
 *  40 cipher_mode[32]          72 hash_spec[32]    104 payload_offset u32 (sectors)
 * 108 key_bytes u32           112 mk_digest[20]    132 mk_digest_salt[32]
 * 164 mk_digest_iter u32      168 uuid[40]         208 key slots 8 x 48 bytes:
 *     +0 active u32 (0x00AC71F3 / 0x0000DEAD)  +4 iterations u32  +8 salt[32]
 *     +40 key_material_offset u32 (sectors)  +44 stripes u32
 */
#include "image/luks.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/log.h"

#define LUKS_MAGIC_LEN      6
#define LUKS_NAME_LEN       32
#define LUKS_DIGEST_LEN     20
#define LUKS_SALT_LEN       32
#define LUKS_UUID_LEN       40
#define LUKS_SLOT_ACTIVE    0x00AC71F3u
#define LUKS_SLOT_DISABLED  0x0000DEADu
#define LUKS_SLOT_BASE      208u
#define LUKS_SLOT_SIZE      48u
#define LUKS_MAX_KEY_BYTES  64u
#define LUKS_ALIGN_SECTORS  8u /* 4 KiB alignment of key material, as cryptsetup/QEMU */
#define LUKS_FUZZ_MAX_ITERS 2000u
#define LUKS_BENCH_MIN_NS   20000000ull /* PBKDF2 calibration runs at least 20 ms */

static const uint8_t luks_magic[LUKS_MAGIC_LEN] = {'L', 'U', 'K', 'S', 0xba, 0xbe};

struct luks_slot {
    uint32_t active;
    uint32_t iterations;
    uint8_t salt[LUKS_SALT_LEN];
    uint32_t key_offset; /* sectors from the phdr */
    uint32_t stripes;
};

struct luks {
    char *name;
    bool quiet; /* fuzzing: no error messages */
    char cipher_name[LUKS_NAME_LEN];
    char cipher_mode[LUKS_NAME_LEN];
    char hash[LUKS_NAME_LEN];
    char desc[2 * LUKS_NAME_LEN + 8];
    uint32_t payload_offset; /* sectors */
    uint32_t key_bytes;
    uint8_t mk_digest[LUKS_DIGEST_LEN];
    uint8_t mk_salt[LUKS_SALT_LEN];
    uint32_t mk_iter;
    char uuid[LUKS_UUID_LEN];
    struct luks_slot slots[LUKS_NUM_SLOTS];
    uint64_t header_size; /* bytes: end of the last key material */
    const EVP_CIPHER *cipher;
    const EVP_MD *md;
    bool iv_plain32; /* "xts-plain": IV is the low 32 bits of the sector */
    bool unlocked;
    uint8_t key[LUKS_MAX_KEY_BYTES];
};

struct luks_cipher {
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    bool iv_plain32;
};

/* Hashes accepted for PBKDF2 and the AF splitter. */
static const char *const luks_hashes[] = {"sha1", "sha224", "sha256", "sha384", "sha512"};

static void luks_err(const struct luks *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void luks_err(const struct luks *l, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    if (l && l->quiet)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_err("luks '%s': %s", l && l->name ? l->name : "?", msg);
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return be32toh(v);
}

static void wr32(uint8_t *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, sizeof(v));
}

static const EVP_MD *luks_lookup_hash(const char *name)
{
    for (size_t i = 0; i < sizeof(luks_hashes) / sizeof(luks_hashes[0]); i++) {
        if (strcmp(name, luks_hashes[i]) == 0)
            return EVP_get_digestbyname(name);
    }
    return NULL;
}

/* Cipher for name "aes" + mode and key size; NULL when unsupported. */
static const EVP_CIPHER *luks_lookup_cipher(const char *name, const char *mode, uint32_t key_bytes,
                                            bool *plain32)
{
    if (strcmp(name, "aes") != 0)
        return NULL;
    if (strcmp(mode, "xts-plain64") == 0)
        *plain32 = false;
    else if (strcmp(mode, "xts-plain") == 0)
        *plain32 = true;
    else
        return NULL;
    if (key_bytes == 64)
        return EVP_aes_256_xts();
    if (key_bytes == 32)
        return EVP_aes_128_xts();
    return NULL;
}

int luks_probe(const void *buf, size_t len)
{
    return len >= LUKS_MAGIC_LEN && memcmp(buf, luks_magic, LUKS_MAGIC_LEN) == 0;
}

int luks_pbkdf2(const char *hash, const void *pass, size_t pass_len, const uint8_t *salt,
                size_t salt_len, uint32_t iterations, uint8_t *out, size_t out_len)
{
    const EVP_MD *md = luks_lookup_hash(hash);

    if (!md || iterations == 0 || iterations > INT32_MAX || pass_len > INT32_MAX ||
        salt_len > INT32_MAX || out_len > INT32_MAX)
        return -EINVAL;
    if (!PKCS5_PBKDF2_HMAC(pass, (int)pass_len, salt, (int)salt_len, (int)iterations, md,
                           (int)out_len, out))
        return -EIO;
    return 0;
}

/* ---- anti-forensic splitter (LUKS1 spec, section "AF-Splitter") ---- */

/* Replace each digest-sized block j of buf by H(be32(j) || block). */
static int luks_af_diffuse(const EVP_MD *md, uint8_t *buf, size_t len)
{
    size_t ds = (size_t)EVP_MD_get_size(md);
    uint8_t out[EVP_MAX_MD_SIZE];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ret = 0;

    if (!ctx)
        return -ENOMEM;
    for (size_t off = 0, j = 0; off < len; off += ds, j++) {
        size_t n = len - off < ds ? len - off : ds;
        uint8_t iv[4];

        wr32(iv, (uint32_t)j);
        if (!EVP_DigestInit_ex(ctx, md, NULL) || !EVP_DigestUpdate(ctx, iv, sizeof(iv)) ||
            !EVP_DigestUpdate(ctx, buf + off, n) || !EVP_DigestFinal_ex(ctx, out, NULL)) {
            ret = -EIO;
            break;
        }
        memcpy(buf + off, out, n);
    }
    OPENSSL_cleanse(out, sizeof(out));
    EVP_MD_CTX_free(ctx);
    return ret;
}

static void luks_xor(uint8_t *dst, const uint8_t *src, size_t len)
{
    for (size_t i = 0; i < len; i++)
        dst[i] ^= src[i];
}

int luks_af_split(const char *hash, const uint8_t *src, uint8_t *dst, size_t len, unsigned stripes)
{
    const EVP_MD *md = luks_lookup_hash(hash);
    uint8_t *d;
    int ret = 0;

    if (!md || stripes == 0 || len == 0 || len > LUKS_MAX_KEY_BYTES)
        return -EINVAL;
    d = calloc(1, len);
    if (!d)
        return -ENOMEM;
    if (stripes > 1 && RAND_bytes(dst, (int)(len * (stripes - 1))) != 1) {
        ret = -EIO;
        goto out;
    }
    for (unsigned i = 0; i + 1 < stripes; i++) {
        luks_xor(d, dst + (size_t)i * len, len);
        ret = luks_af_diffuse(md, d, len);
        if (ret < 0)
            goto out;
    }
    memcpy(dst + (size_t)(stripes - 1) * len, d, len);
    luks_xor(dst + (size_t)(stripes - 1) * len, src, len);
out:
    OPENSSL_cleanse(d, len);
    free(d);
    return ret;
}

int luks_af_merge(const char *hash, const uint8_t *src, uint8_t *dst, size_t len, unsigned stripes)
{
    const EVP_MD *md = luks_lookup_hash(hash);
    int ret;

    if (!md || stripes == 0 || len == 0 || len > LUKS_MAX_KEY_BYTES)
        return -EINVAL;
    memset(dst, 0, len);
    for (unsigned i = 0; i + 1 < stripes; i++) {
        luks_xor(dst, src + (size_t)i * len, len);
        ret = luks_af_diffuse(md, dst, len);
        if (ret < 0)
            return ret;
    }
    luks_xor(dst, src + (size_t)(stripes - 1) * len, len);
    return 0;
}

/* ---- sector encryption ---- */

static void luks_make_iv(uint8_t iv[16], uint64_t sector, bool plain32)
{
    uint64_t le = htole64(plain32 ? (sector & 0xffffffffu) : sector);

    memset(iv, 0, 16);
    memcpy(iv, &le, sizeof(le));
}

static int luks_ctx_run(EVP_CIPHER_CTX *ctx, bool plain32, uint64_t sector, uint8_t *buf,
                        size_t len)
{
    uint8_t iv[16];
    int outl;

    for (size_t off = 0; off < len; off += LUKS_SECTOR_SIZE, sector++) {
        luks_make_iv(iv, sector, plain32);
        if (!EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, -1) ||
            !EVP_CipherUpdate(ctx, buf + off, &outl, buf + off, LUKS_SECTOR_SIZE) ||
            outl != (int)LUKS_SECTOR_SIZE)
            return -EIO;
    }
    return 0;
}

static EVP_CIPHER_CTX *luks_ctx_new(const EVP_CIPHER *cipher, const uint8_t *key, int enc)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();

    if (!ctx)
        return NULL;
    if (!EVP_CipherInit_ex(ctx, cipher, NULL, key, NULL, enc)) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* One-shot en/decryption with an explicit key (key slots and the API). */
static int luks_crypt_key(const EVP_CIPHER *cipher, const uint8_t *key, bool plain32, int enc,
                          uint64_t sector, void *buf, size_t len)
{
    EVP_CIPHER_CTX *ctx;
    int ret;

    if (len % LUKS_SECTOR_SIZE)
        return -EINVAL;
    ctx = luks_ctx_new(cipher, key, enc);
    if (!ctx)
        return -EIO;
    ret = luks_ctx_run(ctx, plain32, sector, buf, len);
    EVP_CIPHER_CTX_free(ctx);
    return ret;
}

int luks_encrypt(const struct luks *l, uint64_t sector, void *buf, size_t len)
{
    if (!l->unlocked)
        return -EACCES;
    return luks_crypt_key(l->cipher, l->key, l->iv_plain32, 1, sector, buf, len);
}

int luks_decrypt(const struct luks *l, uint64_t sector, void *buf, size_t len)
{
    if (!l->unlocked)
        return -EACCES;
    return luks_crypt_key(l->cipher, l->key, l->iv_plain32, 0, sector, buf, len);
}

int luks_cipher_new(const struct luks *l, struct luks_cipher **out)
{
    struct luks_cipher *c;

    *out = NULL;
    if (!l->unlocked)
        return -EACCES;
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->iv_plain32 = l->iv_plain32;
    c->enc = luks_ctx_new(l->cipher, l->key, 1);
    c->dec = luks_ctx_new(l->cipher, l->key, 0);
    if (!c->enc || !c->dec) {
        luks_cipher_free(c);
        return -EIO;
    }
    *out = c;
    return 0;
}

int luks_cipher_encrypt(struct luks_cipher *c, uint64_t sector, void *buf, size_t len)
{
    if (len % LUKS_SECTOR_SIZE)
        return -EINVAL;
    return luks_ctx_run(c->enc, c->iv_plain32, sector, buf, len);
}

int luks_cipher_decrypt(struct luks_cipher *c, uint64_t sector, void *buf, size_t len)
{
    if (len % LUKS_SECTOR_SIZE)
        return -EINVAL;
    return luks_ctx_run(c->dec, c->iv_plain32, sector, buf, len);
}

void luks_cipher_free(struct luks_cipher *c)
{
    if (!c)
        return;
    EVP_CIPHER_CTX_free(c->enc);
    EVP_CIPHER_CTX_free(c->dec);
    free(c);
}

/* ---- header parsing ---- */

static size_t luks_split_bytes(const struct luks *l, uint32_t stripes)
{
    size_t n = (size_t)l->key_bytes * stripes;

    return (n + LUKS_SECTOR_SIZE - 1) / LUKS_SECTOR_SIZE * LUKS_SECTOR_SIZE;
}

/* Copy a fixed-size name field, requiring a NUL inside it. */
static int luks_copy_name(struct luks *l, const char *field, char *dst, const uint8_t *src)
{
    if (!memchr(src, '\0', LUKS_NAME_LEN)) {
        luks_err(l, "%s field is not NUL-terminated", field);
        return -EINVAL;
    }
    memcpy(dst, src, LUKS_NAME_LEN);
    return 0;
}

static int luks_parse(struct luks *l, const uint8_t *p, size_t len)
{
    uint16_t version;
    int ret;

    if (len < LUKS_PHDR_SIZE) {
        luks_err(l, "header truncated: %zu bytes, need %u", len, LUKS_PHDR_SIZE);
        return -EINVAL;
    }
    if (!luks_probe(p, len)) {
        luks_err(l, "bad magic, not a LUKS header");
        return -EINVAL;
    }
    version = (uint16_t)(p[6] << 8 | p[7]);
    if (version != 1) {
        luks_err(l, "LUKS version %u is not supported (only LUKS1)", version);
        return -ENOTSUP;
    }
    if ((ret = luks_copy_name(l, "cipher name", l->cipher_name, p + 8)) < 0 ||
        (ret = luks_copy_name(l, "cipher mode", l->cipher_mode, p + 40)) < 0 ||
        (ret = luks_copy_name(l, "hash spec", l->hash, p + 72)) < 0)
        return ret;
    l->payload_offset = rd32(p + 104);
    l->key_bytes = rd32(p + 108);
    memcpy(l->mk_digest, p + 112, LUKS_DIGEST_LEN);
    memcpy(l->mk_salt, p + 132, LUKS_SALT_LEN);
    l->mk_iter = rd32(p + 164);
    memcpy(l->uuid, p + 168, LUKS_UUID_LEN);
    l->uuid[LUKS_UUID_LEN - 1] = '\0';

    l->cipher = luks_lookup_cipher(l->cipher_name, l->cipher_mode, l->key_bytes, &l->iv_plain32);
    if (!l->cipher) {
        luks_err(l,
                 "cipher '%s' mode '%s' with %u key bytes is not supported (need aes, "
                 "xts-plain64 or xts-plain, 32 or 64 key bytes)",
                 l->cipher_name, l->cipher_mode, l->key_bytes);
        return -ENOTSUP;
    }
    snprintf(l->desc, sizeof(l->desc), "%s-%u-%s", l->cipher_name, l->key_bytes * 4,
             l->cipher_mode);
    l->md = luks_lookup_hash(l->hash);
    if (!l->md) {
        luks_err(l, "hash '%s' is not supported", l->hash);
        return -ENOTSUP;
    }
    if (l->mk_iter == 0 || l->mk_iter > LUKS_MAX_ITERATIONS) {
        luks_err(l, "master key digest iterations %u out of range [1, %u]", l->mk_iter,
                 LUKS_MAX_ITERATIONS);
        return -EINVAL;
    }

    l->header_size =
        LUKS_SECTOR_SIZE * ((LUKS_PHDR_SIZE + LUKS_SECTOR_SIZE - 1) / LUKS_SECTOR_SIZE);
    for (unsigned i = 0; i < LUKS_NUM_SLOTS; i++) {
        const uint8_t *s = p + LUKS_SLOT_BASE + i * LUKS_SLOT_SIZE;
        struct luks_slot *ks = &l->slots[i];
        uint64_t start, end;

        ks->active = rd32(s);
        ks->iterations = rd32(s + 4);
        memcpy(ks->salt, s + 8, LUKS_SALT_LEN);
        ks->key_offset = rd32(s + 40);
        ks->stripes = rd32(s + 44);
        if (ks->active != LUKS_SLOT_ACTIVE && ks->active != LUKS_SLOT_DISABLED) {
            luks_err(l, "key slot %u: bad state 0x%08x", i, ks->active);
            return -EINVAL;
        }
        if (ks->stripes != LUKS_STRIPES) {
            luks_err(l, "key slot %u: %u stripes, expected %u", i, ks->stripes, LUKS_STRIPES);
            return -EINVAL;
        }
        if (ks->active == LUKS_SLOT_ACTIVE &&
            (ks->iterations == 0 || ks->iterations > LUKS_MAX_ITERATIONS)) {
            luks_err(l, "key slot %u: iterations %u out of range [1, %u]", i, ks->iterations,
                     LUKS_MAX_ITERATIONS);
            return -EINVAL;
        }
        start = (uint64_t)ks->key_offset * LUKS_SECTOR_SIZE;
        end = start + luks_split_bytes(l, ks->stripes);
        if (start < LUKS_PHDR_SIZE) {
            luks_err(l, "key slot %u: key material at sector %u overlaps the header", i,
                     ks->key_offset);
            return -EINVAL;
        }
        if (end > LUKS_MAX_HEADER_SIZE) {
            luks_err(l, "key slot %u: key material at sector %u beyond the %u-byte header limit", i,
                     ks->key_offset, LUKS_MAX_HEADER_SIZE);
            return -EINVAL;
        }
        for (unsigned j = 0; j < i; j++) {
            uint64_t ostart = (uint64_t)l->slots[j].key_offset * LUKS_SECTOR_SIZE;
            uint64_t oend = ostart + luks_split_bytes(l, l->slots[j].stripes);

            if (start < oend && ostart < end) {
                luks_err(l, "key slot %u: key material overlaps key slot %u", i, j);
                return -EINVAL;
            }
        }
        if (end > l->header_size)
            l->header_size = end;
    }
    if (l->payload_offset == 0) {
        luks_err(l, "payload offset 0 (detached header) is not supported");
        return -ENOTSUP;
    }
    if ((uint64_t)l->payload_offset * LUKS_SECTOR_SIZE < l->header_size) {
        luks_err(l, "payload offset sector %u inside the key material (ends at byte %llu)",
                 l->payload_offset, (unsigned long long)l->header_size);
        return -EINVAL;
    }
    return 0;
}

static int luks_open_common(struct luks **out, const void *buf, size_t len, const char *name,
                            bool quiet)
{
    struct luks *l;
    int ret;

    *out = NULL;
    l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->quiet = quiet;
    l->name = strdup(name ? name : "luks");
    if (!l->name) {
        free(l);
        return -ENOMEM;
    }
    ret = luks_parse(l, buf, len);
    if (ret < 0) {
        luks_close(l);
        return ret;
    }
    *out = l;
    return 0;
}

int luks_open(struct luks **out, const void *buf, size_t len, const char *name)
{
    return luks_open_common(out, buf, len, name, false);
}

void luks_close(struct luks *l)
{
    if (!l)
        return;
    OPENSSL_cleanse(l->key, sizeof(l->key));
    free(l->name);
    free(l);
}

uint64_t luks_get_header_size(const struct luks *l)
{
    return l->header_size;
}

uint64_t luks_get_payload_offset(const struct luks *l)
{
    return (uint64_t)l->payload_offset * LUKS_SECTOR_SIZE;
}

size_t luks_get_key_bytes(const struct luks *l)
{
    return l->key_bytes;
}

const char *luks_get_cipher_desc(const struct luks *l)
{
    return l->desc;
}

const char *luks_get_hash(const struct luks *l)
{
    return l->hash;
}

unsigned luks_get_active_slots(const struct luks *l)
{
    unsigned mask = 0;

    for (unsigned i = 0; i < LUKS_NUM_SLOTS; i++) {
        if (l->slots[i].active == LUKS_SLOT_ACTIVE)
            mask |= 1u << i;
    }
    return mask;
}

bool luks_is_unlocked(const struct luks *l)
{
    return l->unlocked;
}

/* ---- unlock ---- */

/* Decrypt slot i's key material with pass; on success *key holds the
 * candidate master key (verified against the digest). */
static int luks_try_slot(struct luks *l, unsigned i, const uint8_t *area, const void *pass,
                         size_t pass_len, uint8_t *key)
{
    const struct luks_slot *ks = &l->slots[i];
    size_t split_len = luks_split_bytes(l, ks->stripes);
    uint8_t slot_key[LUKS_MAX_KEY_BYTES];
    uint8_t digest[LUKS_DIGEST_LEN];
    uint8_t *split;
    int ret;

    split = malloc(split_len);
    if (!split)
        return -ENOMEM;
    memcpy(split, area + (size_t)ks->key_offset * LUKS_SECTOR_SIZE, split_len);
    ret = luks_pbkdf2(l->hash, pass, pass_len, ks->salt, LUKS_SALT_LEN, ks->iterations, slot_key,
                      l->key_bytes);
    if (ret < 0)
        goto out;
    ret = luks_crypt_key(l->cipher, slot_key, l->iv_plain32, 0, 0, split, split_len);
    if (ret < 0)
        goto out;
    ret = luks_af_merge(l->hash, split, key, l->key_bytes, ks->stripes);
    if (ret < 0)
        goto out;
    ret = luks_pbkdf2(l->hash, key, l->key_bytes, l->mk_salt, LUKS_SALT_LEN, l->mk_iter, digest,
                      sizeof(digest));
    if (ret < 0)
        goto out;
    ret = CRYPTO_memcmp(digest, l->mk_digest, sizeof(digest)) == 0 ? 0 : -EACCES;
out:
    OPENSSL_cleanse(slot_key, sizeof(slot_key));
    OPENSSL_cleanse(split, split_len);
    free(split);
    return ret;
}

int luks_unlock(struct luks *l, const void *area, size_t area_len, const void *pass,
                size_t pass_len, int *slot)
{
    uint8_t key[LUKS_MAX_KEY_BYTES];
    int ret = -EACCES;

    if (area_len < l->header_size) {
        luks_err(l, "header area truncated: %zu bytes, key material ends at %llu", area_len,
                 (unsigned long long)l->header_size);
        return -EINVAL;
    }
    if (!luks_get_active_slots(l)) {
        luks_err(l, "no active key slot");
        return -EACCES;
    }
    for (unsigned i = 0; i < LUKS_NUM_SLOTS; i++) {
        if (l->slots[i].active != LUKS_SLOT_ACTIVE)
            continue;
        ret = luks_try_slot(l, i, area, pass, pass_len, key);
        if (ret == 0) {
            memcpy(l->key, key, l->key_bytes);
            l->unlocked = true;
            if (slot)
                *slot = (int)i;
            break;
        }
        if (ret != -EACCES) {
            luks_err(l, "key slot %u: crypto failure (%d)", i, ret);
            break;
        }
    }
    OPENSSL_cleanse(key, sizeof(key));
    if (ret == -EACCES)
        luks_err(l, "no key slot accepts the passphrase");
    return ret;
}

int luks_load(struct luks **out, luks_read_fn read_fn, void *opaque, uint64_t area_max,
              const void *pass, size_t pass_len, const char *name)
{
    uint8_t phdr[LUKS_PHDR_SIZE];
    uint8_t *area = NULL;
    struct luks *l = NULL;
    int ret;

    *out = NULL;
    if (area_max && area_max < LUKS_PHDR_SIZE) {
        log_err("luks '%s': header area of %llu bytes cannot hold a LUKS header", name,
                (unsigned long long)area_max);
        return -EINVAL;
    }
    ret = read_fn(opaque, 0, phdr, sizeof(phdr));
    if (ret < 0) {
        log_err("luks '%s': cannot read the header (%d)", name, ret);
        return ret;
    }
    ret = luks_open(&l, phdr, sizeof(phdr), name);
    if (ret < 0)
        return ret;
    if (area_max && l->header_size > area_max) {
        luks_err(l, "key material ends at byte %llu, beyond the %llu-byte header area",
                 (unsigned long long)l->header_size, (unsigned long long)area_max);
        ret = -EINVAL;
        goto fail;
    }
    area = malloc(l->header_size);
    if (!area) {
        ret = -ENOMEM;
        goto fail;
    }
    ret = read_fn(opaque, 0, area, l->header_size);
    if (ret < 0) {
        luks_err(l, "cannot read the %llu-byte header area (%d)",
                 (unsigned long long)l->header_size, ret);
        goto fail;
    }
    /* The area must still hold the phdr we validated. */
    if (memcmp(area, phdr, sizeof(phdr)) != 0) {
        luks_err(l, "header changed while being read");
        ret = -EIO;
        goto fail;
    }
    ret = luks_unlock(l, area, l->header_size, pass, pass_len, NULL);
    if (ret < 0)
        goto fail;
    free(area);
    *out = l;
    return 0;
fail:
    free(area);
    luks_close(l);
    return ret;
}

int luks_unlock_key(struct luks *l, const uint8_t *key, size_t key_len)
{
    uint8_t digest[LUKS_DIGEST_LEN];
    int ret;

    if (key_len != l->key_bytes) {
        luks_err(l, "master key has %zu bytes, header says %u", key_len, l->key_bytes);
        return -EINVAL;
    }
    ret = luks_pbkdf2(l->hash, key, key_len, l->mk_salt, LUKS_SALT_LEN, l->mk_iter, digest,
                      sizeof(digest));
    if (ret < 0)
        return ret;
    if (CRYPTO_memcmp(digest, l->mk_digest, sizeof(digest)) != 0) {
        luks_err(l, "master key does not match the header digest");
        return -EACCES;
    }
    memcpy(l->key, key, key_len);
    l->unlocked = true;
    return 0;
}

/* ---- creation and key slot management ---- */

static void luks_encode(const struct luks *l, uint8_t *p)
{
    memset(p, 0, LUKS_PHDR_SIZE);
    memcpy(p, luks_magic, LUKS_MAGIC_LEN);
    p[6] = 0;
    p[7] = 1;
    memcpy(p + 8, l->cipher_name, LUKS_NAME_LEN);
    memcpy(p + 40, l->cipher_mode, LUKS_NAME_LEN);
    memcpy(p + 72, l->hash, LUKS_NAME_LEN);
    wr32(p + 104, l->payload_offset);
    wr32(p + 108, l->key_bytes);
    memcpy(p + 112, l->mk_digest, LUKS_DIGEST_LEN);
    memcpy(p + 132, l->mk_salt, LUKS_SALT_LEN);
    wr32(p + 164, l->mk_iter);
    memcpy(p + 168, l->uuid, LUKS_UUID_LEN);
    for (unsigned i = 0; i < LUKS_NUM_SLOTS; i++) {
        uint8_t *s = p + LUKS_SLOT_BASE + i * LUKS_SLOT_SIZE;

        wr32(s, l->slots[i].active);
        wr32(s + 4, l->slots[i].iterations);
        memcpy(s + 8, l->slots[i].salt, LUKS_SALT_LEN);
        wr32(s + 40, l->slots[i].key_offset);
        wr32(s + 44, l->slots[i].stripes);
    }
}

static uint64_t luks_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Iterations of PBKDF2 with this hash that take about ms milliseconds. */
static int luks_calibrate(const char *hash, size_t key_bytes, uint32_t ms, uint32_t *iters)
{
    static const uint8_t salt[LUKS_SALT_LEN];
    uint8_t out[LUKS_MAX_KEY_BYTES];
    uint32_t n = 1000;
    uint64_t t0, dt;
    double count;
    int ret;

    for (;;) {
        t0 = luks_now_ns();
        ret = luks_pbkdf2(hash, "calibrate", 9, salt, sizeof(salt), n, out, key_bytes);
        if (ret < 0)
            return ret;
        dt = luks_now_ns() - t0;
        if (dt >= LUKS_BENCH_MIN_NS || n >= LUKS_MAX_ITERATIONS / 2)
            break;
        n *= 2;
    }
    if (dt == 0)
        dt = 1;
    count = (double)n * ms * 1e6 / (double)dt;
    if (count < LUKS_MIN_ITERATIONS)
        count = LUKS_MIN_ITERATIONS;
    if (count > LUKS_MAX_ITERATIONS)
        count = LUKS_MAX_ITERATIONS;
    *iters = (uint32_t)count;
    return 0;
}

/* Slot iteration count requested by opts (NULL = defaults). */
static int luks_slot_iterations(struct luks *l, const struct luks_create_opts *opts,
                                uint32_t *iters)
{
    uint32_t ms = opts && opts->iter_time_ms ? opts->iter_time_ms : LUKS_DEFAULT_ITER_MS;

    if (opts && opts->iterations) {
        if (opts->iterations < LUKS_MIN_ITERATIONS || opts->iterations > LUKS_MAX_ITERATIONS) {
            luks_err(l, "iterations %u out of range [%u, %u]", opts->iterations,
                     LUKS_MIN_ITERATIONS, LUKS_MAX_ITERATIONS);
            return -EINVAL;
        }
        *iters = opts->iterations;
        return 0;
    }
    if (ms > 600000) {
        luks_err(l, "iter-time %u ms too large (max 600000)", ms);
        return -EINVAL;
    }
    return luks_calibrate(l->hash, l->key_bytes, ms, iters);
}

static int luks_write_slot(struct luks *l, uint8_t *area, unsigned slot, const void *pass,
                           size_t pass_len, uint32_t iters)
{
    struct luks_slot *ks = &l->slots[slot];
    size_t split_len = luks_split_bytes(l, ks->stripes);
    uint8_t slot_key[LUKS_MAX_KEY_BYTES];
    uint8_t *split;
    int ret;

    split = calloc(1, split_len);
    if (!split)
        return -ENOMEM;
    if (RAND_bytes(ks->salt, LUKS_SALT_LEN) != 1) {
        ret = -EIO;
        goto out;
    }
    ret = luks_pbkdf2(l->hash, pass, pass_len, ks->salt, LUKS_SALT_LEN, iters, slot_key,
                      l->key_bytes);
    if (ret < 0)
        goto out;
    ret = luks_af_split(l->hash, l->key, split, l->key_bytes, ks->stripes);
    if (ret < 0)
        goto out;
    ret = luks_crypt_key(l->cipher, slot_key, l->iv_plain32, 1, 0, split, split_len);
    if (ret < 0)
        goto out;
    memcpy(area + (size_t)ks->key_offset * LUKS_SECTOR_SIZE, split, split_len);
    ks->iterations = iters;
    ks->active = LUKS_SLOT_ACTIVE;
    luks_encode(l, area);
out:
    OPENSSL_cleanse(slot_key, sizeof(slot_key));
    OPENSSL_cleanse(split, split_len);
    free(split);
    return ret;
}

int luks_add_key(struct luks *l, void *area, size_t area_len, const void *pass, size_t pass_len,
                 const struct luks_create_opts *opts, int slot)
{
    uint32_t iters;
    int ret;

    if (!l->unlocked) {
        luks_err(l, "cannot add a key: volume is locked");
        return -EACCES;
    }
    if (area_len < l->header_size) {
        luks_err(l, "header area truncated: %zu bytes, need %llu", area_len,
                 (unsigned long long)l->header_size);
        return -EINVAL;
    }
    if (slot < 0) {
        for (unsigned i = 0; i < LUKS_NUM_SLOTS && slot < 0; i++) {
            if (l->slots[i].active != LUKS_SLOT_ACTIVE)
                slot = (int)i;
        }
        if (slot < 0) {
            luks_err(l, "all %u key slots are in use", LUKS_NUM_SLOTS);
            return -ENOSPC;
        }
    } else if (slot >= (int)LUKS_NUM_SLOTS || l->slots[slot].active == LUKS_SLOT_ACTIVE) {
        luks_err(l, "key slot %d is not a free slot", slot);
        return -EINVAL;
    }
    ret = luks_slot_iterations(l, opts, &iters);
    if (ret < 0)
        return ret;
    return luks_write_slot(l, area, (unsigned)slot, pass, pass_len, iters);
}

int luks_erase_key(struct luks *l, void *area, size_t area_len, int slot)
{
    struct luks_slot *ks;
    size_t split_len;

    if (slot < 0 || slot >= (int)LUKS_NUM_SLOTS || area_len < l->header_size) {
        luks_err(l, "erase: bad key slot %d or header area", slot);
        return -EINVAL;
    }
    ks = &l->slots[slot];
    if (ks->active != LUKS_SLOT_ACTIVE) {
        luks_err(l, "key slot %d is not active", slot);
        return -ENOENT;
    }
    if ((luks_get_active_slots(l) & ~(1u << slot)) == 0) {
        luks_err(l, "refusing to erase key slot %d: it is the last active one", slot);
        return -EBUSY;
    }
    split_len = luks_split_bytes(l, ks->stripes);
    if (RAND_bytes((uint8_t *)area + (size_t)ks->key_offset * LUKS_SECTOR_SIZE, (int)split_len) !=
        1)
        return -EIO;
    ks->active = LUKS_SLOT_DISABLED;
    ks->iterations = 0;
    memset(ks->salt, 0, sizeof(ks->salt));
    luks_encode(l, area);
    return 0;
}

static void luks_make_uuid(char *dst, const uint8_t r[16])
{
    uint8_t u[16];

    memcpy(u, r, sizeof(u));
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40); /* version 4 */
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(dst, LUKS_UUID_LEN,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
}

static int luks_create_params(struct luks *l, const struct luks_create_opts *opts)
{
    const char *alg = opts && opts->cipher_alg ? opts->cipher_alg : "aes-256";
    const char *mode = opts && opts->cipher_mode ? opts->cipher_mode : "xts";
    const char *ivgen = opts && opts->ivgen_alg ? opts->ivgen_alg : "plain64";
    const char *hash = opts && opts->hash_alg ? opts->hash_alg : "sha256";

    if (strcmp(alg, "aes-256") == 0)
        l->key_bytes = 64;
    else if (strcmp(alg, "aes-128") == 0)
        l->key_bytes = 32;
    else {
        luks_err(l, "cipher-alg '%s' not supported (aes-256, aes-128)", alg);
        return -ENOTSUP;
    }
    if (strcmp(mode, "xts") != 0) {
        luks_err(l, "cipher-mode '%s' not supported (xts)", mode);
        return -ENOTSUP;
    }
    if (strcmp(ivgen, "plain64") != 0 && strcmp(ivgen, "plain") != 0) {
        luks_err(l, "ivgen-alg '%s' not supported (plain64, plain)", ivgen);
        return -ENOTSUP;
    }
    if (strlen(hash) >= LUKS_NAME_LEN || !luks_lookup_hash(hash)) {
        luks_err(l, "hash-alg '%s' not supported", hash);
        return -ENOTSUP;
    }
    strcpy(l->cipher_name, "aes");
    snprintf(l->cipher_mode, sizeof(l->cipher_mode), "xts-%s", ivgen);
    snprintf(l->hash, sizeof(l->hash), "%s", hash);
    l->cipher = luks_lookup_cipher(l->cipher_name, l->cipher_mode, l->key_bytes, &l->iv_plain32);
    l->md = luks_lookup_hash(l->hash);
    snprintf(l->desc, sizeof(l->desc), "%s-%u-%s", l->cipher_name, l->key_bytes * 4,
             l->cipher_mode);
    return 0;
}

int luks_create(struct luks **out, const struct luks_create_opts *opts, const void *pass,
                size_t pass_len, void **area_out, size_t *area_len_out, const char *name)
{
    struct luks *l;
    uint8_t rnd[16];
    uint8_t *area = NULL;
    size_t area_len;
    uint32_t slot_sectors, iters;
    int ret;

    *out = NULL;
    *area_out = NULL;
    *area_len_out = 0;
    l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->name = strdup(name ? name : "luks");
    if (!l->name) {
        ret = -ENOMEM;
        goto fail;
    }
    ret = luks_create_params(l, opts);
    if (ret < 0)
        goto fail;
    ret = luks_slot_iterations(l, opts, &iters);
    if (ret < 0)
        goto fail;
    /* Master key with distinct XTS halves (OpenSSL refuses equal ones). */
    do {
        if (RAND_bytes(l->key, (int)l->key_bytes) != 1) {
            ret = -EIO;
            goto fail;
        }
    } while (CRYPTO_memcmp(l->key, l->key + l->key_bytes / 2, l->key_bytes / 2) == 0);
    if (RAND_bytes(l->mk_salt, LUKS_SALT_LEN) != 1 || RAND_bytes(rnd, sizeof(rnd)) != 1) {
        ret = -EIO;
        goto fail;
    }
    luks_make_uuid(l->uuid, rnd);
    l->mk_iter = iters / 8 < LUKS_MIN_ITERATIONS ? LUKS_MIN_ITERATIONS : iters / 8;
    ret = luks_pbkdf2(l->hash, l->key, l->key_bytes, l->mk_salt, LUKS_SALT_LEN, l->mk_iter,
                      l->mk_digest, LUKS_DIGEST_LEN);
    if (ret < 0)
        goto fail;

    /* Key material of slot i at 4 KiB + i * (split size rounded to 4 KiB),
     * the payload right after the last slot: the layout QEMU writes. */
    slot_sectors = (uint32_t)(luks_split_bytes(l, LUKS_STRIPES) / LUKS_SECTOR_SIZE);
    slot_sectors =
        (slot_sectors + LUKS_ALIGN_SECTORS - 1) / LUKS_ALIGN_SECTORS * LUKS_ALIGN_SECTORS;
    for (unsigned i = 0; i < LUKS_NUM_SLOTS; i++) {
        l->slots[i].active = LUKS_SLOT_DISABLED;
        l->slots[i].stripes = LUKS_STRIPES;
        l->slots[i].key_offset = LUKS_ALIGN_SECTORS + i * slot_sectors;
    }
    l->payload_offset = LUKS_ALIGN_SECTORS + LUKS_NUM_SLOTS * slot_sectors;
    l->header_size = (uint64_t)l->slots[LUKS_NUM_SLOTS - 1].key_offset * LUKS_SECTOR_SIZE +
                     luks_split_bytes(l, LUKS_STRIPES);
    area_len = (size_t)l->payload_offset * LUKS_SECTOR_SIZE;
    area = calloc(1, area_len);
    if (!area) {
        ret = -ENOMEM;
        goto fail;
    }
    /* Unused key material areas hold random bytes, as cryptsetup does. */
    if (RAND_bytes(area + LUKS_ALIGN_SECTORS * LUKS_SECTOR_SIZE,
                   (int)(area_len - LUKS_ALIGN_SECTORS * LUKS_SECTOR_SIZE)) != 1) {
        ret = -EIO;
        goto fail;
    }
    l->unlocked = true;
    ret = luks_write_slot(l, area, 0, pass, pass_len, iters);
    if (ret < 0)
        goto fail;
    *out = l;
    *area_out = area;
    *area_len_out = area_len;
    return 0;
fail:
    OPENSSL_cleanse(rnd, sizeof(rnd));
    free(area);
    luks_close(l);
    return ret;
}

/* ---- fuzzing ---- */

int luks_fuzz_one(const uint8_t *data, size_t size)
{
    struct luks *l;
    bool cheap = true;

    if (luks_open_common(&l, data, size, "fuzz", true) < 0)
        return 0;
    for (unsigned i = 0; i < LUKS_NUM_SLOTS; i++) {
        if (l->slots[i].active == LUKS_SLOT_ACTIVE && l->slots[i].iterations > LUKS_FUZZ_MAX_ITERS)
            cheap = false;
    }
    if (l->mk_iter > LUKS_FUZZ_MAX_ITERS)
        cheap = false;
    (void)luks_get_header_size(l);
    if (cheap && size >= l->header_size) {
        uint8_t sector[LUKS_SECTOR_SIZE] = {0};

        if (luks_unlock(l, data, size, "fuzz", 4, NULL) == 0)
            (void)luks_decrypt(l, 0, sector, sizeof(sector));
    }
    luks_close(l);
    return 0;
}
