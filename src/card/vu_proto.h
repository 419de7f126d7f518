/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user messages as qtcard receives them: the wire definitions
 * (header, request numbers, feature bits, payloads) are in
 * common/vhost_user_defs.h; this adds the back-end's limits and the
 * in-memory message (header, payload and the file descriptors it carried).
 */
#ifndef QT_CARD_VU_PROTO_H
#define QT_CARD_VU_PROTO_H

#include <stdint.h>

#include "common/vhost_user_defs.h"
#include "common/virtio_defs.h"

#define VU_MAX_QUEUES 16 /* virtqueues per device */

union vu_payload {
    uint64_t u64;
    struct vhost_user_vring_state state;
    struct vhost_user_vring_addr addr;
    struct vhost_user_mem_table mem;
    struct vhost_user_mem_single mem_one;
    struct vhost_user_log log;
    struct vhost_user_config config;
    struct vhost_user_inflight inflight;
};

struct vu_msg {
    struct vhost_user_hdr hdr;
    union vu_payload p;
    int fds[VHOST_USER_MAX_FDS];
    unsigned nfds;
};

#define VU_MAX_PAYLOAD ((uint32_t)sizeof(union vu_payload))

#endif
