/* SPDX-License-Identifier: Apache-2.0 */
/*
 * LUKS1 volume headers and AES-XTS-plain64 sector encryption, compatible
 * with the LUKS1 format QEMU writes for raw LUKS images (driver "luks") and
 * for qcow2 images with encrypt.format=luks.
 *
 * MESON (for the owner of src/image/meson.build and tests/image/meson.build):
 *   libqtimg sources:  files('luks.c', 'vhd.c')   deps: crypto_dep, common_dep
 *   tests: test_luks.c / test_vhd.c (suite 'unit', and args ['interop'] in
 *   suite 'interop') are in; the corpus replay + libFuzzer lines still to add
 *   are in docs/qtimg-crypto.md ("Build integration").
 * qcow2 DRIVER NOTE: qcow2 encrypt.format=luks uses the HOST offset / 512 as
 *   the XTS sector number (see below); luks_load() reads + unlocks the header
 *   through a callback bounded by the crypto header extension length.
 *
 * Layout: the "header area" starts with the 592-byte LUKS1 phdr and holds
 * the anti-forensic split key material of the 8 key slots; it ends at the
 * payload offset. For a raw LUKS file the area is at file offset 0 and the
 * encrypted data follows at luks_get_payload_offset(). For qcow2 the area is
 * stored in clusters named by the "full disk encryption header pointer"
 * extension (offset, length = the area size luks_create returns), and data
 * clusters are encrypted in place with sector number = HOST (physical) file
 * offset / 512 -- what QEMU does for qcow2 LUKS (crypt_physical_offset; proven
 * by test_luks interop against qemu-io). The raw LUKS driver instead uses the
 * guest offset / 512, i.e. relative to the payload start.
 *
 * Error convention: functions return 0 or a negative errno and log a message
 * naming the volume (the 'name' given at open/create) and the reason:
 *   -EINVAL    malformed or hostile header (bad magic, field out of range...)
 *   -ENOTSUP   well-formed header using an unsupported cipher/mode/hash/version
 *   -EACCES    no active key slot accepts the passphrase
 *   -ENOMEM, -EIO (OpenSSL failure)
 *
 * Thread safety: after unlock, a struct luks is immutable; luks_encrypt() and
 * luks_decrypt() may be called concurrently from any thread (each call sets up
 * its own OpenSSL context). Hot paths should create one struct luks_cipher per
 * thread (luks_cipher_new) which caches the expanded key schedule.
 */
#ifndef QT_IMAGE_LUKS_H
#define QT_IMAGE_LUKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LUKS_SECTOR_SIZE     512u
#define LUKS_PHDR_SIZE       592u /* bytes of the fixed LUKS1 header */
#define LUKS_NUM_SLOTS       8u
#define LUKS_STRIPES         4000u       /* AF stripes; the only value accepted */
#define LUKS_MIN_ITERATIONS  1000u       /* PBKDF2 minimum (slot and digest), as cryptsetup/QEMU */
#define LUKS_MAX_ITERATIONS  (1u << 26)  /* hostile-header bound (~1 min of PBKDF2 here) */
#define LUKS_DEFAULT_ITER_MS 2000u       /* qemu-img's encrypt.iter-time default */
#define LUKS_MAX_HEADER_SIZE (64u << 20) /* bound on the header area we accept */

struct luks;
struct luks_cipher;

/* Creation parameters; zero/NULL fields take the default shown. Names are
 * those of qemu-img's encrypt.* options. */
struct luks_create_opts {
    const char *cipher_alg;  /* "aes-256" (default) or "aes-128" */
    const char *cipher_mode; /* "xts" (default; the only mode) */
    const char *ivgen_alg;   /* "plain64" (default; the only ivgen) */
    const char *hash_alg;    /* PBKDF2/AF hash: "sha256" (default), "sha1", "sha512" */
    uint32_t iter_time_ms;   /* PBKDF2 time budget per slot; 0 = LUKS_DEFAULT_ITER_MS */
    uint32_t iterations;     /* nonzero: exact slot iteration count instead of timing
                                (>= LUKS_MIN_ITERATIONS; deterministic, for tests) */
};

/* 1 when buf (len bytes) starts with the LUKS magic "LUKS\xba\xbe", else 0. */
int luks_probe(const void *buf, size_t len);

/*
 * Parse and validate the LUKS1 phdr in buf (len >= LUKS_PHDR_SIZE). Every
 * field is checked: magic, version 1, NUL-terminated supported cipher name/
 * mode/hash, key bytes matching the cipher, iteration bounds, slot states,
 * stripes == 4000, key material of every slot inside the header area and not
 * overlapping the phdr or another slot, payload offset after the key material.
 * The returned volume is locked (no master key yet). name is copied, used in
 * messages.
 */
int luks_open(struct luks **out, const void *buf, size_t len, const char *name);

/* Size in bytes of the header area actually used (phdr + key material of
 * all 8 slots). The caller must pass at least this many bytes to
 * luks_unlock(). It is <= luks_get_payload_offset(). */
uint64_t luks_get_header_size(const struct luks *l);
/* Payload offset in bytes as recorded in the phdr (raw LUKS data start). */
uint64_t luks_get_payload_offset(const struct luks *l);
/* Master key length in bytes (64 for aes-256-xts). */
size_t luks_get_key_bytes(const struct luks *l);
/* "aes-256-xts-plain64" style description, and the hash name. */
const char *luks_get_cipher_desc(const struct luks *l);
const char *luks_get_hash(const struct luks *l);
/* Bitmask of active key slots (bit i = slot i). */
unsigned luks_get_active_slots(const struct luks *l);
bool luks_is_unlocked(const struct luks *l);

/*
 * Try every active key slot with the passphrase; on success the master key is
 * kept in l (verified against the master key digest) and *slot (may be NULL)
 * gets the slot number. area/area_len is the header area starting at the phdr
 * (area_len >= luks_get_header_size()).
 */
int luks_unlock(struct luks *l, const void *area, size_t area_len, const void *pass,
                size_t pass_len, int *slot);

/*
 * Convenience for format drivers: read the phdr and the header area through
 * read_fn (offsets relative to the header start, e.g. the qcow2 crypto
 * header extension offset), validate, and unlock with pass. area_max bounds
 * the area (the qcow2 extension length; 0 = no bound): a header whose key
 * material lies beyond it is refused with -EINVAL. read_fn returns 0 or
 * -errno for the whole range.
 */
typedef int (*luks_read_fn)(void *opaque, uint64_t offset, void *buf, size_t len);
int luks_load(struct luks **out, luks_read_fn read_fn, void *opaque, uint64_t area_max,
              const void *pass, size_t pass_len, const char *name);

/* Unlock with a known master key (key escrow, tests): the key is verified
 * against the master key digest (-EACCES on mismatch). */
int luks_unlock_key(struct luks *l, const uint8_t *key, size_t key_len);

/*
 * Create a new volume: random master key (RAND_bytes), phdr and key slot 0
 * protected by pass. *area (malloc'd, *area_len = luks_get_payload_offset()
 * bytes, 4040 sectors for aes-256 as QEMU writes) receives the complete header
 * area to write at the header location (file offset 0 for raw LUKS, followed
 * by the payload; the crypto header clusters for qcow2, extension length =
 * *area_len as QEMU does). The returned volume is already unlocked.
 */
int luks_create(struct luks **out, const struct luks_create_opts *opts, const void *pass,
                size_t pass_len, void **area, size_t *area_len, const char *name);

/*
 * Key slot management on an unlocked volume; area/area_len is the caller's
 * copy of the header area, updated in place (write it back afterwards).
 * luks_add_key uses the first free slot unless slot >= 0 names one (free).
 */
int luks_add_key(struct luks *l, void *area, size_t area_len, const void *pass, size_t pass_len,
                 const struct luks_create_opts *opts, int slot);
int luks_erase_key(struct luks *l, void *area, size_t area_len, int slot);

/*
 * Encrypt / decrypt len bytes (a multiple of LUKS_SECTOR_SIZE) in place; the
 * first sector has number 'sector' (IV = plain64(sector), i.e. the sector
 * number little-endian, zero padded), the next sector+1, ... Requires an
 * unlocked volume (-EACCES otherwise).
 */
int luks_encrypt(const struct luks *l, uint64_t sector, void *buf, size_t len);
int luks_decrypt(const struct luks *l, uint64_t sector, void *buf, size_t len);

/* Per-thread cipher context (key schedule expanded once). */
int luks_cipher_new(const struct luks *l, struct luks_cipher **out);
int luks_cipher_encrypt(struct luks_cipher *c, uint64_t sector, void *buf, size_t len);
int luks_cipher_decrypt(struct luks_cipher *c, uint64_t sector, void *buf, size_t len);
void luks_cipher_free(struct luks_cipher *c);

/* Wipe the master key and free. NULL is fine. */
void luks_close(struct luks *l);

/* Building blocks, exposed for the known-answer tests. */
/* PBKDF2-HMAC with a LUKS hash name ("sha1", "sha256", "sha512", ...). */
int luks_pbkdf2(const char *hash, const void *pass, size_t pass_len, const uint8_t *salt,
                size_t salt_len, uint32_t iterations, uint8_t *out, size_t out_len);
/* AF split (LUKS1 spec): src (len bytes) -> dst (len * stripes bytes). */
int luks_af_split(const char *hash, const uint8_t *src, uint8_t *dst, size_t len, unsigned stripes);
/* AF merge: src (len * stripes bytes) -> dst (len bytes). */
int luks_af_merge(const char *hash, const uint8_t *src, uint8_t *dst, size_t len, unsigned stripes);

/* libFuzzer-style entry: parse data as a header area and, when it parses
 * and its iteration counts are tiny, try to unlock it with "fuzz". Never
 * crashes on any input; returns 0. */
int luks_fuzz_one(const uint8_t *data, size_t size);

#endif
