/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qtcard control plane: lifecycle, the control thread (vhost-user sockets,
 * reconnects, MAC aging, broken-port handling), switches and ports, policies,
 * and the persisted state file.
 */
#include "card/card.h"
#include "card/dp.h"
#include "card/port_bond.h"
#include "card/port_host.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <urcu-qsbr.h>

enum ctl_ev { CTL_EV_WAKE = 1, CTL_EV_LISTEN, CTL_EV_CONN };

static uint64_t ctl_ev(enum ctl_ev kind, uint32_t id)
{
    return ((uint64_t)kind << 32) | id;
}

int card_init(struct card *c, const struct card_config *cfg)
{
    memset(c, 0, sizeof(*c));
    c->cfg = *cfg;
    if (c->cfg.cores == 0 || c->cfg.cores > CARD_MAX_WORKERS)
        return -EINVAL;
    if (!c->cfg.idle_us)
        c->cfg.idle_us = 200;
    c->next_serial = 1;
    pthread_mutex_init(&c->lock, NULL);
    c->ctl_epfd = epoll_create1(EPOLL_CLOEXEC);
    c->ctl_wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->ctl_epfd < 0 || c->ctl_wake_fd < 0)
        return -errno;
    {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ctl_ev(CTL_EV_WAKE, 0)};
        if (epoll_ctl(c->ctl_epfd, EPOLL_CTL_ADD, c->ctl_wake_fd, &ev) < 0)
            return -errno;
    }
    c->n_workers = c->cfg.cores;
    for (unsigned i = 0; i < c->n_workers; i++) {
        struct worker *w = &c->workers[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = DP_EV_WAKE};
        w->card = c;
        w->id = i;
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (w->epfd < 0 || w->wake_fd < 0)
            return -errno;
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wake_fd, &ev) < 0)
            return -errno;
    }
    return 0;
}

int card_start_workers(struct card *c)
{
    for (unsigned i = 0; i < c->n_workers; i++) {
        int ret = pthread_create(&c->workers[i].thread, NULL, worker_main, &c->workers[i]);
        if (ret) {
            log_err("worker %u: pthread_create: %s", i, strerror(ret));
            for (unsigned k = 0; k < i; k++) {
                __atomic_store_n(&c->workers[k].stop, true, __ATOMIC_RELEASE);
                worker_wake(&c->workers[k]);
                pthread_join(c->workers[k].thread, NULL);
            }
            c->n_workers = 0;
            return -ret;
        }
        if (c->cfg.n_cpus) {
            cpu_set_t set;
            int cpu = c->cfg.cpus[i % c->cfg.n_cpus];
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            ret = pthread_setaffinity_np(c->workers[i].thread, sizeof(set), &set);
            if (ret)
                log_warn("worker %u: pinning to CPU %d: %s", i, cpu, strerror(ret));
        }
        {
            char name[32];
            snprintf(name, sizeof(name), "qtcard-pmd%u", i);
            name[15] = 0; /* the kernel's limit */
            pthread_setname_np(c->workers[i].thread, name);
        }
    }
    return 0;
}

/* ---- lookups ---- */

struct port *card_port_find(struct card *c, const char *name)
{
    for (unsigned i = 1; i < CARD_MAX_PORTS; i++)
        if (c->ports[i] && strcmp(c->ports[i]->name, name) == 0)
            return c->ports[i];
    return NULL;
}

struct vswitch *card_switch_find(struct card *c, const char *name)
{
    for (unsigned i = 1; i < CARD_MAX_SWITCHES; i++)
        if (c->switches[i] && strcmp(c->switches[i]->name, name) == 0)
            return c->switches[i];
    return NULL;
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= CARD_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return false;
    }
    return s[0] != '.';
}

/* ---- JSON helpers ---- */

#define ERR(...)                                                                                   \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
    } while (0)

/* Take c->lock and find the port; on NULL the lock is released and err says why (404). */
static struct port *card_port_lock_find(struct card *c, const char *name, char *err, size_t errlen)
{
    struct port *p;

    pthread_mutex_lock(&c->lock);
    p = card_port_find(c, name);
    if (!p) {
        pthread_mutex_unlock(&c->lock);
        ERR("port '%s' not found", name);
    }
    return p;
}

static const char *j_str(json_object *j, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(j, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* 0 absent (out untouched), 1 present, -EINVAL wrong type / negative. */
static int j_u64(json_object *j, const char *key, uint64_t *out)
{
    json_object *v;
    if (!json_object_object_get_ex(j, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
        return -EINVAL;
    *out = (uint64_t)json_object_get_int64(v);
    return 1;
}

static int j_bool(json_object *j, const char *key, bool *out)
{
    json_object *v;
    if (!json_object_object_get_ex(j, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_boolean))
        return -EINVAL;
    *out = json_object_get_boolean(v);
    return 1;
}

static int check_keys(json_object *j, const char *const *allowed, char *err, size_t errlen,
                      const char *what)
{
    json_object_object_foreach(j, key, val)
    {
        bool ok = false;
        (void)val;
        for (unsigned i = 0; allowed[i]; i++)
            if (strcmp(key, allowed[i]) == 0)
                ok = true;
        if (!ok) {
            ERR("%s: unknown key '%s'", what, key);
            return -EINVAL;
        }
    }
    return 0;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
    unsigned v[6];
    char tail;
    if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) !=
        6)
        return -EINVAL;
    for (unsigned i = 0; i < 6; i++)
        mac[i] = (uint8_t)v[i];
    return 0;
}

static void fmt_mac(char *buf, const uint8_t m[6])
{
    sprintf(buf, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

/* ---- policy ---- */

static int policy_parse_vlan(struct port_policy *pol, json_object *v, char *err, size_t errlen)
{
    static const char *const keys[] = {"mode", "tag", "native", "allowed", "native_tagged", NULL};
    const char *mode = j_str(v, "mode");
    uint64_t tag = 0, native = 0;
    bool nt = false;

    if (!json_object_is_type(v, json_type_object) || check_keys(v, keys, err, errlen, "vlan"))
        return -EINVAL;
    if (!mode || (strcmp(mode, "access") && strcmp(mode, "trunk"))) {
        ERR("vlan: 'mode' must be \"access\" or \"trunk\"");
        return -EINVAL;
    }
    if (j_u64(v, "tag", &tag) < 0 || j_u64(v, "native", &native) < 0 ||
        j_bool(v, "native_tagged", &nt) < 0) {
        ERR("vlan: 'tag'/'native' must be integers, 'native_tagged' a boolean");
        return -EINVAL;
    }
    memset(&pol->vlan, 0, sizeof(pol->vlan));
    if (strcmp(mode, "access") == 0) {
        if (vlan_port_set_access(&pol->vlan, (uint16_t)(tag ? tag : 1)) || tag > VLAN_VID_MAX) {
            ERR("vlan: access tag %llu outside 1..4094", (unsigned long long)tag);
            return -EINVAL;
        }
        return 0;
    }
    if (native > VLAN_VID_MAX || vlan_port_set_trunk(&pol->vlan, (uint16_t)native, NULL, 0)) {
        ERR("vlan: native VLAN %llu outside 0..4094", (unsigned long long)native);
        return -EINVAL;
    }
    pol->vlan.native_tagged = nt;
    {
        const char *allowed = j_str(v, "allowed");
        if (allowed && vlan_port_allow_list(&pol->vlan, allowed)) {
            ERR("vlan: allowed list '%s' is not like \"10,20-30\" with VLANs 1..4094", allowed);
            return -EINVAL;
        }
    }
    return 0;
}

static int policy_parse_sec(struct port_policy *pol, json_object *v, const uint8_t *port_mac,
                            char *err, size_t errlen)
{
    static const char *const keys[] = {
        "mac", "ips", "allow_any_ipv4", "allow_any_ipv6", "promiscuous", "allow_ipv6_ra", NULL};
    uint8_t mac[6];
    const char *ms = j_str(v, "mac");
    json_object *ips;
    bool b;

    if (!json_object_is_type(v, json_type_object) ||
        check_keys(v, keys, err, errlen, "anti_spoofing"))
        return -EINVAL;
    memcpy(mac, port_mac, 6);
    if (ms && parse_mac(ms, mac)) {
        ERR("anti_spoofing: mac '%s' is not aa:bb:cc:dd:ee:ff", ms);
        return -EINVAL;
    }
    if (port_security_init(&pol->sec, mac)) {
        ERR("anti_spoofing: mac must be unicast and non-zero");
        return -EINVAL;
    }
    if (json_object_object_get_ex(v, "ips", &ips)) {
        if (!json_object_is_type(ips, json_type_array)) {
            ERR("anti_spoofing: 'ips' must be an array of addresses");
            return -EINVAL;
        }
        for (size_t i = 0; i < json_object_array_length(ips); i++) {
            json_object *a = json_object_array_get_idx(ips, i);
            const char *s =
                json_object_is_type(a, json_type_string) ? json_object_get_string(a) : "";
            int r = port_security_add_ip(&pol->sec, s);
            if (r && r != -EEXIST) {
                ERR("anti_spoofing: address '%s': %s", s,
                    r == -ENOSPC ? "too many addresses" : "not an IPv4/IPv6 address");
                return -EINVAL;
            }
        }
    }
    if (j_bool(v, "allow_any_ipv4", &b) == 1)
        pol->sec.allow_any_ipv4 = b;
    if (j_bool(v, "allow_any_ipv6", &b) == 1)
        pol->sec.allow_any_ipv6 = b;
    if (j_bool(v, "promiscuous", &b) == 1)
        pol->sec.promiscuous = b;
    if (j_bool(v, "allow_ipv6_ra", &b) == 1)
        pol->sec.allow_ipv6_ra = b;
    pol->sec_enabled = true;
    return 0;
}

/* Apply the policy keys of j on top of *pol. */
static int policy_parse(struct port_policy *pol, json_object *j, const uint8_t *port_mac, char *err,
                        size_t errlen)
{
    json_object *v;

    if (json_object_object_get_ex(j, "vlan", &v) && policy_parse_vlan(pol, v, err, errlen))
        return -EINVAL;
    if (json_object_object_get_ex(j, "anti_spoofing", &v)) {
        if (json_object_is_type(v, json_type_null) ||
            (json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v))) {
            pol->sec_enabled = false;
        } else if (policy_parse_sec(pol, v, port_mac, err, errlen)) {
            return -EINVAL;
        }
    }
    if (json_object_object_get_ex(j, "ingress_rate", &v)) {
        static const char *const keys[] = {"rate_bps", "burst_bits", NULL};
        uint64_t rate = 0, burst = 0;
        if (!json_object_is_type(v, json_type_object) ||
            check_keys(v, keys, err, errlen, "ingress_rate") || j_u64(v, "rate_bps", &rate) < 0 ||
            j_u64(v, "burst_bits", &burst) < 0 || rate > TB_MAX_RATE || burst > TB_MAX_BURST) {
            if (!err[0])
                ERR("ingress_rate: rate_bps and burst_bits must be integers in range");
            return -EINVAL;
        }
        if (rate && burst < 8ull * PKT_MAX_FRAME)
            burst = rate / 10 > 8ull * PKT_MAX_FRAME ? rate / 10 : 8ull * PKT_MAX_FRAME;
        pol->ingress_rate_bps = rate;
        pol->ingress_burst_bits = burst;
    }
    if (json_object_object_get_ex(j, "egress_rate", &v)) {
        static const char *const keys[] = {"rate_bps", "burst_bits", "max_delay_us", NULL};
        uint64_t rate = 0, burst = 0, delay_us = 10000;
        if (!json_object_is_type(v, json_type_object) ||
            check_keys(v, keys, err, errlen, "egress_rate") || j_u64(v, "rate_bps", &rate) < 0 ||
            j_u64(v, "burst_bits", &burst) < 0 || j_u64(v, "max_delay_us", &delay_us) < 0 ||
            rate > TB_MAX_RATE || burst > TB_MAX_BURST || delay_us > 1000000) {
            if (!err[0])
                ERR("egress_rate: rate_bps, burst_bits and max_delay_us (<= 1 s) must be "
                    "integers in range");
            return -EINVAL;
        }
        if (rate && burst < 8ull * PKT_MAX_FRAME)
            burst = 8ull * PKT_MAX_FRAME;
        pol->egress_rate_bps = rate;
        pol->egress_burst_bits = burst;
        pol->egress_max_delay_ns = delay_us * 1000;
    }
    if (json_object_object_get_ex(j, "storm_control", &v)) {
        static const char *const keys[] = {"broadcast_pps", "multicast_pps", "unknown_unicast_pps",
                                           NULL};
        if (!json_object_is_type(v, json_type_object) ||
            check_keys(v, keys, err, errlen, "storm_control") ||
            j_u64(v, "broadcast_pps", &pol->storm_bcast_pps) < 0 ||
            j_u64(v, "multicast_pps", &pol->storm_mcast_pps) < 0 ||
            j_u64(v, "unknown_unicast_pps", &pol->storm_unknown_pps) < 0 ||
            pol->storm_bcast_pps > TB_MAX_BURST || pol->storm_mcast_pps > TB_MAX_BURST ||
            pol->storm_unknown_pps > TB_MAX_BURST) {
            if (!err[0])
                ERR("storm_control: rates must be non-negative integers (packets/s)");
            return -EINVAL;
        }
    }
    if (json_object_object_get_ex(j, "coalescing", &v)) {
        static const char *const keys[] = {"enabled", "adaptive", "max_packets", "max_us", NULL};
        uint64_t u;
        bool b;
        if (json_object_is_type(v, json_type_boolean)) {
            pol->coalesce = json_object_get_boolean(v);
        } else if (!json_object_is_type(v, json_type_object) ||
                   check_keys(v, keys, err, errlen, "coalescing")) {
            if (!err[0])
                ERR("coalescing: expected true/false or an object");
            return -EINVAL;
        } else {
            pol->coalesce = true;
            if (j_bool(v, "enabled", &b) == 1)
                pol->coalesce = b;
            if (j_bool(v, "adaptive", &b) == 1)
                pol->coalesce_cfg.adaptive = b;
            if (j_u64(v, "max_packets", &u) == 1)
                pol->coalesce_cfg.max_pkts = (uint32_t)(u > 4096 ? 4096 : u);
            if (j_u64(v, "max_us", &u) == 1)
                pol->coalesce_cfg.max_ns = (u > 100000 ? 100000 : u) * 1000;
            {
                struct coalesce tmp;
                if (coalesce_init(&tmp, &pol->coalesce_cfg)) {
                    ERR("coalescing: max_packets must be >= 1");
                    return -EINVAL;
                }
            }
        }
    }
    return 0;
}

static const char *const port_policy_keys[] = {
    "vlan", "anti_spoofing", "ingress_rate", "egress_rate", "storm_control", "coalescing", NULL};

/* ---- switches ---- */

int card_switch_add(struct card *c, json_object *j, char *err, size_t errlen)
{
    static const char *const keys[] = {"name", "aging_s", "max_macs", NULL};
    const char *name = j ? j_str(j, "name") : NULL;
    uint64_t aging = 300, max_macs = 8192;
    struct mac_table_config mc;
    struct vswitch *sw;
    unsigned id = 0;
    int ret;

    if (!j || !json_object_is_type(j, json_type_object) ||
        check_keys(j, keys, err, errlen, "switch"))
        return -EINVAL;
    if (!name || !name_ok(name)) {
        ERR("switch: 'name' must be 1..%d characters of [A-Za-z0-9._-]", CARD_NAME_MAX - 1);
        return -EINVAL;
    }
    if (j_u64(j, "aging_s", &aging) < 0 || j_u64(j, "max_macs", &max_macs) < 0 || aging == 0 ||
        aging > 1000000 || max_macs == 0 || max_macs > (1u << 20)) {
        ERR("switch '%s': aging_s must be 1..1000000 and max_macs 1..1048576", name);
        return -EINVAL;
    }
    pthread_mutex_lock(&c->lock);
    if (card_switch_find(c, name)) {
        pthread_mutex_unlock(&c->lock);
        ERR("switch '%s' already exists", name);
        return -EEXIST;
    }
    for (unsigned i = 1; i < CARD_MAX_SWITCHES && !id; i++)
        if (!c->switches[i])
            id = i;
    if (!id) {
        pthread_mutex_unlock(&c->lock);
        ERR("switch '%s': all %d switch slots in use", name, CARD_MAX_SWITCHES - 1);
        return -ENOSPC;
    }
    sw = calloc(1, sizeof(*sw));
    if (!sw) {
        pthread_mutex_unlock(&c->lock);
        return -ENOMEM;
    }
    snprintf(sw->name, sizeof(sw->name), "%s", name);
    sw->id = id;
    sw->aging_ns = aging * 1000000000ull;
    mc.max_entries = (uint32_t)max_macs;
    mc.aging_ns = sw->aging_ns;
    mc.seed = ((uint64_t)rand() << 32) ^ (uint64_t)rand() ^ (uint64_t)card_now_ns();
    ret = mac_table_create(&mc, &sw->fdb);
    if (ret) {
        free(sw);
        pthread_mutex_unlock(&c->lock);
        ERR("switch '%s': MAC table: %s", name, strerror(-ret));
        return ret;
    }
    sw->members = calloc(1, sizeof(struct port_list));
    sw->conf = json_object_get(j);
    rcu_assign_pointer(c->switches[id], sw);
    pthread_mutex_unlock(&c->lock);
    log_info("switch '%s' created", name);
    card_save_state(c);
    return 0;
}

int card_switch_del(struct card *c, const char *name, char *err, size_t errlen)
{
    struct vswitch *sw;

    pthread_mutex_lock(&c->lock);
    sw = card_switch_find(c, name);
    if (!sw) {
        pthread_mutex_unlock(&c->lock);
        ERR("switch '%s' not found", name);
        return -ENOENT;
    }
    if (sw->members && sw->members->n) {
        pthread_mutex_unlock(&c->lock);
        ERR("switch '%s' still has %u ports; delete them first", name, sw->members->n);
        return -EBUSY;
    }
    rcu_assign_pointer(c->switches[sw->id], NULL);
    synchronize_rcu();
    pthread_mutex_unlock(&c->lock);
    mac_table_destroy(sw->fdb);
    json_object_put(sw->conf);
    free(sw->members);
    free(sw);
    log_info("switch '%s' deleted", name);
    card_save_state(c);
    return 0;
}

static int switch_members_update(struct vswitch *sw, uint32_t id, bool add)
{
    struct port_list *old = sw->members, *nl;
    unsigned n = old ? old->n : 0, k = 0;

    nl = calloc(1, sizeof(*nl) + (n + 1) * sizeof(uint32_t));
    if (!nl)
        return -ENOMEM;
    for (unsigned i = 0; i < n; i++)
        if (old->ids[i] != id)
            nl->ids[k++] = old->ids[i];
    if (add)
        nl->ids[k++] = id;
    nl->n = k;
    rcu_assign_pointer(sw->members, nl);
    synchronize_rcu();
    free(old);
    return 0;
}

/* ---- vhost-user sockets ---- */

static int port_listen(struct port *p)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->sock_path);
    unlink(p->sock_path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
        int e = -errno;
        log_err("port '%s': listening on '%s': %s", p->name, p->sock_path, strerror(errno));
        close(fd);
        return e;
    }
    p->listen_fd = fd;
    return 0;
}

static void port_attach_conn(struct card *c, struct port *p, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ctl_ev(CTL_EV_CONN, p->id)};
    vu_dev_attach(&p->dev, fd);
    p->connected = true;
    p->n_connects++;
    epoll_ctl(c->ctl_epfd, EPOLL_CTL_ADD, fd, &ev);
    log_info("port '%s': frontend connected on '%s'", p->name, p->sock_path);
}

static void port_try_connect(struct card *c, struct port *p)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (p->connected)
        return;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->sock_path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        log_debug("port '%s': connecting to '%s': %s", p->name, p->sock_path, strerror(errno));
        close(fd);
        return;
    }
    port_attach_conn(c, p, fd);
}

static void port_drop_conn(struct card *c, struct port *p)
{
    if (!p->connected)
        return;
    if (p->dev.fd >= 0)
        epoll_ctl(c->ctl_epfd, EPOLL_CTL_DEL, p->dev.fd, NULL);
    vu_dev_disconnect(&p->dev);
    p->connected = false;
    p->n_disconnects++;
    __atomic_store_n(&p->broken, false, __ATOMIC_RELEASE);
    if (p->client)
        port_try_connect(c, p);
}

/* ---- ports ---- */

static struct port_policy *policy_default(void)
{
    struct port_policy *pol = calloc(1, sizeof(*pol));
    if (!pol)
        return NULL;
    vlan_port_set_access(&pol->vlan, 1);
    coalesce_config_default(&pol->coalesce_cfg);
    return pol;
}

static void port_free(struct port *p)
{
    if (!p)
        return;
    free(p->policy);
    free(p->vx_neigh);
    json_object_put(p->conf);
    for (unsigned i = 0; i < CARD_MAX_QPAIRS; i++)
        pthread_spin_destroy(&p->q[i].rx_lock);
    pthread_mutex_destroy(&p->tx_mutex);
    __atomic_sub_fetch(&p->card->n_delayed, p->shaper.count, __ATOMIC_RELAXED);
    for (unsigned i = 0; i < SHAPER_SLOTS; i++)
        free(p->shaper.slot[i].pk);
    pthread_mutex_destroy(&p->shaper.lock);
    free(p);
}

/* VXLAN tunnel port settings; fills p->vx_* and creates the VTEP table. */
static int port_vxlan_parse(struct port *p, json_object *j, char *err, size_t errlen)
{
    const char *lip = j_str(j, "local_ip"), *nh = j_str(j, "nexthop_mac");
    const char *lmac = j_str(j, "local_mac"), *gw = j_str(j, "gateway_ip");
    uint64_t vni = 0, udp = VXLAN_PORT;
    json_object *rips;
    int ret;

    if (j_u64(j, "vni", &vni) != 1 || vni == 0 || vni > VXLAN_VNI_MAX) {
        ERR("port '%s': 'vni' (1..16777215) is required for vxlan ports", p->name);
        return -EINVAL;
    }
    if (j_u64(j, "udp_port", &udp) < 0 || udp == 0 || udp > 65535) {
        ERR("port '%s': udp_port must be 1..65535", p->name);
        return -EINVAL;
    }
    if (!lip || inet_pton(AF_INET, lip, p->vx_tun.local_ip) != 1) {
        ERR("port '%s': 'local_ip' (IPv4 of this VTEP) is required", p->name);
        return -EINVAL;
    }
    if (nh && parse_mac(nh, p->vx_tun.nexthop_mac)) {
        ERR("port '%s': nexthop_mac '%s' is not aa:bb:cc:dd:ee:ff", p->name, nh);
        return -EINVAL;
    }
    if (nh && gw) {
        ERR("port '%s': give nexthop_mac (static next hop) or gateway_ip (resolved by ARP), "
            "not both",
            p->name);
        return -EINVAL;
    }
    if (gw && (inet_pton(AF_INET, gw, p->vx_gw_ip) != 1 || !neigh_ip_ok(p->vx_gw_ip))) {
        ERR("port '%s': gateway_ip '%s' is not a unicast IPv4 address", p->name, gw);
        return -EINVAL;
    }
    if (!nh) {
        /* Next hops resolved by ARP: the gateway, or each remote VTEP on the link. */
        p->vx_neigh = calloc(1, sizeof(*p->vx_neigh));
        if (!p->vx_neigh)
            return -ENOMEM;
        p->vx_have_gw = gw != NULL;
        if (gw)
            neigh_want(p->vx_neigh, p->vx_gw_ip);
    }
    if (lmac && parse_mac(lmac, p->vx_tun.local_mac)) {
        ERR("port '%s': local_mac '%s' is not aa:bb:cc:dd:ee:ff", p->name, lmac);
        return -EINVAL;
    }
    p->vx_tun.dst_port = (uint16_t)udp;
    p->vx_vni = (uint32_t)vni;
    p->vx_vtep = calloc(1, sizeof(*p->vx_vtep));
    if (!p->vx_vtep)
        return -ENOMEM;
    ret = vxlan_vtep_init(p->vx_vtep, 4096, MAC_TABLE_DEFAULT_AGING_NS,
                          card_now_ns() ^ (uint64_t)rand());
    if (ret) {
        free(p->vx_vtep);
        p->vx_vtep = NULL;
        ERR("port '%s': VTEP table: %s", p->name, strerror(-ret));
        return ret;
    }
    vxlan_vtep_add_vni(p->vx_vtep, p->vx_vni);
    if (json_object_object_get_ex(j, "remote_ips", &rips)) {
        if (!json_object_is_type(rips, json_type_array)) {
            ERR("port '%s': remote_ips must be an array of IPv4 addresses", p->name);
            return -EINVAL;
        }
        for (size_t i = 0; i < json_object_array_length(rips); i++) {
            json_object *a = json_object_array_get_idx(rips, i);
            const char *sa =
                json_object_is_type(a, json_type_string) ? json_object_get_string(a) : "";
            uint8_t ip[4];
            if (inet_pton(AF_INET, sa, ip) != 1 ||
                vxlan_vtep_add_flood(p->vx_vtep, p->vx_vni, ip) < 0 ||
                (p->vx_neigh && !p->vx_have_gw && neigh_want(p->vx_neigh, ip) < 0)) {
                ERR("port '%s': remote VTEP '%s' is not a usable unicast IPv4 address (or the "
                    "list is full)",
                    p->name, sa);
                return -EINVAL;
            }
        }
    }
    return 0;
}

int card_port_add(struct card *c, json_object *j, char *err, size_t errlen)
{
    static const char *const keys[] = {
        "name",       "switch",    "type",     "queues",        "mode",         "socket",
        "mac",        "ifname",    "vlan",     "anti_spoofing", "ingress_rate", "storm_control",
        "coalescing", "vni",       "local_ip", "egress_rate",   "remote_ips",   "nexthop_mac",
        "gateway_ip", "local_mac", "udp_port", "members",       "hash",         "lacp",
        "offload",    NULL};
    const char *name, *swname, *type, *mode, *sock, *mac;
    struct vswitch *sw;
    struct port *p = NULL;
    uint64_t queues = 1;
    unsigned id = 0;
    int ret = -EINVAL;

    err[0] = 0;
    if (!j || !json_object_is_type(j, json_type_object) || check_keys(j, keys, err, errlen, "port"))
        return -EINVAL;
    name = j_str(j, "name");
    swname = j_str(j, "switch");
    type = j_str(j, "type");
    mode = j_str(j, "mode");
    sock = j_str(j, "socket");
    mac = j_str(j, "mac");
    if (!name || !name_ok(name)) {
        ERR("port: 'name' must be 1..%d characters of [A-Za-z0-9._-]", CARD_NAME_MAX - 1);
        return -EINVAL;
    }
    if (!swname) {
        ERR("port '%s': 'switch' is required", name);
        return -EINVAL;
    }
    if (!type)
        type = "vhost";
    if (strcmp(type, "vhost") && strcmp(type, "tap") && strcmp(type, "afpacket") &&
        strcmp(type, "vxlan") && strcmp(type, "bond")) {
        ERR("port '%s': type '%s' is not vhost, tap, afpacket, vxlan or bond", name, type);
        return -EINVAL;
    }
    if (j_u64(j, "queues", &queues) < 0 || queues == 0 || queues > CARD_MAX_QPAIRS) {
        ERR("port '%s': queues must be 1..%d", name, CARD_MAX_QPAIRS);
        return -EINVAL;
    }
    if (mode && strcmp(type, "bond") && strcmp(mode, "server") && strcmp(mode, "client")) {
        ERR("port '%s': mode '%s' is not server or client", name, mode);
        return -EINVAL;
    }
    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->card = c;
    p->fd = -1;
    p->listen_fd = -1;
    pthread_mutex_init(&p->tx_mutex, NULL);
    pthread_mutex_init(&p->shaper.lock, NULL);
    for (unsigned i = 0; i < CARD_MAX_QPAIRS; i++) {
        pthread_spin_init(&p->q[i].rx_lock, PTHREAD_PROCESS_PRIVATE);
        p->q[i].port = p;
        p->q[i].qpair = i;
        p->q[i].worker = -1;
    }
    p->type = !strcmp(type, "vhost")      ? PORT_VHOST
              : !strcmp(type, "tap")      ? PORT_TAP
              : !strcmp(type, "afpacket") ? PORT_AFPACKET
              : !strcmp(type, "bond")     ? PORT_BOND
                                          : PORT_VXLAN;
    p->n_qpairs = p->type == PORT_VHOST ? (unsigned)queues : 1;
    if (mac) {
        if (parse_mac(mac, p->mac) || pkt_mac_is_multicast(p->mac) || pkt_mac_is_zero(p->mac)) {
            ERR("port '%s': mac '%s' is not a unicast aa:bb:cc:dd:ee:ff", name, mac);
            goto fail_free;
        }
    } else {
        uint64_t r = card_now_ns() ^ ((uint64_t)rand() << 16);
        p->mac[0] = 0x52;
        p->mac[1] = 0x54;
        for (unsigned i = 2; i < 6; i++)
            p->mac[i] = (uint8_t)(r >> (8 * i));
    }
    p->policy = policy_default();
    if (!p->policy) {
        ret = -ENOMEM;
        goto fail_free;
    }
    if (policy_parse(p->policy, j, p->mac, err, errlen))
        goto fail_free;
    /* Queues start at generation 0: start the port at 1 so that the policy given at
     * creation is picked up by the data plane on the first packet. */
    p->policy_gen = 1;
    if (p->type == PORT_VHOST) {
        if (sock) {
            if (strlen(sock) >= sizeof(p->sock_path) || sock[0] == 0) {
                ERR("port '%s': socket path too long", name);
                goto fail_free;
            }
            snprintf(p->sock_path, sizeof(p->sock_path), "%s", sock);
        } else if ((size_t)snprintf(p->sock_path, sizeof(p->sock_path), "%s/%s.sock",
                                    c->cfg.socket_dir ? c->cfg.socket_dir : ".",
                                    name) >= sizeof(p->sock_path)) {
            ERR("port '%s': socket path too long", name);
            goto fail_free;
        }
        p->client = mode && !strcmp(mode, "client");
        vhost_net_ops_init(&p->ops, p->n_qpairs);
        vu_dev_init(&p->dev, name, &p->ops, p);
    } else if (p->type == PORT_BOND) {
        /* members are opened below, once the port has its id (the LACP key). */
    } else {
        const char *ifn = j_str(j, "ifname");
        if (!ifn || !*ifn || strlen(ifn) >= sizeof(p->ifname)) {
            ERR("port '%s': 'ifname' (1..15 characters) is required for %s ports", name, type);
            goto fail_free;
        }
        snprintf(p->ifname, sizeof(p->ifname), "%s", ifn);
        if (p->type == PORT_VXLAN && port_vxlan_parse(p, j, err, errlen))
            goto fail_free;
    }
    if (json_object_object_get_ex(j, "offload", NULL)) {
        if (p->type != PORT_TAP) {
            ERR("port '%s': 'offload' is for tap ports", name);
            goto fail_free;
        }
        if (j_bool(j, "offload", &p->tap_offload) < 0) {
            ERR("port '%s': 'offload' must be true or false", name);
            goto fail_free;
        }
    }

    pthread_mutex_lock(&c->lock);
    sw = card_switch_find(c, swname);
    if (!sw) {
        ERR("port '%s': switch '%s' not found", name, swname);
        ret = -ENOENT;
        goto fail_unlock;
    }
    if (card_port_find(c, name)) {
        ERR("port '%s' already exists", name);
        ret = -EEXIST;
        goto fail_unlock;
    }
    if (p->type == PORT_VXLAN) {
        /* Several tunnel ports may share an underlay and VTEP address (a VNI per network,
         * each in its own switch), but one VNI has one port: two would both take its
         * frames. */
        for (unsigned i = 1; i < CARD_MAX_PORTS; i++) {
            struct port *o = c->ports[i];
            if (o && port_vxlan_same_vtep(o, p) && o->vx_vni == p->vx_vni) {
                ERR("port '%s': VNI %u on %s is already served by port '%s'", name, p->vx_vni,
                    p->ifname, o->name);
                ret = -EEXIST;
                goto fail_unlock;
            }
        }
    }
    for (unsigned i = 1; i < CARD_MAX_PORTS && !id; i++)
        if (!c->ports[i])
            id = i;
    if (!id) {
        ERR("port '%s': all %d port slots in use", name, CARD_MAX_PORTS - 1);
        ret = -ENOSPC;
        goto fail_unlock;
    }
    p->id = id;
    p->serial = c->next_serial++;
    p->sw = sw->id;
    if (p->type == PORT_VHOST) {
        if (p->client) {
            ret = 0;
        } else {
            ret = port_listen(p);
            if (ret) {
                ERR("port '%s': cannot listen on '%s': %s", name, p->sock_path, strerror(-ret));
                goto fail_unlock;
            }
        }
    } else {
        ret = p->type == PORT_TAP     ? port_tap_open(p)
              : p->type == PORT_VXLAN ? port_vxlan_open(p)
              : p->type == PORT_BOND  ? port_bond_setup(p, j, err, errlen)
                                      : port_afpacket_open(p);
        if (ret && p->type == PORT_BOND)
            goto fail_unlock;
        if (ret) {
            ERR("port '%s': cannot open %s interface '%s': %s", name, type, p->ifname,
                strerror(-ret));
            goto fail_unlock;
        }
    }
    p->conf = json_object_get(j);
    rcu_assign_pointer(c->ports[id], p);
    switch_members_update(sw, id, true);
    if (p->type == PORT_VHOST) {
        if (p->client) {
            port_try_connect(c, p);
        } else {
            struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ctl_ev(CTL_EV_LISTEN, id)};
            epoll_ctl(c->ctl_epfd, EPOLL_CTL_ADD, p->listen_fd, &ev);
        }
    } else {
        unsigned wid = 0, best = ~0u;
        for (unsigned i = 0; i < c->n_workers; i++) {
            unsigned n = c->workers[i].polls ? c->workers[i].polls->n : 0;
            if (n < best) {
                best = n;
                wid = i;
            }
        }
        p->q[0].worker = (int)wid;
        if (c->n_workers) {
            /* A bond's members all go to one worker: it owns the bond's policy state. */
            unsigned nsub = p->type == PORT_BOND ? p->n_members : 1;
            for (unsigned k = 0; k < nsub; k++) {
                struct port *sp = p->type == PORT_BOND ? p->members[k] : p;
                struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = 0};
                sp->q[0].worker = (int)wid;
                epoll_ctl(c->workers[wid].epfd, EPOLL_CTL_ADD, sp->fd, &ev);
                __atomic_store_n(&sp->q[0].rx_running, true, __ATOMIC_RELEASE);
                worker_poll_update(&c->workers[wid], sp, 0, true);
            }
            worker_wake(&c->workers[wid]);
        }
        __atomic_store_n(&p->q[0].rx_running, true, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&c->lock);
    log_info("port '%s' (%s) added to switch '%s'%s%s", name, type, swname,
             p->type == PORT_VHOST ? (p->client ? ", connecting to " : ", listening on ") : "",
             p->type == PORT_VHOST ? p->sock_path : "");
    card_save_state(c);
    return 0;
fail_unlock:
    pthread_mutex_unlock(&c->lock);
fail_free:
    if (p->listen_fd >= 0)
        close(p->listen_fd);
    if (p->type == PORT_BOND)
        port_bond_close(p);
    port_host_close(p);
    port_free(p);
    if (!err[0])
        ERR("port '%s': invalid configuration", name);
    return ret ? ret : -EINVAL;
}

/* Caller holds c->lock. */
static void port_remove_locked(struct card *c, struct port *p)
{
    struct vswitch *sw = c->switches[p->sw];

    if (p->type == PORT_VHOST) {
        p->client = false; /* no reconnect */
        port_drop_conn(c, p);
        if (p->listen_fd >= 0) {
            epoll_ctl(c->ctl_epfd, EPOLL_CTL_DEL, p->listen_fd, NULL);
            close(p->listen_fd);
            unlink(p->sock_path);
            p->listen_fd = -1;
        }
    } else {
        unsigned nsub = p->type == PORT_BOND ? p->n_members : 1;
        __atomic_store_n(&p->q[0].rx_running, false, __ATOMIC_RELEASE);
        for (unsigned k = 0; k < nsub; k++) {
            struct port *sp = p->type == PORT_BOND ? p->members[k] : p;
            if (!sp) /* a bond slot freed by a member change */
                continue;
            __atomic_store_n(&sp->q[0].rx_running, false, __ATOMIC_RELEASE);
            if (sp->q[0].worker >= 0) {
                epoll_ctl(c->workers[sp->q[0].worker].epfd, EPOLL_CTL_DEL, sp->fd, NULL);
                worker_poll_update(&c->workers[sp->q[0].worker], sp, 0, false);
            }
        }
    }
    if (sw)
        switch_members_update(sw, p->id, false);
    rcu_assign_pointer(c->ports[p->id], NULL);
    synchronize_rcu();
    if (sw)
        mac_table_flush(sw->fdb, p->id, MAC_TABLE_ANY, true);
    if (p->type == PORT_BOND)
        port_bond_close(p);
    port_host_close(p);
    port_free(p);
}

int card_port_patch(struct card *c, const char *name, json_object *j, char *err, size_t errlen)
{
    static const char *const keys[] = {"members", "mode", "hash", "lacp"};
    struct port *p;
    int ret;

    err[0] = 0;
    if (!j || !json_object_is_type(j, json_type_object) || !json_object_object_length(j)) {
        ERR("port '%s': PATCH takes a JSON object", name);
        return -EINVAL;
    }
    json_object_object_foreach(j, key, val)
    {
        size_t k = 0;
        (void)val;
        while (k < sizeof(keys) / sizeof(keys[0]) && strcmp(key, keys[k]))
            k++;
        if (k == sizeof(keys) / sizeof(keys[0])) {
            ERR("port '%s': '%s' does not change in place (a bond's members, mode, hash and lacp "
                "do; policies: PATCH ports/%s/policy; anything else: delete and add the port)",
                name, key, name);
            return -EINVAL;
        }
    }
    p = card_port_lock_find(c, name, err, errlen);
    if (!p)
        return -ENOENT;
    ret = port_bond_patch(p, j, err, errlen);
    pthread_mutex_unlock(&c->lock);
    card_save_state(c);
    return ret;
}

int card_port_del(struct card *c, const char *name, char *err, size_t errlen)
{
    struct port *p;

    p = card_port_lock_find(c, name, err, errlen);
    if (!p)
        return -ENOENT;
    port_remove_locked(c, p);
    pthread_mutex_unlock(&c->lock);
    log_info("port '%s' deleted", name);
    card_save_state(c);
    return 0;
}

int card_port_set_policy(struct card *c, const char *name, json_object *j, char *err, size_t errlen)
{
    struct port_policy *np, *old;
    struct port *p;

    err[0] = 0;
    if (!j || !json_object_is_type(j, json_type_object) ||
        check_keys(j, port_policy_keys, err, errlen, "policy")) {
        if (!err[0])
            ERR("policy: expected a JSON object");
        return -EINVAL;
    }
    p = card_port_lock_find(c, name, err, errlen);
    if (!p)
        return -ENOENT;
    np = malloc(sizeof(*np));
    if (!np) {
        pthread_mutex_unlock(&c->lock);
        return -ENOMEM;
    }
    *np = *p->policy;
    if (policy_parse(np, j, p->mac, err, errlen)) {
        pthread_mutex_unlock(&c->lock);
        free(np);
        return -EINVAL;
    }
    old = p->policy;
    rcu_assign_pointer(p->policy, np);
    __atomic_add_fetch(&p->policy_gen, 1, __ATOMIC_RELEASE);
    synchronize_rcu();
    free(old);
    /* Keep the state file's view: merge the keys into the port's config. */
    json_object_object_foreach(j, key, val)
    {
        json_object_object_add(p->conf, key, json_object_get(val));
    }
    /* Coalescing thresholds apply to running queues. */
    for (unsigned i = 0; i < p->n_qpairs; i++) {
        pthread_spin_lock(&p->q[i].rx_lock);
        coalesce_init(&p->q[i].co, &np->coalesce_cfg);
        pthread_spin_unlock(&p->q[i].rx_lock);
    }
    pthread_mutex_unlock(&c->lock);
    log_info("port '%s': policy updated", name);
    card_save_state(c);
    return 0;
}

/* ---- JSON views ---- */

static json_object *stats_json(const struct queue_stats *s)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "rx_packets", json_object_new_int64((int64_t)s->rx_packets));
    json_object_object_add(o, "rx_bytes", json_object_new_int64((int64_t)s->rx_bytes));
    json_object_object_add(o, "rx_dropped", json_object_new_int64((int64_t)s->rx_dropped));
    json_object_object_add(o, "tx_packets", json_object_new_int64((int64_t)s->tx_packets));
    json_object_object_add(o, "tx_bytes", json_object_new_int64((int64_t)s->tx_bytes));
    json_object_object_add(o, "tx_dropped", json_object_new_int64((int64_t)s->tx_dropped));
    json_object_object_add(o, "notifications", json_object_new_int64((int64_t)s->notifications));
    return o;
}

static const char *const drop_names[DROP__MAX] = {"malformed", "gso",   "vlan",   "spoof",
                                                  "policer",   "storm", "no_dest"};

json_object *card_port_json(struct card *c, const struct port *p, bool with_stats)
{
    static const char *const types[] = {"vhost", "tap", "afpacket", "vxlan", "bond"};
    json_object *o = json_object_new_object();
    char mac[18];

    json_object_object_add(o, "name", json_object_new_string(p->name));
    json_object_object_add(o, "type", json_object_new_string(types[p->type]));
    json_object_object_add(
        o, "switch", json_object_new_string(c->switches[p->sw] ? c->switches[p->sw]->name : ""));
    fmt_mac(mac, p->mac);
    json_object_object_add(o, "mac", json_object_new_string(mac));
    if (p->type == PORT_VHOST) {
        json_object_object_add(o, "socket", json_object_new_string(p->sock_path));
        json_object_object_add(o, "mode", json_object_new_string(p->client ? "client" : "server"));
        json_object_object_add(o, "queues", json_object_new_int((int)p->n_qpairs));
        json_object_object_add(o, "connected", json_object_new_boolean(p->connected));
        json_object_object_add(o, "features", json_object_new_int64((int64_t)p->dev.features));
        json_object_object_add(o, "connects", json_object_new_int64((int64_t)p->n_connects));
    } else {
        json_object_object_add(o, "ifname", json_object_new_string(p->ifname));
    }
    if (p->type == PORT_TAP)
        json_object_object_add(o, "offload", json_object_new_boolean(p->tap_offload));
    if (p->type == PORT_BOND && p->bond)
        json_object_object_add(o, "bond", port_bond_json((struct port *)p));
    if (p->type == PORT_VXLAN && p->vx_vtep) {
        json_object *vx = json_object_new_object(), *bad = json_object_new_object();
        json_object_object_add(vx, "vni", json_object_new_int64(p->vx_vni));
        json_object_object_add(vx, "encap_packets",
                               json_object_new_int64((int64_t)p->vx_tx_st.encap_pkts));
        json_object_object_add(vx, "decap_packets",
                               json_object_new_int64((int64_t)p->vx_rx_st.decap_pkts));
        for (unsigned i = 0; i < VXLAN_BAD__MAX; i++)
            if (p->vx_rx_st.bad[i])
                json_object_object_add(bad, vxlan_bad_name(i),
                                       json_object_new_int64((int64_t)p->vx_rx_st.bad[i]));
        json_object_object_add(vx, "bad", bad);
        json_object_object_add(vx, "remote_macs",
                               json_object_new_int64((int64_t)mac_table_count(p->vx_vtep->macs)));
        if (p->vx_neigh) {
            json_object *arr = json_object_new_array();
            char ip[INET_ADDRSTRLEN], hw[18];
            pthread_mutex_lock((pthread_mutex_t *)&p->tx_mutex);
            for (unsigned i = 0; i < p->vx_neigh->n; i++) {
                const struct neigh_entry *ne = &p->vx_neigh->e[i];
                json_object *o2 = json_object_new_object();
                inet_ntop(AF_INET, ne->ip, ip, sizeof(ip));
                snprintf(hw, sizeof(hw), "%02x:%02x:%02x:%02x:%02x:%02x", ne->mac[0], ne->mac[1],
                         ne->mac[2], ne->mac[3], ne->mac[4], ne->mac[5]);
                json_object_object_add(o2, "ip", json_object_new_string(ip));
                json_object_object_add(
                    o2, "mac", ne->valid ? json_object_new_string(hw) : json_object_new_null());
                json_object_object_add(o2, "requests",
                                       json_object_new_int64((int64_t)ne->requests));
                json_object_array_add(arr, o2);
            }
            json_object_object_add(vx, "neighbours", arr);
            json_object_object_add(vx, "arp_requests_sent",
                                   json_object_new_int64((int64_t)p->vx_arp_requests));
            json_object_object_add(vx, "arp_replies_sent",
                                   json_object_new_int64((int64_t)p->vx_arp_replies));
            json_object_object_add(vx, "unresolved_drops",
                                   json_object_new_int64((int64_t)p->vx_unresolved_drops));
            pthread_mutex_unlock((pthread_mutex_t *)&p->tx_mutex);
        }
        json_object_object_add(o, "vxlan", vx);
    }
    {
        json_object *pol = json_object_new_object();
        json_object_object_foreach(p->conf, key, val)
        {
            for (unsigned i = 0; port_policy_keys[i]; i++)
                if (strcmp(key, port_policy_keys[i]) == 0)
                    json_object_object_add(pol, key, json_object_get(val));
        }
        json_object_object_add(o, "policy", pol);
    }
    if (with_stats) {
        struct queue_stats tot = {0};
        json_object *qs = json_object_new_array();
        json_object *drops = json_object_new_object();
        for (unsigned i = 0; i < p->n_qpairs; i++) {
            const struct queue_stats *s = &p->q[i].st;
            json_object *qo = stats_json(s);
            json_object_object_add(qo, "queue", json_object_new_int((int)i));
            json_object_object_add(qo, "worker", json_object_new_int(p->q[i].worker));
            json_object_array_add(qs, qo);
            tot.rx_packets += s->rx_packets;
            tot.rx_bytes += s->rx_bytes;
            tot.rx_dropped += s->rx_dropped;
            tot.tx_packets += s->tx_packets;
            tot.tx_bytes += s->tx_bytes;
            tot.tx_dropped += s->tx_dropped;
            tot.notifications += s->notifications;
            if (p->type == PORT_VHOST)
                tot.notifications += 0;
        }
        for (unsigned i = 0; i < DROP__MAX; i++)
            json_object_object_add(drops, drop_names[i],
                                   json_object_new_int64((int64_t)p->drops[i]));
        json_object_object_add(o, "stats", stats_json(&tot));
        if (p->shaper.gen) {
            json_object *sh = json_object_new_object();
            json_object_object_add(sh, "delayed",
                                   json_object_new_int64((int64_t)p->shaper.delayed));
            json_object_object_add(sh, "dropped",
                                   json_object_new_int64((int64_t)p->shaper.dropped));
            json_object_object_add(sh, "queued", json_object_new_int((int)p->shaper.count));
            json_object_object_add(o, "egress_shaper", sh);
        }
        json_object_object_add(o, "drops", drops);
        {
            json_object *g = json_object_new_object();
            json_object_object_add(
                g, "received",
                json_object_new_int64((int64_t)__atomic_load_n(&p->gso_rx, __ATOMIC_RELAXED)));
            json_object_object_add(
                g, "delivered_whole",
                json_object_new_int64((int64_t)__atomic_load_n(&p->gso_whole, __ATOMIC_RELAXED)));
            json_object_object_add(g, "segmented",
                                   json_object_new_int64((int64_t)__atomic_load_n(
                                       &p->gso_segmented, __ATOMIC_RELAXED)));
            json_object_object_add(g, "segments",
                                   json_object_new_int64((int64_t)__atomic_load_n(
                                       &p->gso_segments, __ATOMIC_RELAXED)));
            json_object_object_add(o, "gso", g);
        }
        json_object_object_add(o, "queue_stats", qs);
    }
    return o;
}

static int fdb_entry_json(const struct mac_table_entry *e, void *arg)
{
    json_object *a = arg, *o = json_object_new_object();
    char mac[18];
    fmt_mac(mac, e->mac);
    json_object_object_add(o, "mac", json_object_new_string(mac));
    json_object_object_add(o, "vlan", json_object_new_int((int)e->domain));
    json_object_object_add(o, "port_id", json_object_new_int((int)e->value));
    json_object_object_add(o, "static", json_object_new_boolean(e->is_static));
    json_object_array_add(a, o);
    return 0;
}

json_object *card_switch_json(struct card *c, const struct vswitch *sw)
{
    json_object *o = json_object_new_object(), *ports = json_object_new_array();
    json_object *fdb = json_object_new_array();
    json_object_object_add(o, "name", json_object_new_string(sw->name));
    json_object_object_add(o, "aging_s",
                           json_object_new_int64((int64_t)(sw->aging_ns / 1000000000ull)));
    for (unsigned i = 0; sw->members && i < sw->members->n; i++) {
        struct port *p = c->ports[sw->members->ids[i]];
        if (p)
            json_object_array_add(ports, json_object_new_string(p->name));
    }
    json_object_object_add(o, "ports", ports);
    json_object_object_add(o, "mac_entries",
                           json_object_new_int64((int64_t)mac_table_count(sw->fdb)));
    mac_table_foreach(sw->fdb, fdb_entry_json, fdb);
    json_object_object_add(o, "fdb", fdb);
    return o;
}

json_object *card_status_json(struct card *c)
{
    json_object *o = json_object_new_object(), *ws = json_object_new_array();
    json_object_object_add(o, "version", json_object_new_string(QT_CARD_VERSION));
    json_object_object_add(o, "cores", json_object_new_int((int)c->n_workers));
    for (unsigned i = 0; i < c->n_workers; i++) {
        json_object *w = json_object_new_object();
        struct poll_list *pl = c->workers[i].polls;
        json_object_object_add(w, "id", json_object_new_int((int)i));
        json_object_object_add(w, "queues", json_object_new_int(pl ? (int)pl->n : 0));
        json_object_object_add(w, "loops", json_object_new_int64((int64_t)c->workers[i].loops));
        json_object_object_add(w, "busy_loops",
                               json_object_new_int64((int64_t)c->workers[i].busy_loops));
        json_object_object_add(w, "sleeps", json_object_new_int64((int64_t)c->workers[i].sleeps));
        json_object_array_add(ws, w);
    }
    json_object_object_add(o, "workers", ws);
    return o;
}

json_object *card_config_json(struct card *c)
{
    json_object *o = json_object_new_object(), *sws = json_object_new_array();
    json_object *ps = json_object_new_array();
    for (unsigned i = 1; i < CARD_MAX_SWITCHES; i++)
        if (c->switches[i])
            json_object_array_add(sws, json_object_get(c->switches[i]->conf));
    for (unsigned i = 1; i < CARD_MAX_PORTS; i++)
        if (c->ports[i])
            json_object_array_add(ps, json_object_get(c->ports[i]->conf));
    json_object_object_add(o, "switches", sws);
    json_object_object_add(o, "ports", ps);
    return o;
}

/* ---- state file ---- */

int card_save_state(struct card *c)
{
    char tmp[4096];
    const char *text;
    json_object *o;
    int fd, ret = 0;
    size_t len;

    if (!c->cfg.state_file || c->restoring)
        return 0;
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", c->cfg.state_file) >= sizeof(tmp))
        return -ENAMETOOLONG;
    pthread_mutex_lock(&c->lock);
    o = card_config_json(c);
    pthread_mutex_unlock(&c->lock);
    text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
    len = strlen(text);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        ret = -errno;
        goto out;
    }
    if (write(fd, text, len) != (ssize_t)len || fsync(fd) < 0) {
        ret = errno ? -errno : -EIO;
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    if (rename(tmp, c->cfg.state_file) < 0) {
        ret = -errno;
        unlink(tmp);
    }
out:
    if (ret)
        log_err("state file '%s': %s", c->cfg.state_file, strerror(-ret));
    json_object_put(o);
    return ret;
}

int card_load_state(struct card *c)
{
    json_object *o, *sws, *ps;
    char err[256];
    int ret = 0;

    if (!c->cfg.state_file || access(c->cfg.state_file, F_OK) != 0)
        return 0;
    o = json_object_from_file(c->cfg.state_file);
    if (!o || !json_object_is_type(o, json_type_object)) {
        log_err("state file '%s': not valid JSON", c->cfg.state_file);
        json_object_put(o);
        return -EINVAL;
    }
    c->restoring = true;
    if (json_object_object_get_ex(o, "switches", &sws) &&
        json_object_is_type(sws, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(sws); i++) {
            err[0] = 0;
            if (card_switch_add(c, json_object_array_get_idx(sws, i), err, sizeof(err))) {
                log_err("state file: switch %zu: %s", i, err);
                ret = -EINVAL;
            }
        }
    }
    if (json_object_object_get_ex(o, "ports", &ps) && json_object_is_type(ps, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(ps); i++) {
            err[0] = 0;
            if (card_port_add(c, json_object_array_get_idx(ps, i), err, sizeof(err))) {
                log_err("state file: port %zu: %s", i, err);
                ret = -EINVAL;
            }
        }
    }
    c->restoring = false;
    json_object_put(o);
    log_info("state restored from '%s'", c->cfg.state_file);
    return ret;
}

/* ---- control thread ---- */

static void ctl_handle(struct card *c, uint64_t data)
{
    enum ctl_ev kind = (enum ctl_ev)(data >> 32);
    uint32_t id = (uint32_t)data;
    struct port *p = id < CARD_MAX_PORTS ? c->ports[id] : NULL;

    if (kind == CTL_EV_WAKE) {
        uint64_t v;
        ssize_t r = read(c->ctl_wake_fd, &v, sizeof(v));
        (void)r;
        for (unsigned i = 1; i < CARD_MAX_PORTS; i++) {
            struct port *bp = c->ports[i];
            if (bp && __atomic_load_n(&bp->broken, __ATOMIC_ACQUIRE)) {
                log_err("port '%s': frontend put a malformed ring in shared memory; "
                        "disconnecting it",
                        bp->name);
                vu_dev_signal_err(&bp->dev); /* the VMM then has the guest reset the device */
                port_drop_conn(c, bp);
            }
        }
        return;
    }
    if (!p)
        return;
    if (kind == CTL_EV_LISTEN) {
        int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (p->connected) {
            log_warn("port '%s': refusing a second frontend connection", p->name);
            close(fd);
            return;
        }
        port_attach_conn(c, p, fd);
        return;
    }
    if (kind == CTL_EV_CONN) {
        if (vu_dev_handle_readable(&p->dev))
            port_drop_conn(c, p);
        else
            port_vhost_sync_features(p);
    }
}

int card_run_control(struct card *c)
{
    uint64_t last_tick = 0;

    while (!__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) {
        struct epoll_event ev[16];
        int n = epoll_wait(c->ctl_epfd, ev, 16, 100);
        uint64_t now;

        if (n < 0 && errno != EINTR)
            return -errno;
        pthread_mutex_lock(&c->lock);
        for (int i = 0; i < n; i++)
            ctl_handle(c, ev[i].data.u64);
        now = card_now_ns();
        /* LACP needs ~100 ms resolution (fast rate: 1 s period, 3 s timeout). */
        for (unsigned i = 1; i < CARD_MAX_PORTS; i++) {
            if (c->ports[i] && c->ports[i]->type == PORT_BOND)
                port_bond_run(c->ports[i], now);
            else if (c->ports[i] && c->ports[i]->type == PORT_VXLAN)
                port_vxlan_tick(c->ports[i], now);
        }
        if (now - last_tick > 1000000000ull) {
            last_tick = now;
            for (unsigned i = 1; i < CARD_MAX_SWITCHES; i++)
                if (c->switches[i])
                    mac_table_age(c->switches[i]->fdb, now);
            for (unsigned i = 1; i < CARD_MAX_PORTS; i++) {
                struct port *p = c->ports[i];
                if (p && p->type == PORT_VHOST && p->client && !p->connected)
                    port_try_connect(c, p);
            }
        }
        pthread_mutex_unlock(&c->lock);
    }
    return 0;
}

void card_stop(struct card *c)
{
    uint64_t one = 1;
    ssize_t r;
    __atomic_store_n(&c->stopping, true, __ATOMIC_RELEASE);
    r = write(c->ctl_wake_fd, &one, sizeof(one));
    (void)r;
}

void card_destroy(struct card *c)
{
    pthread_mutex_lock(&c->lock);
    c->restoring = true; /* the state file keeps the configuration */
    for (unsigned i = 1; i < CARD_MAX_PORTS; i++)
        if (c->ports[i])
            port_remove_locked(c, c->ports[i]);
    pthread_mutex_unlock(&c->lock);
    for (unsigned i = 0; i < c->n_workers; i++) {
        __atomic_store_n(&c->workers[i].stop, true, __ATOMIC_RELEASE);
        worker_wake(&c->workers[i]);
        if (c->workers[i].thread)
            pthread_join(c->workers[i].thread, NULL);
        free(c->workers[i].polls);
        close(c->workers[i].epfd);
        close(c->workers[i].wake_fd);
    }
    for (unsigned i = 1; i < CARD_MAX_SWITCHES; i++) {
        struct vswitch *sw = c->switches[i];
        if (!sw)
            continue;
        mac_table_destroy(sw->fdb);
        json_object_put(sw->conf);
        free(sw->members);
        free(sw);
        c->switches[i] = NULL;
    }
    close(c->ctl_epfd);
    close(c->ctl_wake_fd);
    pthread_mutex_destroy(&c->lock);
}
