/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/opts.h"

static void test_parse_size(void **state)
{
    uint64_t v;

    (void)state;
    assert_int_equal(parse_size("4096", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(parse_size("512M", &v), 0);
    assert_int_equal(v, 512ull << 20);
    assert_int_equal(parse_size("2GiB", &v), 0);
    assert_int_equal(v, 2ull << 30);
    assert_int_equal(parse_size("1t", &v), 0);
    assert_int_equal(v, 1ull << 40);
    assert_int_equal(parse_size("", &v), -EINVAL);
    assert_int_equal(parse_size("-1", &v), -EINVAL);
    assert_int_equal(parse_size("12Q", &v), -EINVAL);
    assert_int_equal(parse_size("1MX", &v), -EINVAL);
    assert_int_equal(parse_size("99999999999T", &v), -ERANGE);
}

static void test_opts(void **state)
{
    struct opts o;
    bool b = false;
    uint64_t sz;

    (void)state;
    assert_int_equal(opts_parse(&o, "path=/a.img,readonly=on,size=1G,direct"), 0);
    assert_string_equal(opts_get(&o, "path"), "/a.img");
    assert_int_equal(opts_get_bool(&o, "readonly", &b), 0);
    assert_true(b);
    assert_int_equal(opts_get_size(&o, "size", &sz), 0);
    assert_int_equal(sz, 1ull << 30);
    assert_string_equal(opts_first_unused(&o), "direct");
    assert_int_equal(opts_get_bool(&o, "direct", &b), 0);
    assert_null(opts_first_unused(&o));
    assert_int_equal(opts_get_bool(&o, "missing", &b), -ENOENT);
    opts_free(&o);

    assert_int_equal(opts_parse(&o, "a=1,a=2"), -EINVAL);
    assert_int_equal(opts_parse(&o, "=1"), -EINVAL);
    assert_int_equal(opts_parse(&o, "x=maybe"), 0);
    assert_int_equal(opts_get_bool(&o, "x", &b), -EINVAL);
    opts_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_opts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
