/* SPDX-License-Identifier: Apache-2.0 */
/* VXLAN (RFC 7348) encap/decap and VTEP table. See vxlan.h. */
#include "vxlan.h"

#include <errno.h>
#include <string.h>

#define IPV4_HLEN 20
#define UDP_HLEN  8

static const char *const vxlan_bad_names[VXLAN_BAD__MAX] = {
    [VXLAN_BAD_TRUNC] = "truncated",    [VXLAN_BAD_NOT_IPV4] = "not-ipv4",
    [VXLAN_BAD_NOT_UDP] = "not-udp",    [VXLAN_BAD_PORT] = "udp-port",
    [VXLAN_BAD_UDP_LEN] = "udp-length", [VXLAN_BAD_FLAGS] = "flags",
    [VXLAN_BAD_RESERVED] = "reserved",  [VXLAN_BAD_INNER] = "inner-frame",
    [VXLAN_BAD_VNI] = "unknown-vni",
};

const char *vxlan_bad_name(enum vxlan_bad b)
{
    return (unsigned)b < VXLAN_BAD__MAX ? vxlan_bad_names[b] : "unknown";
}

static bool vxlan_ip_usable(const uint8_t ip[4])
{
    uint32_t a = pkt_get_be32(ip);
    return a != 0 && a != UINT32_MAX && (a >> 28) != 0xe; /* not 0, broadcast, multicast */
}

int vxlan_encap(const struct vxlan_tunnel *t, uint8_t **frame, size_t *len, size_t headroom,
                const uint8_t remote_ip[4], uint32_t vni, uint32_t inner_hash,
                struct vxlan_stats *st)
{
    size_t inner = *len;
    if (headroom < VXLAN_ENCAP_LEN)
        return -ENOSPC;
    if (vni > VXLAN_VNI_MAX || inner < PKT_ETH_HLEN || !vxlan_ip_usable(remote_ip))
        return -EINVAL;
    if (inner + IPV4_HLEN + UDP_HLEN + VXLAN_HLEN > 65535)
        return -EMSGSIZE;

    uint8_t *o = *frame - VXLAN_ENCAP_LEN;
    uint8_t *ip = o + PKT_ETH_HLEN;
    uint8_t *udp = ip + IPV4_HLEN;
    uint8_t *vx = udp + UDP_HLEN;

    memcpy(o, t->nexthop_mac, PKT_ETH_ALEN);
    memcpy(o + PKT_ETH_ALEN, t->local_mac, PKT_ETH_ALEN);
    pkt_put_be16(o + 12, PKT_ETHERTYPE_IPV4);

    ip[0] = 0x45;
    ip[1] = t->tos;
    pkt_put_be16(ip + 2, (uint16_t)(inner + IPV4_HLEN + UDP_HLEN + VXLAN_HLEN));
    pkt_put_be16(ip + 4, 0);      /* ID: atomic datagram (DF), RFC 6864 */
    pkt_put_be16(ip + 6, 0x4000); /* DF */
    ip[8] = t->ttl ? t->ttl : 64;
    ip[9] = PKT_IPPROTO_UDP;
    pkt_put_be16(ip + 10, 0);
    memcpy(ip + 12, t->local_ip, 4);
    memcpy(ip + 16, remote_ip, 4);
    pkt_put_be16(ip + 10, pkt_csum(ip, IPV4_HLEN));

    /* Source port from the inner flow hash, in the dynamic range. */
    pkt_put_be16(udp, (uint16_t)(49152 + (inner_hash % 16384)));
    pkt_put_be16(udp + 2, t->dst_port ? t->dst_port : VXLAN_PORT);
    pkt_put_be16(udp + 4, (uint16_t)(inner + UDP_HLEN + VXLAN_HLEN));
    pkt_put_be16(udp + 6, 0); /* no checksum (allowed over IPv4) */

    vx[0] = VXLAN_FLAG_I;
    vx[1] = vx[2] = vx[3] = 0;
    vx[4] = (uint8_t)(vni >> 16);
    vx[5] = (uint8_t)(vni >> 8);
    vx[6] = (uint8_t)vni;
    vx[7] = 0;

    *frame = o;
    *len = inner + VXLAN_ENCAP_LEN;
    if (st)
        st->encap_pkts++;
    return 0;
}

static int vxlan_bad(struct vxlan_stats *st, enum vxlan_bad b)
{
    if (st)
        st->bad[b]++;
    return -EBADMSG;
}

int vxlan_decap(const uint8_t *frame, size_t len, uint16_t dst_port, struct vxlan_decap_result *r,
                struct vxlan_stats *st)
{
    struct pkt_meta m;
    int rc = pkt_parse(frame, len, &m);

    if (dst_port == 0)
        dst_port = VXLAN_PORT;
    if (m.bad == PKT_BAD_TRUNC_ETH || m.bad == PKT_BAD_TRUNC_VLAN)
        return vxlan_bad(st, VXLAN_BAD_TRUNC);
    if (m.ethertype != PKT_ETHERTYPE_IPV4 || m.n_vlans > 1 || m.l3 != PKT_L3_IPV4)
        return vxlan_bad(st, VXLAN_BAD_NOT_IPV4);
    if (m.l4_proto != PKT_IPPROTO_UDP || (m.flags & PKT_F_IP_FRAG))
        return vxlan_bad(st, VXLAN_BAD_NOT_UDP);
    if (rc) /* IPv4 fine, UDP header truncated or its length beyond the IP payload */
        return vxlan_bad(st, m.bad == PKT_BAD_L4_TRUNC ? VXLAN_BAD_UDP_LEN : VXLAN_BAD_TRUNC);
    if (m.dport != dst_port)
        return vxlan_bad(st, VXLAN_BAD_PORT);

    const uint8_t *udp = frame + m.l4_ofs;
    size_t ip_payload = (size_t)m.l3_len - (m.l4_ofs - m.l3_ofs);
    size_t ulen = pkt_get_be16(udp + 4);
    if (ulen != ip_payload)
        return vxlan_bad(st, VXLAN_BAD_UDP_LEN);
    if (ulen < UDP_HLEN + VXLAN_HLEN)
        return vxlan_bad(st, VXLAN_BAD_TRUNC);

    const uint8_t *vx = udp + UDP_HLEN;
    if (vx[0] != VXLAN_FLAG_I)
        return vxlan_bad(st, VXLAN_BAD_FLAGS);
    if (vx[1] || vx[2] || vx[3] || vx[7])
        return vxlan_bad(st, VXLAN_BAD_RESERVED);
    size_t inner_len = ulen - UDP_HLEN - VXLAN_HLEN;
    if (inner_len < PKT_ETH_HLEN)
        return vxlan_bad(st, VXLAN_BAD_INNER);

    r->vni = ((uint32_t)vx[4] << 16) | ((uint32_t)vx[5] << 8) | vx[6];
    memcpy(r->remote_ip, m.ip4.src, 4);
    r->src_port = m.sport;
    r->inner_ofs = (size_t)(vx - frame) + VXLAN_HLEN;
    r->inner_len = inner_len;
    return 0;
}

/* ---- VTEP table ---- */

int vxlan_vtep_init(struct vxlan_vtep_table *vt, uint32_t max_macs, uint64_t aging_ns,
                    uint64_t seed)
{
    memset(vt, 0, sizeof(*vt));
    struct mac_table_config cfg = {.max_entries = max_macs, .aging_ns = aging_ns, .seed = seed};
    return mac_table_create(&cfg, &vt->macs);
}

void vxlan_vtep_destroy(struct vxlan_vtep_table *vt)
{
    mac_table_destroy(vt->macs);
    vt->macs = NULL;
    vt->n_vnis = 0;
}

static struct vxlan_vni *vxlan_find_vni(const struct vxlan_vtep_table *vt, uint32_t vni)
{
    for (uint32_t i = 0; i < vt->n_vnis; i++)
        if (vt->vnis[i].vni == vni)
            return (struct vxlan_vni *)&vt->vnis[i];
    return NULL;
}

int vxlan_vtep_add_vni(struct vxlan_vtep_table *vt, uint32_t vni)
{
    if (vni == 0 || vni > VXLAN_VNI_MAX)
        return -EINVAL;
    if (vxlan_find_vni(vt, vni))
        return -EEXIST;
    if (vt->n_vnis == VXLAN_MAX_VNIS)
        return -ENOSPC;
    struct vxlan_vni *v = &vt->vnis[vt->n_vnis++];
    memset(v, 0, sizeof(*v));
    v->vni = vni;
    return 0;
}

int vxlan_vtep_del_vni(struct vxlan_vtep_table *vt, uint32_t vni)
{
    struct vxlan_vni *v = vxlan_find_vni(vt, vni);
    if (!v)
        return -ENOENT;
    *v = vt->vnis[--vt->n_vnis];
    mac_table_flush(vt->macs, MAC_TABLE_ANY, vni, true);
    return 0;
}

bool vxlan_vtep_has_vni(const struct vxlan_vtep_table *vt, uint32_t vni)
{
    return vxlan_find_vni(vt, vni) != NULL;
}

const struct vxlan_vni *vxlan_vtep_get_vni(const struct vxlan_vtep_table *vt, uint32_t vni)
{
    return vxlan_find_vni(vt, vni);
}

int vxlan_vtep_add_flood(struct vxlan_vtep_table *vt, uint32_t vni, const uint8_t ip[4])
{
    struct vxlan_vni *v = vxlan_find_vni(vt, vni);
    if (!v)
        return -ENOENT;
    if (!vxlan_ip_usable(ip))
        return -EINVAL;
    for (uint32_t i = 0; i < v->n_flood; i++)
        if (!memcmp(v->flood[i], ip, 4))
            return -EEXIST;
    if (v->n_flood == VXLAN_MAX_FLOOD)
        return -ENOSPC;
    memcpy(v->flood[v->n_flood++], ip, 4);
    return 0;
}

int vxlan_vtep_del_flood(struct vxlan_vtep_table *vt, uint32_t vni, const uint8_t ip[4])
{
    struct vxlan_vni *v = vxlan_find_vni(vt, vni);
    if (!v)
        return -ENOENT;
    for (uint32_t i = 0; i < v->n_flood; i++) {
        if (!memcmp(v->flood[i], ip, 4)) {
            memcpy(v->flood[i], v->flood[--v->n_flood], 4);
            return 0;
        }
    }
    return -ENOENT;
}

int vxlan_vtep_learn(struct vxlan_vtep_table *vt, uint32_t vni, const uint8_t mac[PKT_ETH_ALEN],
                     const uint8_t remote_ip[4], uint64_t now)
{
    if (!vxlan_find_vni(vt, vni))
        return -ENOENT;
    return mac_table_learn(vt->macs, vni, mac, pkt_get_be32(remote_ip), now);
}

int vxlan_vtep_lookup(const struct vxlan_vtep_table *vt, uint32_t vni,
                      const uint8_t mac[PKT_ETH_ALEN], uint8_t remote_ip[4])
{
    uint32_t v;
    int rc = mac_table_lookup(vt->macs, vni, mac, &v);
    if (rc)
        return rc;
    pkt_put_be32(remote_ip, v);
    return 0;
}
