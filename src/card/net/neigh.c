/* SPDX-License-Identifier: Apache-2.0 */
#include "neigh.h"

#include <errno.h>
#include <string.h>

bool neigh_ip_ok(const uint8_t ip[4])
{
    static const uint8_t zero[4], bcast[4] = {255, 255, 255, 255};
    if (!memcmp(ip, zero, 4) || !memcmp(ip, bcast, 4))
        return false;
    return ip[0] < 224 && ip[0] != 127;
}

static struct neigh_entry *neigh_find(struct neigh_table *t, const uint8_t ip[4])
{
    for (unsigned i = 0; i < t->n; i++)
        if (!memcmp(t->e[i].ip, ip, 4))
            return &t->e[i];
    return NULL;
}

int neigh_want(struct neigh_table *t, const uint8_t ip[4])
{
    struct neigh_entry *e;

    if (!neigh_ip_ok(ip))
        return -EINVAL;
    e = neigh_find(t, ip);
    if (!e) {
        if (t->n == NEIGH_MAX)
            return -ENOSPC;
        e = &t->e[t->n++];
        memset(e, 0, sizeof(*e));
        memcpy(e->ip, ip, 4);
    }
    e->wanted = true;
    return 0;
}

int neigh_lookup(struct neigh_table *t, const uint8_t ip[4], uint8_t mac[PKT_ETH_ALEN])
{
    struct neigh_entry *e = neigh_find(t, ip);
    int ret;

    if (e && e->valid) {
        memcpy(mac, e->mac, PKT_ETH_ALEN);
        return 0;
    }
    t->unresolved++;
    ret = neigh_want(t, ip);
    if (ret == -ENOSPC)
        t->full++;
    return ret == 0 ? -EAGAIN : ret;
}

bool neigh_learn(struct neigh_table *t, const uint8_t ip[4], const uint8_t mac[PKT_ETH_ALEN],
                 uint64_t now)
{
    struct neigh_entry *e = neigh_find(t, ip);
    bool changed;

    if (!e || pkt_mac_is_multicast(mac) || pkt_mac_is_zero(mac))
        return false;
    changed = !e->valid || memcmp(e->mac, mac, PKT_ETH_ALEN);
    memcpy(e->mac, mac, PKT_ETH_ALEN);
    e->valid = true;
    e->confirmed = now;
    if (changed)
        t->learned++;
    return changed;
}

unsigned neigh_due(struct neigh_table *t, uint64_t now, uint8_t (*ips)[4], unsigned max)
{
    unsigned n = 0;

    for (unsigned i = 0; i < t->n; i++) {
        struct neigh_entry *e = &t->e[i];
        bool ask;

        if (e->valid && now - e->confirmed >= NEIGH_EXPIRE_NS)
            e->valid = false;
        if (e->valid)
            ask = now - e->confirmed >= NEIGH_REACHABLE_NS;
        else
            ask = e->wanted;
        if (!ask || (e->requested && now - e->requested < NEIGH_RETRY_NS) || n == max)
            continue;
        e->requested = now;
        e->requests++;
        memcpy(ips[n++], e->ip, 4);
    }
    return n;
}

size_t neigh_arp_build(uint8_t *f, uint16_t op, const uint8_t sha[PKT_ETH_ALEN],
                       const uint8_t spa[4], const uint8_t tha[PKT_ETH_ALEN], const uint8_t tpa[4])
{
    static const uint8_t bcast[PKT_ETH_ALEN] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    uint8_t *a = f + PKT_ETH_HLEN;

    memset(f, 0, NEIGH_ARP_FRAME);
    memcpy(f, op == 1 ? bcast : tha, PKT_ETH_ALEN);
    memcpy(f + 6, sha, PKT_ETH_ALEN);
    pkt_put_be16(f + 12, PKT_ETHERTYPE_ARP);
    pkt_put_be16(a, 1); /* Ethernet */
    pkt_put_be16(a + 2, PKT_ETHERTYPE_IPV4);
    a[4] = 6;
    a[5] = 4;
    pkt_put_be16(a + 6, op);
    memcpy(a + 8, sha, PKT_ETH_ALEN);
    memcpy(a + 14, spa, 4);
    if (op != 1)
        memcpy(a + 18, tha, PKT_ETH_ALEN);
    memcpy(a + 24, tpa, 4);
    return NEIGH_ARP_FRAME;
}
