/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Adaptive interrupt (guest notification) coalescing for one VM queue.
 *
 * The data plane tells the controller how many packets it just completed
 * (used-ring entries published) and the time; the controller answers "signal
 * the guest now" or "hold" (the caller must then make sure coalesce_poll() or
 * coalesce_deadline() gets looked at, so held packets are signalled by the
 * deadline at the latest).
 *
 * Rule: signal when the pending count reaches max_pkts, or when the oldest
 * pending completion is max_ns old. With `adaptive`, both follow the measured
 * completion rate: the hold time is 0 at or below low_pps (every completion
 * signalled at once: a ping is never delayed), max_ns at or above high_pps,
 * linear in between; the packet threshold is the number of packets expected
 * within the hold time at the current rate (capped at max_pkts), and when
 * fewer than 2 are expected nothing is held at all (holding would only add
 * latency). A completion
 * after an idle gap (no completion for idle_ns) is always signalled at once
 * and resets the rate estimate, so the first packet after a burst is not held
 * either. The rate is measured over windows of window_ns.
 *
 * One controller per queue, owned by the thread that serves the queue.
 */
#ifndef QT_CARD_NET_COALESCE_H
#define QT_CARD_NET_COALESCE_H

#include <stdbool.h>
#include <stdint.h>

struct coalesce_config {
    bool adaptive;      /* false: fixed max_pkts / max_ns */
    uint32_t max_pkts;  /* >= 1; 1 disables coalescing */
    uint64_t max_ns;    /* longest a completion may wait for its signal */
    uint64_t low_pps;   /* at or below: no coalescing (adaptive) */
    uint64_t high_pps;  /* at or above: full coalescing (adaptive) */
    uint64_t window_ns; /* rate measurement window (adaptive) */
    uint64_t idle_ns;   /* gap after which the next completion is signalled at once */
};

/* Defaults: adaptive, 32 packets, 50 us, 20 kpps..500 kpps, 100 us windows,
 * 50 us idle gap. */
void coalesce_config_default(struct coalesce_config *cfg);

struct coalesce_stats {
    uint64_t completed;   /* packets completed */
    uint64_t notified;    /* guest notifications sent */
    uint64_t suppressed;  /* completions that did not signal at once */
    uint64_t timer_flush; /* notifications sent by the deadline (coalesce_poll) */
};

struct coalesce {
    struct coalesce_config cfg;
    uint32_t pending;       /* completed but not yet signalled */
    uint64_t first_pending; /* time of the oldest pending completion */
    uint64_t last;          /* time of the last completion */
    uint64_t win_start;
    uint64_t win_pkts;
    uint64_t rate_pps;     /* current estimate */
    uint32_t cur_max_pkts; /* thresholds in force */
    uint64_t cur_max_ns;
    bool started;
    struct coalesce_stats stats;
};

/* -EINVAL on a bad config (max_pkts 0, low_pps >= high_pps when adaptive,
 * window_ns 0 when adaptive). */
int coalesce_init(struct coalesce *c, const struct coalesce_config *cfg);

/* n packets were completed at time now. Returns true when the guest must be
 * signalled now (all pending packets count as signalled), false when the
 * signal is held until more packets come or coalesce_deadline(). */
bool coalesce_complete(struct coalesce *c, uint32_t n, uint64_t now);

/* Time by which held completions must be signalled; UINT64_MAX when none. */
uint64_t coalesce_deadline(const struct coalesce *c);

/* Timer/poll check: true (and counts a notification) when completions are
 * pending and their deadline has passed. */
bool coalesce_poll(struct coalesce *c, uint64_t now);

#endif
