/* SPDX-License-Identifier: Apache-2.0 */
/*
 * IEEE 802.1AX (formerly 802.3ad clause 43) Link Aggregation Control Protocol.
 *
 * One struct lacp per bond (one actor system, one aggregator). Each bond
 * member is an LACP port with its own receive machine, periodic transmission
 * and mux machine. The module is pure logic: frames come in through
 * lacp_rx(), frames to send come out of lacp_member_tx(), time is passed in.
 *
 * Machines, simplified the way Open vSwitch simplifies them:
 *  - Receive: DISABLED (link down) -> EXPIRED (link up, or no LACPDU for the
 *    current timeout) -> DEFAULTED (no LACPDU for another short timeout;
 *    partner info reset), and CURRENT on every valid LACPDU. The timeout is
 *    3 s when the actor runs fast (LACP_Timeout short), 90 s when slow.
 *    While EXPIRED the actor asks the partner for fast LACPDUs.
 *  - Periodic transmission: every 1 s when the PARTNER asked for the short
 *    timeout, else every 30 s; none when both sides are passive. State changes
 *    also cause a transmission (NTT), at most 3 LACPDUs per second per port.
 *  - Selection: one aggregator per bond. Members that are CURRENT with an
 *    aggregatable partner are candidates; the candidate with the best
 *    (lowest) partner system priority/ID/key, then actor port
 *    priority/number, is the lead, and every candidate whose partner system
 *    and key equal the lead's is SELECTED. Members of another partner stay
 *    unselected. An EXPIRED member is unselected at once (unlike the
 *    standard, which keeps it until DEFAULTED): it then advertises
 *    Synchronization off, so the partner stops distributing on that link as
 *    well, and failover happens on both sides within the 3 s timeout.
 *  - Mux: DETACHED -> ATTACHED when selected (actor Synchronization set) ->
 *    COLLECTING_DISTRIBUTING once the partner reports Synchronization and its
 *    view of us matches our actor information; back when that stops. A
 *    partner that reports itself EXPIRED (it lost our LACPDUs: a one-way
 *    link) counts as out of sync. The
 *    standard's WAITING state (wait_while timer, 2 s, which lets several
 *    ports join the aggregator together) is not modelled: ports attach at
 *    once. Collecting and distributing are coupled (the "coupled control"
 *    variant of 802.1AX 6.4.15).
 *
 * No locking inside: the owner serialises calls (the bond's control thread).
 */
#ifndef QT_CARD_NET_LACP_H
#define QT_CARD_NET_LACP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pkt.h"

#define LACP_PDU_LEN        110 /* LACPDU after the Ethernet header */
#define LACP_FRAME_LEN      (PKT_ETH_HLEN + LACP_PDU_LEN)
#define LACP_SUBTYPE        1
#define LACP_MARKER_SUBTYPE 2
#define LACP_VERSION        1
#define LACP_MAX_MEMBERS    16

#define LACP_FAST_PERIOD_NS   (1ull * 1000000000ull)
#define LACP_SLOW_PERIOD_NS   (30ull * 1000000000ull)
#define LACP_SHORT_TIMEOUT_NS (3ull * 1000000000ull)
#define LACP_LONG_TIMEOUT_NS  (90ull * 1000000000ull)

/* Slow protocols multicast destination 01:80:c2:00:00:02. */
extern const uint8_t lacp_slow_mac[PKT_ETH_ALEN];

/* Port state bits (actor_state / partner_state). */
#define LACP_STATE_ACTIVITY     0x01 /* active LACP */
#define LACP_STATE_TIMEOUT      0x02 /* short timeout (fast LACPDUs wanted) */
#define LACP_STATE_AGGREGATION  0x04 /* aggregatable */
#define LACP_STATE_SYNC         0x08 /* in sync (attached to the right aggregator) */
#define LACP_STATE_COLLECTING   0x10
#define LACP_STATE_DISTRIBUTING 0x20
#define LACP_STATE_DEFAULTED    0x40
#define LACP_STATE_EXPIRED      0x80

/* Actor or partner information as carried in an LACPDU (host order). */
struct lacp_info {
    uint16_t sys_prio;
    uint8_t sys_mac[PKT_ETH_ALEN];
    uint16_t key;
    uint16_t port_prio;
    uint16_t port;
    uint8_t state;
};

struct lacp_pdu {
    struct lacp_info actor;
    struct lacp_info partner;
    uint16_t collector_max_delay; /* tens of microseconds */
};

/* Why an LACPDU was rejected (index into lacp_member_stats.bad). */
enum lacp_bad {
    LACP_BAD_TRUNC = 0,     /* shorter than LACP_PDU_LEN (or the Ethernet header) */
    LACP_BAD_ETHERTYPE,     /* not 0x8809 */
    LACP_BAD_DST,           /* destination not the slow-protocols address */
    LACP_BAD_SUBTYPE,       /* neither LACP (1) nor marker (2) */
    LACP_BAD_VERSION,       /* version 0 */
    LACP_BAD_ACTOR_TLV,     /* actor TLV type != 1 or length != 20 */
    LACP_BAD_PARTNER_TLV,   /* partner TLV type != 2 or length != 20 */
    LACP_BAD_COLLECTOR_TLV, /* collector TLV type != 3 or length != 16 */
    LACP_BAD_TERMINATOR,    /* terminator TLV type != 0 or length != 0 */
    LACP_BAD_ACTOR_INFO,    /* actor system MAC zero/multicast or port number 0 */
    LACP_BAD__MAX
};

enum lacp_rx_state {
    LACP_RX_DISABLED = 0, /* link down */
    LACP_RX_EXPIRED,
    LACP_RX_DEFAULTED,
    LACP_RX_CURRENT,
};

enum lacp_mux_state {
    LACP_MUX_DETACHED = 0,
    LACP_MUX_ATTACHED,
    LACP_MUX_COLLECTING_DISTRIBUTING,
};

/* Encode pdu into buf[0..LACP_PDU_LEN) (reserved bytes zero). -ENOSPC when
 * cap < LACP_PDU_LEN. Returns LACP_PDU_LEN. */
int lacp_pdu_encode(const struct lacp_pdu *pdu, uint8_t *buf, size_t cap);

/* Decode and validate the LACPDU in buf[0..len) (after the Ethernet header).
 * Trailing bytes beyond LACP_PDU_LEN are ignored (padding); a version > 1 is
 * accepted and read as version 1 (802.1AX forward compatibility); reserved
 * fields are ignored. Returns 0, or -EBADMSG with *bad set (bad may be NULL). */
int lacp_pdu_decode(const uint8_t *buf, size_t len, struct lacp_pdu *pdu, enum lacp_bad *bad);

struct lacp_config {
    uint16_t sys_prio;             /* default 32768 */
    uint8_t sys_mac[PKT_ETH_ALEN]; /* actor system ID (unicast, non-zero) */
    uint16_t key;                  /* actor operational key (non-zero) */
    bool active;                   /* active (send without being asked) or passive */
    bool fast;                     /* ask the partner for LACPDUs every 1 s (timeout 3 s) */
};

struct lacp_member_stats {
    uint64_t rx_pdus;    /* valid LACPDUs */
    uint64_t rx_markers; /* marker PDUs (ignored; no marker responder) */
    uint64_t rx_bad[LACP_BAD__MAX];
    uint64_t tx_pdus;
    uint64_t expired;   /* CURRENT -> EXPIRED transitions */
    uint64_t defaulted; /* -> DEFAULTED transitions */
};

struct lacp_member {
    bool in_use;
    bool link_up;
    uint16_t port; /* actor port number (non-zero) */
    uint16_t port_prio;
    uint8_t mac[PKT_ETH_ALEN]; /* source MAC of the LACPDUs this member sends */
    enum lacp_rx_state rx;
    enum lacp_mux_state mux;
    bool selected;
    bool ntt;          /* need to transmit */
    bool partner_sync; /* partner in sync and its view of us is right */
    struct lacp_info partner;
    uint64_t rx_deadline; /* current_while expiry */
    uint64_t next_tx;     /* next periodic transmission */
    uint64_t tx_window;   /* start of the current 1 s rate-limit window */
    uint8_t tx_in_window;
    struct lacp_member_stats stats;
};

struct lacp {
    struct lacp_config cfg;
    struct lacp_member members[LACP_MAX_MEMBERS];
};

/* -EINVAL on a bad config. */
int lacp_init(struct lacp *l, const struct lacp_config *cfg);

/* Add a member (link down, DETACHED). port != 0 is the LACP port number,
 * unique in the bond. Returns the member index (>= 0), -EEXIST, -ENOSPC,
 * -EINVAL. */
int lacp_member_add(struct lacp *l, uint16_t port, uint16_t port_prio,
                    const uint8_t mac[PKT_ETH_ALEN], uint64_t now);
int lacp_member_remove(struct lacp *l, unsigned idx);

/* Change the actor's activity and timeout (cfg.active, cfg.fast) in place: members keep
 * their partner and aggregation, and each sends its new state at once. */
void lacp_set_actor(struct lacp *l, bool active, bool fast, uint64_t now);

/* Link state of a member; going down detaches it at once. */
int lacp_member_set_link(struct lacp *l, unsigned idx, bool up, uint64_t now);

/* A slow-protocols frame (with its Ethernet header) received on member idx.
 * Returns 0 for a valid LACPDU, 0 for a marker (counted, ignored), or
 * -EBADMSG for anything bogus (counted by reason, dropped), -EINVAL for a bad
 * idx. Runs the machines (no need to call lacp_run() just for this). */
int lacp_rx(struct lacp *l, unsigned idx, const uint8_t *frame, size_t len, uint64_t now);

/* Advance timers, selection and mux for all members. Call it at least by
 * lacp_next_wakeup() and after any change. */
void lacp_run(struct lacp *l, uint64_t now);

/* Earliest time lacp_run() has something to do (UINT64_MAX if never). */
uint64_t lacp_next_wakeup(const struct lacp *l);

/* If member idx must send an LACPDU now, build the whole frame (Ethernet
 * header + LACPDU) in buf and return its length (LACP_FRAME_LEN); return 0
 * when nothing is due, -ENOSPC when cap < LACP_FRAME_LEN. */
int lacp_member_tx(struct lacp *l, unsigned idx, uint64_t now, uint8_t *buf, size_t cap);

/* True when the member is COLLECTING_DISTRIBUTING (its link is up). */
bool lacp_member_is_distributing(const struct lacp *l, unsigned idx);

/* The actor information the member currently advertises. */
void lacp_member_actor_info(const struct lacp *l, unsigned idx, struct lacp_info *out);

const char *lacp_bad_name(enum lacp_bad b);
const char *lacp_rx_state_name(enum lacp_rx_state s);
const char *lacp_mux_state_name(enum lacp_mux_state s);

#endif
