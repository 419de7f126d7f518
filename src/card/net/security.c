/* SPDX-License-Identifier: Apache-2.0 */
/* Per-port MAC/IP anti-spoofing and promiscuous filter. See security.h. */
#include "security.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#define ICMP6_MLD_REPORT  131
#define ICMP6_RA          134
#define ICMP6_NS          135
#define ICMP6_NA          136
#define ICMP6_REDIRECT    137
#define ICMP6_MLD2_REPORT 143
#define DHCP_CLIENT_PORT  68
#define DHCP_SERVER_PORT  67

static const char *const sec_names[SEC__MAX] = {
    [SEC_PASS] = "pass",
    [SEC_DROP_SRC_MAC] = "src-mac",
    [SEC_DROP_IPV4_SRC] = "ipv4-src",
    [SEC_DROP_ARP_SHA] = "arp-sha",
    [SEC_DROP_ARP_SPA] = "arp-spa",
    [SEC_DROP_IPV6_SRC] = "ipv6-src",
    [SEC_DROP_ND_TARGET] = "nd-target",
    [SEC_DROP_ND_LLA] = "nd-lla",
    [SEC_DROP_IPV6_RA] = "ipv6-ra",
    [SEC_DROP_MALFORMED] = "malformed",
};

const char *sec_verdict_name(enum sec_verdict v)
{
    if ((unsigned)v >= SEC__MAX)
        return "unknown";
    return sec_names[v];
}

int port_security_init(struct port_security *ps, const uint8_t mac[PKT_ETH_ALEN])
{
    if (pkt_mac_is_multicast(mac) || pkt_mac_is_zero(mac))
        return -EINVAL;
    memset(ps, 0, sizeof(*ps));
    ps->enabled = true;
    ps->allow_ipv6_ll = true;
    memcpy(ps->mac, mac, PKT_ETH_ALEN);
    return 0;
}

int port_security_add_ip(struct port_security *ps, const char *addr)
{
    uint8_t buf[16];
    if (inet_pton(AF_INET, addr, buf) == 1) {
        for (unsigned i = 0; i < ps->n_ipv4; i++)
            if (!memcmp(ps->ipv4[i], buf, 4))
                return -EEXIST;
        if (ps->n_ipv4 == SEC_MAX_IPV4)
            return -ENOSPC;
        memcpy(ps->ipv4[ps->n_ipv4++], buf, 4);
        return 0;
    }
    if (inet_pton(AF_INET6, addr, buf) == 1) {
        for (unsigned i = 0; i < ps->n_ipv6; i++)
            if (!memcmp(ps->ipv6[i], buf, 16))
                return -EEXIST;
        if (ps->n_ipv6 == SEC_MAX_IPV6)
            return -ENOSPC;
        memcpy(ps->ipv6[ps->n_ipv6++], buf, 16);
        return 0;
    }
    return -EINVAL;
}

static bool sec_ipv4_allowed(const struct port_security *ps, const uint8_t ip[4])
{
    if (ps->allow_any_ipv4)
        return true;
    for (unsigned i = 0; i < ps->n_ipv4; i++)
        if (!memcmp(ps->ipv4[i], ip, 4))
            return true;
    return false;
}

static bool sec_ipv6_allowed(const struct port_security *ps, const uint8_t ip[16])
{
    if (ps->allow_any_ipv6)
        return true;
    if (ps->allow_ipv6_ll && ip[0] == 0xfe && (ip[1] & 0xc0) == 0x80)
        return true;
    for (unsigned i = 0; i < ps->n_ipv6; i++)
        if (!memcmp(ps->ipv6[i], ip, 16))
            return true;
    return false;
}

static bool sec_ip_zero(const uint8_t *ip, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ip[i])
            return false;
    return true;
}

static enum sec_verdict sec_check_ipv6(const struct port_security *ps, const struct pkt_meta *m)
{
    bool icmp6 = m->l4_proto == PKT_IPPROTO_ICMPV6 && !(m->flags & PKT_F_IP_LATER_FRAG);
    uint8_t type = icmp6 ? m->icmp6_type : 0;

    if (icmp6 && (type == ICMP6_RA || type == ICMP6_REDIRECT) && !ps->allow_ipv6_ra)
        return SEC_DROP_IPV6_RA;

    if (sec_ip_zero(m->ip6.src, 16)) {
        /* The unspecified source is legal only for duplicate address
         * detection: NS and MLD reports (RFC 4862 5.4.2, RFC 3810 5.2.13). */
        if (!(icmp6 && (type == ICMP6_NS || type == ICMP6_MLD_REPORT || type == ICMP6_MLD2_REPORT)))
            return SEC_DROP_IPV6_SRC;
    } else if (!sec_ipv6_allowed(ps, m->ip6.src)) {
        return SEC_DROP_IPV6_SRC;
    }

    if (icmp6 && (m->flags & PKT_F_ND)) {
        if (m->nd_lla_present && memcmp(m->nd_lla, ps->mac, PKT_ETH_ALEN))
            return SEC_DROP_ND_LLA;
        if (type == ICMP6_NA && !sec_ipv6_allowed(ps, m->nd_target))
            return SEC_DROP_ND_TARGET;
    }
    return SEC_PASS;
}

static enum sec_verdict sec_check(const struct port_security *ps, const struct pkt_meta *m,
                                  int parse_rc)
{
    if (!ps->enabled)
        return SEC_PASS;
    if (m->bad == PKT_BAD_TRUNC_ETH || m->bad == PKT_BAD_OVERSIZE)
        return SEC_DROP_MALFORMED;
    if (memcmp(m->src_mac, ps->mac, PKT_ETH_ALEN))
        return SEC_DROP_SRC_MAC;
    if (parse_rc)
        return SEC_DROP_MALFORMED; /* cannot vouch for L3 we could not parse */

    switch (m->l3) {
    case PKT_L3_IPV4:
        if (sec_ip_zero(m->ip4.src, 4)) {
            bool dhcp = m->l4_proto == PKT_IPPROTO_UDP && (m->flags & PKT_F_L4) &&
                        m->sport == DHCP_CLIENT_PORT && m->dport == DHCP_SERVER_PORT;
            return dhcp ? SEC_PASS : SEC_DROP_IPV4_SRC;
        }
        return sec_ipv4_allowed(ps, m->ip4.src) ? SEC_PASS : SEC_DROP_IPV4_SRC;
    case PKT_L3_ARP:
        if (memcmp(m->arp_sha, ps->mac, PKT_ETH_ALEN))
            return SEC_DROP_ARP_SHA;
        if (sec_ip_zero(m->ip4.src, 4)) /* ARP probe, RFC 5227 */
            return SEC_PASS;
        return sec_ipv4_allowed(ps, m->ip4.src) ? SEC_PASS : SEC_DROP_ARP_SPA;
    case PKT_L3_IPV6:
        return sec_check_ipv6(ps, m);
    default:
        return SEC_PASS;
    }
}

enum sec_verdict port_security_check_ingress(const struct port_security *ps,
                                             const struct pkt_meta *m, int parse_rc,
                                             struct sec_stats *st)
{
    enum sec_verdict v = sec_check(ps, m, parse_rc);
    if (st)
        st->verdicts[v]++;
    return v;
}

bool port_security_egress_allowed(const struct port_security *ps, const uint8_t *dst,
                                  struct sec_stats *st)
{
    if (ps->promiscuous || pkt_mac_is_multicast(dst) || !memcmp(dst, ps->mac, PKT_ETH_ALEN))
        return true;
    if (st)
        st->egress_filtered++;
    return false;
}
