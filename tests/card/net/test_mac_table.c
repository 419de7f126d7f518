/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests: MAC learning table (src/card/net/mac_table.c). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mac_table.h"

#define SEC 1000000000ull

static struct mac_table *mk(uint32_t max, uint64_t aging)
{
    struct mac_table_config cfg = {.max_entries = max, .aging_ns = aging, .seed = 12345};
    struct mac_table *t = NULL;
    assert_int_equal(mac_table_create(&cfg, &t), 0);
    return t;
}

static void mac_n(uint8_t mac[6], uint32_t n)
{
    mac[0] = 0x02;
    mac[1] = 0x00;
    mac[2] = (uint8_t)(n >> 24);
    mac[3] = (uint8_t)(n >> 16);
    mac[4] = (uint8_t)(n >> 8);
    mac[5] = (uint8_t)n;
}

static void test_create_invalid(void **state)
{
    struct mac_table *t = NULL;
    struct mac_table_config cfg = {.max_entries = 0, .aging_ns = SEC};
    assert_int_equal(mac_table_create(&cfg, &t), -EINVAL);
    cfg.max_entries = 10;
    cfg.aging_ns = 0;
    assert_int_equal(mac_table_create(&cfg, &t), -EINVAL);
}

static void test_learn_lookup_move(void **state)
{
    struct mac_table *t = mk(100, 300 * SEC);
    uint8_t m[6];
    uint32_t v = 0;
    mac_n(m, 1);

    assert_int_equal(mac_table_lookup(t, 10, m, &v), -ENOENT);
    assert_int_equal(mac_table_learn(t, 10, m, 3, 0), MAC_LEARN_NEW);
    assert_int_equal(mac_table_lookup(t, 10, m, &v), 0);
    assert_int_equal(v, 3);
    /* same MAC in another VLAN is another entry */
    assert_int_equal(mac_table_lookup(t, 11, m, &v), -ENOENT);
    assert_int_equal(mac_table_learn(t, 11, m, 4, 0), MAC_LEARN_NEW);
    assert_int_equal(mac_table_count(t), 2);

    assert_int_equal(mac_table_learn(t, 10, m, 3, SEC), MAC_LEARN_REFRESHED);
    assert_int_equal(mac_table_learn(t, 10, m, 5, 2 * SEC), MAC_LEARN_MOVED);
    assert_int_equal(mac_table_lookup(t, 10, m, &v), 0);
    assert_int_equal(v, 5);
    assert_int_equal(mac_table_lookup(t, 11, m, &v), 0);
    assert_int_equal(v, 4);

    struct mac_table_stats st;
    mac_table_get_stats(t, &st);
    assert_int_equal(st.learned, 2);
    assert_int_equal(st.moves, 1);

    /* group and zero MACs, out-of-range domains are refused */
    const uint8_t bc[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const uint8_t mc[6] = {0x01, 0, 0x5e, 0, 0, 1};
    const uint8_t zero[6] = {0};
    assert_int_equal(mac_table_learn(t, 10, bc, 1, 0), -EINVAL);
    assert_int_equal(mac_table_learn(t, 10, mc, 1, 0), -EINVAL);
    assert_int_equal(mac_table_learn(t, 10, zero, 1, 0), -EINVAL);
    assert_int_equal(mac_table_learn(t, MAC_TABLE_MAX_DOMAIN + 1, m, 1, 0), -EINVAL);
    mac_table_get_stats(t, &st);
    assert_int_equal(st.rejected, 4);
    assert_int_equal(mac_table_count(t), 2);
    mac_table_destroy(t);
}

static void test_aging(void **state)
{
    struct mac_table *t = mk(100, 10 * SEC);
    uint8_t a[6], b[6];
    uint32_t v;
    mac_n(a, 1);
    mac_n(b, 2);
    assert_int_equal(mac_table_learn(t, 1, a, 1, 0), MAC_LEARN_NEW);
    assert_int_equal(mac_table_learn(t, 1, b, 2, 0), MAC_LEARN_NEW);
    /* b keeps talking, a goes quiet */
    for (uint64_t s = 1; s <= 12; s++)
        mac_table_learn(t, 1, b, 2, s * SEC);
    assert_int_equal(mac_table_age(t, 9 * SEC), 0);
    assert_int_equal(mac_table_age(t, 12 * SEC), 1);
    assert_int_equal(mac_table_lookup(t, 1, a, &v), -ENOENT);
    assert_int_equal(mac_table_lookup(t, 1, b, &v), 0);
    assert_int_equal(mac_table_age(t, 22 * SEC), 0);
    assert_int_equal(mac_table_age(t, 23 * SEC), 1);
    assert_int_equal(mac_table_count(t), 0);

    /* a shorter aging time applies at the next age() */
    assert_int_equal(mac_table_learn(t, 1, a, 1, 100 * SEC), MAC_LEARN_NEW);
    assert_int_equal(mac_table_set_aging(t, 0), -EINVAL);
    assert_int_equal(mac_table_set_aging(t, SEC), 0);
    assert_int_equal(mac_table_age(t, 102 * SEC), 1);

    struct mac_table_stats st;
    mac_table_get_stats(t, &st);
    assert_int_equal(st.aged, 3);
    mac_table_destroy(t);
}

static void test_capacity_evicts_oldest(void **state)
{
    const uint32_t cap = 64;
    struct mac_table *t = mk(cap, 300 * SEC);
    uint8_t m[6];
    uint32_t v;
    for (uint32_t i = 0; i < cap; i++) {
        mac_n(m, i);
        assert_int_equal(mac_table_learn(t, 1, m, i, (uint64_t)(i + 1) * SEC), MAC_LEARN_NEW);
    }
    assert_int_equal(mac_table_count(t), cap);
    /* refresh the first half so the second half is older */
    for (uint32_t i = 0; i < cap / 2; i++) {
        mac_n(m, i);
        assert_int_equal(mac_table_learn(t, 1, m, i, 1000 * SEC + i), MAC_LEARN_REFRESHED);
    }
    /* 16 newcomers: the count stays at the cap and every victim is from the
     * stale half */
    for (uint32_t i = 0; i < 16; i++) {
        mac_n(m, 1000 + i);
        assert_int_equal(mac_table_learn(t, 1, m, 1000 + i, 2000 * SEC), MAC_LEARN_NEW);
        assert_int_equal(mac_table_count(t), cap);
    }
    for (uint32_t i = 0; i < cap / 2; i++) {
        mac_n(m, i);
        assert_int_equal(mac_table_lookup(t, 1, m, &v), 0);
    }
    for (uint32_t i = 0; i < 16; i++) {
        mac_n(m, 1000 + i);
        assert_int_equal(mac_table_lookup(t, 1, m, &v), 0);
    }
    struct mac_table_stats st;
    mac_table_get_stats(t, &st);
    assert_int_equal(st.evicted, 16);
    mac_table_destroy(t);
}

static void test_static_entries(void **state)
{
    struct mac_table *t = mk(4, 10 * SEC);
    uint8_t s[6], m[6];
    uint32_t v;
    mac_n(s, 99);
    assert_int_equal(mac_table_add_static(t, 1, s, 7), 0);
    /* learning cannot move a static MAC */
    assert_int_equal(mac_table_learn(t, 1, s, 8, SEC), -EPERM);
    assert_int_equal(mac_table_learn(t, 1, s, 7, SEC), MAC_LEARN_REFRESHED);
    assert_int_equal(mac_table_lookup(t, 1, s, &v), 0);
    assert_int_equal(v, 7);
    /* never aged */
    assert_int_equal(mac_table_age(t, 1000 * SEC), 0);
    /* never evicted: fill past capacity with dynamic entries */
    for (uint32_t i = 0; i < 10; i++) {
        mac_n(m, i);
        assert_int_equal(mac_table_learn(t, 1, m, i, (uint64_t)i * SEC), MAC_LEARN_NEW);
    }
    assert_int_equal(mac_table_count(t), 4);
    assert_int_equal(mac_table_lookup(t, 1, s, &v), 0);
    /* flush without statics keeps it */
    assert_int_equal(mac_table_flush(t, MAC_TABLE_ANY, MAC_TABLE_ANY, false), 3);
    assert_int_equal(mac_table_lookup(t, 1, s, &v), 0);
    assert_int_equal(mac_table_flush(t, MAC_TABLE_ANY, MAC_TABLE_ANY, true), 1);
    assert_int_equal(mac_table_count(t), 0);

    /* a table full of statics refuses more */
    for (uint32_t i = 0; i < 4; i++) {
        mac_n(m, 50 + i);
        assert_int_equal(mac_table_add_static(t, 1, m, i), 0);
    }
    mac_n(m, 60);
    assert_int_equal(mac_table_learn(t, 1, m, 1, 0), -ENOSPC);
    assert_int_equal(mac_table_count(t), 4);
    mac_table_destroy(t);
}

static void test_flush_by_port_and_vlan(void **state)
{
    struct mac_table *t = mk(1000, 300 * SEC);
    uint8_t m[6];
    uint32_t v;
    for (uint32_t i = 0; i < 300; i++) {
        mac_n(m, i);
        /* port = i % 3, vlan = 10 + i % 5 */
        assert_int_equal(mac_table_learn(t, 10 + i % 5, m, i % 3, 0), MAC_LEARN_NEW);
    }
    assert_int_equal(mac_table_flush(t, 1, MAC_TABLE_ANY, false), 100);
    assert_int_equal(mac_table_flush(t, MAC_TABLE_ANY, 12, false),
                     40); /* 60 in VLAN 12 minus port 1 */
    assert_int_equal(mac_table_flush(t, 2, 13, false), 20);
    assert_int_equal(mac_table_count(t), 300 - 100 - 40 - 20);
    for (uint32_t i = 0; i < 300; i++) {
        mac_n(m, i);
        bool gone = i % 3 == 1 || i % 5 == 2 || (i % 3 == 2 && i % 5 == 3);
        assert_int_equal(mac_table_lookup(t, 10 + i % 5, m, &v), gone ? -ENOENT : 0);
    }
    mac_n(m, 0);
    assert_int_equal(mac_table_delete(t, 10, m), 0);
    assert_int_equal(mac_table_delete(t, 10, m), -ENOENT);
    mac_table_destroy(t);
}

static int count_cb(const struct mac_table_entry *e, void *arg)
{
    unsigned *n = arg;
    if (e->value == 5)
        (*n)++;
    return 0;
}

static int stop_cb(const struct mac_table_entry *e, void *arg)
{
    return 42;
}

static void test_foreach(void **state)
{
    struct mac_table *t = mk(100, 300 * SEC);
    uint8_t m[6];
    for (uint32_t i = 0; i < 20; i++) {
        mac_n(m, i);
        mac_table_learn(t, 1, m, i % 2 ? 5 : 6, 0);
    }
    unsigned n = 0;
    assert_int_equal(mac_table_foreach(t, count_cb, &n), 0);
    assert_int_equal(n, 10);
    assert_int_equal(mac_table_foreach(t, stop_cb, NULL), 42);
    mac_table_destroy(t);
}

/* Readers race a writer that keeps moving, deleting and re-learning entries
 * in a tiny table (so they share buckets). A reader must never see a value
 * that was never stored for the key (a torn entry), and a key that is never
 * touched must always be found. */
struct race {
    struct mac_table *t;
    atomic_bool stop;
    atomic_ulong bad;
    atomic_ulong reads;
};

static void *race_reader(void *arg)
{
    struct race *r = arg;
    uint8_t stable[6], moving[6];
    mac_n(stable, 1);
    mac_n(moving, 2);
    while (!atomic_load(&r->stop)) {
        uint32_t v;
        if (mac_table_lookup(r->t, 7, stable, &v) != 0 || v != 777)
            atomic_fetch_add(&r->bad, 1);
        if (mac_table_lookup(r->t, 7, moving, &v) == 0 && v != 0x11111111 && v != 0x22222222)
            atomic_fetch_add(&r->bad, 1);
        atomic_fetch_add(&r->reads, 1);
    }
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    struct race r = {.t = mk(4, 300 * SEC)};
    uint8_t stable[6], moving[6], other[6];
    mac_n(stable, 1);
    mac_n(moving, 2);
    assert_int_equal(mac_table_add_static(r.t, 7, stable, 777), 0);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_reader, &r), 0);
    for (uint32_t i = 0; i < 200000; i++) {
        mac_table_learn(r.t, 7, moving, i & 1 ? 0x11111111 : 0x22222222, i);
        if (i % 7 == 0)
            mac_table_delete(r.t, 7, moving);
        mac_n(other, 100 + i % 3); /* churn the same small table */
        mac_table_learn(r.t, 7, other, i, i);
    }
    atomic_store(&r.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&r.bad), 0);
    assert_true(atomic_load(&r.reads) > 0);
    mac_table_destroy(r.t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_invalid), cmocka_unit_test(test_learn_lookup_move),
        cmocka_unit_test(test_aging),          cmocka_unit_test(test_capacity_evicts_oldest),
        cmocka_unit_test(test_static_entries), cmocka_unit_test(test_flush_by_port_and_vlan),
        cmocka_unit_test(test_foreach),        cmocka_unit_test(test_concurrent_readers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
