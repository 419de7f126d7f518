/* SPDX-License-Identifier: Apache-2.0 */
/* Split virtqueue: well-formed and hostile rings, without KVM. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fake_vm.h"
#include "vmm/devices/virtq.h"

#define RAM_SIZE (1u << 20)
#define QSIZE    8
#define DESC     0x1000
#define AVAIL    0x2000
#define USED     0x3000
#define BUF      0x10000

struct fixture {
    struct vm *vm;
    uint8_t *ram;
    struct virtq vq;
    struct virtq_elem *elem;
    int errors;
    char reason[256];
    uint16_t avail_idx;
};

static void on_error(void *opaque, struct virtq *vq, const char *reason)
{
    struct fixture *f = opaque;

    f->errors++;
    strncpy(f->reason, reason, sizeof(f->reason) - 1);
}

static struct virtq_desc *desc_at(struct fixture *f, uint64_t gpa, int i)
{
    return (struct virtq_desc *)(f->ram + gpa) + i;
}

static void set_desc(struct fixture *f, int i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    *desc_at(f, DESC, i) = (struct virtq_desc){addr, len, flags, next};
}

static void make_avail(struct fixture *f, uint16_t head)
{
    uint16_t *avail = (uint16_t *)(f->ram + AVAIL);

    avail[2 + f->avail_idx % QSIZE] = head;
    f->avail_idx++;
    __atomic_store_n(&avail[1], f->avail_idx, __ATOMIC_RELEASE);
}

static uint16_t *avail_ring(struct fixture *f)
{
    return (uint16_t *)(f->ram + AVAIL);
}

static uint16_t *used_ring(struct fixture *f)
{
    return (uint16_t *)(f->ram + USED);
}

static int setup_features(void **state, uint64_t features)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    f->vm = fake_vm_new(RAM_SIZE);
    assert_non_null(f->vm);
    f->ram = fake_vm_ram(f->vm);
    f->elem = virtq_elem_alloc(QSIZE);
    assert_non_null(f->elem);
    assert_int_equal(virtq_setup(&f->vq, f->vm, "test-dev", 0, QSIZE, DESC, AVAIL, USED, features),
                     0);
    virtq_set_error_handler(&f->vq, on_error, f);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_features(state,
                          (1ull << VIRTIO_RING_F_INDIRECT_DESC) | (1ull << VIRTIO_F_VERSION_1));
}

static int setup_event_idx(void **state)
{
    return setup_features(state, (1ull << VIRTIO_RING_F_INDIRECT_DESC) |
                                     (1ull << VIRTIO_RING_F_EVENT_IDX));
}

static int setup_no_indirect(void **state)
{
    return setup_features(state, 0);
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    free(f->elem);
    fake_vm_free(f->vm);
    free(f);
    return 0;
}

static void expect_broken(struct fixture *f, const char *needle)
{
    assert_int_equal(virtq_pop(&f->vq, f->elem), -EIO);
    assert_true(f->vq.broken);
    assert_int_equal(f->errors, 1);
    if (!strstr(f->reason, needle))
        fail_msg("reason '%s' does not mention '%s'", f->reason, needle);
    /* Once broken, the queue stays broken and does not report twice. */
    assert_int_equal(virtq_pop(&f->vq, f->elem), -EIO);
    assert_int_equal(f->errors, 1);
}

static void test_empty(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(virtq_pop(&f->vq, f->elem), 0);
    assert_int_equal(virtq_avail_count(&f->vq), 0);
}

static void test_simple_chain(void **state)
{
    struct fixture *f = *state;
    uint8_t hdr[16], out[4] = {0};
    uint32_t *used_elems = (uint32_t *)(f->ram + USED + 4);

    memset(f->ram + BUF, 0xab, 16);
    set_desc(f, 3, BUF, 16, VIRTQ_DESC_F_NEXT, 5);
    set_desc(f, 5, BUF + 0x1000, 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 6);
    set_desc(f, 6, BUF + 0x2000, 1, VIRTQ_DESC_F_WRITE, 0);
    make_avail(f, 3);
    assert_int_equal(virtq_avail_count(&f->vq), 1);
    assert_int_equal(virtq_pop(&f->vq, f->elem), 1);
    assert_int_equal(f->elem->head, 3);
    assert_int_equal(f->elem->out_num, 1);
    assert_int_equal(f->elem->in_num, 2);
    assert_int_equal(f->elem->out_len, 16);
    assert_int_equal(f->elem->in_len, 513);
    assert_ptr_equal(f->elem->iov[0].iov_base, f->ram + BUF);
    assert_ptr_equal(f->elem->iov[2].iov_base, f->ram + BUF + 0x2000);
    assert_int_equal(virtq_elem_read(f->elem, 0, hdr, sizeof(hdr)), 16);
    assert_int_equal(hdr[15], 0xab);
    /* Write across the boundary between the two writable buffers. */
    memset(out, 0x5a, sizeof(out));
    assert_int_equal(virtq_elem_write(f->elem, 510, out, 3), 3);
    assert_int_equal(f->ram[BUF + 0x1000 + 511], 0x5a);
    assert_int_equal(f->ram[BUF + 0x2000], 0x5a);
    assert_int_equal(virtq_elem_write(f->elem, 512, out, 4), 1);
    assert_int_equal(virtq_pop(&f->vq, f->elem), 0);

    virtq_push(&f->vq, 3, 513);
    assert_int_equal(used_ring(f)[1], 1);
    assert_int_equal(used_elems[0], 3);
    assert_int_equal(used_elems[1], 513);
    assert_int_equal(f->errors, 0);
}

static void test_zero_length_skipped(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, BUF, 0, VIRTQ_DESC_F_NEXT, 1);
    set_desc(f, 1, BUF, 8, VIRTQ_DESC_F_WRITE, 0);
    make_avail(f, 0);
    assert_int_equal(virtq_pop(&f->vq, f->elem), 1);
    assert_int_equal(f->elem->out_num, 0);
    assert_int_equal(f->elem->in_num, 1);
}

static void test_index_wraparound(void **state)
{
    struct fixture *f = *state;

    /* Start just below the 16-bit wrap and pop across it. */
    f->vq.last_avail_idx = 65534;
    f->vq.used_idx = 65534;
    f->avail_idx = 65534;
    set_desc(f, 0, BUF, 8, 0, 0);
    for (int i = 0; i < 4; i++) {
        make_avail(f, 0);
        assert_int_equal(virtq_pop(&f->vq, f->elem), 1);
        virtq_push(&f->vq, 0, 0);
    }
    assert_int_equal(f->vq.last_avail_idx, 2);
    assert_int_equal(used_ring(f)[1], 2);
    assert_int_equal(f->errors, 0);
}

static void test_loop(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, BUF, 8, VIRTQ_DESC_F_NEXT, 1);
    set_desc(f, 1, BUF, 8, VIRTQ_DESC_F_NEXT, 2);
    set_desc(f, 2, BUF, 8, VIRTQ_DESC_F_NEXT, 0);
    make_avail(f, 0);
    expect_broken(f, "loops");
}

static void test_self_loop(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 4, BUF, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 4);
    make_avail(f, 4);
    expect_broken(f, "loops");
}

static void test_full_length_chain_ok(void **state)
{
    struct fixture *f = *state;

    for (int i = 0; i < QSIZE; i++)
        set_desc(f, i, BUF + 64 * i, 64, i == QSIZE - 1 ? 0 : VIRTQ_DESC_F_NEXT, i + 1);
    make_avail(f, 0);
    assert_int_equal(virtq_pop(&f->vq, f->elem), 1);
    assert_int_equal(f->elem->out_num, QSIZE);
    assert_int_equal(f->elem->out_len, 64 * QSIZE);
}

static void test_next_out_of_range(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, BUF, 8, VIRTQ_DESC_F_NEXT, QSIZE);
    make_avail(f, 0);
    expect_broken(f, "beyond queue size");
}

static void test_buffer_outside_ram(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, RAM_SIZE - 8, 16, VIRTQ_DESC_F_WRITE, 0);
    make_avail(f, 0);
    expect_broken(f, "outside guest RAM");
}

static void test_buffer_overflowing_len(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, 0xfffffffffffff000ull, 0x2000, 0, 0);
    make_avail(f, 0);
    expect_broken(f, "overflows");
}

static void test_huge_len(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, BUF, 0xffffffffu, 0, 0);
    make_avail(f, 0);
    expect_broken(f, "outside guest RAM");
}

static void test_readable_after_writable(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, BUF, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    set_desc(f, 1, BUF, 8, 0, 0);
    make_avail(f, 0);
    expect_broken(f, "readable buffer after");
}

static void test_bogus_avail_idx(void **state)
{
    struct fixture *f = *state;

    avail_ring(f)[1] = QSIZE + 1;
    expect_broken(f, "ahead");
}

static void test_avail_idx_backwards(void **state)
{
    struct fixture *f = *state;

    /* A driver that moves the index backwards looks 65535 entries ahead. */
    f->vq.last_avail_idx = 5;
    avail_ring(f)[1] = 4;
    expect_broken(f, "ahead");
}

static void test_bad_head(void **state)
{
    struct fixture *f = *state;

    make_avail(f, 0x1234);
    expect_broken(f, "head");
}

static void test_indirect_ok(void **state)
{
    struct fixture *f = *state;
    uint64_t table = 0x8000;

    *desc_at(f, table, 0) = (struct virtq_desc){BUF, 16, VIRTQ_DESC_F_NEXT, 2};
    *desc_at(f, table, 2) = (struct virtq_desc){BUF + 0x100, 32, VIRTQ_DESC_F_NEXT, 1};
    *desc_at(f, table, 1) = (struct virtq_desc){BUF + 0x200, 1, VIRTQ_DESC_F_WRITE, 0};
    set_desc(f, 2, table, 3 * 16, VIRTQ_DESC_F_INDIRECT, 0);
    make_avail(f, 2);
    assert_int_equal(virtq_pop(&f->vq, f->elem), 1);
    assert_int_equal(f->elem->head, 2);
    assert_int_equal(f->elem->out_num, 2);
    assert_int_equal(f->elem->in_num, 1);
    assert_int_equal(f->elem->out_len, 48);
    assert_ptr_equal(f->elem->iov[2].iov_base, f->ram + BUF + 0x200);
    assert_int_equal(f->errors, 0);
}

static void test_indirect_not_negotiated(void **state)
{
    struct fixture *f = *state;

    *desc_at(f, 0x8000, 0) = (struct virtq_desc){BUF, 16, 0, 0};
    set_desc(f, 0, 0x8000, 16, VIRTQ_DESC_F_INDIRECT, 0);
    make_avail(f, 0);
    expect_broken(f, "not negotiated");
}

static void test_indirect_bad_len(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, 0x8000, 24, VIRTQ_DESC_F_INDIRECT, 0);
    make_avail(f, 0);
    expect_broken(f, "multiple of 16");
}

static void test_indirect_too_long(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, 0x8000, 16 * (QSIZE + 1), VIRTQ_DESC_F_INDIRECT, 0);
    make_avail(f, 0);
    expect_broken(f, "exceeds queue size");
}

static void test_indirect_outside_ram(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, RAM_SIZE - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
    make_avail(f, 0);
    expect_broken(f, "outside guest RAM");
}

static void test_indirect_nested(void **state)
{
    struct fixture *f = *state;

    *desc_at(f, 0x8000, 0) = (struct virtq_desc){0x9000, 16, VIRTQ_DESC_F_INDIRECT, 0};
    *desc_at(f, 0x9000, 0) = (struct virtq_desc){BUF, 16, 0, 0};
    set_desc(f, 0, 0x8000, 16, VIRTQ_DESC_F_INDIRECT, 0);
    make_avail(f, 0);
    expect_broken(f, "another indirect");
}

static void test_indirect_loop(void **state)
{
    struct fixture *f = *state;

    *desc_at(f, 0x8000, 0) = (struct virtq_desc){BUF, 16, VIRTQ_DESC_F_NEXT, 1};
    *desc_at(f, 0x8000, 1) = (struct virtq_desc){BUF, 16, VIRTQ_DESC_F_NEXT, 0};
    set_desc(f, 0, 0x8000, 32, VIRTQ_DESC_F_INDIRECT, 0);
    make_avail(f, 0);
    expect_broken(f, "loops");
}

static void test_indirect_next_out_of_table(void **state)
{
    struct fixture *f = *state;

    *desc_at(f, 0x8000, 0) = (struct virtq_desc){BUF, 16, VIRTQ_DESC_F_NEXT, 2};
    set_desc(f, 0, 0x8000, 32, VIRTQ_DESC_F_INDIRECT, 0);
    make_avail(f, 0);
    expect_broken(f, "beyond the table");
}

static void test_indirect_with_next(void **state)
{
    struct fixture *f = *state;

    *desc_at(f, 0x8000, 0) = (struct virtq_desc){BUF, 16, 0, 0};
    set_desc(f, 0, 0x8000, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
    set_desc(f, 1, BUF, 16, 0, 0);
    make_avail(f, 0);
    expect_broken(f, "both INDIRECT and NEXT");
}

static void test_indirect_bad_buffer(void **state)
{
    struct fixture *f = *state;

    *desc_at(f, 0x8000, 0) = (struct virtq_desc){BUF, 16, VIRTQ_DESC_F_NEXT, 1};
    *desc_at(f, 0x8000, 1) = (struct virtq_desc){RAM_SIZE, 4096, VIRTQ_DESC_F_WRITE, 0};
    set_desc(f, 0, 0x8000, 32, VIRTQ_DESC_F_INDIRECT, 0);
    make_avail(f, 0);
    expect_broken(f, "outside guest RAM");
}

static void test_no_interrupt_flag(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, BUF, 8, 0, 0);
    make_avail(f, 0);
    assert_int_equal(virtq_pop(&f->vq, f->elem), 1);
    virtq_push(&f->vq, 0, 0);
    assert_true(virtq_should_notify(&f->vq));
    avail_ring(f)[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;
    make_avail(f, 0);
    assert_int_equal(virtq_pop(&f->vq, f->elem), 1);
    virtq_push(&f->vq, 0, 0);
    assert_false(virtq_should_notify(&f->vq));
}

static void test_event_idx(void **state)
{
    struct fixture *f = *state;
    uint16_t *used_event = &avail_ring(f)[2 + QSIZE];
    uint16_t *avail_event = &used_ring(f)[2 + 4 * QSIZE];

    set_desc(f, 0, BUF, 8, 0, 0);
    for (int i = 0; i < 3; i++)
        make_avail(f, 0);
    assert_int_equal(virtq_pop(&f->vq, f->elem), 1);
    /* The device publishes how far it has read. */
    assert_int_equal(*avail_event, 1);
    assert_int_equal(virtq_pop(&f->vq, f->elem), 1);
    assert_int_equal(virtq_pop(&f->vq, f->elem), 1);
    assert_int_equal(*avail_event, 3);

    /* Driver wants an interrupt only once used idx passes 2 (used_event = 2). */
    *used_event = 2;
    virtq_push(&f->vq, 0, 0); /* used idx 1: first notification is always sent */
    assert_true(virtq_should_notify(&f->vq));
    virtq_push(&f->vq, 0, 0); /* used idx 2: event 2 not yet passed (needs idx 3) */
    assert_false(virtq_should_notify(&f->vq));
    virtq_push(&f->vq, 0, 0); /* used idx 3: crossed */
    assert_true(virtq_should_notify(&f->vq));
    /* Nothing new pushed: no interrupt even though flags allow it. */
    assert_false(virtq_should_notify(&f->vq));

    /* An empty pop also publishes how far the device has read (before it sleeps). */
    *avail_event = 0;
    assert_int_equal(virtq_pop(&f->vq, f->elem), 0);
    assert_int_equal(*avail_event, 3);
}

static void test_setup_rejects_bad_rings(void **state)
{
    struct fixture *f = *state;
    struct virtq vq = {0};

    assert_int_equal(virtq_setup(&vq, f->vm, "t", 0, QSIZE, DESC + 8, AVAIL, USED, 0), -EINVAL);
    assert_int_equal(virtq_setup(&vq, f->vm, "t", 0, QSIZE, DESC, AVAIL + 1, USED, 0), -EINVAL);
    assert_int_equal(virtq_setup(&vq, f->vm, "t", 0, QSIZE, DESC, AVAIL, USED + 2, 0), -EINVAL);
    assert_int_equal(virtq_setup(&vq, f->vm, "t", 0, QSIZE, RAM_SIZE - 16, AVAIL, USED, 0),
                     -EINVAL);
    assert_int_equal(virtq_setup(&vq, f->vm, "t", 0, QSIZE, DESC, AVAIL, RAM_SIZE - 8, 0), -EINVAL);
    assert_int_equal(virtq_setup(&vq, f->vm, "t", 0, 0, DESC, AVAIL, USED, 0), -EINVAL);
    assert_int_equal(virtq_setup(&vq, f->vm, "t", 0, 256, DESC, AVAIL, USED, 0), 0);
    assert_false(vq.broken);
    assert_int_equal(virtq_pop(&vq, f->elem), 0);
}

static void test_iov_slice(void **state)
{
    uint8_t a[10], b[20], c[5];
    struct iovec iov[3] = {{a, 10}, {b, 20}, {c, 5}}, out[3];

    assert_int_equal(virtq_iov_slice(iov, 3, 8, 25, out, 3), 3);
    assert_ptr_equal(out[0].iov_base, a + 8);
    assert_int_equal(out[0].iov_len, 2);
    assert_int_equal(out[1].iov_len, 20);
    assert_int_equal(out[2].iov_len, 3);
    assert_int_equal(virtq_iov_slice(iov, 3, 0, 36, out, 3), -EINVAL);
    assert_int_equal(virtq_iov_slice(iov, 3, 0, 35, out, 2), -EINVAL);
    assert_int_equal(virtq_iov_slice(iov, 3, 10, 20, out, 1), 1);
    assert_ptr_equal(out[0].iov_base, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_simple_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_length_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_wraparound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_self_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_length_chain_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_next_out_of_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buffer_outside_ram, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buffer_overflowing_len, setup, teardown),
        cmocka_unit_test_setup_teardown(test_huge_len, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readable_after_writable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bogus_avail_idx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_avail_idx_backwards, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indirect_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indirect_not_negotiated, setup_no_indirect, teardown),
        cmocka_unit_test_setup_teardown(test_indirect_bad_len, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indirect_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indirect_outside_ram, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indirect_nested, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indirect_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indirect_next_out_of_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indirect_with_next, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indirect_bad_buffer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_interrupt_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_idx, setup_event_idx, teardown),
        cmocka_unit_test_setup_teardown(test_setup_rejects_bad_rings, setup, teardown),
        cmocka_unit_test(test_iov_slice),
    };

    return cmocka_run_group_tests_name("virtq", tests, NULL, NULL);
}
