/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-port L2 security for VM ports: MAC and IP anti-spoofing on ingress
 * (frames the VM sends) and the promiscuous-mode filter on egress (frames the
 * VM receives).
 *
 * Ingress checks, when enabled:
 *   - Ethernet source == the port's MAC (any frame);
 *   - IPv4 source in the allowed list (0.0.0.0 only for DHCP client traffic,
 *     UDP 68 -> 67);
 *   - ARP: sender hardware address == port MAC and sender protocol address in
 *     the allowed list (0.0.0.0 allowed for ARP probes, RFC 5227);
 *   - IPv6 source in the allowed list, or link-local when allow_ipv6_ll, or ::
 *     for duplicate address detection (only for ICMPv6 NS/MLD reports);
 *   - ICMPv6 neighbour advertisements: target in the allowed list (or
 *     link-local when allow_ipv6_ll) and the target link-layer address option,
 *     when present, == port MAC; neighbour solicitations: the source
 *     link-layer address option, when present, == port MAC;
 *   - ICMPv6 router advertisements and redirects from a VM are dropped unless
 *     allow_ipv6_ra.
 * An empty allowed IPv4 (IPv6) list means "no IPv4 (IPv6) source allowed"
 * unless allow_any_ipv4 (allow_any_ipv6) is set (MAC check only).
 *
 * Configuration is read-only for the data plane; verdict counters live in a
 * caller-owned struct sec_stats (per thread/queue).
 */
#ifndef QT_CARD_NET_SECURITY_H
#define QT_CARD_NET_SECURITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pkt.h"

#define SEC_MAX_IPV4 16
#define SEC_MAX_IPV6 16

enum sec_verdict {
    SEC_PASS = 0,
    SEC_DROP_SRC_MAC,   /* Ethernet source is not the port's MAC */
    SEC_DROP_IPV4_SRC,  /* IPv4 source not allowed */
    SEC_DROP_ARP_SHA,   /* ARP sender hardware address spoofed */
    SEC_DROP_ARP_SPA,   /* ARP sender IP not allowed */
    SEC_DROP_IPV6_SRC,  /* IPv6 source not allowed */
    SEC_DROP_ND_TARGET, /* neighbour advertisement for an address not ours */
    SEC_DROP_ND_LLA,    /* ND link-layer address option not the port's MAC */
    SEC_DROP_IPV6_RA,   /* router advertisement / redirect from a VM */
    SEC_DROP_MALFORMED, /* L3 header failed to parse (pkt_parse error) */
    SEC__MAX
};

struct port_security {
    bool enabled;     /* false: no ingress anti-spoofing at all */
    bool promiscuous; /* true: the VM also receives frames for other MACs */
    bool allow_any_ipv4;
    bool allow_any_ipv6;
    bool allow_ipv6_ll; /* any fe80::/10 source / ND target */
    bool allow_ipv6_ra;
    uint8_t mac[PKT_ETH_ALEN];
    uint8_t n_ipv4, n_ipv6;
    uint8_t ipv4[SEC_MAX_IPV4][4]; /* network order */
    uint8_t ipv6[SEC_MAX_IPV6][16];
};

struct sec_stats {
    uint64_t verdicts[SEC__MAX]; /* [SEC_PASS] counts passed frames */
    uint64_t egress_filtered;    /* frames not delivered because promiscuous is off */
};

/* Initialise: enabled, promiscuous off, the given MAC (unicast, non-zero),
 * no IPs, allow_ipv6_ll on. -EINVAL on a bad MAC. */
int port_security_init(struct port_security *ps, const uint8_t mac[PKT_ETH_ALEN]);

/* Add an allowed address given as text ("10.0.0.5" or "2001:db8::5").
 * -EINVAL unparsable, -ENOSPC list full, -EEXIST already present. */
int port_security_add_ip(struct port_security *ps, const char *addr);

/* Check a frame sent by the VM. frame/len are the raw frame, m the result of
 * pkt_parse() on it and parse_rc that call's return value. Returns the
 * verdict and counts it in st (may be NULL). */
enum sec_verdict port_security_check_ingress(const struct port_security *ps,
                                             const struct pkt_meta *m, int parse_rc,
                                             struct sec_stats *st);

/* Egress filter: may a frame with destination dst be delivered to this VM?
 * With promiscuous off only the port MAC, broadcast and multicast are. */
bool port_security_egress_allowed(const struct port_security *ps, const uint8_t *dst,
                                  struct sec_stats *st);

const char *sec_verdict_name(enum sec_verdict v);

#endif
