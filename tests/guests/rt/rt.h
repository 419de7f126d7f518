/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The test guests' runtime: start-up (PVH entry, long mode, IDT), serial
 * console, string helpers, command line, timer, ACPI, PCI and power-off.
 * Each guest provides guest_main(); the runtime prints "READY" first and
 * powers the machine off when guest_main returns.
 */
#ifndef QT_GUEST_RT_H
#define QT_GUEST_RT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a)  (sizeof(a) / sizeof((a)[0]))
#define ALIGN_UP(x, a) (((x) + (a)-1) & ~((uint64_t)(a)-1))

#define EINVAL    22
#define ENOENT    2
#define EIO       5
#define ENODEV    19
#define ETIMEDOUT 110
#define ENOSPC    28
#define EPROTO    71
#define ENOTSUP   95
#define EBUSY     16

/* Provided by each guest. Returns 0 on success; the runtime prints PASS/FAIL. */
int guest_main(void);
/* Name printed in PASS/FAIL lines, provided by each guest. */
extern const char guest_name[];

/* string.c */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

/* console.c: COM1 output */
void serial_putc(char c);
void serial_puts(const char *s);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "FAIL: <msg>" and powers off. */
void panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* cmdline.c: "key=value key2=value2" from the PVH command line */
const char *cmdline_get(const char *key, char *buf, size_t size);
uint64_t cmdline_get_u64(const char *key, uint64_t def);
const char *cmdline_raw(void);
void cmdline_init(void); /* copies the PVH command line out of low memory */

/* timer.c */
uint64_t tsc_khz(void);
uint64_t time_ns(void);
void udelay(uint64_t us);

/* acpi.c */
struct acpi_sdt {
    char sig[4];
    uint32_t length;
    uint8_t revision;
    uint8_t checksum;
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision;
    uint32_t creator_id;
    uint32_t creator_revision;
} __attribute__((packed));

int acpi_init(void);
/* The table with this signature (validated length and checksum), or NULL. */
const struct acpi_sdt *acpi_find_table(const char *sig);
/* Fills up to max APIC IDs of enabled processors from the MADT; returns the count or -errno. */
int acpi_madt_cpus(uint32_t *apic_ids, int max, uint64_t *lapic_base);
/* ECAM base of PCI segment 0 bus 0 from the MCFG; -ENOENT when there is none. */
int acpi_mcfg_ecam(uint64_t *base, uint8_t *bus_start, uint8_t *bus_end);
uint16_t acpi_pm_timer_port(void);
void acpi_poweroff(void) __attribute__((noreturn));

/* pci.c */
uint32_t pci_cf8_read32(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off);
void pci_cf8_write32(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off, uint32_t v);
uint32_t pci_read32(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off);
uint16_t pci_read16(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off);
uint8_t pci_read8(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off);
void pci_write32(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off, uint32_t v);
void pci_write16(uint8_t bus, uint8_t dev, uint8_t fn, uint16_t off, uint16_t v);

struct pci_dev {
    uint8_t bus, dev, fn;
    uint16_t vendor, device;
    uint32_t class_rev;
};
/* Enumerate bus 0 (all functions); returns the number found (at most max). */
int pci_scan_bus0(struct pci_dev *out, int max);
/* Address of memory BAR bar (assigning one from the guest's window if firmware left it 0). */
int pci_bar_address(const struct pci_dev *d, int bar, uint64_t *addr);
void pci_enable(const struct pci_dev *d);

/* start.S / trap.c */
struct hvm_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;
    uint32_t memmap_entries;
    uint32_t reserved;
} __attribute__((packed));

#define HVM_START_MAGIC 0x336ec578

extern struct hvm_start_info rt_start_info; /* copy made before anything else runs */
extern uint64_t rt_ram_top;                 /* end of the RAM region holding 1 MiB */
void idt_load(void);

/* smp support in start.S: real-mode trampoline copied below 1 MiB */
#define AP_TRAMPOLINE_BASE 0x8000
#define AP_STACK_SIZE      8192
#define AP_MAX             64
extern const char ap_tramp_start[], ap_tramp_end[];
/* Called on each AP in long mode with its own stack (smp.c). */
void ap_main(void);

/* smp.c */
uint32_t cpu_apic_id(void);
/*
 * Start every other enabled processor in the MADT, one at a time; each runs fn(index)
 * (index 0.. in start order) or halts when fn is NULL. Copies up to max_ids MADT APIC IDs
 * to madt_ids and the MADT CPU count to n_cpus. Returns the number of APs started or -errno.
 */
int smp_start_aps(void (*fn)(uint32_t index), uint32_t *madt_ids, int max_ids, int *n_cpus);
/* APIC ID the AP with this start index reported. */
uint32_t smp_reported_id(uint32_t index);

#endif
