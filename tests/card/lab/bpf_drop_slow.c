/* SPDX-License-Identifier: GPL-2.0 */
/* tc (clsact, direct-action) program used by the LACP interop test: drops
 * slow-protocols frames (LACPDUs) leaving an interface, so one direction of a
 * bond member loses its LACPDUs while the link stays up. Built at test time
 * with `clang -O2 -target bpf`. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#define SEC(n) __attribute__((section(n), used))

SEC("classifier") int drop_slow(struct __sk_buff *skb)
{
    return skb->protocol == __builtin_bswap16(0x8809) ? TC_ACT_SHOT : TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
