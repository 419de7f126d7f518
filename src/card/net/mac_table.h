/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MAC learning table: (domain, MAC) -> 32-bit value, with aging, a capacity
 * limit with eviction of the least recently seen entry, MAC moves, and flush
 * by value or by domain.
 *
 * The switch uses it with domain = VLAN ID and value = port number; the VXLAN
 * VTEP table uses domain = VNI and value = remote VTEP IPv4 address.
 *
 * CONCURRENCY CONTRACT
 *  - mac_table_lookup() is lock-free and may be called from any number of
 *    data-plane threads at the same time as any other call. The table is a
 *    fixed array of buckets (never resized, never freed while the table
 *    lives), each bucket guarded by a sequence counter: a reader copies the
 *    entry and retries if a writer changed the bucket meanwhile. Readers never
 *    write shared memory, never block and never wait on a writer that is not
 *    in the middle of a single-bucket update (a few stores).
 *  - mac_table_learn() is safe from any thread. Its common case, refreshing an
 *    entry that already maps to the same value, is lock-free (one relaxed
 *    atomic store of the last-seen time). Inserts, moves and evictions take
 *    the table's internal writer mutex, which readers never touch.
 *  - mac_table_age(), _flush(), _delete(), _add_static(), _foreach() take the
 *    writer mutex; call them from the control thread.
 *  - mac_table_destroy() only when no other thread can still call in.
 *
 * Time is passed in (now, in nanoseconds of any monotonic clock) so tests
 * control it. Nothing in here sleeps, allocates after create, or starts
 * threads.
 */
#ifndef QT_CARD_NET_MAC_TABLE_H
#define QT_CARD_NET_MAC_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAC_TABLE_MAX_DOMAIN       0xffffffu  /* 24 bits: VLAN IDs and VXLAN VNIs fit */
#define MAC_TABLE_ANY              UINT32_MAX /* wildcard for flush */
#define MAC_TABLE_DEFAULT_AGING_NS (300ull * 1000000000ull) /* 300 s, as 802.1Q */

struct mac_table;

struct mac_table_config {
    uint32_t max_entries; /* capacity, 1..2^26; the table reserves ~2x slots */
    uint64_t aging_ns;    /* entries not seen for this long are removed by age() */
    uint64_t seed;        /* hash seed (randomise in production; fixed in tests) */
};

struct mac_table_stats {
    uint64_t learned;       /* new entries inserted */
    uint64_t moves;         /* existing entry changed value (MAC moved port) */
    uint64_t evicted;       /* removed to make room (capacity or full bucket) */
    uint64_t aged;          /* removed by mac_table_age() */
    uint64_t flushed;       /* removed by flush/delete */
    uint64_t rejected;      /* learn refused: multicast/zero MAC, domain out of range */
    uint64_t static_denied; /* learn refused because a static entry pins the MAC */
};

/* Result of mac_table_learn() (>= 0) */
enum mac_learn_result {
    MAC_LEARN_REFRESHED = 0, /* known, same value: last-seen time updated */
    MAC_LEARN_NEW = 1,       /* inserted */
    MAC_LEARN_MOVED = 2,     /* known with another value: value replaced */
};

/* Create a table. -EINVAL on a bad config, -ENOMEM. */
int mac_table_create(const struct mac_table_config *cfg, struct mac_table **out);
void mac_table_destroy(struct mac_table *t);

/* Lock-free lookup. Returns 0 and stores the value, or -ENOENT. Does not
 * refresh the entry (only the source of a frame refreshes, via learn). */
int mac_table_lookup(const struct mac_table *t, uint32_t domain, const uint8_t mac[6],
                     uint32_t *value);

/* Learn that `mac` in `domain` is behind `value` at time now. Returns an enum
 * mac_learn_result, or -EINVAL (multicast/zero MAC, domain > MAX_DOMAIN),
 * -EPERM (a static entry holds the MAC with another value). At capacity the
 * least recently seen entry among a bounded scan is evicted. */
int mac_table_learn(struct mac_table *t, uint32_t domain, const uint8_t mac[6], uint32_t value,
                    uint64_t now);

/* Add or replace a static entry: never aged, never evicted, never moved by
 * learning. -ENOSPC when the table is full of static entries. */
int mac_table_add_static(struct mac_table *t, uint32_t domain, const uint8_t mac[6],
                         uint32_t value);

/* Remove one entry. 0 or -ENOENT. */
int mac_table_delete(struct mac_table *t, uint32_t domain, const uint8_t mac[6]);

/* Remove dynamic entries last seen more than aging_ns before now. Returns how
 * many were removed. */
size_t mac_table_age(struct mac_table *t, uint64_t now);

/* Remove entries matching value and domain (either may be MAC_TABLE_ANY);
 * static entries too when include_static. Returns how many were removed. */
size_t mac_table_flush(struct mac_table *t, uint32_t value, uint32_t domain, bool include_static);

/* Number of entries (a snapshot). */
size_t mac_table_count(const struct mac_table *t);

/* Change the aging time (applies at the next age()). -EINVAL when 0. */
int mac_table_set_aging(struct mac_table *t, uint64_t aging_ns);

void mac_table_get_stats(const struct mac_table *t, struct mac_table_stats *out);

struct mac_table_entry {
    uint32_t domain;
    uint8_t mac[6];
    uint32_t value;
    bool is_static;
    uint64_t last_seen;
};

/* Call cb for every entry (control thread; holds the writer mutex, so cb must
 * not call back into this table). Stops early and returns cb's value when cb
 * returns non-zero; returns 0 otherwise. */
int mac_table_foreach(struct mac_table *t, int (*cb)(const struct mac_table_entry *e, void *arg),
                      void *arg);

#endif
