/* SPDX-License-Identifier: Apache-2.0 */
/* Adaptive guest-notification coalescing. See coalesce.h. */
#include "coalesce.h"

#include <errno.h>
#include <string.h>

void coalesce_config_default(struct coalesce_config *cfg)
{
    cfg->adaptive = true;
    cfg->max_pkts = 32;
    cfg->max_ns = 50000;
    cfg->low_pps = 20000;
    cfg->high_pps = 500000;
    cfg->window_ns = 100000;
    cfg->idle_ns = 50000;
}

static void coalesce_set_thresholds(struct coalesce *c)
{
    const struct coalesce_config *cfg = &c->cfg;
    if (!cfg->adaptive) {
        c->cur_max_pkts = cfg->max_pkts;
        c->cur_max_ns = cfg->max_ns;
        return;
    }
    /* Hold time: 0 at low_pps, max_ns at high_pps, linear in between. */
    uint64_t hold;
    if (c->rate_pps <= cfg->low_pps)
        hold = 0;
    else if (c->rate_pps >= cfg->high_pps)
        hold = cfg->max_ns;
    else
        hold = cfg->max_ns * (c->rate_pps - cfg->low_pps) / (cfg->high_pps - cfg->low_pps);
    /* Holding only pays when at least one more packet is expected within the
     * hold time; otherwise it adds latency and saves nothing. */
    uint64_t expected = c->rate_pps * hold / 1000000000ull;
    if (expected < 2) {
        c->cur_max_pkts = 1;
        c->cur_max_ns = 0;
        return;
    }
    c->cur_max_pkts = expected < cfg->max_pkts ? (uint32_t)expected : cfg->max_pkts;
    c->cur_max_ns = hold;
}

int coalesce_init(struct coalesce *c, const struct coalesce_config *cfg)
{
    if (cfg->max_pkts == 0)
        return -EINVAL;
    if (cfg->adaptive && (cfg->low_pps >= cfg->high_pps || cfg->window_ns == 0))
        return -EINVAL;
    memset(c, 0, sizeof(*c));
    c->cfg = *cfg;
    coalesce_set_thresholds(c);
    return 0;
}

static void coalesce_signal(struct coalesce *c)
{
    c->pending = 0;
    c->stats.notified++;
}

bool coalesce_complete(struct coalesce *c, uint32_t n, uint64_t now)
{
    if (n == 0)
        return false;
    c->stats.completed += n;

    if (c->cfg.adaptive) {
        bool idle = !c->started || now < c->last || now - c->last >= c->cfg.idle_ns;
        if (idle) {
            /* First completion after a gap: the estimate restarts from zero
             * and this one is signalled at once. */
            c->rate_pps = 0;
            c->win_start = now;
            c->win_pkts = 0;
        }
        c->win_pkts += n;
        uint64_t el = now - c->win_start;
        if (el >= c->cfg.window_ns) {
            c->rate_pps = c->win_pkts * 1000000000ull / el;
            c->win_start = now;
            c->win_pkts = 0;
        }
        c->started = true;
        c->last = now;
        coalesce_set_thresholds(c);
        if (idle) {
            c->pending += n;
            coalesce_signal(c);
            return true;
        }
    }
    c->last = now;
    c->started = true;

    if (c->pending == 0)
        c->first_pending = now;
    c->pending += n;
    if (c->pending >= c->cur_max_pkts || now - c->first_pending >= c->cur_max_ns) {
        coalesce_signal(c);
        return true;
    }
    c->stats.suppressed += n;
    return false;
}

uint64_t coalesce_deadline(const struct coalesce *c)
{
    if (!c->pending)
        return UINT64_MAX;
    return c->first_pending + c->cur_max_ns;
}

bool coalesce_poll(struct coalesce *c, uint64_t now)
{
    if (!c->pending || now < coalesce_deadline(c))
        return false;
    c->stats.timer_flush++;
    coalesce_signal(c);
    return true;
}
