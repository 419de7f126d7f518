/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MAC learning table with lock-free readers. See mac_table.h for the
 * contract.
 *
 * Layout: a power-of-two array of buckets, MAC_BUCKET_SLOTS entries each.
 * Each (domain, MAC) has two candidate buckets (two-choice hashing: a new
 * entry goes to the emptier one, which keeps bucket overflow rare); an entry
 * never moves between buckets, so a reader scans at most two buckets and
 * nothing else. Each bucket has a sequence counter (odd while a writer changes
 * it); readers copy what they need with relaxed atomic loads and retry when
 * the counter moved. Writers are serialised by a mutex. The table holds about
 * twice max_entries slots; if both candidate buckets are full anyway, the
 * oldest dynamic entry among them is evicted. At max_entries the least
 * recently seen dynamic entry among the next MAC_EVICT_SCAN non-empty buckets
 * (a rotating cursor, CLOCK-like) is evicted: approximate LRU at O(1) cost.
 *
 * A lookup racing with a delete-then-relearn of the same key into the other
 * candidate bucket may miss it once; the switch then floods that frame,
 * which is what it does for any unknown destination.
 */
#include "mac_table.h"
#include "pkt.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MAC_BUCKET_SLOTS 8
#define MAC_EVICT_SCAN   16

#define MAC_W_VALID  (1ull << 63)
#define MAC_W_STATIC (1ull << 62)
#define MAC_W_MASK   0xffffffffffffull

struct mac_slot {
    _Atomic uint64_t macw;      /* MAC_W_VALID | MAC_W_STATIC | 48-bit MAC */
    _Atomic uint64_t dom_val;   /* domain << 32 | value */
    _Atomic uint64_t last_seen; /* ns */
};

struct mac_bucket {
    _Atomic uint32_t seq;
    struct mac_slot slots[MAC_BUCKET_SLOTS];
};

struct mac_table {
    struct mac_bucket *buckets;
    size_t n_buckets; /* power of two */
    uint64_t seed;
    uint32_t max_entries;
    _Atomic uint64_t aging_ns;
    _Atomic uint64_t refresh_gran; /* skip last-seen stores closer than this */
    _Atomic size_t count;
    pthread_mutex_t wlock;
    size_t evict_cursor;
    struct mac_table_stats stats;
};

static inline void mac_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#endif
}

static uint64_t mac_to_u64(const uint8_t mac[6])
{
    return ((uint64_t)mac[0] << 40) | ((uint64_t)mac[1] << 32) | ((uint64_t)mac[2] << 24) |
           ((uint64_t)mac[3] << 16) | ((uint64_t)mac[4] << 8) | mac[5];
}

static void mac_from_u64(uint64_t v, uint8_t mac[6])
{
    for (int i = 5; i >= 0; i--) {
        mac[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t mac_hash(uint64_t seed, uint32_t domain, uint64_t mac)
{
    /* splitmix64 finaliser over the mixed key */
    uint64_t x = seed ^ mac ^ ((uint64_t)domain << 48) ^ ((uint64_t)domain >> 16);
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The two candidate buckets of a key (the same one twice in a 1-bucket table). */
static void mac_buckets_of(const struct mac_table *t, uint32_t domain, uint64_t mac,
                           struct mac_bucket *b[2])
{
    uint64_t h = mac_hash(t->seed, domain, mac);
    size_t mask = t->n_buckets - 1;
    size_t i0 = h & mask, i1 = (h >> 32) & mask;
    if (i1 == i0)
        i1 = (i0 + 1) & mask;
    b[0] = &t->buckets[i0];
    b[1] = &t->buckets[i1];
}

static uint64_t mac_refresh_gran(uint64_t aging_ns)
{
    uint64_t g = aging_ns / 64;
    return g > 1000000000ull ? 1000000000ull : g;
}

int mac_table_create(const struct mac_table_config *cfg, struct mac_table **out)
{
    if (!cfg || cfg->max_entries == 0 || cfg->max_entries > (1u << 26) || cfg->aging_ns == 0)
        return -EINVAL;
    struct mac_table *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    size_t want = ((size_t)cfg->max_entries * 2 + MAC_BUCKET_SLOTS - 1) / MAC_BUCKET_SLOTS;
    size_t n = 1;
    while (n < want)
        n <<= 1;
    t->buckets = calloc(n, sizeof(*t->buckets));
    if (!t->buckets) {
        free(t);
        return -ENOMEM;
    }
    int rc = pthread_mutex_init(&t->wlock, NULL);
    if (rc) {
        free(t->buckets);
        free(t);
        return -rc;
    }
    t->n_buckets = n;
    t->seed = cfg->seed;
    t->max_entries = cfg->max_entries;
    atomic_init(&t->aging_ns, cfg->aging_ns);
    atomic_init(&t->refresh_gran, mac_refresh_gran(cfg->aging_ns));
    atomic_init(&t->count, 0);
    *out = t;
    return 0;
}

void mac_table_destroy(struct mac_table *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->wlock);
    free(t->buckets);
    free(t);
}

/* Reader side: find (domain, mac) in bucket b. Returns the slot index or -1;
 * *dv gets the slot's dom_val. Consistent with respect to concurrent writers. */
static int mac_bucket_find(const struct mac_bucket *b, uint32_t domain, uint64_t mac, uint64_t *dv)
{
    struct mac_bucket *mb = (struct mac_bucket *)b; /* atomics need non-const */
    for (;;) {
        uint32_t s1 = atomic_load_explicit(&mb->seq, memory_order_acquire);
        if (s1 & 1) {
            mac_cpu_relax(); /* a writer is mid-update: a few stores */
            continue;
        }
        int found = -1;
        uint64_t v = 0;
        for (int i = 0; i < MAC_BUCKET_SLOTS; i++) {
            uint64_t w = atomic_load_explicit(&mb->slots[i].macw, memory_order_relaxed);
            if (!(w & MAC_W_VALID) || (w & MAC_W_MASK) != mac)
                continue;
            v = atomic_load_explicit(&mb->slots[i].dom_val, memory_order_relaxed);
            if ((uint32_t)(v >> 32) == domain) {
                found = i;
                break;
            }
        }
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&mb->seq, memory_order_relaxed) == s1) {
            *dv = v;
            return found;
        }
    }
}

/* Find a key in its candidate buckets: slot index (or -1), *bo its bucket. */
static int mac_table_find(const struct mac_table *t, uint32_t domain, uint64_t mac, uint64_t *dv,
                          struct mac_bucket *b[2], struct mac_bucket **bo)
{
    mac_buckets_of(t, domain, mac, b);
    for (int k = 0; k < 2; k++) {
        int i = mac_bucket_find(b[k], domain, mac, dv);
        if (i >= 0) {
            *bo = b[k];
            return i;
        }
    }
    *bo = NULL;
    return -1;
}

int mac_table_lookup(const struct mac_table *t, uint32_t domain, const uint8_t mac[6],
                     uint32_t *value)
{
    uint64_t m = mac_to_u64(mac), dv;
    struct mac_bucket *b[2], *bo;
    if (mac_table_find(t, domain, m, &dv, b, &bo) < 0)
        return -ENOENT;
    *value = (uint32_t)dv;
    return 0;
}

/* Writer side (mutex held). */
static void mac_bucket_write_begin(struct mac_bucket *b)
{
    uint32_t s = atomic_load_explicit(&b->seq, memory_order_relaxed);
    atomic_store_explicit(&b->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

static void mac_bucket_write_end(struct mac_bucket *b)
{
    uint32_t s = atomic_load_explicit(&b->seq, memory_order_relaxed);
    atomic_store_explicit(&b->seq, s + 1, memory_order_release);
}

static void mac_slot_clear(struct mac_table *t, struct mac_bucket *b, int i)
{
    mac_bucket_write_begin(b);
    atomic_store_explicit(&b->slots[i].macw, 0, memory_order_relaxed);
    mac_bucket_write_end(b);
    atomic_fetch_sub_explicit(&t->count, 1, memory_order_relaxed);
}

static uint64_t mac_slot_w(const struct mac_slot *s)
{
    return atomic_load_explicit(&((struct mac_slot *)s)->macw, memory_order_relaxed);
}

static uint64_t mac_slot_seen(const struct mac_slot *s)
{
    return atomic_load_explicit(&((struct mac_slot *)s)->last_seen, memory_order_relaxed);
}

/* Evict the least recently seen dynamic entry among the next MAC_EVICT_SCAN
 * non-empty buckets. Returns 0 or -ENOSPC when only static entries exist. */
static int mac_table_evict_one(struct mac_table *t)
{
    struct mac_bucket *vb = NULL;
    int vi = -1;
    uint64_t oldest = UINT64_MAX;
    size_t seen = 0;

    for (size_t n = 0; n < t->n_buckets && seen < MAC_EVICT_SCAN; n++) {
        struct mac_bucket *b = &t->buckets[t->evict_cursor];
        t->evict_cursor = (t->evict_cursor + 1) & (t->n_buckets - 1);
        bool any = false;
        for (int i = 0; i < MAC_BUCKET_SLOTS; i++) {
            uint64_t w = mac_slot_w(&b->slots[i]);
            if (!(w & MAC_W_VALID) || (w & MAC_W_STATIC))
                continue;
            any = true;
            uint64_t ls = mac_slot_seen(&b->slots[i]);
            if (ls < oldest) {
                oldest = ls;
                vb = b;
                vi = i;
            }
        }
        seen += any;
    }
    if (!vb)
        return -ENOSPC;
    mac_slot_clear(t, vb, vi);
    t->stats.evicted++;
    return 0;
}

static void mac_slot_fill(struct mac_bucket *b, int i, uint64_t macw, uint32_t domain,
                          uint32_t value, uint64_t now)
{
    mac_bucket_write_begin(b);
    atomic_store_explicit(&b->slots[i].dom_val, ((uint64_t)domain << 32) | value,
                          memory_order_relaxed);
    atomic_store_explicit(&b->slots[i].last_seen, now, memory_order_relaxed);
    atomic_store_explicit(&b->slots[i].macw, macw, memory_order_relaxed);
    mac_bucket_write_end(b);
}

/* Free slot of b (-1 if none); *old gets its oldest dynamic slot (-1 if
 * none) and *used the number of valid slots. */
static int mac_bucket_scan(const struct mac_bucket *b, int *old, int *used)
{
    int free_i = -1;
    uint64_t oldest = UINT64_MAX;
    *old = -1;
    *used = 0;
    for (int i = 0; i < MAC_BUCKET_SLOTS; i++) {
        uint64_t w = mac_slot_w(&b->slots[i]);
        if (!(w & MAC_W_VALID)) {
            if (free_i < 0)
                free_i = i;
            continue;
        }
        (*used)++;
        if (!(w & MAC_W_STATIC) && mac_slot_seen(&b->slots[i]) < oldest) {
            oldest = mac_slot_seen(&b->slots[i]);
            *old = i;
        }
    }
    return free_i;
}

/* Insert a new entry (mutex held, entry known absent from both buckets). */
static int mac_table_insert(struct mac_table *t, struct mac_bucket *b[2], uint64_t macw,
                            uint32_t domain, uint32_t value, uint64_t now)
{
    bool is_static = macw & MAC_W_STATIC;
    int old[2], used[2], fr[2];
    for (int k = 0; k < 2; k++)
        fr[k] = mac_bucket_scan(b[k], &old[k], &used[k]);

    struct mac_bucket *tb;
    int slot;
    if (fr[0] >= 0 || fr[1] >= 0) {
        int k = fr[0] < 0 || (fr[1] >= 0 && used[1] < used[0]);
        tb = b[k];
        slot = fr[k];
        if (atomic_load_explicit(&t->count, memory_order_relaxed) >= t->max_entries) {
            int rc = mac_table_evict_one(t);
            if (rc)
                return rc;
        }
    } else {
        /* Both full: the oldest dynamic entry of the two makes room (which
         * also keeps the count within the capacity). */
        int k;
        if (old[0] < 0 && old[1] < 0)
            return -ENOSPC; /* both full of static entries */
        if (old[0] < 0)
            k = 1;
        else if (old[1] < 0)
            k = 0;
        else
            k = mac_slot_seen(&b[1]->slots[old[1]]) < mac_slot_seen(&b[0]->slots[old[0]]);
        tb = b[k];
        slot = old[k];
        mac_slot_clear(t, tb, slot);
        t->stats.evicted++;
    }
    mac_slot_fill(tb, slot, macw, domain, value, is_static ? UINT64_MAX : now);
    atomic_fetch_add_explicit(&t->count, 1, memory_order_relaxed);
    return 0;
}

static bool mac_key_ok(uint32_t domain, const uint8_t mac[6])
{
    return domain <= MAC_TABLE_MAX_DOMAIN && !pkt_mac_is_multicast(mac) && !pkt_mac_is_zero(mac);
}

int mac_table_learn(struct mac_table *t, uint32_t domain, const uint8_t mac[6], uint32_t value,
                    uint64_t now)
{
    uint64_t m = mac_to_u64(mac), dv;
    struct mac_bucket *b[2], *bo;

    if (!mac_key_ok(domain, mac)) {
        pthread_mutex_lock(&t->wlock);
        t->stats.rejected++;
        pthread_mutex_unlock(&t->wlock);
        return -EINVAL;
    }

    /* Fast path, no lock: known with the same value -> refresh last_seen. A
     * racing writer may have reused the slot; then we refresh some other
     * entry, which only delays its aging by one period. */
    int i = mac_table_find(t, domain, m, &dv, b, &bo);
    if (i >= 0 && (uint32_t)dv == value) {
        struct mac_slot *s = &bo->slots[i];
        uint64_t ls = mac_slot_seen(s);
        if (ls != UINT64_MAX && now > ls &&
            now - ls >= atomic_load_explicit(&t->refresh_gran, memory_order_relaxed))
            atomic_store_explicit(&s->last_seen, now, memory_order_relaxed);
        return MAC_LEARN_REFRESHED;
    }

    int rc;
    pthread_mutex_lock(&t->wlock);
    i = mac_table_find(t, domain, m, &dv, b, &bo); /* again, under the lock */
    if (i >= 0) {
        uint64_t w = mac_slot_w(&bo->slots[i]);
        if ((uint32_t)dv == value) {
            if (!(w & MAC_W_STATIC))
                atomic_store_explicit(&bo->slots[i].last_seen, now, memory_order_relaxed);
            rc = MAC_LEARN_REFRESHED;
        } else if (w & MAC_W_STATIC) {
            t->stats.static_denied++;
            rc = -EPERM;
        } else {
            mac_slot_fill(bo, i, w, domain, value, now);
            t->stats.moves++;
            rc = MAC_LEARN_MOVED;
        }
    } else {
        rc = mac_table_insert(t, b, MAC_W_VALID | m, domain, value, now);
        if (rc == 0) {
            t->stats.learned++;
            rc = MAC_LEARN_NEW;
        }
    }
    pthread_mutex_unlock(&t->wlock);
    return rc;
}

int mac_table_add_static(struct mac_table *t, uint32_t domain, const uint8_t mac[6], uint32_t value)
{
    if (!mac_key_ok(domain, mac))
        return -EINVAL;
    uint64_t m = mac_to_u64(mac), dv;
    struct mac_bucket *b[2], *bo;
    int rc = 0;
    pthread_mutex_lock(&t->wlock);
    int i = mac_table_find(t, domain, m, &dv, b, &bo);
    if (i >= 0)
        mac_slot_fill(bo, i, MAC_W_VALID | MAC_W_STATIC | m, domain, value, UINT64_MAX);
    else
        rc = mac_table_insert(t, b, MAC_W_VALID | MAC_W_STATIC | m, domain, value, 0);
    pthread_mutex_unlock(&t->wlock);
    return rc;
}

int mac_table_delete(struct mac_table *t, uint32_t domain, const uint8_t mac[6])
{
    uint64_t m = mac_to_u64(mac), dv;
    struct mac_bucket *b[2], *bo;
    int rc = -ENOENT;
    pthread_mutex_lock(&t->wlock);
    int i = mac_table_find(t, domain, m, &dv, b, &bo);
    if (i >= 0) {
        mac_slot_clear(t, bo, i);
        t->stats.flushed++;
        rc = 0;
    }
    pthread_mutex_unlock(&t->wlock);
    return rc;
}

size_t mac_table_age(struct mac_table *t, uint64_t now)
{
    size_t removed = 0;
    pthread_mutex_lock(&t->wlock);
    uint64_t aging = atomic_load_explicit(&t->aging_ns, memory_order_relaxed);
    for (size_t bi = 0; bi < t->n_buckets; bi++) {
        struct mac_bucket *b = &t->buckets[bi];
        for (int i = 0; i < MAC_BUCKET_SLOTS; i++) {
            uint64_t w = mac_slot_w(&b->slots[i]);
            if (!(w & MAC_W_VALID) || (w & MAC_W_STATIC))
                continue;
            uint64_t ls = mac_slot_seen(&b->slots[i]);
            if (now > ls && now - ls > aging) {
                mac_slot_clear(t, b, i);
                removed++;
            }
        }
    }
    t->stats.aged += removed;
    pthread_mutex_unlock(&t->wlock);
    return removed;
}

size_t mac_table_flush(struct mac_table *t, uint32_t value, uint32_t domain, bool include_static)
{
    size_t removed = 0;
    pthread_mutex_lock(&t->wlock);
    for (size_t bi = 0; bi < t->n_buckets; bi++) {
        struct mac_bucket *b = &t->buckets[bi];
        for (int i = 0; i < MAC_BUCKET_SLOTS; i++) {
            uint64_t w = mac_slot_w(&b->slots[i]);
            if (!(w & MAC_W_VALID) || ((w & MAC_W_STATIC) && !include_static))
                continue;
            uint64_t dv = atomic_load_explicit(&b->slots[i].dom_val, memory_order_relaxed);
            if (value != MAC_TABLE_ANY && (uint32_t)dv != value)
                continue;
            if (domain != MAC_TABLE_ANY && (uint32_t)(dv >> 32) != domain)
                continue;
            mac_slot_clear(t, b, i);
            removed++;
        }
    }
    t->stats.flushed += removed;
    pthread_mutex_unlock(&t->wlock);
    return removed;
}

size_t mac_table_count(const struct mac_table *t)
{
    return atomic_load_explicit(&((struct mac_table *)t)->count, memory_order_relaxed);
}

int mac_table_set_aging(struct mac_table *t, uint64_t aging_ns)
{
    if (aging_ns == 0)
        return -EINVAL;
    atomic_store_explicit(&t->aging_ns, aging_ns, memory_order_relaxed);
    atomic_store_explicit(&t->refresh_gran, mac_refresh_gran(aging_ns), memory_order_relaxed);
    return 0;
}

void mac_table_get_stats(const struct mac_table *t, struct mac_table_stats *out)
{
    struct mac_table *mt = (struct mac_table *)t;
    pthread_mutex_lock(&mt->wlock);
    *out = mt->stats;
    pthread_mutex_unlock(&mt->wlock);
}

int mac_table_foreach(struct mac_table *t, int (*cb)(const struct mac_table_entry *e, void *arg),
                      void *arg)
{
    int rc = 0;
    pthread_mutex_lock(&t->wlock);
    for (size_t bi = 0; bi < t->n_buckets && !rc; bi++) {
        struct mac_bucket *b = &t->buckets[bi];
        for (int i = 0; i < MAC_BUCKET_SLOTS && !rc; i++) {
            uint64_t w = mac_slot_w(&b->slots[i]);
            if (!(w & MAC_W_VALID))
                continue;
            uint64_t dv = atomic_load_explicit(&b->slots[i].dom_val, memory_order_relaxed);
            struct mac_table_entry e = {
                .domain = (uint32_t)(dv >> 32),
                .value = (uint32_t)dv,
                .is_static = (w & MAC_W_STATIC) != 0,
                .last_seen = mac_slot_seen(&b->slots[i]),
            };
            mac_from_u64(w & MAC_W_MASK, e.mac);
            rc = cb(&e, arg);
        }
    }
    pthread_mutex_unlock(&t->wlock);
    return rc;
}
