/* SPDX-License-Identifier: Apache-2.0 */
/* Host ports: tap devices and AF_PACKET (TPACKET_V3) uplinks on host interfaces. */
#ifndef QT_CARD_PORT_HOST_H
#define QT_CARD_PORT_HOST_H

#include "card/card.h"

/* Open p->ifname; set p->fd (and the rx ring for AF_PACKET). 0 or -errno. */
int port_tap_open(struct port *p);
int port_afpacket_open(struct port *p);
/* VXLAN tunnel port: p->vx_* configured by the caller; opens the underlay. */
int port_vxlan_open(struct port *p);
/* Whether two ports are VXLAN tunnels on the same underlay, VTEP address and UDP port. */
bool port_vxlan_same_vtep(const struct port *a, const struct port *b);
/* Encapsulate and send one frame (unicast to the learned VTEP or head-end
 * replication to the flood list). Caller holds p->tx_mutex. */
void port_vxlan_output(struct port *p, struct pkt *pk, bool tagged, struct queue_stats *st);
/* Control thread, every 100 ms: ARP requests for the next hops that need one. */
void port_vxlan_tick(struct port *p, uint64_t now);
/* Close what the open functions set up (no-op for VM ports). */
void port_host_close(struct port *p);

#endif
