/* SPDX-License-Identifier: Apache-2.0 */
/* IEEE 802.1AX LACP: LACPDU codec and per-port machines. See lacp.h. */
#include "lacp.h"

#include <errno.h>
#include <string.h>

const uint8_t lacp_slow_mac[PKT_ETH_ALEN] = {0x01, 0x80, 0xc2, 0x00, 0x00, 0x02};

/* LACPDU layout (offsets after the Ethernet header), 802.1AX 6.4.2.3. */
#define OFS_SUBTYPE     0
#define OFS_VERSION     1
#define OFS_ACTOR_TLV   2
#define OFS_PARTNER_TLV 22
#define OFS_COLLECT_TLV 42
#define OFS_TERM_TLV    58
#define INFO_TLV_LEN    20
#define COLLECT_TLV_LEN 16
#define TLV_ACTOR       0x01
#define TLV_PARTNER     0x02
#define TLV_COLLECTOR   0x03
#define TLV_TERMINATOR  0x00
#define LACP_TX_PER_SEC 3

static const char *const lacp_bad_names[LACP_BAD__MAX] = {
    [LACP_BAD_TRUNC] = "truncated",           [LACP_BAD_ETHERTYPE] = "ethertype",
    [LACP_BAD_DST] = "destination",           [LACP_BAD_SUBTYPE] = "subtype",
    [LACP_BAD_VERSION] = "version",           [LACP_BAD_ACTOR_TLV] = "actor-tlv",
    [LACP_BAD_PARTNER_TLV] = "partner-tlv",   [LACP_BAD_COLLECTOR_TLV] = "collector-tlv",
    [LACP_BAD_TERMINATOR] = "terminator-tlv", [LACP_BAD_ACTOR_INFO] = "actor-info",
};

const char *lacp_bad_name(enum lacp_bad b)
{
    return (unsigned)b < LACP_BAD__MAX ? lacp_bad_names[b] : "unknown";
}

const char *lacp_rx_state_name(enum lacp_rx_state s)
{
    switch (s) {
    case LACP_RX_DISABLED:
        return "disabled";
    case LACP_RX_EXPIRED:
        return "expired";
    case LACP_RX_DEFAULTED:
        return "defaulted";
    case LACP_RX_CURRENT:
        return "current";
    }
    return "unknown";
}

const char *lacp_mux_state_name(enum lacp_mux_state s)
{
    switch (s) {
    case LACP_MUX_DETACHED:
        return "detached";
    case LACP_MUX_ATTACHED:
        return "attached";
    case LACP_MUX_COLLECTING_DISTRIBUTING:
        return "collecting-distributing";
    }
    return "unknown";
}

/* ---- codec ---- */

static void lacp_put_info(uint8_t *p, uint8_t type, const struct lacp_info *i)
{
    p[0] = type;
    p[1] = INFO_TLV_LEN;
    pkt_put_be16(p + 2, i->sys_prio);
    memcpy(p + 4, i->sys_mac, PKT_ETH_ALEN);
    pkt_put_be16(p + 10, i->key);
    pkt_put_be16(p + 12, i->port_prio);
    pkt_put_be16(p + 14, i->port);
    p[16] = i->state;
    /* p[17..19] reserved, zero */
}

static void lacp_get_info(const uint8_t *p, struct lacp_info *i)
{
    i->sys_prio = pkt_get_be16(p + 2);
    memcpy(i->sys_mac, p + 4, PKT_ETH_ALEN);
    i->key = pkt_get_be16(p + 10);
    i->port_prio = pkt_get_be16(p + 12);
    i->port = pkt_get_be16(p + 14);
    i->state = p[16];
}

int lacp_pdu_encode(const struct lacp_pdu *pdu, uint8_t *buf, size_t cap)
{
    if (cap < LACP_PDU_LEN)
        return -ENOSPC;
    memset(buf, 0, LACP_PDU_LEN);
    buf[OFS_SUBTYPE] = LACP_SUBTYPE;
    buf[OFS_VERSION] = LACP_VERSION;
    lacp_put_info(buf + OFS_ACTOR_TLV, TLV_ACTOR, &pdu->actor);
    lacp_put_info(buf + OFS_PARTNER_TLV, TLV_PARTNER, &pdu->partner);
    buf[OFS_COLLECT_TLV] = TLV_COLLECTOR;
    buf[OFS_COLLECT_TLV + 1] = COLLECT_TLV_LEN;
    pkt_put_be16(buf + OFS_COLLECT_TLV + 2, pdu->collector_max_delay);
    buf[OFS_TERM_TLV] = TLV_TERMINATOR;
    buf[OFS_TERM_TLV + 1] = 0;
    return LACP_PDU_LEN;
}

static int lacp_bad(enum lacp_bad *out, enum lacp_bad b)
{
    if (out)
        *out = b;
    return -EBADMSG;
}

int lacp_pdu_decode(const uint8_t *buf, size_t len, struct lacp_pdu *pdu, enum lacp_bad *bad)
{
    if (len < LACP_PDU_LEN)
        return lacp_bad(bad, LACP_BAD_TRUNC);
    if (buf[OFS_SUBTYPE] != LACP_SUBTYPE)
        return lacp_bad(bad, LACP_BAD_SUBTYPE);
    if (buf[OFS_VERSION] == 0)
        return lacp_bad(bad, LACP_BAD_VERSION);
    if (buf[OFS_ACTOR_TLV] != TLV_ACTOR || buf[OFS_ACTOR_TLV + 1] != INFO_TLV_LEN)
        return lacp_bad(bad, LACP_BAD_ACTOR_TLV);
    if (buf[OFS_PARTNER_TLV] != TLV_PARTNER || buf[OFS_PARTNER_TLV + 1] != INFO_TLV_LEN)
        return lacp_bad(bad, LACP_BAD_PARTNER_TLV);
    if (buf[OFS_COLLECT_TLV] != TLV_COLLECTOR || buf[OFS_COLLECT_TLV + 1] != COLLECT_TLV_LEN)
        return lacp_bad(bad, LACP_BAD_COLLECTOR_TLV);
    if (buf[OFS_TERM_TLV] != TLV_TERMINATOR || buf[OFS_TERM_TLV + 1] != 0)
        return lacp_bad(bad, LACP_BAD_TERMINATOR);
    memset(pdu, 0, sizeof(*pdu));
    lacp_get_info(buf + OFS_ACTOR_TLV, &pdu->actor);
    lacp_get_info(buf + OFS_PARTNER_TLV, &pdu->partner);
    pdu->collector_max_delay = pkt_get_be16(buf + OFS_COLLECT_TLV + 2);
    if (pkt_mac_is_zero(pdu->actor.sys_mac) || pkt_mac_is_multicast(pdu->actor.sys_mac) ||
        pdu->actor.port == 0)
        return lacp_bad(bad, LACP_BAD_ACTOR_INFO);
    return 0;
}

/* ---- machines ---- */

int lacp_init(struct lacp *l, const struct lacp_config *cfg)
{
    if (pkt_mac_is_zero(cfg->sys_mac) || pkt_mac_is_multicast(cfg->sys_mac) || cfg->key == 0)
        return -EINVAL;
    memset(l, 0, sizeof(*l));
    l->cfg = *cfg;
    return 0;
}

static struct lacp_member *lacp_get(struct lacp *l, unsigned idx)
{
    if (idx >= LACP_MAX_MEMBERS || !l->members[idx].in_use)
        return NULL;
    return &l->members[idx];
}

static const struct lacp_member *lacp_cget(const struct lacp *l, unsigned idx)
{
    return lacp_get((struct lacp *)l, idx);
}

int lacp_member_add(struct lacp *l, uint16_t port, uint16_t port_prio,
                    const uint8_t mac[PKT_ETH_ALEN], uint64_t now)
{
    int free_i = -1;
    if (port == 0 || pkt_mac_is_multicast(mac))
        return -EINVAL;
    for (int i = 0; i < LACP_MAX_MEMBERS; i++) {
        if (l->members[i].in_use && l->members[i].port == port)
            return -EEXIST;
        if (!l->members[i].in_use && free_i < 0)
            free_i = i;
    }
    if (free_i < 0)
        return -ENOSPC;
    struct lacp_member *mb = &l->members[free_i];
    memset(mb, 0, sizeof(*mb));
    mb->in_use = true;
    mb->port = port;
    mb->port_prio = port_prio;
    memcpy(mb->mac, mac, PKT_ETH_ALEN);
    mb->rx = LACP_RX_DISABLED;
    mb->mux = LACP_MUX_DETACHED;
    mb->next_tx = now;
    return free_i;
}

int lacp_member_remove(struct lacp *l, unsigned idx)
{
    struct lacp_member *mb = lacp_get(l, idx);
    if (!mb)
        return -EINVAL;
    memset(mb, 0, sizeof(*mb));
    return 0;
}

static uint8_t lacp_actor_state(const struct lacp *l, const struct lacp_member *mb)
{
    uint8_t st = LACP_STATE_AGGREGATION;
    if (l->cfg.active)
        st |= LACP_STATE_ACTIVITY;
    if (l->cfg.fast)
        st |= LACP_STATE_TIMEOUT;
    if (mb->mux != LACP_MUX_DETACHED)
        st |= LACP_STATE_SYNC;
    if (mb->mux == LACP_MUX_COLLECTING_DISTRIBUTING)
        st |= LACP_STATE_COLLECTING | LACP_STATE_DISTRIBUTING;
    if (mb->rx == LACP_RX_DEFAULTED)
        st |= LACP_STATE_DEFAULTED;
    if (mb->rx == LACP_RX_EXPIRED)
        st |= LACP_STATE_EXPIRED;
    return st;
}

static void lacp_actor_info(const struct lacp *l, const struct lacp_member *mb,
                            struct lacp_info *out)
{
    out->sys_prio = l->cfg.sys_prio;
    memcpy(out->sys_mac, l->cfg.sys_mac, PKT_ETH_ALEN);
    out->key = l->cfg.key;
    out->port_prio = mb->port_prio;
    out->port = mb->port;
    out->state = lacp_actor_state(l, mb);
}

void lacp_member_actor_info(const struct lacp *l, unsigned idx, struct lacp_info *out)
{
    const struct lacp_member *mb = lacp_cget(l, idx);
    memset(out, 0, sizeof(*out));
    if (mb)
        lacp_actor_info(l, mb, out);
}

static uint64_t lacp_rx_timeout(const struct lacp *l)
{
    return l->cfg.fast ? LACP_SHORT_TIMEOUT_NS : LACP_LONG_TIMEOUT_NS;
}

/* Enter EXPIRED: the partner is no longer in sync and is asked for fast
 * LACPDUs (our transmissions now follow the short period too). */
static void lacp_enter_expired(struct lacp_member *mb, uint64_t now)
{
    mb->rx = LACP_RX_EXPIRED;
    mb->partner_sync = false;
    mb->partner.state &= (uint8_t)~LACP_STATE_SYNC;
    mb->partner.state |= LACP_STATE_TIMEOUT;
    mb->rx_deadline = now + LACP_SHORT_TIMEOUT_NS;
    mb->ntt = true;
}

void lacp_set_actor(struct lacp *l, bool active, bool fast, uint64_t now)
{
    if (l->cfg.active == active && l->cfg.fast == fast)
        return;
    l->cfg.active = active;
    l->cfg.fast = fast;
    for (int i = 0; i < LACP_MAX_MEMBERS; i++) {
        struct lacp_member *mb = &l->members[i];
        if (!mb->in_use || !mb->link_up)
            continue;
        /* The partner learns our new state from a LACPDU sent now. current_while takes
         * the new timeout from the next LACPDU received: the partner's period follows
         * our timeout bit, so that comes within a second either way. */
        mb->ntt = true;
    }
    lacp_run(l, now);
}

int lacp_member_set_link(struct lacp *l, unsigned idx, bool up, uint64_t now)
{
    struct lacp_member *mb = lacp_get(l, idx);
    if (!mb)
        return -EINVAL;
    if (mb->link_up == up)
        return 0;
    mb->link_up = up;
    if (up) {
        lacp_enter_expired(mb, now);
        mb->next_tx = now;
    } else {
        mb->rx = LACP_RX_DISABLED;
        mb->partner_sync = false;
        mb->selected = false;
        mb->mux = LACP_MUX_DETACHED;
        mb->ntt = false;
    }
    lacp_run(l, now);
    return 0;
}

/* Does the partner's view of us (pdu->partner) match what we advertise? The
 * identity, the key and the state bits in mask. */
static bool lacp_partner_view_ok(const struct lacp_info *actor, const struct lacp_info *view,
                                 uint8_t mask)
{
    return view->sys_prio == actor->sys_prio &&
           !memcmp(view->sys_mac, actor->sys_mac, PKT_ETH_ALEN) && view->key == actor->key &&
           view->port_prio == actor->port_prio && view->port == actor->port &&
           (view->state & mask) == (actor->state & mask);
}

static void lacp_record_pdu(struct lacp *l, struct lacp_member *mb, const struct lacp_pdu *pdu,
                            uint64_t now)
{
    struct lacp_info actor;
    lacp_actor_info(l, mb, &actor);

    mb->partner = pdu->actor;
    mb->rx = LACP_RX_CURRENT;
    mb->rx_deadline = now + lacp_rx_timeout(l);

    /* The partner is in sync when it says so and its view of us is right;
     * the sync bit is compared separately because ours may be changing. */
    /* As 802.1AX recordPDU: the partner's view of our activity and timeout does not
     * matter for synchronization (so changing them in place, lacp_set_actor(), does not
     * stop traffic), only for telling the partner (below). */
    bool identity_ok = lacp_partner_view_ok(&actor, &pdu->partner, LACP_STATE_AGGREGATION);
    /* A partner that reports itself EXPIRED is not receiving our LACPDUs:
     * the link works one way only, so do not distribute on it (802.1AX
     * would wait for the partner to drop Synchronization when it defaults,
     * another 3 s later). */
    mb->partner_sync = identity_ok && (pdu->actor.state & LACP_STATE_SYNC) &&
                       (pdu->actor.state & LACP_STATE_AGGREGATION) &&
                       !(pdu->actor.state & LACP_STATE_EXPIRED);

    /* Tell the partner when its view of us is stale. */
    if (!lacp_partner_view_ok(&actor, &pdu->partner,
                              LACP_STATE_ACTIVITY | LACP_STATE_TIMEOUT | LACP_STATE_AGGREGATION |
                                  LACP_STATE_SYNC))
        mb->ntt = true;
}

int lacp_rx(struct lacp *l, unsigned idx, const uint8_t *frame, size_t len, uint64_t now)
{
    struct lacp_member *mb = lacp_get(l, idx);
    enum lacp_bad bad;
    struct lacp_pdu pdu;
    int rc;

    if (!mb)
        return -EINVAL;
    if (len < PKT_ETH_HLEN + 1) {
        bad = LACP_BAD_TRUNC;
        goto bogus;
    }
    if (pkt_get_be16(frame + 12) != PKT_ETHERTYPE_SLOW) {
        bad = LACP_BAD_ETHERTYPE;
        goto bogus;
    }
    if (memcmp(frame, lacp_slow_mac, PKT_ETH_ALEN)) {
        bad = LACP_BAD_DST;
        goto bogus;
    }
    if (frame[PKT_ETH_HLEN] == LACP_MARKER_SUBTYPE) {
        mb->stats.rx_markers++;
        return 0;
    }
    rc = lacp_pdu_decode(frame + PKT_ETH_HLEN, len - PKT_ETH_HLEN, &pdu, &bad);
    if (rc)
        goto bogus;
    mb->stats.rx_pdus++;
    if (!mb->link_up)
        return 0; /* a frame racing with link down: ignore */
    lacp_record_pdu(l, mb, &pdu, now);
    lacp_run(l, now);
    return 0;

bogus:
    mb->stats.rx_bad[bad]++;
    return -EBADMSG;
}

static bool lacp_is_candidate(const struct lacp_member *mb)
{
    /* EXPIRED members are not candidates: dropping out of the aggregator
     * clears our Synchronization bit, which tells the partner to stop
     * distributing on the link too (Open vSwitch looks only at that bit). */
    return mb->in_use && mb->link_up && mb->rx == LACP_RX_CURRENT &&
           (mb->partner.state & LACP_STATE_AGGREGATION) && !pkt_mac_is_zero(mb->partner.sys_mac);
}

/* Lower is better: partner system priority, system ID, key; then our port
 * priority and number. */
static int lacp_cmp_lead(const struct lacp_member *a, const struct lacp_member *b)
{
    if (a->partner.sys_prio != b->partner.sys_prio)
        return a->partner.sys_prio < b->partner.sys_prio ? -1 : 1;
    int c = memcmp(a->partner.sys_mac, b->partner.sys_mac, PKT_ETH_ALEN);
    if (c)
        return c;
    if (a->partner.key != b->partner.key)
        return a->partner.key < b->partner.key ? -1 : 1;
    if (a->port_prio != b->port_prio)
        return a->port_prio < b->port_prio ? -1 : 1;
    return a->port < b->port ? -1 : a->port > b->port;
}

static void lacp_select(struct lacp *l)
{
    const struct lacp_member *lead = NULL;
    for (int i = 0; i < LACP_MAX_MEMBERS; i++) {
        const struct lacp_member *mb = &l->members[i];
        if (lacp_is_candidate(mb) && (!lead || lacp_cmp_lead(mb, lead) < 0))
            lead = mb;
    }
    for (int i = 0; i < LACP_MAX_MEMBERS; i++) {
        struct lacp_member *mb = &l->members[i];
        if (!mb->in_use)
            continue;
        mb->selected = lead && lacp_is_candidate(mb) &&
                       mb->partner.sys_prio == lead->partner.sys_prio &&
                       !memcmp(mb->partner.sys_mac, lead->partner.sys_mac, PKT_ETH_ALEN) &&
                       mb->partner.key == lead->partner.key;
    }
}

static void lacp_mux(struct lacp_member *mb)
{
    enum lacp_mux_state next;
    if (!mb->selected)
        next = LACP_MUX_DETACHED;
    else
        next = mb->partner_sync ? LACP_MUX_COLLECTING_DISTRIBUTING : LACP_MUX_ATTACHED;
    if (next != mb->mux) {
        mb->mux = next;
        mb->ntt = true;
    }
}

static bool lacp_periodic(const struct lacp *l, const struct lacp_member *mb)
{
    return mb->link_up && (l->cfg.active || (mb->partner.state & LACP_STATE_ACTIVITY));
}

static uint64_t lacp_period(const struct lacp_member *mb)
{
    return (mb->partner.state & LACP_STATE_TIMEOUT) ? LACP_FAST_PERIOD_NS : LACP_SLOW_PERIOD_NS;
}

void lacp_run(struct lacp *l, uint64_t now)
{
    for (int i = 0; i < LACP_MAX_MEMBERS; i++) {
        struct lacp_member *mb = &l->members[i];
        if (!mb->in_use || !mb->link_up)
            continue;
        if (mb->rx == LACP_RX_CURRENT && now >= mb->rx_deadline) {
            lacp_enter_expired(mb, now);
            mb->stats.expired++;
        } else if (mb->rx == LACP_RX_EXPIRED && now >= mb->rx_deadline) {
            mb->rx = LACP_RX_DEFAULTED;
            memset(&mb->partner, 0, sizeof(mb->partner));
            mb->partner_sync = false;
            mb->ntt = true;
            mb->stats.defaulted++;
        }
    }
    lacp_select(l);
    for (int i = 0; i < LACP_MAX_MEMBERS; i++) {
        struct lacp_member *mb = &l->members[i];
        if (!mb->in_use)
            continue;
        lacp_mux(mb);
        if (!lacp_periodic(l, mb))
            continue;
        uint64_t period = lacp_period(mb);
        if (mb->next_tx > now + period) /* partner switched to fast */
            mb->next_tx = now + period;
        if (now >= mb->next_tx) {
            mb->ntt = true;
            mb->next_tx = now + period;
        }
    }
}

static uint64_t lacp_min(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

uint64_t lacp_next_wakeup(const struct lacp *l)
{
    uint64_t t = UINT64_MAX;
    for (int i = 0; i < LACP_MAX_MEMBERS; i++) {
        const struct lacp_member *mb = &l->members[i];
        if (!mb->in_use || !mb->link_up)
            continue;
        if (mb->rx == LACP_RX_CURRENT || mb->rx == LACP_RX_EXPIRED)
            t = lacp_min(t, mb->rx_deadline);
        if (lacp_periodic(l, mb)) {
            t = lacp_min(t, mb->next_tx);
            if (mb->ntt)
                t = lacp_min(t, mb->tx_in_window >= LACP_TX_PER_SEC
                                    ? mb->tx_window + LACP_FAST_PERIOD_NS
                                    : 0);
        }
    }
    return t;
}

int lacp_member_tx(struct lacp *l, unsigned idx, uint64_t now, uint8_t *buf, size_t cap)
{
    struct lacp_member *mb = lacp_get(l, idx);
    if (!mb)
        return -EINVAL;
    if (!mb->ntt || !lacp_periodic(l, mb))
        return 0;
    if (cap < LACP_FRAME_LEN)
        return -ENOSPC;
    if (now - mb->tx_window >= LACP_FAST_PERIOD_NS || now < mb->tx_window) {
        mb->tx_window = now;
        mb->tx_in_window = 0;
    }
    if (mb->tx_in_window >= LACP_TX_PER_SEC)
        return 0; /* rate limited; lacp_next_wakeup() says when */

    struct lacp_pdu pdu = {.collector_max_delay = 0};
    lacp_actor_info(l, mb, &pdu.actor);
    pdu.partner = mb->partner;
    memcpy(buf, lacp_slow_mac, PKT_ETH_ALEN);
    memcpy(buf + PKT_ETH_ALEN, mb->mac, PKT_ETH_ALEN);
    pkt_put_be16(buf + 12, PKT_ETHERTYPE_SLOW);
    lacp_pdu_encode(&pdu, buf + PKT_ETH_HLEN, cap - PKT_ETH_HLEN);
    mb->ntt = false;
    mb->tx_in_window++;
    mb->stats.tx_pdus++;
    return LACP_FRAME_LEN;
}

bool lacp_member_is_distributing(const struct lacp *l, unsigned idx)
{
    const struct lacp_member *mb = lacp_cget(l, idx);
    return mb && mb->link_up && mb->mux == LACP_MUX_COLLECTING_DISTRIBUTING;
}
