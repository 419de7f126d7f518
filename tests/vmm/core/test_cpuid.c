/* SPDX-License-Identifier: Apache-2.0 */
/* CPUID topology the vCPUs see: leaves 1, 4, 0xB/0x1F, 0x80000008, KVM signature. */
#include <linux/kvm.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "vmm/vmm.h"

#define MAX_ENT 64

static struct kvm_cpuid2 *make_supported(uint32_t max_basic)
{
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + MAX_ENT * sizeof(c->entries[0]));
    struct kvm_cpuid_entry2 e[] = {
        {.function = 0, .eax = max_basic},
        {.function = 1, .ebx = 0x00ff0800, .ecx = 0x00000001, .edx = 0x00000001},
        {.function = 4,
         .index = 0,
         .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
         .eax = (0x3fu << 26) | (1 << 5) | 1}, /* L1 data */
        {.function = 4,
         .index = 1,
         .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
         .eax = (3 << 5) | 3},                                                 /* L3 unified */
        {.function = 4, .index = 2, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX}, /* end */
        {.function = 0xb, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .ebx = 99},
        {.function = 0xb, .index = 1, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .ebx = 99},
        {.function = 0x40000000, .eax = 0x40000001},
        {.function = 0x40000001, .eax = 0x1234, .edx = 1 /* KVM_HINTS_REALTIME */},
        {.function = 0x80000008, .eax = 0x3030, .ecx = 0xffff},
    };

    memcpy(c->entries, e, sizeof(e));
    c->nent = sizeof(e) / sizeof(e[0]);
    return c;
}

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
    const struct kvm_cpuid_entry2 *hit = NULL;
    int count = 0;

    for (uint32_t i = 0; i < c->nent; i++) {
        if (c->entries[i].function == fn && c->entries[i].index == idx) {
            hit = &c->entries[i];
            count++;
        }
    }
    assert_true(count <= 1); /* never duplicated */
    return hit;
}

static void test_six_vcpus(void **state)
{
    struct kvm_cpuid2 *c = make_supported(0x1f);
    const struct kvm_cpuid_entry2 *e;
    char sig[13] = "";

    (void)state;
    vcpu_cpuid_patch(c, 5, 6, MAX_ENT);
    e = find(c, 1, 0);
    assert_int_equal(e->ebx >> 24, 5);          /* initial APIC ID */
    assert_int_equal((e->ebx >> 16) & 0xff, 8); /* logical CPUs per package, power of 2 */
    assert_int_equal(e->ebx & 0xffff, 0x0800);  /* CLFLUSH size etc. kept */
    assert_true(e->edx & (1u << 28));           /* HTT */
    assert_true(e->ecx & (1u << 31));           /* hypervisor */
    assert_true(e->ecx & 1);                    /* other features kept */
    e = find(c, 4, 0);
    assert_int_equal(e->eax >> 26, 7);           /* cores per package - 1 */
    assert_int_equal((e->eax >> 14) & 0xfff, 0); /* L1 not shared */
    assert_int_equal(e->eax & 0x3fff, (1 << 5) | 1);
    e = find(c, 4, 1);
    assert_int_equal((e->eax >> 14) & 0xfff, 7); /* L3 shared by the package */
    assert_int_equal(find(c, 4, 2)->eax, 0);
    for (uint32_t fn = 0xb; fn <= 0x1f; fn += 0x1f - 0xb) {
        e = find(c, fn, 0); /* SMT level */
        assert_non_null(e);
        assert_int_equal(e->eax, 0);
        assert_int_equal(e->ebx, 1);
        assert_int_equal(e->ecx, 0x100);
        assert_int_equal(e->edx, 5);
        assert_true(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        e = find(c, fn, 1);          /* core level */
        assert_int_equal(e->eax, 3); /* bits to shift to the package ID */
        assert_int_equal(e->ebx, 6);
        assert_int_equal(e->ecx, 0x201);
        assert_int_equal(e->edx, 5);
        e = find(c, fn, 2); /* invalid level ends the list */
        assert_int_equal(e->ecx & 0xff00, 0);
        assert_int_equal(e->ebx, 0);
    }
    e = find(c, 0x40000000, 0);
    memcpy(sig, &e->ebx, 4);
    memcpy(sig + 4, &e->ecx, 4);
    memcpy(sig + 8, &e->edx, 4);
    assert_string_equal(sig, "KVMKVMKVM");
    assert_int_equal(find(c, 0x40000001, 0)->eax, 0x1234); /* kvmclock features kept */
    assert_int_equal(find(c, 0x40000001, 0)->edx, 0);      /* no "dedicated vCPUs" hint */
    e = find(c, 0x80000008, 0);
    assert_int_equal(e->ecx & 0xff, 5);
    assert_int_equal((e->ecx >> 12) & 0xf, 3);
    free(c);
}

static void test_one_vcpu_and_old_cpu(void **state)
{
    struct kvm_cpuid2 *c = make_supported(0xa); /* no leaf 0xB/0x1F on this CPU */
    const struct kvm_cpuid_entry2 *e;

    (void)state;
    vcpu_cpuid_patch(c, 0, 1, MAX_ENT);
    e = find(c, 1, 0);
    assert_int_equal(e->ebx >> 24, 0);
    assert_int_equal((e->ebx >> 16) & 0xff, 1);
    assert_false(e->edx & (1u << 28));
    assert_int_equal(find(c, 4, 0)->eax >> 26, 0);
    assert_null(find(c, 0xb, 0)); /* the stale 0xB entries are gone, none added */
    assert_null(find(c, 0x1f, 0));
    free(c);
}

static void test_capacity(void **state)
{
    struct kvm_cpuid2 *c = make_supported(0x1f);
    uint32_t before = c->nent;

    (void)state;
    /* Room for only the existing entries: topology leaves are dropped, nothing overflows. */
    vcpu_cpuid_patch(c, 1, 2, before - 2 + 1);
    assert_true(c->nent <= before - 2 + 1);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_six_vcpus),
        cmocka_unit_test(test_one_vcpu_and_old_cpu),
        cmocka_unit_test(test_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
