/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests: port anti-spoofing and promiscuous filter
 * (src/card/net/security.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "frames.h"
#include "security.h"

static struct port_security ps;
static struct sec_stats st;

static int setup(void **state)
{
    assert_int_equal(port_security_init(&ps, MAC_A), 0);
    assert_int_equal(port_security_add_ip(&ps, "10.0.0.5"), 0);
    assert_int_equal(port_security_add_ip(&ps, "2001:db8::5"), 0);
    memset(&st, 0, sizeof(st));
    return 0;
}

static enum sec_verdict check(const struct frame *f)
{
    struct pkt_meta m;
    int rc = pkt_parse(f->p, f->len, &m);
    return port_security_check_ingress(&ps, &m, rc, &st);
}

static void test_init_and_add(void **state)
{
    struct port_security p;
    assert_int_equal(port_security_init(&p, MAC_BCAST), -EINVAL);
    const uint8_t zero[6] = {0};
    assert_int_equal(port_security_init(&p, zero), -EINVAL);
    assert_int_equal(port_security_init(&p, MAC_A), 0);
    assert_false(p.promiscuous);
    assert_int_equal(port_security_add_ip(&p, "10.0.0.1"), 0);
    assert_int_equal(port_security_add_ip(&p, "10.0.0.1"), -EEXIST);
    assert_int_equal(port_security_add_ip(&p, "10.0.0.300"), -EINVAL);
    assert_int_equal(port_security_add_ip(&p, "not-an-ip"), -EINVAL);
    char buf[32];
    for (int i = 2; i <= SEC_MAX_IPV4; i++) {
        snprintf(buf, sizeof(buf), "10.0.0.%d", i);
        assert_int_equal(port_security_add_ip(&p, buf), 0);
    }
    assert_int_equal(port_security_add_ip(&p, "10.0.1.1"), -ENOSPC);
}

static void test_ipv4(void **state)
{
    struct frame f;
    fr_udp4_frame(&f, MAC_B, MAC_A, "10.0.0.5", "10.0.0.9", 1, 2, 0);
    assert_int_equal(check(&f), SEC_PASS);
    fr_udp4_frame(&f, MAC_B, MAC_A, "10.0.0.6", "10.0.0.9", 1, 2, 0);
    assert_int_equal(check(&f), SEC_DROP_IPV4_SRC);
    fr_udp4_frame(&f, MAC_B, MAC_C, "10.0.0.5", "10.0.0.9", 1, 2, 0);
    assert_int_equal(check(&f), SEC_DROP_SRC_MAC);
    /* DHCP discover from 0.0.0.0 passes, other traffic from 0.0.0.0 does not */
    fr_udp4_frame(&f, MAC_BCAST, MAC_A, "0.0.0.0", "255.255.255.255", 68, 67, 10);
    assert_int_equal(check(&f), SEC_PASS);
    fr_udp4_frame(&f, MAC_BCAST, MAC_A, "0.0.0.0", "255.255.255.255", 68, 53, 10);
    assert_int_equal(check(&f), SEC_DROP_IPV4_SRC);
    /* malformed IPv4 from a VM cannot be vouched for */
    fr_udp4_frame(&f, MAC_B, MAC_A, "10.0.0.5", "10.0.0.9", 1, 2, 0);
    pkt_put_be16(f.p + 16, 500);
    assert_int_equal(check(&f), SEC_DROP_MALFORMED);
    assert_int_equal(st.verdicts[SEC_PASS], 2);
    assert_int_equal(st.verdicts[SEC_DROP_IPV4_SRC], 2);
    assert_int_equal(st.verdicts[SEC_DROP_SRC_MAC], 1);
    assert_int_equal(st.verdicts[SEC_DROP_MALFORMED], 1);

    /* disabled: anything passes; allow_any_ipv4: MAC check only */
    ps.allow_any_ipv4 = true;
    fr_udp4_frame(&f, MAC_B, MAC_A, "192.168.7.7", "10.0.0.9", 1, 2, 0);
    assert_int_equal(check(&f), SEC_PASS);
    fr_udp4_frame(&f, MAC_B, MAC_C, "192.168.7.7", "10.0.0.9", 1, 2, 0);
    assert_int_equal(check(&f), SEC_DROP_SRC_MAC);
    ps.enabled = false;
    assert_int_equal(check(&f), SEC_PASS);
}

static void test_arp(void **state)
{
    struct frame f;
    fr_init(&f);
    fr_eth(&f, MAC_BCAST, MAC_A, PKT_ETHERTYPE_ARP);
    fr_arp(&f, 1, MAC_A, "10.0.0.5", MAC_BCAST, "10.0.0.1");
    assert_int_equal(check(&f), SEC_PASS);

    fr_init(&f); /* gratuitous ARP claiming someone else's IP */
    fr_eth(&f, MAC_BCAST, MAC_A, PKT_ETHERTYPE_ARP);
    fr_arp(&f, 2, MAC_A, "10.0.0.1", MAC_BCAST, "10.0.0.1");
    assert_int_equal(check(&f), SEC_DROP_ARP_SPA);

    fr_init(&f); /* right Ethernet source, spoofed sender hardware address */
    fr_eth(&f, MAC_BCAST, MAC_A, PKT_ETHERTYPE_ARP);
    fr_arp(&f, 2, MAC_C, "10.0.0.5", MAC_BCAST, "10.0.0.1");
    assert_int_equal(check(&f), SEC_DROP_ARP_SHA);

    fr_init(&f); /* ARP probe, RFC 5227 */
    fr_eth(&f, MAC_BCAST, MAC_A, PKT_ETHERTYPE_ARP);
    fr_arp(&f, 1, MAC_A, "0.0.0.0", MAC_BCAST, "10.0.0.5");
    assert_int_equal(check(&f), SEC_PASS);
}

static void test_ipv6(void **state)
{
    struct frame f;
    fr_init(&f);
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "2001:db8::5", "2001:db8::1", PKT_IPPROTO_UDP, 8);
    fr_udp(&f, 1, 2, 0);
    assert_int_equal(check(&f), SEC_PASS);

    fr_init(&f);
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "2001:db8::6", "2001:db8::1", PKT_IPPROTO_UDP, 8);
    fr_udp(&f, 1, 2, 0);
    assert_int_equal(check(&f), SEC_DROP_IPV6_SRC);

    fr_init(&f); /* link-local allowed by default */
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "fe80::1234", "fe80::1", PKT_IPPROTO_UDP, 8);
    fr_udp(&f, 1, 2, 0);
    assert_int_equal(check(&f), SEC_PASS);
    ps.allow_ipv6_ll = false;
    assert_int_equal(check(&f), SEC_DROP_IPV6_SRC);
    ps.allow_ipv6_ll = true;

    fr_init(&f); /* DAD: NS from :: is fine */
    fr_eth(&f, MAC_MCAST, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "::", "ff02::1:ff00:5", PKT_IPPROTO_ICMPV6, 24);
    fr_nd(&f, 135, "2001:db8::5", NULL);
    assert_int_equal(check(&f), SEC_PASS);

    fr_init(&f); /* UDP from :: is not */
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "::", "2001:db8::1", PKT_IPPROTO_UDP, 8);
    fr_udp(&f, 1, 2, 0);
    assert_int_equal(check(&f), SEC_DROP_IPV6_SRC);

    fr_init(&f); /* NA for our own address with our MAC */
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "2001:db8::5", "fe80::1", PKT_IPPROTO_ICMPV6, 32);
    fr_nd(&f, 136, "2001:db8::5", MAC_A);
    assert_int_equal(check(&f), SEC_PASS);

    fr_init(&f); /* NA spoofing a neighbour's address */
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "2001:db8::5", "fe80::1", PKT_IPPROTO_ICMPV6, 32);
    fr_nd(&f, 136, "2001:db8::1", MAC_A);
    assert_int_equal(check(&f), SEC_DROP_ND_TARGET);

    fr_init(&f); /* NA with another MAC in the target link-layer option */
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "2001:db8::5", "fe80::1", PKT_IPPROTO_ICMPV6, 32);
    fr_nd(&f, 136, "2001:db8::5", MAC_C);
    assert_int_equal(check(&f), SEC_DROP_ND_LLA);

    fr_init(&f); /* NS with another MAC in the source link-layer option */
    fr_eth(&f, MAC_B, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "2001:db8::5", "fe80::1", PKT_IPPROTO_ICMPV6, 32);
    fr_nd(&f, 135, "2001:db8::1", MAC_C);
    assert_int_equal(check(&f), SEC_DROP_ND_LLA);

    fr_init(&f); /* router advertisement from a VM */
    fr_eth(&f, MAC_MCAST, MAC_A, PKT_ETHERTYPE_IPV6);
    fr_ipv6(&f, "fe80::5", "ff02::1", PKT_IPPROTO_ICMPV6, 16);
    fr_u8(&f, 134);
    fr_zero(&f, 15);
    assert_int_equal(check(&f), SEC_DROP_IPV6_RA);
    ps.allow_ipv6_ra = true;
    assert_int_equal(check(&f), SEC_PASS);
}

static void test_other_ethertypes(void **state)
{
    struct frame f;
    fr_init(&f);
    fr_eth(&f, MAC_B, MAC_A, 0x88cc); /* LLDP: MAC check only */
    fr_zero(&f, 40);
    assert_int_equal(check(&f), SEC_PASS);
    fr_init(&f);
    fr_eth(&f, MAC_B, MAC_C, 0x88cc);
    fr_zero(&f, 40);
    assert_int_equal(check(&f), SEC_DROP_SRC_MAC);
    fr_init(&f); /* runt */
    fr_zero(&f, 10);
    assert_int_equal(check(&f), SEC_DROP_MALFORMED);
}

static void test_promiscuous(void **state)
{
    assert_true(port_security_egress_allowed(&ps, MAC_A, &st));
    assert_true(port_security_egress_allowed(&ps, MAC_BCAST, &st));
    assert_true(port_security_egress_allowed(&ps, MAC_MCAST, &st));
    assert_false(port_security_egress_allowed(&ps, MAC_B, &st));
    assert_int_equal(st.egress_filtered, 1);
    ps.promiscuous = true;
    assert_true(port_security_egress_allowed(&ps, MAC_B, &st));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_add),
        cmocka_unit_test_setup(test_ipv4, setup),
        cmocka_unit_test_setup(test_arp, setup),
        cmocka_unit_test_setup(test_ipv6, setup),
        cmocka_unit_test_setup(test_other_ethertypes, setup),
        cmocka_unit_test_setup(test_promiscuous, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
