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
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <urcu-qsbr.h>

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

static void bond_member_free(struct port *m)
{
    port_host_close(m);
    pthread_mutex_destroy(&m->tx_mutex);
    free(m);
}

void port_bond_close(struct port *p)
{
    for (unsigned i = 0; i < p->n_members; i++) {
        struct port *m = p->members[i];
        if (!m)
            continue;
        bond_member_free(m);
        p->members[i] = NULL;
    }
    p->n_members = 0;
    free(p->bond);
    p->bond = NULL;
}

/* The member on interface ifn, or NULL. */
static struct port *bond_member_named(const struct port *p, const char *ifn)
{
    for (unsigned i = 0; i < p->n_members; i++)
        if (p->members[i] && !strcmp(p->members[i]->ifname, ifn))
            return p->members[i];
    return NULL;
}

/* Open member slot idx on interface ifn (AF_PACKET sub-port) and add it to the bond
 * (under bond_lock). The sub-port is not polled yet. */
static int bond_member_open(struct port *p, unsigned idx, const char *ifn, uint64_t now, char *err,
                            size_t errlen)
{
    struct port *m;
    int ret;

    if (!ifn || !*ifn || strlen(ifn) >= sizeof(m->ifname)) {
        snprintf(err, errlen, "bond '%s': member %u is not an interface name", p->name, idx);
        return -EINVAL;
    }
    if (bond_member_named(p, ifn)) {
        snprintf(err, errlen, "bond '%s': '%s' is listed twice", p->name, ifn);
        return -EINVAL;
    }
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    snprintf(m->name, sizeof(m->name), "%.20s/%.10s", p->name, ifn);
    snprintf(m->ifname, sizeof(m->ifname), "%s", ifn);
    m->type = PORT_AFPACKET;
    m->card = p->card;
    m->fd = -1;
    m->bond_parent = p;
    m->bond_idx = idx;
    m->q[0].port = m;
    m->q[0].worker = -1;
    pthread_mutex_init(&m->tx_mutex, NULL);
    ret = if_hwaddr(ifn, m->mac);
    if (!ret)
        ret = port_afpacket_open(m);
    if (ret) {
        snprintf(err, errlen, "bond '%s': member '%s': %s", p->name, ifn, strerror(-ret));
        bond_member_free(m);
        return ret;
    }
    pthread_mutex_lock(&p->bond_lock);
    ret = bond_member_add(p->bond, idx, m->mac, now);
    pthread_mutex_unlock(&p->bond_lock);
    if (ret < 0) {
        snprintf(err, errlen, "bond '%s': member '%s' rejected (%s)", p->name, ifn, strerror(-ret));
        bond_member_free(m);
        return ret;
    }
    /* Published for the data plane (port_bond_output) only now that it is complete. */
    __atomic_store_n(&p->members[idx], m, __ATOMIC_RELEASE);
    if (idx >= p->n_members)
        __atomic_store_n(&p->n_members, idx + 1, __ATOMIC_RELEASE);
    return 0;
}

static const char *const bond_hash_names[] = {
    [PKT_HASH_L2] = "l2", [PKT_HASH_L3] = "l3", [PKT_HASH_L4] = "l4"};

/* "mode", "hash" and "lacp" of j into bc; absent keys leave bc as it is. */
static int bond_parse_settings(const struct port *p, json_object *j, struct bond_config *bc,
                               char *err, size_t errlen)
{
    json_object *v, *lacp;

    if (json_object_object_get_ex(j, "mode", &v)) {
        const char *mode =
            json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
        if (strcmp(mode, "lacp") && strcmp(mode, "static")) {
            snprintf(err, errlen, "bond '%s': 'mode' must be \"lacp\" or \"static\"", p->name);
            return -EINVAL;
        }
        bc->mode = strcmp(mode, "static") ? BOND_MODE_LACP : BOND_MODE_STATIC;
    }
    if (json_object_object_get_ex(j, "hash", &v)) {
        const char *hash =
            json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
        unsigned h = 0;
        while (h <= PKT_HASH_L4 && strcmp(hash, bond_hash_names[h]))
            h++;
        if (h > PKT_HASH_L4) {
            snprintf(err, errlen, "bond '%s': 'hash' must be \"l2\", \"l3\" or \"l4\"", p->name);
            return -EINVAL;
        }
        bc->hash = (enum pkt_hash_fields)h;
    }
    if (json_object_object_get_ex(j, "lacp", &lacp)) {
        if (!json_object_is_type(lacp, json_type_object)) {
            snprintf(err, errlen, "bond '%s': 'lacp' must be an object", p->name);
            return -EINVAL;
        }
        json_object_object_foreach(lacp, key, val)
        {
            bool *b = !strcmp(key, "active") ? &bc->lacp.active
                      : !strcmp(key, "fast") ? &bc->lacp.fast
                                             : NULL;
            if (!b || !json_object_is_type(val, json_type_boolean)) {
                snprintf(err, errlen,
                         "bond '%s': 'lacp' takes \"active\" and \"fast\", true or false "
                         "(not '%s')",
                         p->name, key);
                return -EINVAL;
            }
            *b = json_object_get_boolean(val);
        }
    }
    return 0;
}

int port_bond_setup(struct port *p, json_object *j, char *err, size_t errlen)
{
    struct bond_config bc = {.mode = BOND_MODE_LACP, .hash = PKT_HASH_L4};
    json_object *mem;
    uint64_t now = card_now_ns();
    int ret;

    bc.lacp.sys_prio = 32768;
    memcpy(bc.lacp.sys_mac, p->mac, 6);
    bc.lacp.key = (uint16_t)(p->id ? p->id : 1);
    bc.lacp.active = true;
    bc.lacp.fast = true;
    ret = bond_parse_settings(p, j, &bc, err, errlen);
    if (ret)
        return ret;
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
        ret = bond_member_open(p, (unsigned)i, ifn, now, err, errlen);
        if (ret)
            goto fail;
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
        bool up;
        if (!m)
            continue;
        up = if_running(m->ifname);
        if (up != m->link_up) {
            m->link_up = up;
            bond_member_set_link(p->bond, i, up, now);
            log_info("bond '%s': member '%s' link %s", p->name, m->ifname, up ? "up" : "down");
        }
    }
    bond_run(p->bond, now);
    for (unsigned i = 0; i < p->n_members; i++) {
        struct port *m = p->members[i];
        int n = m ? bond_member_lacp_tx(p->bond, i, now, frame, sizeof(frame)) : 0;
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

        if (bond_select_tx(p->bond, &pk[i]->m, &idx) || idx >= BOND_MAX_MEMBERS ||
            !(m = __atomic_load_n(&p->members[idx], __ATOMIC_ACQUIRE))) {
            st->rx_dropped++;
            continue;
        }
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

/* The bond's "mode", "hash" and, in LACP mode, "lacp" {"active", "fast"} into o, as the
 * API takes them (a "lacp" left in o from LACP mode goes when the bond is static). */
static void bond_settings_json(const struct port *p, json_object *o)
{
    json_object_object_add(
        o, "mode", json_object_new_string(p->bond->cfg.mode == BOND_MODE_LACP ? "lacp" : "static"));
    json_object_object_add(o, "hash", json_object_new_string(bond_hash_names[p->bond->cfg.hash]));
    if (p->bond->cfg.mode == BOND_MODE_LACP) {
        json_object *l = json_object_new_object();
        json_object_object_add(l, "active", json_object_new_boolean(p->bond->cfg.lacp.active));
        json_object_object_add(l, "fast", json_object_new_boolean(p->bond->cfg.lacp.fast));
        json_object_object_add(o, "lacp", l);
    } else {
        json_object_object_del(o, "lacp");
    }
}

json_object *port_bond_json(struct port *p)
{
    json_object *o = json_object_new_object(), *ms = json_object_new_array();

    pthread_mutex_lock(&p->bond_lock);
    bond_settings_json(p, o);
    json_object_object_add(o, "enabled_members", json_object_new_int((int)bond_n_enabled(p->bond)));
    for (unsigned i = 0; i < p->n_members; i++) {
        struct port *m = p->members[i];
        json_object *mo;
        /* The bond's own member index (slot i is the "port" the bond knows it by). */
        int bi = bond_member_index(p->bond, i), li;
        if (!m || bi < 0)
            continue;
        li = p->bond->lacp_idx[bi];
        mo = json_object_new_object();
        json_object_object_add(mo, "ifname", json_object_new_string(m->ifname));
        json_object_object_add(mo, "link", json_object_new_boolean(m->link_up));
        json_object_object_add(
            mo, "enabled",
            json_object_new_boolean(atomic_load(&p->bond->enabled_mask) & (1u << bi)));
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

/* Stop polling sub-port m. On true a grace period has passed (the poll-list update waits
 * for one): no worker still receives on m or sends on a member index the bond no longer
 * selects, and m may be freed. False (out of memory): m is still listed, not running. */
static bool bond_member_unpoll(struct card *c, struct port *m)
{
    __atomic_store_n(&m->q[0].rx_running, false, __ATOMIC_RELEASE);
    if (m->q[0].worker < 0) {
        synchronize_rcu();
        return true;
    }
    epoll_ctl(c->workers[m->q[0].worker].epfd, EPOLL_CTL_DEL, m->fd, NULL);
    return worker_poll_update(&c->workers[m->q[0].worker], m, 0, false) == 0;
}

static void bond_member_poll(struct card *c, struct port *p, struct port *m)
{
    int wid = p->q[0].worker;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = 0};

    if (wid < 0 || !c->n_workers)
        return;
    m->q[0].worker = wid;
    epoll_ctl(c->workers[wid].epfd, EPOLL_CTL_ADD, m->fd, &ev);
    __atomic_store_n(&m->q[0].rx_running, true, __ATOMIC_RELEASE);
    worker_poll_update(&c->workers[wid], m, 0, true);
    worker_wake(&c->workers[wid]);
}

static bool members_list_has(json_object *mem, const char *ifn)
{
    for (size_t i = 0; i < json_object_array_length(mem); i++) {
        json_object *e = json_object_array_get_idx(mem, i);
        if (json_object_is_type(e, json_type_string) && !strcmp(json_object_get_string(e), ifn))
            return true;
    }
    return false;
}

/* Whether mem is a list of members the bond can take: names, no duplicates, and every
 * interface that is not a member yet exists. */
static int bond_members_check(const struct port *p, json_object *mem, char *err, size_t errlen)
{
    size_t n = mem && json_object_is_type(mem, json_type_array) ? json_object_array_length(mem) : 0;

    if (n == 0 || n > BOND_MAX_MEMBERS) {
        snprintf(err, errlen, "bond '%s': 'members' must list 1..%d interfaces", p->name,
                 BOND_MAX_MEMBERS);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(mem, i);
        const char *ifn = json_object_is_type(e, json_type_string) ? json_object_get_string(e) : "";
        if (!*ifn || strlen(ifn) >= sizeof(p->ifname)) {
            snprintf(err, errlen, "bond '%s': member %zu is not an interface name", p->name, i);
            return -EINVAL;
        }
        for (size_t k = 0; k < i; k++)
            if (!strcmp(json_object_get_string(json_object_array_get_idx(mem, k)), ifn)) {
                snprintf(err, errlen, "bond '%s': '%s' is listed twice", p->name, ifn);
                return -EINVAL;
            }
    }
    /* Every new interface must exist before anything changes: a refused request changes
     * nothing (short of a socket failing to open on an existing interface). */
    for (size_t i = 0; i < n; i++) {
        const char *ifn = json_object_get_string(json_object_array_get_idx(mem, i));
        if (!bond_member_named(p, ifn) && if_nametoindex(ifn) == 0) {
            snprintf(err, errlen, "bond '%s': member '%s': no such interface", p->name, ifn);
            return -ENODEV;
        }
    }
    return 0;
}

static int port_bond_set_members(struct port *p, json_object *mem, char *err, size_t errlen)
{
    struct card *c = p->card;
    uint64_t now = card_now_ns();
    size_t n;
    int ret;

    if (p->type != PORT_BOND) {
        snprintf(err, errlen, "port '%s' is not a bond", p->name);
        return -EINVAL;
    }
    ret = bond_members_check(p, mem, err, errlen);
    if (ret)
        return ret;
    n = json_object_array_length(mem);
    /* Members that stay keep their slot, LACP state and traffic. Those that go leave the
     * bond first (their buckets move to the others), then stop being polled (a grace
     * period: no worker still sends on them), then close. */
    for (unsigned i = 0; i < p->n_members; i++) {
        struct port *m = p->members[i];
        if (!m)
            continue;
        if (members_list_has(mem, m->ifname))
            continue;
        pthread_mutex_lock(&p->bond_lock);
        bond_member_remove(p->bond, i, now);
        pthread_mutex_unlock(&p->bond_lock);
        __atomic_store_n(&p->members[i], NULL, __ATOMIC_RELEASE);
        if (!bond_member_unpoll(c, m)) {
            /* A worker may still look at it: keep its memory (and socket) rather than free
             * it under the worker. */
            log_err("bond '%s': member '%s' removed, but out of memory to unlist it", p->name,
                    m->ifname);
            continue;
        }
        log_info("bond '%s': member '%s' removed", p->name, m->ifname);
        bond_member_free(m);
    }
    for (size_t i = 0; i < n; i++) {
        const char *ifn = json_object_get_string(json_object_array_get_idx(mem, i));
        unsigned slot = BOND_MAX_MEMBERS;
        if (bond_member_named(p, ifn))
            continue;
        for (unsigned k = 0; k < BOND_MAX_MEMBERS && slot == BOND_MAX_MEMBERS; k++)
            if (!p->members[k])
                slot = k;
        if (slot == BOND_MAX_MEMBERS) { /* cannot happen: at most n members remain */
            snprintf(err, errlen, "bond '%s': no free member slot", p->name);
            return -ENOSPC;
        }
        ret = bond_member_open(p, slot, ifn, now, err, errlen);
        if (ret)
            return ret; /* what was done stays done; the error names the member */
        bond_member_poll(c, p, p->members[slot]);
        log_info("bond '%s': member '%s' added", p->name, ifn);
    }
    return 0;
}

/* The saved configuration (p->conf, the state file) follows what the bond has now. */
static void bond_conf_update(struct port *p)
{
    json_object *now = json_object_new_array();

    for (unsigned i = 0; i < p->n_members; i++)
        if (p->members[i])
            json_object_array_add(now, json_object_new_string(p->members[i]->ifname));
    json_object_object_add(p->conf, "members", now);
    bond_settings_json(p, p->conf);
}

int port_bond_patch(struct port *p, json_object *j, char *err, size_t errlen)
{
    struct bond_config bc;
    json_object *mem = NULL, *v;
    int ret;

    if (p->type != PORT_BOND) {
        snprintf(err, errlen, "port '%s' is not a bond", p->name);
        return -EINVAL;
    }
    pthread_mutex_lock(&p->bond_lock);
    bc = p->bond->cfg;
    pthread_mutex_unlock(&p->bond_lock);
    /* Everything is checked before anything changes: a refused request changes nothing. */
    ret = bond_parse_settings(p, j, &bc, err, errlen);
    if (ret)
        return ret;
    if (bc.mode != BOND_MODE_LACP && json_object_object_get_ex(j, "lacp", &v)) {
        snprintf(err, errlen, "bond '%s': 'lacp' settings need mode \"lacp\"", p->name);
        return -EINVAL;
    }
    if (json_object_object_get_ex(j, "members", &mem)) {
        ret = bond_members_check(p, mem, err, errlen);
        if (ret)
            return ret;
    }
    pthread_mutex_lock(&p->bond_lock);
    if (bc.mode != p->bond->cfg.mode) {
        ret = bond_set_mode(p->bond, bc.mode, &bc.lacp, card_now_ns());
        if (ret) {
            pthread_mutex_unlock(&p->bond_lock);
            snprintf(err, errlen, "bond '%s': invalid LACP configuration", p->name);
            return ret;
        }
        log_info("bond '%s': mode %s", p->name,
                 bc.mode == BOND_MODE_LACP ? "lacp (members wait for the partner)" : "static");
    }
    if (bc.hash != p->bond->cfg.hash) {
        log_info("bond '%s': hash %s -> %s", p->name, bond_hash_names[p->bond->cfg.hash],
                 bond_hash_names[bc.hash]);
        bond_set_hash(p->bond, bc.hash);
    }
    if (bc.mode == BOND_MODE_LACP &&
        (bc.lacp.active != p->bond->cfg.lacp.active || bc.lacp.fast != p->bond->cfg.lacp.fast)) {
        log_info("bond '%s': LACP %s, %s rate", p->name, bc.lacp.active ? "active" : "passive",
                 bc.lacp.fast ? "fast" : "slow");
        bond_set_lacp(p->bond, bc.lacp.active, bc.lacp.fast, card_now_ns());
    }
    pthread_mutex_unlock(&p->bond_lock);
    ret = mem ? port_bond_set_members(p, mem, err, errlen) : 0;
    bond_conf_update(p); /* also after a partial member change */
    return ret;
}
