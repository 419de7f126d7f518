/* SPDX-License-Identifier: Apache-2.0 */
/* Bonds: static or LACP, hash distribution with lock-free selection. See bond.h. */
#include "bond.h"

#include <errno.h>
#include <string.h>

int bond_init(struct bond *b, const struct bond_config *cfg, uint64_t now)
{
    if (cfg->hash > PKT_HASH_L4 || (cfg->mode != BOND_MODE_STATIC && cfg->mode != BOND_MODE_LACP))
        return -EINVAL;
    memset(b, 0, sizeof(*b));
    b->cfg = *cfg;
    if (cfg->mode == BOND_MODE_LACP) {
        int rc = lacp_init(&b->lacp, &cfg->lacp);
        if (rc)
            return rc;
    }
    for (int i = 0; i < BOND_MAX_MEMBERS; i++) {
        atomic_init(&b->port[i], BOND_NO_PORT);
        b->lacp_idx[i] = -1;
    }
    atomic_init(&b->enabled_mask, 0);
    for (int i = 0; i < BOND_N_BUCKETS; i++)
        atomic_init(&b->bucket[i], 0);
    return 0;
}

int bond_member_index(const struct bond *b, uint32_t port)
{
    if (port == BOND_NO_PORT)
        return -ENOENT;
    for (int i = 0; i < BOND_MAX_MEMBERS; i++)
        if (atomic_load_explicit(&((struct bond *)b)->port[i], memory_order_relaxed) == port)
            return i;
    return -ENOENT;
}

static uint32_t bond_mask(const struct bond *b)
{
    return atomic_load_explicit(&((struct bond *)b)->enabled_mask, memory_order_acquire);
}

/* Recompute the enabled set and move buckets (control side). */
static void bond_update(struct bond *b)
{
    uint32_t want = 0;
    for (int i = 0; i < BOND_MAX_MEMBERS; i++) {
        if (!b->in_use[i] || !b->link_up[i])
            continue;
        if (b->cfg.mode == BOND_MODE_STATIC ||
            lacp_member_is_distributing(&b->lacp, (unsigned)b->lacp_idx[i]))
            want |= 1u << i;
    }
    uint32_t old = atomic_load_explicit(&b->enabled_mask, memory_order_relaxed);
    if (want == old)
        return;

    /* Leaving members stop at once (readers fall back to the mask); then the
     * buckets move; then joining members start. */
    atomic_store_explicit(&b->enabled_mask, old & want, memory_order_release);
    if (want) {
        unsigned load[BOND_MAX_MEMBERS] = {0};
        uint8_t en[BOND_MAX_MEMBERS];
        unsigned n = 0;
        for (int i = 0; i < BOND_MAX_MEMBERS; i++)
            if (want & (1u << i))
                en[n++] = (uint8_t)i;
        if (want & ~old) { /* someone joined: spread evenly */
            for (int k = 0; k < BOND_N_BUCKETS; k++)
                atomic_store_explicit(&b->bucket[k], en[k % n], memory_order_relaxed);
        } else { /* only departures: move just their buckets */
            for (int k = 0; k < BOND_N_BUCKETS; k++) {
                uint8_t m = atomic_load_explicit(&b->bucket[k], memory_order_relaxed);
                if (want & (1u << m))
                    load[m]++;
            }
            for (int k = 0; k < BOND_N_BUCKETS; k++) {
                uint8_t m = atomic_load_explicit(&b->bucket[k], memory_order_relaxed);
                if (want & (1u << m))
                    continue;
                uint8_t best = en[0];
                for (unsigned j = 1; j < n; j++)
                    if (load[en[j]] < load[best])
                        best = en[j];
                load[best]++;
                atomic_store_explicit(&b->bucket[k], best, memory_order_relaxed);
            }
        }
    }
    atomic_store_explicit(&b->enabled_mask, want, memory_order_release);
    b->stats.changes++;
    if ((old & ~want) && want)
        b->stats.failovers++;
}

int bond_member_add(struct bond *b, uint32_t port, const uint8_t mac[PKT_ETH_ALEN], uint64_t now)
{
    if (port == BOND_NO_PORT)
        return -EINVAL;
    if (bond_member_index(b, port) >= 0)
        return -EEXIST;
    int slot = -1;
    for (int i = 0; i < BOND_MAX_MEMBERS; i++) {
        if (!b->in_use[i]) {
            slot = i;
            break;
        }
    }
    if (slot < 0)
        return -ENOSPC;
    if (b->cfg.mode == BOND_MODE_LACP) {
        /* LACP port numbers are the member slot + 1: unique and non-zero. */
        int li = lacp_member_add(&b->lacp, (uint16_t)(slot + 1), 32768, mac, now);
        if (li < 0)
            return li;
        b->lacp_idx[slot] = li;
    }
    memcpy(b->mac[slot], mac, PKT_ETH_ALEN);
    b->in_use[slot] = true;
    b->link_up[slot] = false;
    atomic_store_explicit(&b->port[slot], port, memory_order_release);
    return slot;
}

int bond_member_remove(struct bond *b, uint32_t port, uint64_t now)
{
    int i = bond_member_index(b, port);
    if (i < 0)
        return i;
    b->link_up[i] = false;
    bond_update(b); /* stop traffic to it first */
    if (b->lacp_idx[i] >= 0)
        lacp_member_remove(&b->lacp, (unsigned)b->lacp_idx[i]);
    b->lacp_idx[i] = -1;
    b->in_use[i] = false;
    atomic_store_explicit(&b->port[i], BOND_NO_PORT, memory_order_release);
    return 0;
}

int bond_member_set_link(struct bond *b, uint32_t port, bool up, uint64_t now)
{
    int i = bond_member_index(b, port);
    if (i < 0)
        return i;
    b->link_up[i] = up;
    if (b->cfg.mode == BOND_MODE_LACP)
        lacp_member_set_link(&b->lacp, (unsigned)b->lacp_idx[i], up, now);
    bond_update(b);
    return 0;
}

int bond_rx_lacp(struct bond *b, uint32_t port, const uint8_t *frame, size_t len, uint64_t now)
{
    int i = bond_member_index(b, port);
    if (i < 0)
        return i;
    if (b->cfg.mode != BOND_MODE_LACP)
        return -EOPNOTSUPP;
    int rc = lacp_rx(&b->lacp, (unsigned)b->lacp_idx[i], frame, len, now);
    bond_update(b);
    return rc;
}

int bond_set_hash(struct bond *b, enum pkt_hash_fields hash)
{
    if ((unsigned)hash > PKT_HASH_L4)
        return -EINVAL;
    __atomic_store_n(&b->cfg.hash, hash, __ATOMIC_RELAXED);
    return 0;
}

int bond_set_lacp(struct bond *b, bool active, bool fast, uint64_t now)
{
    if (b->cfg.mode != BOND_MODE_LACP)
        return -EOPNOTSUPP;
    lacp_set_actor(&b->lacp, active, fast, now);
    b->cfg.lacp.active = active;
    b->cfg.lacp.fast = fast;
    bond_update(b);
    return 0;
}

int bond_set_mode(struct bond *b, enum bond_mode mode, const struct lacp_config *lc, uint64_t now)
{
    if (mode != BOND_MODE_STATIC && mode != BOND_MODE_LACP)
        return -EINVAL;
    if (mode == b->cfg.mode)
        return 0;
    if (mode == BOND_MODE_LACP) {
        struct lacp_config keep = b->cfg.lacp;
        int rc = lacp_init(&b->lacp, lc); /* unused in static mode: free to start over */
        if (rc)
            return rc;
        for (int i = 0; i < BOND_MAX_MEMBERS; i++) {
            if (!b->in_use[i])
                continue;
            int li = lacp_member_add(&b->lacp, (uint16_t)(i + 1), 32768, b->mac[i], now);
            if (li < 0) { /* cannot happen with valid slots; leave static mode intact */
                for (int k = 0; k < BOND_MAX_MEMBERS; k++)
                    b->lacp_idx[k] = -1;
                b->cfg.lacp = keep;
                return li;
            }
            b->lacp_idx[i] = li;
            lacp_member_set_link(&b->lacp, (unsigned)li, b->link_up[i], now);
        }
        b->cfg.lacp = *lc;
    } else {
        for (int i = 0; i < BOND_MAX_MEMBERS; i++)
            b->lacp_idx[i] = -1;
    }
    b->cfg.mode = mode;
    bond_update(b);
    return 0;
}

void bond_run(struct bond *b, uint64_t now)
{
    if (b->cfg.mode == BOND_MODE_LACP)
        lacp_run(&b->lacp, now);
    bond_update(b);
}

uint64_t bond_next_wakeup(const struct bond *b)
{
    return b->cfg.mode == BOND_MODE_LACP ? lacp_next_wakeup(&b->lacp) : UINT64_MAX;
}

int bond_member_lacp_tx(struct bond *b, uint32_t port, uint64_t now, uint8_t *buf, size_t cap)
{
    int i = bond_member_index(b, port);
    if (i < 0)
        return i;
    if (b->cfg.mode != BOND_MODE_LACP)
        return 0;
    return lacp_member_tx(&b->lacp, (unsigned)b->lacp_idx[i], now, buf, cap);
}

int bond_select_tx(const struct bond *b, const struct pkt_meta *m, uint32_t *port)
{
    struct bond *mb = (struct bond *)b;
    uint32_t mask = bond_mask(b);
    if (!mask)
        return -ENETDOWN;
    uint32_t h = pkt_hash(m, __atomic_load_n(&b->cfg.hash, __ATOMIC_RELAXED), b->cfg.hash_seed);
    unsigned i = atomic_load_explicit(&mb->bucket[h % BOND_N_BUCKETS], memory_order_relaxed);
    if (!(mask & (1u << i))) {
        /* Bucket map being updated: take the (h mod n)-th enabled member. */
        unsigned n = (unsigned)__builtin_popcount(mask);
        unsigned k = (h >> 8) % n;
        uint32_t mm = mask;
        while (k--)
            mm &= mm - 1;
        i = (unsigned)__builtin_ctz(mm);
    }
    uint32_t p = atomic_load_explicit(&mb->port[i], memory_order_acquire);
    if (p == BOND_NO_PORT)
        return -ENETDOWN;
    *port = p;
    return 0;
}

bool bond_rx_allowed(const struct bond *b, uint32_t port)
{
    int i = bond_member_index(b, port);
    return i >= 0 && (bond_mask(b) & (1u << i));
}

unsigned bond_n_enabled(const struct bond *b)
{
    return (unsigned)__builtin_popcount(bond_mask(b));
}
