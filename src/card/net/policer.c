/* SPDX-License-Identifier: Apache-2.0 */
/* Token-bucket policer and shaper, storm control. See policer.h. */
#include "policer.h"

#include <errno.h>
#include <string.h>

int tbucket_init(struct tbucket *tb, enum tb_unit unit, uint64_t rate, uint64_t burst, uint64_t now)
{
    if ((unit != TB_UNIT_BITS && unit != TB_UNIT_PACKETS) || rate > TB_MAX_RATE ||
        burst > TB_MAX_BURST || (rate && !burst))
        return -EINVAL;
    tb->unit = unit;
    tb->rate = rate;
    tb->burst = burst;
    tb->tokens = burst * TB_NS_PER_SEC;
    tb->last = now;
    return 0;
}

/* Add the tokens earned since tb->last (time only moves forward). */
static void tbucket_refill(struct tbucket *tb, uint64_t now)
{
    if (now <= tb->last)
        return;
    uint64_t cap = tb->burst * TB_NS_PER_SEC;
    uint64_t elapsed = now - tb->last;
    tb->last = now;
    if (tb->tokens >= cap)
        return;
    /* Bound elapsed so elapsed * rate cannot overflow: beyond the time to fill
     * the bucket the result is the same. */
    uint64_t fill_ns = (cap - tb->tokens) / tb->rate + 1;
    if (elapsed >= fill_ns) {
        tb->tokens = cap;
        return;
    }
    tb->tokens += elapsed * tb->rate;
    if (tb->tokens > cap)
        tb->tokens = cap;
}

int policer_init(struct policer *p, enum tb_unit unit, uint64_t rate, uint64_t burst, uint64_t now)
{
    memset(p, 0, sizeof(*p));
    return tbucket_init(&p->tb, unit, rate, burst, now);
}

bool policer_admit(struct policer *p, uint32_t len, uint64_t now)
{
    struct tbucket *tb = &p->tb;
    if (tb->rate) {
        tbucket_refill(tb, now);
        uint64_t cost = tbucket_cost(tb, len) * TB_NS_PER_SEC;
        if (tb->tokens < cost) {
            p->dropped_pkts++;
            p->dropped_bytes += len;
            return false;
        }
        tb->tokens -= cost;
    }
    p->passed_pkts++;
    p->passed_bytes += len;
    return true;
}

int shaper_init(struct shaper *s, enum tb_unit unit, uint64_t rate, uint64_t burst,
                uint64_t max_delay, uint64_t now)
{
    memset(s, 0, sizeof(*s));
    s->max_delay = max_delay;
    return tbucket_init(&s->tb, unit, rate, burst, now);
}

int shaper_reserve(struct shaper *s, uint32_t len, uint64_t now, uint64_t *send_at)
{
    struct tbucket *tb = &s->tb;
    uint64_t at = now;

    if (tb->rate) {
        tbucket_refill(tb, now);
        uint64_t start = tb->last > now ? tb->last : now; /* after the backlog */
        uint64_t cost = tbucket_cost(tb, len) * TB_NS_PER_SEC;
        if (tb->tokens >= cost) {
            tb->tokens -= cost;
            at = start;
        } else {
            uint64_t wait = (cost - tb->tokens + tb->rate - 1) / tb->rate;
            at = start + wait;
            if (at - now > s->max_delay) {
                s->refused_pkts++;
                return -ENOBUFS;
            }
            /* The bucket is empty until `at`; what the rounding of `wait`
             * over-earned stays in it. */
            tb->tokens = tb->tokens + wait * tb->rate - cost;
            tb->last = at;
        }
    }
    if (at > now)
        s->delayed_pkts++;
    s->sent_pkts++;
    s->sent_bytes += len;
    *send_at = at;
    return 0;
}

static const char *const storm_names[STORM__MAX] = {
    [STORM_BROADCAST] = "broadcast",
    [STORM_MULTICAST] = "multicast",
    [STORM_UNKNOWN_UNICAST] = "unknown-unicast",
};

const char *storm_class_name(enum storm_class c)
{
    if ((unsigned)c >= STORM__MAX)
        return "none";
    return storm_names[c];
}

int storm_control_set(struct storm_control *sc, enum storm_class c, enum tb_unit unit,
                      uint64_t rate, uint64_t burst, uint64_t now)
{
    if ((unsigned)c >= STORM__MAX)
        return -EINVAL;
    if (rate == 0) {
        sc->enabled[c] = false;
        return 0;
    }
    struct policer p;
    int rc = policer_init(&p, unit, rate, burst, now);
    if (rc)
        return rc;
    sc->pol[c] = p;
    sc->enabled[c] = true;
    return 0;
}

enum storm_class storm_control_classify(const struct pkt_meta *m, bool dst_known)
{
    if (m->flags & PKT_F_BCAST)
        return STORM_BROADCAST;
    if (m->flags & PKT_F_MCAST)
        return STORM_MULTICAST;
    return dst_known ? STORM__MAX : STORM_UNKNOWN_UNICAST;
}

bool storm_control_admit(struct storm_control *sc, enum storm_class c, uint32_t len, uint64_t now)
{
    if ((unsigned)c >= STORM__MAX || !sc->enabled[c])
        return true;
    return policer_admit(&sc->pol[c], len, now);
}
