/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bond of uplink ports: static (no LACPDU, every member with link up carries
 * traffic) or LACP (a member carries traffic when its link is up and LACP has
 * it COLLECTING_DISTRIBUTING). Transmit distribution hashes each frame (L2,
 * L3 or L4 fields, see pkt_hash()) into one of 256 buckets; each bucket
 * belongs to one enabled member. When a member leaves, only its buckets move
 * (to the least loaded remaining members); when one joins, the buckets are
 * spread evenly again.
 *
 * CONCURRENCY CONTRACT
 *  - bond_select_tx() and bond_rx_allowed() are lock-free and may run on any
 *    data-plane thread concurrently with everything else: they only read
 *    atomics (the bucket map, the enabled mask, the member ports).
 *  - Everything else (membership, link changes, LACP rx/tx, bond_run) is the
 *    control side: the caller serialises it (one control thread, or a mutex
 *    per bond). LACPDUs received by a data-plane thread are handed to the
 *    control side, which calls bond_rx_lacp().
 */
#ifndef QT_CARD_NET_BOND_H
#define QT_CARD_NET_BOND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lacp.h"
#include "pkt.h"

#define BOND_MAX_MEMBERS LACP_MAX_MEMBERS
#define BOND_N_BUCKETS   256
#define BOND_NO_PORT     UINT32_MAX

enum bond_mode {
    BOND_MODE_STATIC = 0, /* balance by hash over members with link up; no LACPDUs */
    BOND_MODE_LACP,
};

struct bond_config {
    enum bond_mode mode;
    enum pkt_hash_fields hash; /* PKT_HASH_L2 / L3 / L4 */
    uint32_t hash_seed;
    struct lacp_config lacp; /* BOND_MODE_LACP only */
};

struct bond_stats {
    uint64_t changes;   /* times the enabled member set changed */
    uint64_t failovers; /* a member left the enabled set while others remained */
};

struct bond {
    struct bond_config cfg;
    struct lacp lacp;
    bool in_use[BOND_MAX_MEMBERS];
    bool link_up[BOND_MAX_MEMBERS];
    int lacp_idx[BOND_MAX_MEMBERS];              /* member index inside lacp */
    uint8_t mac[BOND_MAX_MEMBERS][PKT_ETH_ALEN]; /* each member's MAC (LACPDU source) */
    _Atomic uint32_t port[BOND_MAX_MEMBERS]; /* switch port of each member, BOND_NO_PORT if free */
    _Atomic uint32_t enabled_mask;           /* bit i: member i may carry traffic */
    _Atomic uint8_t bucket[BOND_N_BUCKETS];  /* bucket -> member index */
    struct bond_stats stats;
};

/* -EINVAL on a bad config (bad hash, bad LACP config in LACP mode). */
int bond_init(struct bond *b, const struct bond_config *cfg, uint64_t now);

/* Add switch port `port` as a member (link down). mac is the member's own MAC
 * (source of its LACPDUs). Returns the member index or -EEXIST / -ENOSPC. */
int bond_member_add(struct bond *b, uint32_t port, const uint8_t mac[PKT_ETH_ALEN], uint64_t now);
int bond_member_remove(struct bond *b, uint32_t port, uint64_t now);

/* Link state of a member (carrier). -ENOENT for an unknown port. */
int bond_member_set_link(struct bond *b, uint32_t port, bool up, uint64_t now);

/* Slow-protocols frame received on member port. -ENOENT unknown port,
 * -EOPNOTSUPP in static mode (the frame is not for us), else lacp_rx(). */
int bond_rx_lacp(struct bond *b, uint32_t port, const uint8_t *frame, size_t len, uint64_t now);

/* In place, traffic kept: the distribution hash (read lock-free by bond_select_tx;
 * -EINVAL for a bad value), and the LACP activity and rate (-EOPNOTSUPP in static
 * mode; see lacp_set_actor()). */
int bond_set_hash(struct bond *b, enum pkt_hash_fields hash);
int bond_set_lacp(struct bond *b, bool active, bool fast, uint64_t now);
/* Change the mode in place (control side). To LACP: the machines start from scratch with
 * lc (system ID, key, activity, rate) on every member, keeping link states; no member
 * carries traffic until LACP agrees with the partner. To static: LACP state is dropped and
 * every member with link up carries traffic at once. Members, their slots and the hash
 * stay. -EINVAL on a bad mode or LACP configuration (nothing changed). */
int bond_set_mode(struct bond *b, enum bond_mode mode, const struct lacp_config *lc, uint64_t now);

/* Run LACP timers and recompute the enabled set. */
void bond_run(struct bond *b, uint64_t now);

/* Earliest time bond_run() has work (UINT64_MAX: none). */
uint64_t bond_next_wakeup(const struct bond *b);

/* LACPDU member `port` must send now, if any (see lacp_member_tx()). */
int bond_member_lacp_tx(struct bond *b, uint32_t port, uint64_t now, uint8_t *buf, size_t cap);

/* Lock-free: pick the member port for a frame. 0 and *port, or -ENETDOWN when
 * no member is enabled. */
int bond_select_tx(const struct bond *b, const struct pkt_meta *m, uint32_t *port);

/* Lock-free: may traffic received on member `port` enter the switch? (A member
 * that is not collecting drops data frames; LACPDUs are always processed.) */
bool bond_rx_allowed(const struct bond *b, uint32_t port);

/* Number of enabled members. */
unsigned bond_n_enabled(const struct bond *b);

/* Member index of a port, or -ENOENT. */
int bond_member_index(const struct bond *b, uint32_t port);

#endif
