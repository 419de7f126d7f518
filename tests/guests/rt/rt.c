/* SPDX-License-Identifier: Apache-2.0 */
/* Runtime start-up in long mode: copy the boot data, load the IDT, run the guest. */
#include "rt.h"
#include "io.h"

struct hvm_start_info rt_start_info;
uint64_t rt_ram_top;
extern uint32_t rt_start_info_pa;
extern uint64_t rt_entry_tsc;
extern const uint64_t trap_stubs[32];

struct idt_entry {
    uint16_t off_lo;
    uint16_t sel;
    uint8_t ist;
    uint8_t type;
    uint16_t off_mid;
    uint32_t off_hi;
    uint32_t zero;
} __attribute__((packed));

static struct idt_entry idt[32] __attribute__((aligned(16)));

struct trap_frame {
    uint64_t vector;
    uint64_t error;
    uint64_t rip;
    uint64_t cs;
    uint64_t rflags;
    uint64_t rsp;
    uint64_t ss;
};

void trap_report(const struct trap_frame *f);
void rt_main(void);

void trap_report(const struct trap_frame *f)
{
    uint64_t cr2;

    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    panic("exception %lu error 0x%lx at rip 0x%lx rsp 0x%lx cr2 0x%lx", f->vector, f->error, f->rip,
          f->rsp, cr2);
}

void idt_load(void)
{
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) desc = {sizeof(idt) - 1, (uint64_t)idt};

    __asm__ volatile("lidt %0" : : "m"(desc));
}

static void idt_init(void)
{
    for (unsigned i = 0; i < ARRAY_SIZE(idt); i++) {
        uint64_t h = trap_stubs[i];

        idt[i].off_lo = (uint16_t)h;
        idt[i].sel = 0x08;
        idt[i].ist = 0;
        idt[i].type = 0x8e; /* present, DPL 0, 64-bit interrupt gate */
        idt[i].off_mid = (uint16_t)(h >> 16);
        idt[i].off_hi = (uint32_t)(h >> 32);
        idt[i].zero = 0;
    }
    idt_load();
}

/* The PVH memory map (version 1 start_info) gives the end of the RAM holding 1 MiB. */
static void rt_find_ram_top(void)
{
    struct hvm_memmap_entry {
        uint64_t addr;
        uint64_t size;
        uint32_t type;
        uint32_t reserved;
    } __attribute__((packed));
    const struct hvm_memmap_entry *e;

    rt_ram_top = 0;
    if (rt_start_info.version < 1 || !rt_start_info.memmap_paddr ||
        rt_start_info.memmap_entries > 128)
        return;
    e = (const void *)rt_start_info.memmap_paddr;
    for (uint32_t i = 0; i < rt_start_info.memmap_entries; i++) {
        if (e[i].type == 1 && e[i].addr <= 0x100000 && e[i].addr + e[i].size > 0x100000)
            rt_ram_top = e[i].addr + e[i].size;
    }
}

void rt_main(void)
{
    const struct hvm_start_info *si = (const void *)(uint64_t)rt_start_info_pa;
    uint64_t t_long = rdtsc(), t_acpi, t_ready;
    int ret;

    idt_init();
    if (si && si->magic == HVM_START_MAGIC)
        rt_start_info = *si;
    else
        printf("WARN: no hvm_start_info (ebx 0x%x)\n", rt_start_info_pa);
    rt_find_ram_top();
    cmdline_init();
    ret = acpi_init();
    t_acpi = rdtsc();
    if (ret < 0)
        printf("WARN: ACPI not found (%d): power-off will not work\n", ret);
    serial_puts("READY\n");
    t_ready = rdtsc();
    /* Timings after READY: calibrating the TSC takes a while and must not delay it. */
    printf("guest %s cmdline \"%s\"\n", guest_name, cmdline_raw());
    printf("boot: long mode %lu us, ACPI parsed %lu us, READY %lu us after the first "
           "instruction (tsc %lu kHz)\n",
           (t_long - rt_entry_tsc) * 1000 / tsc_khz(), (t_acpi - rt_entry_tsc) * 1000 / tsc_khz(),
           (t_ready - rt_entry_tsc) * 1000 / tsc_khz(), tsc_khz());
    ret = guest_main();
    if (ret == 0)
        printf("PASS %s\n", guest_name);
    else
        printf("FAIL %s: error %d\n", guest_name, ret);
    acpi_poweroff();
}
