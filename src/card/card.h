/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qtcard core objects: the card (all state of one daemon), virtual switches,
 * ports and the poll-mode workers.
 *
 * Threads: the control thread (vhost-user sockets, housekeeping), the HTTP
 * thread (control API) and N workers. Configuration changes take card->lock
 * and publish new read-only objects with liburcu-qsbr; workers are QSBR
 * readers that announce a quiescent state once per poll-loop iteration and go
 * offline while they sleep in epoll. Nothing on the data path takes a lock
 * except the per-queue spinlock of a VM receive queue that several workers
 * may deliver into.
 */
#ifndef QT_CARD_CARD_H
#define QT_CARD_CARD_H

#include "card/vhost_user.h"
#include "card/net/bond.h"
#include "card/net/coalesce.h"
#include "card/net/gso.h"
#include "card/net/mac_table.h"
#include "card/net/neigh.h"
#include "card/net/pkt.h"
#include "card/net/policer.h"
#include "card/net/security.h"
#include "card/net/vlan.h"
#include "card/net/vxlan.h"
#include "common/virtio_defs.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define QT_CARD_VERSION   "0.1.0"
#define CARD_MAX_PORTS    256
#define CARD_MAX_SWITCHES 64
#define CARD_MAX_WORKERS  64
#define CARD_MAX_QPAIRS   (VU_MAX_QUEUES / 2)
#define CARD_NAME_MAX     32
#define CARD_BURST        32
#define CARD_GSO_BUFS     4 /* per worker: 64 KiB buffers for GSO frames over PKT_MAX_FRAME */

enum port_type { PORT_VHOST = 0, PORT_TAP, PORT_AFPACKET, PORT_VXLAN, PORT_BOND };

/* Per-queue counters. Each field has one writer (the worker polling the
 * queue for tx_*, the holder of the receive lock for rx_*). */
struct queue_stats {
    uint64_t rx_packets, rx_bytes; /* delivered to the VM / sent out of the port */
    uint64_t rx_dropped;           /* no buffer, too big, not negotiated */
    uint64_t tx_packets, tx_bytes; /* received from the VM / the port */
    uint64_t tx_dropped;           /* malformed, policy, policer */
    uint64_t notifications;        /* guest interrupts (call eventfd writes) */
};

/* Port-level drop reasons (counted per port by the owning worker). */
enum port_drop {
    DROP_MALFORMED = 0, /* pkt_parse error, oversize, bad virtio-net header */
    DROP_GSO,           /* malformed GSO frame, or a GSO type / ECN not negotiated */
    DROP_VLAN,          /* ingress VLAN classification refused */
    DROP_SPOOF,         /* anti-spoofing */
    DROP_POLICER,       /* ingress policer */
    DROP_STORM,         /* storm control */
    DROP_NO_DEST,       /* unicast to the input port / no member port */
    DROP__MAX
};

/* Read-only policy of a port, replaced as a whole (RCU) on change. */
struct port_policy {
    struct vlan_port vlan;
    struct port_security sec;
    bool sec_enabled;
    uint64_t ingress_rate_bps, ingress_burst_bits; /* 0 = unlimited */
    uint64_t egress_rate_bps, egress_burst_bits;   /* shaping towards the port, 0 = off */
    uint64_t egress_max_delay_ns;                  /* shaping queue bound (time) */
    uint64_t storm_bcast_pps, storm_mcast_pps, storm_unknown_pps; /* 0 = off */
    bool coalesce; /* adaptive interrupt coalescing on VM receive */
    struct coalesce_config coalesce_cfg;
};

struct card;
struct port;
struct pkt;
struct dest_batch;

/* One queue pair of a port: for a VM port, virtqueues 2q (VM receive) and 2q+1 (VM transmit). */
struct port_queue {
    struct port *port;
    unsigned qpair;
    /* VM receive side: several workers may deliver, serialised by rx_lock. */
    pthread_spinlock_t rx_lock;
    bool rx_running; /* under rx_lock + published with RCU */
    struct coalesce co;
    bool co_pending; /* held notification; under rx_lock */
    /* VM transmit side: polled by exactly one worker. */
    bool tx_running;
    int worker;   /* owner of the transmit side, -1 when none */
    bool tx_busy; /* its last poll found chains (owned by the worker) */
    struct queue_stats st;
    /* Per-queue policy state owned by the polling worker. */
    struct policer policer;
    struct storm_control storm;
    uint64_t policy_gen;
    struct vlan_stats vlan_st;
    struct sec_stats sec_st;
};

/* Egress shaper of a port: frames over the rate wait in a FIFO (copies) until
 * their send time; any worker may add, the worker that finds them due sends. */
#define SHAPER_SLOTS 512
struct port_shaper {
    pthread_mutex_t lock;
    struct shaper sh;
    uint64_t gen; /* policy generation the shaper was set up for, 0 = never */
    unsigned head, count;
    struct {
        uint64_t send_at;
        bool tagged;
        struct pkt *pk; /* allocated on first use, reused */
    } slot[SHAPER_SLOTS];
    uint64_t delayed, dropped;
};

struct vswitch {
    char name[CARD_NAME_MAX];
    unsigned id;
    json_object *conf; /* as created, for the state file */
    struct mac_table *fdb;
    uint64_t aging_ns;
    /* Member port ids, RCU-published (struct port_list). */
    struct port_list *members;
};

struct port_list {
    unsigned n;
    uint32_t ids[];
};

struct port {
    char name[CARD_NAME_MAX];
    uint32_t id;
    uint64_t serial; /* unique per port object */
    enum port_type type;
    struct vu_dev_ops ops; /* per port: queue count differs */
    struct card *card;
    unsigned sw;                /* switch id */
    struct port_policy *policy; /* RCU */
    uint64_t policy_gen;
    json_object *conf; /* as created (policy keys included), for the state file */
    bool connected;    /* a frontend is attached */
    uint64_t n_connects, n_disconnects;
    /* VM port (vhost-user-net). */
    char sock_path[108];
    bool client; /* connect to the frontend's socket instead of listening */
    int listen_fd;
    struct vu_dev dev;
    uint8_t mac[6];     /* config-space MAC for the VM */
    unsigned n_qpairs;  /* configured */
    bool broken;        /* data plane saw a malformed ring; control disconnects */
    bool guest_csum;    /* VIRTIO_NET_F_GUEST_CSUM negotiated */
    unsigned host_gso;  /* GSO_ALLOW_*: GSO frames the driver may send (HOST_TSO4/6, HOST_ECN) */
    unsigned guest_gso; /* GSO_ALLOW_*: GSO frames it takes whole (GUEST_TSO4/6, GUEST_ECN) */
    /* GSO counters (atomic: several workers). rx = from the port, whole/segmented/segments
     * = towards it. */
    uint64_t gso_rx, gso_whole, gso_segmented, gso_segments;
    bool mrg_rxbuf;
    unsigned vnet_hdr_len;
    unsigned running_rxq; /* number of running receive queues (for queue selection) */
    /* Host port (tap / AF_PACKET). */
    char ifname[16];
    int fd;
    bool tap_offload; /* tap with a virtio-net header: checksum and TSO both ways */
    void *ring;       /* TPACKET_V3 rx ring */
    size_t ring_size;
    unsigned ring_blocks, ring_block_size, ring_cur;
    pthread_mutex_t tx_mutex; /* host ports: serialise writers */
    /* VXLAN tunnel port: an AF_PACKET underlay on ifname plus the VTEP. */
    struct vxlan_tunnel vx_tun;
    uint32_t vx_vni;
    struct vxlan_vtep_table *vx_vtep;
    struct vxlan_stats vx_rx_st; /* owned by the polling worker */
    struct vxlan_stats vx_tx_st; /* under tx_mutex */
    uint8_t *vx_scratch;         /* encapsulation buffer, under tx_mutex */
    /* Underlay next hops resolved by ARP (no nexthop_mac given), under tx_mutex:
     * the gateway (vx_have_gw) or each remote VTEP. NULL with a static nexthop_mac. */
    struct neigh_table *vx_neigh;
    bool vx_have_gw;
    uint8_t vx_gw_ip[4];
    uint64_t vx_arp_requests, vx_arp_replies, vx_unresolved_drops; /* under tx_mutex */
    /* Bond: member uplinks are AF_PACKET sub-ports (not switch ports themselves). */
    struct bond *bond;
    pthread_mutex_t bond_lock; /* LACP state machines (control thread + LACPDU rx) */
    unsigned n_members;
    struct port *members[BOND_MAX_MEMBERS];
    struct port *bond_parent; /* set on a member sub-port */
    unsigned bond_idx;        /* member index in the parent */
    bool link_up;             /* member: last carrier state seen */
    uint64_t lacp_rx_frames, lacp_tx_frames, bond_rx_refused;
    struct port_shaper shaper;
    uint64_t drops[DROP__MAX];
    struct port_queue q[CARD_MAX_QPAIRS];
};

struct worker_poll {
    struct port *port;
    unsigned qpair;
};

struct poll_list {
    unsigned n;
    struct worker_poll e[];
};

struct worker {
    struct card *card;
    unsigned id;
    pthread_t thread;
    int epfd;
    int wake_fd;
    struct poll_list *polls; /* RCU */
    /* Receive queues holding a coalesced notification (owned by this worker); named by
     * port id + serial so an entry for a deleted port is simply skipped. */
    struct {
        uint32_t port_id;
        uint32_t qpair;
        uint64_t serial;
    } pending[CARD_MAX_PORTS];
    unsigned n_pending;
    uint64_t loops, sleeps, busy_loops;
    bool stop;
    /* Scratch owned by the worker thread. */
    struct pkt *pkts;
    struct pkt *pkt_ptrs[CARD_BURST];
    struct dest_batch *dests;
    struct virtq_elem *rx_elems;
    struct virtq_elem tx_elem;
    /* GSO (allocated on the first GSO frame): segments being sent, and buffers for
     * frames larger than a struct pkt holds, reused every burst. */
    struct pkt *gso_segs; /* CARD_BURST */
    uint8_t *gso_bufs[CARD_GSO_BUFS];
    unsigned gso_bufs_used;
};

struct card_config {
    const char *socket_dir;
    const char *api_socket;
    const char *state_file;
    unsigned cores;
    unsigned idle_us; /* busy-poll this long without traffic before sleeping */
    unsigned n_cpus;  /* worker i is pinned to cpus[i % n_cpus]; 0 = not pinned */
    int cpus[CARD_MAX_WORKERS];
};

struct card {
    struct card_config cfg;
    pthread_mutex_t lock;                        /* configuration (API and vhost-user control) */
    struct port *ports[CARD_MAX_PORTS];          /* RCU */
    struct vswitch *switches[CARD_MAX_SWITCHES]; /* RCU */
    struct worker workers[CARD_MAX_WORKERS];
    unsigned n_workers;
    int ctl_epfd; /* control thread: vhost-user sockets */
    int ctl_wake_fd;
    bool stopping;
    bool restoring;
    uint64_t n_delayed;   /* frames waiting in egress shapers, all ports */
    uint64_t next_serial; /* applying the state file: do not rewrite it */
};

/* Lifecycle (card.c). */
int card_init(struct card *c, const struct card_config *cfg);
int card_start_workers(struct card *c);
/* Control loop: vhost-user sockets and housekeeping until card->stopping. */
int card_run_control(struct card *c);
void card_stop(struct card *c);
void card_destroy(struct card *c);

/* Configuration (card.c); all take card->lock themselves. JSON in, 0 / -errno out;
 * err receives a message for the API on failure. */
int card_switch_add(struct card *c, json_object *j, char *err, size_t errlen);
int card_switch_del(struct card *c, const char *name, char *err, size_t errlen);
int card_port_add(struct card *c, json_object *j, char *err, size_t errlen);
int card_port_del(struct card *c, const char *name, char *err, size_t errlen);
/* PATCH ports/NAME: {"members": [...]} changes a bond's members in place. */
int card_port_patch(struct card *c, const char *name, json_object *j, char *err, size_t errlen);
int card_port_set_policy(struct card *c, const char *name, json_object *j, char *err,
                         size_t errlen);
json_object *card_switch_json(struct card *c, const struct vswitch *sw);
json_object *card_port_json(struct card *c, const struct port *p, bool stats);
json_object *card_status_json(struct card *c);
/* Whole configuration, the state-file format. */
json_object *card_config_json(struct card *c);
int card_save_state(struct card *c);
int card_load_state(struct card *c);
struct port *card_port_find(struct card *c, const char *name);
struct vswitch *card_switch_find(struct card *c, const char *name);

/* Data plane (dp.c). */
void *worker_main(void *arg);
void worker_wake(struct worker *w);
uint64_t card_now_ns(void);
/* vhost-user-net device glue (vhost_net.c). */
void vhost_net_ops_init(struct vu_dev_ops *ops, unsigned n_qpairs);
void port_vhost_sync_features(struct port *p);
int worker_poll_update(struct worker *w, struct port *p, unsigned qpair, bool add);

/* HTTP API (api.c). */
struct httpd;
int card_api_start(struct card *c, struct httpd **out);

#endif
