/* SPDX-License-Identifier: Apache-2.0 */
/*
 * 802.1Q port VLAN policy: access and trunk ports, allowed-VLAN lists, native
 * VLAN; ingress classification (which VLAN does this frame belong to, is it
 * acceptable) and egress tagging decisions (send tagged, untagged, or not at
 * all).
 *
 * A struct vlan_port is configuration: written by the control thread,
 * read-only for the data plane (publish a new one to change it). Drop counters
 * live in a separate struct vlan_stats that the caller owns per thread (or per
 * queue), so the data path never writes shared memory; sum them to report.
 *
 * Switch model: VLAN IDs 1..4094 are usable. ID 0 in a tag means
 * "priority-tagged", treated as untagged. ID 4095 is reserved and dropped.
 * Ingress only looks at the OUTER tag (TPID 0x8100, or 0x88a8 when the port
 * accepts it); an inner tag stays part of the payload.
 */
#ifndef QT_CARD_NET_VLAN_H
#define QT_CARD_NET_VLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "pkt.h"

#define VLAN_VID_MIN 1
#define VLAN_VID_MAX 4094
#define VLAN_N_VIDS  4096

enum vlan_mode {
    VLAN_MODE_ACCESS = 0, /* untagged frames belong to access_vid; tagged frames are dropped */
    VLAN_MODE_TRUNK,      /* tagged frames of allowed VLANs; untagged go to native_vid if set */
};

/* Ingress drop reasons (index into vlan_stats.drops). */
enum vlan_drop {
    VLAN_DROP_TAGGED_ON_ACCESS = 0, /* a tagged frame (VID != 0) on an access port */
    VLAN_DROP_NOT_ALLOWED,          /* VID not in the trunk's allowed list */
    VLAN_DROP_UNTAGGED_NO_NATIVE,   /* untagged frame on a trunk without native VLAN */
    VLAN_DROP_RESERVED_VID,         /* VID 4095 */
    VLAN_DROP_BAD_TPID,             /* 802.1ad S-tag on a port that does not accept it */
    VLAN_DROP_NATIVE_TAGGED,        /* tag with the native VID on a native-untagged trunk
                                       (only when strict_native) */
    VLAN_DROP__MAX
};

struct vlan_port {
    enum vlan_mode mode;
    uint16_t access_vid; /* ACCESS: the port's VLAN */
    uint16_t native_vid; /* TRUNK: VLAN of untagged frames, 0 = none (drop untagged) */
    bool native_tagged;  /* TRUNK: send native-VLAN frames tagged (default: untagged) */
    bool accept_qinq;    /* TRUNK: also accept TPID 0x88a8 as the outer tag */
    bool strict_native;  /* TRUNK: drop frames tagged with the native VID when
                            native_tagged is false (some switches accept them) */
    uint64_t allowed[VLAN_N_VIDS / 64]; /* TRUNK: bitmap of allowed VIDs */
};

struct vlan_stats {
    uint64_t drops[VLAN_DROP__MAX];
    uint64_t egress_filtered; /* egress refused: port not a member of the VLAN */
};

/* What the data plane does to the frame on egress. */
enum vlan_egress {
    VLAN_EGRESS_UNTAGGED = 0, /* send without a tag (pop it if the frame has one) */
    VLAN_EGRESS_TAGGED,       /* send with a tag carrying the VID (push if untagged) */
};

/* Result of ingress classification. */
struct vlan_ingress {
    uint16_t vid; /* VLAN the frame belongs to, 1..4094 */
    uint8_t pcp;  /* priority from the tag (0 if untagged) */
    bool tagged;  /* the frame carries an outer tag (VID != 0 or priority tag) */
};

/* Configure as an access port in vid (1..4094). -EINVAL otherwise. */
int vlan_port_set_access(struct vlan_port *p, uint16_t vid);

/* Configure as a trunk with native_vid (0 = none) and the given allowed VIDs
 * (n may be 0: nothing allowed yet; add with vlan_port_allow()). The native
 * VLAN is implicitly allowed. -EINVAL on any VID outside 1..4094. */
int vlan_port_set_trunk(struct vlan_port *p, uint16_t native_vid, const uint16_t *allowed,
                        size_t n);

/* Allow or disallow one VID on a trunk. -EINVAL on a bad VID or an access port. */
int vlan_port_allow(struct vlan_port *p, uint16_t vid, bool allow);

/* Parse an allowed list such as "10,20-30,100" into the trunk bitmap (added to
 * the current set). -EINVAL with nothing changed on a syntax error or bad VID. */
int vlan_port_allow_list(struct vlan_port *p, const char *list);

bool vlan_port_is_member(const struct vlan_port *p, uint16_t vid);

/* Classify a parsed frame received on port p. Returns 0 and fills *out, or
 * -EACCES after counting the reason in st->drops (st may be NULL). */
int vlan_port_ingress(const struct vlan_port *p, const struct pkt_meta *m, struct vlan_stats *st,
                      struct vlan_ingress *out);

/* Decide how a frame of VLAN vid leaves port p. Returns 0 and stores the
 * action, or -EACCES (port not a member: do not send; counted in
 * st->egress_filtered). */
int vlan_port_egress(const struct vlan_port *p, uint16_t vid, struct vlan_stats *st,
                     enum vlan_egress *action);

const char *vlan_drop_name(enum vlan_drop d);

#endif
