/* SPDX-License-Identifier: Apache-2.0 */
/* Guest physical address map and fixed resources of a qtvmm VM. */
#ifndef QT_VMM_LAYOUT_H
#define QT_VMM_LAYOUT_H

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)

/* Low memory: real-mode area, then boot structures written by the loader. */
#define LAYOUT_GDT_ADDR    0x500ull
#define LAYOUT_BOOT_PARAMS 0x7000ull /* struct boot_params (zero page) / PVH start_info */
#define LAYOUT_PVH_MODLIST 0x6000ull /* hvm_modlist_entry[] for PVH */
#define LAYOUT_PVH_MEMMAP  0x6400ull /* hvm_memmap_table_entry[] for PVH */
#define LAYOUT_PML4        0x9000ull /* identity page tables: PML4, PDPT, PDs */
#define LAYOUT_PDPT        0xa000ull
#define LAYOUT_PD          0xb000ull /* 4 pages: identity map of the first 4 GiB */
#define LAYOUT_CMDLINE     0x20000ull
#define LAYOUT_CMDLINE_MAX 0x10000ull
#define LAYOUT_EBDA_START  0x9fc00ull /* e820 hole 0x9fc00 - 0x100000 */
#define LAYOUT_ACPI_RSDP   0xe0000ull /* RSDP in the BIOS read-only area */
#define LAYOUT_ACPI_TABLES 0xe1000ull /* XSDT, FADT, MADT, DSDT, MCFG ... up to 0xfffff */
#define LAYOUT_MPTABLE     0x9fc00ull
#define LAYOUT_HIGH_RAM    0x100000ull /* kernel loaded at 1 MiB */

/* 32-bit hole below 4 GiB: RAM stops at LAYOUT_MMIO32_START. */
#define LAYOUT_MMIO32_START   0xc0000000ull /* PCI 32-bit BARs: 0xc0000000 - 0xdfffffff */
#define LAYOUT_MMIO32_SIZE    0x20000000ull
#define LAYOUT_PCI_ECAM       0xe0000000ull /* MCFG, bus 0 only: 1 MiB */
#define LAYOUT_PCI_ECAM_SIZE  0x100000ull
#define LAYOUT_IOAPIC         0xfec00000ull
#define LAYOUT_LAPIC          0xfee00000ull
#define LAYOUT_RAM_HIGH_START 0x100000000ull /* RAM above 4 GiB continues here */
/* PCI 64-bit BARs start above the end of RAM, aligned to 1 GiB by the allocator.
 * The DSDT's PCI0 _CRS declares [align_up(max(RAM top, 4 GiB), 1 GiB), +LAYOUT_MMIO64_SIZE). */
#define LAYOUT_MMIO64_ALIGN 0x40000000ull
#define LAYOUT_MMIO64_SIZE  0x1000000000ull /* 64 GiB */

/* Legacy I/O ports. */
#define PORT_COM1          0x3f8
#define PORT_I8042_DATA    0x60
#define PORT_I8042_CMD     0x64
#define PORT_RTC_INDEX     0x70
#define PORT_RTC_DATA      0x71
#define PORT_PCI_ADDR      0xcf8
#define PORT_PCI_DATA      0xcfc
#define PORT_ACPI_PM1A_EVT 0x600 /* PM1a_EVT_BLK, 4 bytes (status, enable) */
#define PORT_ACPI_PM1A_CNT 0x604 /* PM1a_CNT_BLK, 2 bytes (SLP_TYP/SLP_EN) */
#define PORT_ACPI_PM_TMR   0x608 /* PM timer, 4 bytes */
#define PORT_DEBUG_EXIT    0x501 /* test guests: write a byte = exit code (debug builds of guests) */

/* Legacy interrupts (GSIs on the in-kernel IOAPIC). */
#define IRQ_COM1 4
#define IRQ_RTC  8
#define IRQ_SCI  9
#define IRQ_KBD  1

#endif
