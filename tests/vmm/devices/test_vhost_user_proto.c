/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user front-end protocol against a scripted fake back-end (a thread on
 * a unix socket): a correct handshake, and back-ends that answer the wrong
 * request, lie about sizes, refuse with REPLY_ACK or hang up. The front-end
 * must return an error every time, never crash or read past a reply.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "common/virtio_defs.h"
#include "fake_vm.h"
#include "vmm/devices/vhost_user.h"

enum script { GOOD, WRONG_REQUEST, WRONG_SIZE, HANG_UP, NACK };

struct backend {
    char path[108];
    int listen_fd;
    enum script script;
    pthread_t thread;
    /* What the back-end saw. */
    uint64_t proto_set;
    int nregions;
    struct stat region_st;
    bool got_fd;
};

struct msg {
    uint32_t request, flags, size;
    uint8_t payload[512];
};

static int recv_msg(int fd, struct msg *m, int *rfd)
{
    char cbuf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
    struct iovec iov = {m, VHOST_USER_HDR_SIZE};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
    struct cmsghdr *c;

    if (recvmsg(fd, &mh, MSG_WAITALL) != VHOST_USER_HDR_SIZE)
        return -1;
    for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_type == SCM_RIGHTS && rfd)
            memcpy(rfd, CMSG_DATA(c), sizeof(int));
    if (m->size > sizeof(m->payload))
        return -1;
    if (m->size && recv(fd, m->payload, m->size, MSG_WAITALL) != (ssize_t)m->size)
        return -1;
    return 0;
}

static void reply(int fd, uint32_t req, const void *p, uint32_t size, uint32_t claimed)
{
    struct msg m = {
        .request = req, .flags = VHOST_USER_VERSION | VHOST_USER_FLAG_REPLY, .size = claimed};

    memcpy(m.payload, p, size);
    if (write(fd, &m, VHOST_USER_HDR_SIZE + size) < 0)
        return;
}

static void *backend_main(void *arg)
{
    struct backend *b = arg;
    int fd = accept(b->listen_fd, NULL, NULL);
    struct msg m;

    while (fd >= 0) {
        int rfd = -1;
        uint64_t v;

        if (recv_msg(fd, &m, &rfd) < 0)
            break;
        if (b->script == HANG_UP && m.request == VHOST_USER_GET_FEATURES)
            break;
        switch (m.request) {
        case VHOST_USER_GET_FEATURES:
            v = (1ull << VIRTIO_F_VERSION_1) | (1ull << VHOST_USER_F_PROTOCOL_FEATURES) | 0x7;
            if (b->script == WRONG_REQUEST)
                reply(fd, VHOST_USER_SET_FEATURES, &v, 8, 8);
            else if (b->script == WRONG_SIZE)
                reply(fd, m.request, &v, 8, 400); /* claims a huge payload */
            else
                reply(fd, m.request, &v, 8, 8);
            break;
        case VHOST_USER_GET_PROTOCOL_FEATURES:
            v = (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) | (1ull << VHOST_USER_PROTOCOL_F_MQ) |
                (1ull << VHOST_USER_PROTOCOL_F_LOG_SHMFD) | (1ull << VHOST_USER_PROTOCOL_F_RARP);
            reply(fd, m.request, &v, 8, 8);
            break;
        case VHOST_USER_SET_PROTOCOL_FEATURES:
            memcpy(&b->proto_set, m.payload, 8);
            break;
        case VHOST_USER_GET_QUEUE_NUM:
            v = 4;
            reply(fd, m.request, &v, 8, 8);
            break;
        case VHOST_USER_SET_MEM_TABLE:
            memcpy(&b->nregions, m.payload, 4);
            if (rfd >= 0) {
                b->got_fd = true;
                fstat(rfd, &b->region_st);
                close(rfd);
            }
            __attribute__((fallthrough)); /* acknowledge it like the rest */
        default:
            if (m.flags & VHOST_USER_FLAG_NEED_REPLY) {
                v = b->script == NACK && m.request == VHOST_USER_SET_MEM_TABLE;
                reply(fd, m.request, &v, 8, 8);
            }
            break;
        }
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static struct backend *backend_start(enum script script)
{
    struct backend *b = calloc(1, sizeof(*b));
    struct sockaddr_un a = {.sun_family = AF_UNIX};

    snprintf(b->path, sizeof(b->path), "/tmp/qt-vu-proto-%d-%d.sock", getpid(), (int)script);
    unlink(b->path);
    memcpy(a.sun_path, b->path, strlen(b->path) + 1);
    b->script = script;
    b->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(b->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(b->listen_fd, 1), 0);
    assert_int_equal(pthread_create(&b->thread, NULL, backend_main, b), 0);
    return b;
}

static void backend_stop(struct backend *b, struct vhost_user *vu)
{
    vhost_user_close(vu);
    pthread_join(b->thread, NULL);
    close(b->listen_fd);
    unlink(b->path);
    free(b);
}

static void test_good_handshake(void **state)
{
    struct backend *b = backend_start(GOOD);
    struct vm *vm = fake_vm_new(1 << 20);
    struct vhost_user vu;
    uint64_t n;
    uint64_t want = (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) | (1ull << VHOST_USER_PROTOCOL_F_MQ) |
                    (1ull << VHOST_USER_PROTOCOL_F_CONFIG);

    assert_int_equal(vhost_user_connect(&vu, b->path, "t"), 0);
    assert_int_equal(vhost_user_handshake(&vu, want), 0);
    assert_true(vu.features & (1ull << VIRTIO_F_VERSION_1));
    /* Negotiated = wanted & offered: CONFIG was not offered, LOG_SHMFD and RARP not wanted. */
    assert_int_equal(vu.protocol_features, (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) |
                                               (1ull << VHOST_USER_PROTOCOL_F_MQ));
    assert_int_equal(vhost_user_get_queue_num(&vu, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(vhost_user_set_mem_table(&vu, vm), 0);
    assert_int_equal(vhost_user_set_vring_num(&vu, 0, 128), 0);
    assert_int_equal(vhost_user_set_vring_kick(&vu, 0, -1), 0);
    /* GET_CONFIG needs PROTOCOL_F_CONFIG, which this back-end lacks. */
    assert_int_equal(vhost_user_get_config(&vu, 0, &n, 8), -ENOTSUP);
    backend_stop(b, &vu);
    fake_vm_free(vm);
}

static void test_mem_table_fd_passed(void **state)
{
    struct backend *b = backend_start(GOOD);
    struct vm *vm = fake_vm_new(1 << 20);
    struct vm_mem_region r;
    struct vhost_user vu;
    struct stat st;

    assert_int_equal(vhost_user_connect(&vu, b->path, "t"), 0);
    assert_int_equal(vhost_user_handshake(&vu, 1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK), 0);
    assert_int_equal(vhost_user_set_mem_table(&vu, vm), 0);
    vm_mem_regions(vm, &r, 1);
    assert_int_equal(fstat(r.fd, &st), 0);
    assert_true(b->got_fd);
    assert_int_equal(b->nregions, 1);
    assert_int_equal(b->region_st.st_ino, st.st_ino);
    backend_stop(b, &vu);
    fake_vm_free(vm);
}

static void test_wrong_request_in_reply(void **state)
{
    struct backend *b = backend_start(WRONG_REQUEST);
    struct vhost_user vu;

    assert_int_equal(vhost_user_connect(&vu, b->path, "t"), 0);
    assert_int_equal(vhost_user_handshake(&vu, ~0ull), -EPROTO);
    backend_stop(b, &vu);
}

static void test_wrong_size_in_reply(void **state)
{
    struct backend *b = backend_start(WRONG_SIZE);
    struct vhost_user vu;

    assert_int_equal(vhost_user_connect(&vu, b->path, "t"), 0);
    assert_int_equal(vhost_user_handshake(&vu, ~0ull), -EPROTO);
    /* Out of step with the back-end: nothing more is sent. */
    assert_int_equal(vhost_user_set_features(&vu, 0), -ENOTCONN);
    backend_stop(b, &vu);
}

static void test_hang_up(void **state)
{
    struct backend *b = backend_start(HANG_UP);
    struct vhost_user vu;

    assert_int_equal(vhost_user_connect(&vu, b->path, "t"), 0);
    assert_true(vhost_user_handshake(&vu, ~0ull) < 0);
    /* Later messages fail cleanly too. */
    assert_true(vhost_user_set_features(&vu, 0) < 0);
    backend_stop(b, &vu);
}

static void test_nack(void **state)
{
    struct backend *b = backend_start(NACK);
    struct vm *vm = fake_vm_new(1 << 20);
    struct vhost_user vu;

    assert_int_equal(vhost_user_connect(&vu, b->path, "t"), 0);
    assert_int_equal(vhost_user_handshake(&vu, 1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK), 0);
    assert_int_equal(vhost_user_set_mem_table(&vu, vm), -EIO);
    backend_stop(b, &vu);
    fake_vm_free(vm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_handshake),
        cmocka_unit_test(test_mem_table_fd_passed),
        cmocka_unit_test(test_wrong_request_in_reply),
        cmocka_unit_test(test_wrong_size_in_reply),
        cmocka_unit_test(test_hang_up),
        cmocka_unit_test(test_nack),
    };

    log_set_level(LOG_LVL_ERROR);
    return cmocka_run_group_tests_name("vhost-user-proto", tests, NULL, NULL);
}
