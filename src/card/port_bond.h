/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bond ports: LACP (IEEE 802.1AX) or static link aggregation of AF_PACKET
 * uplinks, using the protocols engineer's net/bond.c and net/lacp.c. The
 * bond is one switch port; its members are AF_PACKET sub-ports polled by one
 * worker. LACPDUs received on a member go to the state machines under the
 * bond's lock; the control thread runs the timers, sends LACPDUs and follows
 * the members' carrier.
 */
#ifndef QT_CARD_PORT_BOND_H
#define QT_CARD_PORT_BOND_H

#include "card/card.h"

/* Parse "members", "mode", "lacp", "hash" and open the member sockets. */
int port_bond_setup(struct port *p, json_object *j, char *err, size_t errlen);
void port_bond_close(struct port *p);
/* Control thread, frequently (every <= 100 ms): carrier, timers, LACPDU transmission. */
void port_bond_run(struct port *p, uint64_t now);
/* Data plane: a frame arrived on member sub-port m. Returns true when it is a
 * data frame the switch may take (as received on the bond), false when it was
 * consumed (LACPDU) or refused (member not collecting). */
bool port_bond_rx_filter(struct port *m, const uint8_t *frame, uint32_t len, uint64_t now);
/* Data plane: send frames switched to the bond on the member their hash selects. */
void port_bond_output(struct port *p, struct pkt **pk, const bool *tagged, unsigned n,
                      struct queue_stats *st);
/* Control thread, card->lock held: PATCH ports/NAME of a bond. Any of "members", "hash"
 * and "lacp" {"active", "fast"} change in place with traffic kept. "mode" changes in place
 * too: to "static" every member with link carries traffic at once; to "lacp" (with "lacp"
 * settings if given) the members wait for the partner. Everything is checked first: a refused
 * request changes nothing (short of a member socket failing to open on an existing interface;
 * members changed before it stay changed). "members": those that stay keep their LACP state and
 * traffic; removed ones leave the bond before they stop being polled and close; new ones are
 * opened, join the bond and are polled by the bond's worker. The saved configuration follows. */
int port_bond_patch(struct port *p, json_object *j, char *err, size_t errlen);
json_object *port_bond_json(struct port *p);

#endif
