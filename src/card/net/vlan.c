/* SPDX-License-Identifier: Apache-2.0 */
/* 802.1Q port VLAN policy. See vlan.h. */
#include "vlan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const vlan_drop_names[VLAN_DROP__MAX] = {
    [VLAN_DROP_TAGGED_ON_ACCESS] = "tagged-on-access",
    [VLAN_DROP_NOT_ALLOWED] = "vlan-not-allowed",
    [VLAN_DROP_UNTAGGED_NO_NATIVE] = "untagged-no-native",
    [VLAN_DROP_RESERVED_VID] = "reserved-vid",
    [VLAN_DROP_BAD_TPID] = "bad-tpid",
    [VLAN_DROP_NATIVE_TAGGED] = "native-tagged",
};

const char *vlan_drop_name(enum vlan_drop d)
{
    if ((unsigned)d >= VLAN_DROP__MAX)
        return "unknown";
    return vlan_drop_names[d];
}

static bool vlan_vid_ok(uint16_t vid)
{
    return vid >= VLAN_VID_MIN && vid <= VLAN_VID_MAX;
}

static void vlan_bit_set(struct vlan_port *p, uint16_t vid, bool on)
{
    uint64_t bit = 1ull << (vid % 64);
    if (on)
        p->allowed[vid / 64] |= bit;
    else
        p->allowed[vid / 64] &= ~bit;
}

static bool vlan_bit_test(const struct vlan_port *p, uint16_t vid)
{
    return (p->allowed[vid / 64] >> (vid % 64)) & 1;
}

int vlan_port_set_access(struct vlan_port *p, uint16_t vid)
{
    if (!vlan_vid_ok(vid))
        return -EINVAL;
    memset(p, 0, sizeof(*p));
    p->mode = VLAN_MODE_ACCESS;
    p->access_vid = vid;
    return 0;
}

int vlan_port_set_trunk(struct vlan_port *p, uint16_t native_vid, const uint16_t *allowed, size_t n)
{
    if (native_vid && !vlan_vid_ok(native_vid))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!vlan_vid_ok(allowed[i]))
            return -EINVAL;
    memset(p, 0, sizeof(*p));
    p->mode = VLAN_MODE_TRUNK;
    p->native_vid = native_vid;
    for (size_t i = 0; i < n; i++)
        vlan_bit_set(p, allowed[i], true);
    if (native_vid)
        vlan_bit_set(p, native_vid, true);
    return 0;
}

int vlan_port_allow(struct vlan_port *p, uint16_t vid, bool allow)
{
    if (p->mode != VLAN_MODE_TRUNK || !vlan_vid_ok(vid))
        return -EINVAL;
    vlan_bit_set(p, vid, allow);
    return 0;
}

/* Parse one decimal VID at *s; advances *s. */
static int vlan_parse_vid(const char **s, uint16_t *vid)
{
    const char *p = *s;
    unsigned long v = 0;
    if (*p < '0' || *p > '9')
        return -EINVAL;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > VLAN_VID_MAX)
            return -EINVAL;
        p++;
    }
    if (!vlan_vid_ok((uint16_t)v))
        return -EINVAL;
    *vid = (uint16_t)v;
    *s = p;
    return 0;
}

int vlan_port_allow_list(struct vlan_port *p, const char *list)
{
    if (p->mode != VLAN_MODE_TRUNK || !list)
        return -EINVAL;
    uint64_t bits[VLAN_N_VIDS / 64];
    memcpy(bits, p->allowed, sizeof(bits));
    const char *s = list;
    while (*s) {
        uint16_t lo, hi;
        if (vlan_parse_vid(&s, &lo))
            return -EINVAL;
        hi = lo;
        if (*s == '-') {
            s++;
            if (vlan_parse_vid(&s, &hi) || hi < lo)
                return -EINVAL;
        }
        for (uint32_t v = lo; v <= hi; v++)
            bits[v / 64] |= 1ull << (v % 64);
        if (*s == ',') {
            s++;
            if (!*s)
                return -EINVAL;
        } else if (*s) {
            return -EINVAL;
        }
    }
    memcpy(p->allowed, bits, sizeof(bits));
    return 0;
}

bool vlan_port_is_member(const struct vlan_port *p, uint16_t vid)
{
    if (!vlan_vid_ok(vid))
        return false;
    if (p->mode == VLAN_MODE_ACCESS)
        return vid == p->access_vid;
    return vlan_bit_test(p, vid);
}

static int vlan_drop(struct vlan_stats *st, enum vlan_drop d)
{
    if (st)
        st->drops[d]++;
    return -EACCES;
}

int vlan_port_ingress(const struct vlan_port *p, const struct pkt_meta *m, struct vlan_stats *st,
                      struct vlan_ingress *out)
{
    uint16_t vid = 0;
    memset(out, 0, sizeof(*out));
    if (m->n_vlans) {
        uint16_t tci = m->vlan_tci[0];
        vid = tci & PKT_VLAN_VID_MASK;
        out->tagged = true;
        out->pcp = (uint8_t)(tci >> PKT_VLAN_PCP_SHIFT);
        if (m->vlan_tpid[0] == PKT_ETHERTYPE_QINQ &&
            (p->mode == VLAN_MODE_ACCESS || !p->accept_qinq))
            return vlan_drop(st, VLAN_DROP_BAD_TPID);
        if (vid == 0xfff)
            return vlan_drop(st, VLAN_DROP_RESERVED_VID);
    }

    if (p->mode == VLAN_MODE_ACCESS) {
        if (vid != 0) /* priority-tagged (VID 0) frames are accepted */
            return vlan_drop(st, VLAN_DROP_TAGGED_ON_ACCESS);
        out->vid = p->access_vid;
        return 0;
    }

    if (vid == 0) { /* untagged or priority-tagged */
        if (!p->native_vid)
            return vlan_drop(st, VLAN_DROP_UNTAGGED_NO_NATIVE);
        out->vid = p->native_vid;
        return 0;
    }
    if (vid == p->native_vid && !p->native_tagged && p->strict_native)
        return vlan_drop(st, VLAN_DROP_NATIVE_TAGGED);
    if (!vlan_bit_test(p, vid))
        return vlan_drop(st, VLAN_DROP_NOT_ALLOWED);
    out->vid = vid;
    return 0;
}

int vlan_port_egress(const struct vlan_port *p, uint16_t vid, struct vlan_stats *st,
                     enum vlan_egress *action)
{
    if (!vlan_port_is_member(p, vid)) {
        if (st)
            st->egress_filtered++;
        return -EACCES;
    }
    if (p->mode == VLAN_MODE_ACCESS)
        *action = VLAN_EGRESS_UNTAGGED;
    else if (vid == p->native_vid && !p->native_tagged)
        *action = VLAN_EGRESS_UNTAGGED;
    else
        *action = VLAN_EGRESS_TAGGED;
    return 0;
}
