/* SPDX-License-Identifier: Apache-2.0 */
/*
 * IPv4 neighbour resolution (ARP, RFC 826) for the VXLAN underlay.
 *
 * A VXLAN port sends its encapsulated frames to the MAC address of the next
 * hop: the remote VTEP itself when it is on the same link, or a gateway. When
 * the operator does not give that MAC, the port resolves it like a host
 * does: the table below keeps one entry per next-hop IPv4 address the port
 * needs, the control thread sends ARP requests for entries that are
 * unresolved or due for confirmation (neigh_due), and ARP frames received on
 * the underlay (replies, and requests from the neighbour itself) fill them in
 * (neigh_learn). Sending to an unresolved neighbour fails (the frame is
 * dropped and counted, as a host drops what exceeds its small ARP queue) and
 * marks the entry wanted, so the next control tick asks for it.
 *
 * Timers, like Linux's defaults: an entry confirmed less than
 * NEIGH_REACHABLE_NS ago is used without question; after that it is still
 * used while a new request is sent every NEIGH_RETRY_NS; when nothing
 * confirmed it for NEIGH_EXPIRE_NS it becomes unresolved again. Unresolved
 * wanted entries are asked for every NEIGH_RETRY_NS.
 *
 * Pure logic, no locking: the caller serialises access (qtcard: the port's
 * transmit mutex).
 */
#ifndef QT_CARD_NET_NEIGH_H
#define QT_CARD_NET_NEIGH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pkt.h"

#define NEIGH_MAX          80
#define NEIGH_REACHABLE_NS (30ull * 1000000000ull)
#define NEIGH_EXPIRE_NS    (90ull * 1000000000ull)
#define NEIGH_RETRY_NS     (1000000000ull)
#define NEIGH_ARP_FRAME    60 /* an ARP frame padded to the Ethernet minimum (no FCS) */

struct neigh_entry {
    uint8_t ip[4];
    uint8_t mac[PKT_ETH_ALEN];
    bool valid;         /* mac is usable */
    bool wanted;        /* someone needs it: keep resolving */
    uint64_t confirmed; /* last time an ARP frame from it was seen */
    uint64_t requested; /* last request sent (0: never) */
    uint64_t requests;  /* requests sent for this entry */
};

struct neigh_table {
    struct neigh_entry e[NEIGH_MAX];
    unsigned n;
    uint64_t learned;    /* entries filled or changed by ARP frames */
    uint64_t unresolved; /* lookups that found no usable MAC */
    uint64_t full;       /* lookups for a new address with the table full */
};

/* Make sure an entry for ip exists and is resolved from now on (a configured next
 * hop). 0, or -ENOSPC when the table is full, -EINVAL for 0.0.0.0 / broadcast /
 * multicast addresses. */
int neigh_want(struct neigh_table *t, const uint8_t ip[4]);

/* The MAC for ip: 0 and *mac filled when resolved; otherwise -EAGAIN (the entry is
 * now wanted; the next neigh_due names it) or -ENOSPC (table full). */
int neigh_lookup(struct neigh_table *t, const uint8_t ip[4], uint8_t mac[PKT_ETH_ALEN]);

/* An ARP frame said ip is at mac: updates an existing entry only (the table does
 * not grow from what others send). True when an entry was filled or changed. */
bool neigh_learn(struct neigh_table *t, const uint8_t ip[4], const uint8_t mac[PKT_ETH_ALEN],
                 uint64_t now);

/* Entries to send an ARP request for now (at most max, into ips); marks them as
 * requested at `now` and expires entries not confirmed for NEIGH_EXPIRE_NS. */
unsigned neigh_due(struct neigh_table *t, uint64_t now, uint8_t (*ips)[4], unsigned max);

/* Build an Ethernet/IPv4 ARP frame of NEIGH_ARP_FRAME bytes into f: op 1 (request,
 * to broadcast, target MAC zero) or 2 (reply, to tha). Returns the length. */
size_t neigh_arp_build(uint8_t *f, uint16_t op, const uint8_t sha[PKT_ETH_ALEN],
                       const uint8_t spa[4], const uint8_t tha[PKT_ETH_ALEN], const uint8_t tpa[4]);

/* Whether ip can be a neighbour (not 0.0.0.0, 255.255.255.255, multicast or
 * 127/8). */
bool neigh_ip_ok(const uint8_t ip[4]);

#endif
