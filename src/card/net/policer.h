/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Rate control: token buckets for ingress policing (drop what exceeds the
 * rate) and egress shaping (delay what exceeds the rate), and storm control
 * (per-port broadcast / multicast / unknown-unicast rate limits).
 *
 * Rates are in bits/s (TB_UNIT_BITS, a packet costs 8 * its length) or
 * packets/s (TB_UNIT_PACKETS, a packet costs 1). The bucket holds at most
 * `burst` units and starts full. Arithmetic is exact integer arithmetic in
 * units x nanoseconds, so a long run conforms to rate within rounding of one
 * packet, whatever the packet sizes.
 *
 * Time is passed in (now, nanoseconds, monotonic). A bucket is owned by one
 * thread at a time (the port's queue owner); there is no locking inside.
 */
#ifndef QT_CARD_NET_POLICER_H
#define QT_CARD_NET_POLICER_H

#include <stdbool.h>
#include <stdint.h>

#include "pkt.h"

#define TB_NS_PER_SEC 1000000000ull
/* Rates and bursts above these are refused (-EINVAL): 1 Tbit/s, 2^34 units of
 * burst (2 GB in bytes), which keeps units x ns within 64 bits. */
#define TB_MAX_RATE  1000000000000ull
#define TB_MAX_BURST (1ull << 34)

enum tb_unit {
    TB_UNIT_BITS = 0,
    TB_UNIT_PACKETS,
};

struct tbucket {
    uint64_t rate;   /* units per second, 0 = unlimited */
    uint64_t burst;  /* bucket depth in units */
    uint64_t tokens; /* units x TB_NS_PER_SEC currently in the bucket */
    uint64_t last;   /* time of the last refill (ns) */
    enum tb_unit unit;
};

/* Initialise a bucket (full at time now). burst must be >= the cost of the
 * largest packet or such packets never conform: for TB_UNIT_BITS, at least
 * 8 * PKT_MAX_FRAME is sensible. -EINVAL on rate or burst out of range or
 * burst == 0 with rate != 0. */
int tbucket_init(struct tbucket *tb, enum tb_unit unit, uint64_t rate, uint64_t burst,
                 uint64_t now);

/* Cost of a packet of len bytes in the bucket's units (lengths saturate at
 * 16 MiB so the arithmetic cannot overflow; real packets, TSO included, are
 * far smaller). */
static inline uint64_t tbucket_cost(const struct tbucket *tb, uint32_t len)
{
    if (len > (1u << 24))
        len = 1u << 24;
    return tb->unit == TB_UNIT_BITS ? (uint64_t)len * 8 : 1;
}

/* --- Policer: drop the excess --- */

struct policer {
    struct tbucket tb;
    uint64_t passed_pkts, passed_bytes;
    uint64_t dropped_pkts, dropped_bytes;
};

int policer_init(struct policer *p, enum tb_unit unit, uint64_t rate, uint64_t burst, uint64_t now);

/* Returns true when a packet of len bytes conforms at time now (its cost is
 * taken from the bucket), false when it must be dropped. Counts both. */
bool policer_admit(struct policer *p, uint32_t len, uint64_t now);

/* --- Shaper: delay the excess --- */

struct shaper {
    struct tbucket tb;
    uint64_t max_delay; /* ns; a packet that would wait longer is refused */
    uint64_t sent_pkts, sent_bytes;
    uint64_t delayed_pkts; /* got a send time in the future */
    uint64_t refused_pkts; /* would have waited more than max_delay */
};

/* max_delay bounds the queue the shaper models (e.g. 10 ms). */
int shaper_init(struct shaper *s, enum tb_unit unit, uint64_t rate, uint64_t burst,
                uint64_t max_delay, uint64_t now);

/* Reserve the transmission of a packet of len bytes arriving at now. Returns
 * 0 and stores in *send_at the earliest time (>= now) the packet may leave
 * (== now when it conforms immediately); the bucket is charged, so packets
 * reserved in order leave at the configured rate. Returns -ENOBUFS (nothing
 * charged, counted in refused_pkts) when the wait would exceed max_delay:
 * the caller drops the packet or keeps it for a later retry. */
int shaper_reserve(struct shaper *s, uint32_t len, uint64_t now, uint64_t *send_at);

/* --- Storm control --- */

enum storm_class {
    STORM_BROADCAST = 0,
    STORM_MULTICAST,       /* group-bit destination other than broadcast */
    STORM_UNKNOWN_UNICAST, /* unicast destination not in the MAC table (flooded) */
    STORM__MAX
};

struct storm_control {
    bool enabled[STORM__MAX];
    struct policer pol[STORM__MAX];
};

/* Set (rate > 0) or clear (rate == 0) the limit for one class. */
int storm_control_set(struct storm_control *sc, enum storm_class c, enum tb_unit unit,
                      uint64_t rate, uint64_t burst, uint64_t now);

/* Class of a frame: STORM_BROADCAST / STORM_MULTICAST from the destination
 * MAC; for unicast, STORM_UNKNOWN_UNICAST when !dst_known, else STORM__MAX
 * (not subject to storm control). */
enum storm_class storm_control_classify(const struct pkt_meta *m, bool dst_known);

/* True when the frame may be flooded/forwarded; false = drop (counted in the
 * class's policer). Frames of class STORM__MAX or of a class without a limit
 * always pass. */
bool storm_control_admit(struct storm_control *sc, enum storm_class c, uint32_t len, uint64_t now);

const char *storm_class_name(enum storm_class c);

#endif
