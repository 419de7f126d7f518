/* SPDX-License-Identifier: Apache-2.0 */
/* vhost-user front-end protocol. See vhost_user.h. */
#include "vmm/devices/vhost_user.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/vm.h"

#define VHOST_USER_TIMEOUT_S 10

int vhost_user_connect(struct vhost_user *vu, const char *path, const char *name)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = VHOST_USER_TIMEOUT_S};
    size_t len = strlen(path);
    int ret;

    _Static_assert(sizeof(vu->path) >= sizeof(addr.sun_path), "vhost_user.path too short");
    memset(vu, 0, sizeof(*vu));
    pthread_mutex_init(&vu->lock, NULL);
    snprintf(vu->name, sizeof(vu->name), "%s", name);
    if (len >= sizeof(addr.sun_path)) {
        log_err("vhost-user '%s': socket path '%s' is too long", name, path);
        return -ENAMETOOLONG;
    }
    memcpy(vu->path, path, len + 1);
    memcpy(addr.sun_path, path, len + 1);
    vu->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (vu->fd < 0)
        return -errno;
    setsockopt(vu->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(vu->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(vu->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        ret = -errno;
        log_debug("vhost-user '%s': cannot connect to '%s' (%s)", name, path, strerror(errno));
        close(vu->fd);
        vu->fd = -1;
        return ret;
    }
    return 0;
}

void vhost_user_close(struct vhost_user *vu)
{
    if (vu->fd >= 0)
        close(vu->fd);
    vu->fd = -1;
    pthread_mutex_destroy(&vu->lock);
}

/* The back-end is gone or out of step: later messages fail quietly with -ENOTCONN. */
static void vhost_user_mark_dead(struct vhost_user *vu)
{
    if (vu->fd >= 0)
        shutdown(vu->fd, SHUT_RDWR);
    vu->dead = true;
}

static int vhost_user_send(struct vhost_user *vu, uint32_t req, uint32_t flags, const void *payload,
                           uint32_t size, const int *fds, int nfds)
{
    struct vhost_user_hdr hdr = {.request = req, .flags = VHOST_USER_VERSION | flags, .size = size};
    struct iovec iov[2] = {{&hdr, sizeof(hdr)}, {(void *)payload, size}};
    char cbuf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_MEM_REGIONS)];
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = size ? 2 : 1};
    ssize_t n;

    if (vu->fd < 0 || vu->dead)
        return -ENOTCONN;
    if (nfds > 0) {
        struct cmsghdr *cmsg;

        memset(cbuf, 0, sizeof(cbuf));
        msg.msg_control = cbuf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
    }
    do {
        n = sendmsg(vu->fd, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)(sizeof(hdr) + size)) {
        int err = n < 0 ? -errno : -EIO;

        log_err("vhost-user '%s': sending %s failed (%s)", vu->name, vhost_user_request_name(req),
                n < 0 ? strerror(errno) : "short write");
        if (err == -EPIPE || err == -ECONNRESET)
            vhost_user_mark_dead(vu);
        return err;
    }
    return 0;
}

static int vhost_user_read_full(int fd, void *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = recv(fd, (uint8_t *)buf + done, len - done, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -ECONNRESET;
        done += (size_t)n;
    }
    return 0;
}

/* Read the reply to req into payload (exactly size bytes expected). */
static int vhost_user_recv(struct vhost_user *vu, uint32_t req, void *payload, uint32_t size)
{
    struct vhost_user_hdr hdr;
    int ret;

    ret = vhost_user_read_full(vu->fd, &hdr, sizeof(hdr));
    if (ret < 0) {
        log_err("vhost-user '%s': no reply to %s (%s)", vu->name, vhost_user_request_name(req),
                ret == -EAGAIN ? "timed out" : strerror(-ret));
        return ret;
    }
    if (hdr.request != req || !(hdr.flags & VHOST_USER_FLAG_REPLY) ||
        (hdr.flags & 0x3) != VHOST_USER_VERSION || hdr.size != size) {
        log_err("vhost-user '%s': bad reply to %s (request %u, flags 0x%x, size %u, expected "
                "size %u)",
                vu->name, vhost_user_request_name(req), hdr.request, hdr.flags, hdr.size, size);
        return -EPROTO;
    }
    ret = vhost_user_read_full(vu->fd, payload, size);
    if (ret < 0)
        log_err("vhost-user '%s': truncated reply to %s", vu->name, vhost_user_request_name(req));
    return ret;
}

/*
 * Send a message that has no reply of its own; with REPLY_ACK negotiated, ask
 * for the acknowledgement and check it.
 */
static int vhost_user_call(struct vhost_user *vu, uint32_t req, const void *payload, uint32_t size,
                           const int *fds, int nfds)
{
    bool ack = vu->protocol_features & (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK);
    uint64_t status;
    int ret;

    pthread_mutex_lock(&vu->lock);
    ret = vhost_user_send(vu, req, ack ? VHOST_USER_FLAG_NEED_REPLY : 0, payload, size, fds, nfds);
    if (ret == 0 && ack) {
        ret = vhost_user_recv(vu, req, &status, sizeof(status));
        if (ret < 0) {
            vhost_user_mark_dead(vu);
        } else if (status != 0) {
            log_err("vhost-user '%s': back-end refused %s (status %llu)", vu->name,
                    vhost_user_request_name(req), (unsigned long long)status);
            ret = -EIO;
        }
    }
    pthread_mutex_unlock(&vu->lock);
    return ret;
}

/* A request with a reply payload. */
static int vhost_user_query(struct vhost_user *vu, uint32_t req, const void *payload, uint32_t size,
                            void *reply, uint32_t reply_size)
{
    int ret;

    pthread_mutex_lock(&vu->lock);
    ret = vhost_user_send(vu, req, 0, payload, size, NULL, 0);
    if (ret == 0) {
        ret = vhost_user_recv(vu, req, reply, reply_size);
        /* After a bad or missing reply the stream cannot be trusted any more. */
        if (ret < 0)
            vhost_user_mark_dead(vu);
    }
    pthread_mutex_unlock(&vu->lock);
    return ret;
}

int vhost_user_handshake(struct vhost_user *vu, uint64_t wanted_protocol)
{
    uint64_t proto = 0;
    int ret;

    ret = vhost_user_call(vu, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0);
    if (ret < 0)
        return ret;
    ret =
        vhost_user_query(vu, VHOST_USER_GET_FEATURES, NULL, 0, &vu->features, sizeof(vu->features));
    if (ret < 0)
        return ret;
    if (!(vu->features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES)))
        return 0;
    ret = vhost_user_query(vu, VHOST_USER_GET_PROTOCOL_FEATURES, NULL, 0, &proto, sizeof(proto));
    if (ret < 0)
        return ret;
    proto &= wanted_protocol;
    /* Set before REPLY_ACK is in force: this message itself is not acknowledged. */
    ret = vhost_user_call(vu, VHOST_USER_SET_PROTOCOL_FEATURES, &proto, sizeof(proto), NULL, 0);
    if (ret < 0)
        return ret;
    vu->protocol_features = proto;
    return 0;
}

int vhost_user_set_features(struct vhost_user *vu, uint64_t features)
{
    return vhost_user_call(vu, VHOST_USER_SET_FEATURES, &features, sizeof(features), NULL, 0);
}

int vhost_user_get_queue_num(struct vhost_user *vu, uint64_t *num)
{
    return vhost_user_query(vu, VHOST_USER_GET_QUEUE_NUM, NULL, 0, num, sizeof(*num));
}

int vhost_user_set_mem_table(struct vhost_user *vu, struct vm *vm)
{
    struct vm_mem_region regions[VHOST_USER_MAX_MEM_REGIONS];
    struct vhost_user_mem_table mem = {0};
    int fds[VHOST_USER_MAX_MEM_REGIONS];
    int n = vm_mem_regions(vm, regions, VHOST_USER_MAX_MEM_REGIONS);

    if (n <= 0) {
        log_err("vhost-user '%s': guest RAM has no shareable regions", vu->name);
        return -EINVAL;
    }
    for (int i = 0; i < n; i++) {
        if (regions[i].fd < 0) {
            log_err("vhost-user '%s': guest RAM region at 0x%llx is not backed by a memfd",
                    vu->name, (unsigned long long)regions[i].gpa);
            return -EINVAL;
        }
        mem.regions[i] =
            (struct vhost_user_mem_region){.guest_phys_addr = regions[i].gpa,
                                           .memory_size = regions[i].size,
                                           .userspace_addr = (uint64_t)(uintptr_t)regions[i].hva,
                                           .mmap_offset = regions[i].fd_offset};
        fds[i] = regions[i].fd;
    }
    mem.nregions = (uint32_t)n;
    return vhost_user_call(vu, VHOST_USER_SET_MEM_TABLE, &mem,
                           (uint32_t)(8 + sizeof(struct vhost_user_mem_region) * (size_t)n), fds,
                           n);
}

int vhost_user_set_vring_num(struct vhost_user *vu, uint32_t index, uint32_t num)
{
    struct vhost_user_vring_state s = {index, num};

    return vhost_user_call(vu, VHOST_USER_SET_VRING_NUM, &s, sizeof(s), NULL, 0);
}

int vhost_user_set_vring_base(struct vhost_user *vu, uint32_t index, uint32_t base)
{
    struct vhost_user_vring_state s = {index, base};

    return vhost_user_call(vu, VHOST_USER_SET_VRING_BASE, &s, sizeof(s), NULL, 0);
}

int vhost_user_get_vring_base(struct vhost_user *vu, uint32_t index, uint32_t *base)
{
    struct vhost_user_vring_state s = {index, 0}, r;
    int ret = vhost_user_query(vu, VHOST_USER_GET_VRING_BASE, &s, sizeof(s), &r, sizeof(r));

    if (ret == 0)
        *base = r.num;
    return ret;
}

int vhost_user_set_vring_addr(struct vhost_user *vu, uint32_t index, uint64_t desc, uint64_t used,
                              uint64_t avail)
{
    struct vhost_user_vring_addr a = {
        .index = index, .desc_user_addr = desc, .used_user_addr = used, .avail_user_addr = avail};

    return vhost_user_call(vu, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0);
}

static int vhost_user_set_vring_fd(struct vhost_user *vu, uint32_t req, uint32_t index, int fd)
{
    uint64_t v = index & 0xff;

    if (fd < 0)
        v |= VHOST_USER_VRING_NOFD;
    return vhost_user_call(vu, req, &v, sizeof(v), fd < 0 ? NULL : &fd, fd < 0 ? 0 : 1);
}

int vhost_user_set_vring_kick(struct vhost_user *vu, uint32_t index, int fd)
{
    return vhost_user_set_vring_fd(vu, VHOST_USER_SET_VRING_KICK, index, fd);
}

int vhost_user_set_vring_call(struct vhost_user *vu, uint32_t index, int fd)
{
    return vhost_user_set_vring_fd(vu, VHOST_USER_SET_VRING_CALL, index, fd);
}

int vhost_user_set_vring_err(struct vhost_user *vu, uint32_t index, int fd)
{
    return vhost_user_set_vring_fd(vu, VHOST_USER_SET_VRING_ERR, index, fd);
}

int vhost_user_set_vring_enable(struct vhost_user *vu, uint32_t index, bool enable)
{
    struct vhost_user_vring_state s = {index, enable};

    return vhost_user_call(vu, VHOST_USER_SET_VRING_ENABLE, &s, sizeof(s), NULL, 0);
}

int vhost_user_get_config(struct vhost_user *vu, uint32_t off, void *buf, uint32_t len)
{
    struct vhost_user_config req = {.offset = off, .size = len}, reply;
    uint32_t size = 12 + len;
    int ret;

    if (len > VHOST_USER_MAX_CONFIG_SIZE)
        return -EINVAL;
    if (!(vu->protocol_features & (1ull << VHOST_USER_PROTOCOL_F_CONFIG)))
        return -ENOTSUP;
    ret = vhost_user_query(vu, VHOST_USER_GET_CONFIG, &req, size, &reply, size);
    if (ret < 0)
        return ret;
    if (reply.offset != off || reply.size != len) {
        log_err("vhost-user '%s': GET_CONFIG reply for %u bytes at %u, asked %u at %u", vu->name,
                reply.size, reply.offset, len, off);
        return -EPROTO;
    }
    memcpy(buf, reply.payload, len);
    return 0;
}
