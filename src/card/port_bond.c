/* SPDX-License-Identifier: Apache-2.0 */
#include "card/port_bond.h"
#include "card/dp.h"
#include "card/port_host.h"
#include "common/log.h"

#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static int if_hwaddr(const char *ifname, uint8_t mac[6])
{
    struct ifreq ifr = {0};
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), ret = 0;
    if (s < 0)
        return -errno;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0)
        ret = -errno;
    else
        memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    close(s);
    return ret;
}

/* Carrier: IFF_RUNNING (operational up) on an administratively up interface. */
static bool if_running(const char *ifname)
{
    struct ifreq ifr = {0};
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    bool up = false;
    if (s < 0)
        return false;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0)
        up = (ifr.ifr_flags & IFF_UP) && (ifr.ifr_flags & IFF_RUNNING);
    close(s);
    return up;
}

void port_bond_close(struct port *p)
{
    for (unsigned i = 0; i < p->n_members; i++) {
        struct port *m = p->members[i];
        if (!m)
            continue;
        port_host_close(m);
        pthread_mutex_destroy(&m->tx_mutex);
        free(m);
        p->members[i] = NULL;
    }
    p->n_members = 0;
    free(p->bond);
    p->bond = NULL;
}

int port_bond_setup(struct port *p, json_object *j, char *err, size_t errlen)
{
    struct bond_config bc = {.mode = BOND_MODE_LACP, .hash = PKT_HASH_L4};
    json_object *mem, *lacp;
    const char *mode = NULL, *hash = NULL;
    uint64_t now = card_now_ns();
    int ret;

    if (json_object_object_get_ex(j, "mode", &lacp) && json_object_is_type(lacp, json_type_string))
        mode = json_object_get_string(lacp);
    if (json_object_object_get_ex(j, "hash", &lacp) && json_object_is_type(lacp, json_type_string))
        hash = json_object_get_string(lacp);
    if (mode && strcmp(mode, "lacp") && strcmp(mode, "static")) {
        snprintf(err, errlen, "bond '%s': mode '%s' is not lacp or static", p->name, mode);
        return -EINVAL;
    }
    if (mode && !strcmp(mode, "static"))
        bc.mode = BOND_MODE_STATIC;
    if (hash) {
        if (!strcmp(hash, "l2"))
            bc.hash = PKT_HASH_L2;
        else if (!strcmp(hash, "l3"))
            bc.hash = PKT_HASH_L3;
        else if (!strcmp(hash, "l4"))
            bc.hash = PKT_HASH_L4;
        else {
            snprintf(err, errlen, "bond '%s': hash '%s' is not l2, l3 or l4", p->name, hash);
            return -EINVAL;
        }
    }
    bc.lacp.sys_prio = 32768;
    memcpy(bc.lacp.sys_mac, p->mac, 6);
    bc.lacp.key = (uint16_t)(p->id ? p->id : 1);
    bc.lacp.active = true;
    bc.lacp.fast = true;
    if (json_object_object_get_ex(j, "lacp", &lacp)) {
        json_object *v;
        if (!json_object_is_type(lacp, json_type_object)) {
            snprintf(err, errlen, "bond '%s': 'lacp' must be an object", p->name);
            return -EINVAL;
        }
        if (json_object_object_get_ex(lacp, "active", &v))
            bc.lacp.active = json_object_get_boolean(v);
        if (json_object_object_get_ex(lacp, "fast", &v))
            bc.lacp.fast = json_object_get_boolean(v);
    }
    if (!json_object_object_get_ex(j, "members", &mem) ||
        !json_object_is_type(mem, json_type_array) || json_object_array_length(mem) == 0 ||
        json_object_array_length(mem) > BOND_MAX_MEMBERS) {
        snprintf(err, errlen, "bond '%s': 'members' must list 1..%d interfaces", p->name,
                 BOND_MAX_MEMBERS);
        return -EINVAL;
    }
    p->bond = calloc(1, sizeof(*p->bond));
    if (!p->bond)
        return -ENOMEM;
    pthread_mutex_init(&p->bond_lock, NULL);
    ret = bond_init(p->bond, &bc, now);
    if (ret) {
        snprintf(err, errlen, "bond '%s': invalid bond configuration", p->name);
        goto fail;
    }
    for (size_t i = 0; i < json_object_array_length(mem); i++) {
        json_object *e = json_object_array_get_idx(mem, i);
        const char *ifn = json_object_is_type(e, json_type_string) ? json_object_get_string(e) : "";
        struct port *m;
        if (!*ifn || strlen(ifn) >= sizeof(m->ifname)) {
            snprintf(err, errlen, "bond '%s': member %zu is not an interface name", p->name, i);
            ret = -EINVAL;
            goto fail;
        }
        m = calloc(1, sizeof(*m));
        if (!m) {
            ret = -ENOMEM;
            goto fail;
        }
        snprintf(m->name, sizeof(m->name), "%.20s/%.10s", p->name, ifn);
        snprintf(m->ifname, sizeof(m->ifname), "%s", ifn);
        m->type = PORT_AFPACKET;
        m->card = p->card;
        m->fd = -1;
        m->bond_parent = p;
        m->bond_idx = (unsigned)i;
        m->q[0].port = m;
        m->q[0].worker = -1;
        pthread_mutex_init(&m->tx_mutex, NULL);
        p->members[p->n_members++] = m;
        ret = if_hwaddr(ifn, m->mac);
        if (!ret)
            ret = port_afpacket_open(m);
        if (ret) {
            snprintf(err, errlen, "bond '%s': member '%s': %s", p->name, ifn, strerror(-ret));
            goto fail;
        }
        ret = bond_member_add(p->bond, (uint32_t)i, m->mac, now);
        if (ret < 0) {
            snprintf(err, errlen, "bond '%s': member '%s' rejected (%s)", p->name, ifn,
                     strerror(-ret));
            goto fail;
        }
    }
    return 0;
fail:
    port_bond_close(p);
    return ret ? ret : -EINVAL;
}

void port_bond_run(struct port *p, uint64_t now)
{
    uint8_t frame[128];

    pthread_mutex_lock(&p->bond_lock);
    for (unsigned i = 0; i < p->n_members; i++) {
        struct port *m = p->members[i];
        bool up = if_running(m->ifname);
        if (up != m->link_up) {
            m->link_up = up;
            bond_member_set_link(p->bond, i, up, now);
            log_info("bond '%s': member '%s' link %s", p->name, m->ifname, up ? "up" : "down");
        }
    }
    bond_run(p->bond, now);
    for (unsigned i = 0; i < p->n_members; i++) {
        struct port *m = p->members[i];
        int n = bond_member_lacp_tx(p->bond, i, now, frame, sizeof(frame));
        if (n > 0) {
            pthread_mutex_lock(&m->tx_mutex);
            if (send(m->fd, frame, (size_t)n, 0) == n)
                m->lacp_tx_frames++;
            pthread_mutex_unlock(&m->tx_mutex);
        }
    }
    pthread_mutex_unlock(&p->bond_lock);
}

bool port_bond_rx_filter(struct port *m, const uint8_t *frame, uint32_t len, uint64_t now)
{
    struct port *p = m->bond_parent;

    if (len >= PKT_ETH_HLEN && pkt_get_be16(frame + 12) == PKT_ETHERTYPE_SLOW) {
        pthread_mutex_lock(&p->bond_lock);
        bond_rx_lacp(p->bond, m->bond_idx, frame, len, now);
        pthread_mutex_unlock(&p->bond_lock);
        m->lacp_rx_frames++;
        return false;
    }
    if (!bond_rx_allowed(p->bond, m->bond_idx)) {
        m->bond_rx_refused++;
        return false;
    }
    return true;
}

void port_bond_output(struct port *p, struct pkt **pk, const bool *tagged, unsigned n,
                      struct queue_stats *st)
{
    for (unsigned i = 0; i < n; i++) {
        uint32_t idx;
        struct port *m;
        uint8_t tag[4];
        struct iovec iov[3];
        uint32_t strip = pk[i]->tag_len, total;
        ssize_t r;

        if (bond_select_tx(p->bond, &pk[i]->m, &idx) || idx >= p->n_members) {
            st->rx_dropped++;
            continue;
        }
        m = p->members[idx];
        iov[0].iov_base = pk[i]->data;
        iov[0].iov_len = 12;
        iov[1].iov_base = tag;
        iov[1].iov_len = 0;
        if (tagged[i]) {
            pkt_put_be16(tag, PKT_ETHERTYPE_VLAN);
            pkt_put_be16(tag + 2, (uint16_t)((pk[i]->pcp << PKT_VLAN_PCP_SHIFT) | pk[i]->out_vid));
            iov[1].iov_len = 4;
        }
        iov[2].iov_base = pk[i]->data + 12 + strip;
        iov[2].iov_len = pk[i]->len - 12 - strip;
        total = (uint32_t)(12 + iov[1].iov_len + iov[2].iov_len);
        pthread_mutex_lock(&m->tx_mutex);
        r = writev(m->fd, iov, 3);
        pthread_mutex_unlock(&m->tx_mutex);
        if (r == (ssize_t)total) {
            st->rx_packets++;
            st->rx_bytes += total;
            m->q[0].st.rx_packets++;
        } else {
            st->rx_dropped++;
        }
    }
}

json_object *port_bond_json(struct port *p)
{
    json_object *o = json_object_new_object(), *ms = json_object_new_array();

    pthread_mutex_lock(&p->bond_lock);
    json_object_object_add(
        o, "mode", json_object_new_string(p->bond->cfg.mode == BOND_MODE_LACP ? "lacp" : "static"));
    json_object_object_add(o, "enabled_members", json_object_new_int((int)bond_n_enabled(p->bond)));
    for (unsigned i = 0; i < p->n_members; i++) {
        struct port *m = p->members[i];
        json_object *mo = json_object_new_object();
        int li = p->bond->lacp_idx[i];
        json_object_object_add(mo, "ifname", json_object_new_string(m->ifname));
        json_object_object_add(mo, "link", json_object_new_boolean(m->link_up));
        json_object_object_add(
            mo, "enabled",
            json_object_new_boolean(atomic_load(&p->bond->enabled_mask) & (1u << i)));
        if (p->bond->cfg.mode == BOND_MODE_LACP && li >= 0) {
            json_object_object_add(
                mo, "distributing",
                json_object_new_boolean(lacp_member_is_distributing(&p->bond->lacp, (unsigned)li)));
            json_object_object_add(
                mo, "lacp_rx_pdus",
                json_object_new_int64((int64_t)p->bond->lacp.members[li].stats.rx_pdus));
            json_object_object_add(
                mo, "lacp_tx_pdus",
                json_object_new_int64((int64_t)p->bond->lacp.members[li].stats.tx_pdus));
        }
        json_object_object_add(mo, "rx_packets",
                               json_object_new_int64((int64_t)m->q[0].st.tx_packets));
        json_object_object_add(mo, "tx_packets",
                               json_object_new_int64((int64_t)m->q[0].st.rx_packets));
        json_object_array_add(ms, mo);
    }
    json_object_object_add(o, "members", ms);
    pthread_mutex_unlock(&p->bond_lock);
    return o;
}
