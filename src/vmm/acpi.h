/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ACPI tables qtvmm builds at start-up: RSDP, XSDT, FADT (+FACS), MADT, DSDT
 * (AML generated in C), MCFG. Free of KVM so unit tests parse them back.
 */
#ifndef QT_VMM_ACPI_H
#define QT_VMM_ACPI_H

#include <stdint.h>

#include "vmm/mem.h"

/* SLP_TYP the DSDT's \_S5 package announces and the PM device acts on. */
#define ACPI_S5_SLP_TYP 5

#define ACPI_OEM_ID       "QINGTN"
#define ACPI_OEM_TABLE_ID "QTVMM   "

/* Standard table header. */
struct acpi_table_header {
    char signature[4];
    uint32_t length;
    uint8_t revision;
    uint8_t checksum;
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision;
    char creator_id[4];
    uint32_t creator_revision;
} __attribute__((packed));

struct acpi_rsdp {
    char signature[8];
    uint8_t checksum;
    char oem_id[6];
    uint8_t revision;
    uint32_t rsdt_address;
    uint32_t length;
    uint64_t xsdt_address;
    uint8_t extended_checksum;
    uint8_t reserved[3];
} __attribute__((packed));

struct acpi_gas {
    uint8_t space_id;
    uint8_t bit_width;
    uint8_t bit_offset;
    uint8_t access_size;
    uint64_t address;
} __attribute__((packed));

/* FADT, ACPI 6.x layout (276 bytes). */
struct acpi_fadt {
    struct acpi_table_header hdr;
    uint32_t firmware_ctrl;
    uint32_t dsdt;
    uint8_t reserved0;
    uint8_t preferred_pm_profile;
    uint16_t sci_int;
    uint32_t smi_cmd;
    uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
    uint32_t pm1a_evt_blk, pm1b_evt_blk, pm1a_cnt_blk, pm1b_cnt_blk, pm2_cnt_blk, pm_tmr_blk;
    uint32_t gpe0_blk, gpe1_blk;
    uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len, gpe0_blk_len, gpe1_blk_len;
    uint8_t gpe1_base, cst_cnt;
    uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
    uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
    uint16_t iapc_boot_arch;
    uint8_t reserved1;
    uint32_t flags;
    struct acpi_gas reset_reg;
    uint8_t reset_value;
    uint16_t arm_boot_arch;
    uint8_t minor_version;
    uint64_t x_firmware_ctrl;
    uint64_t x_dsdt;
    struct acpi_gas x_pm1a_evt_blk, x_pm1b_evt_blk, x_pm1a_cnt_blk, x_pm1b_cnt_blk;
    struct acpi_gas x_pm2_cnt_blk, x_pm_tmr_blk, x_gpe0_blk, x_gpe1_blk;
    struct acpi_gas sleep_control_reg, sleep_status_reg;
    uint64_t hypervisor_vendor_id;
} __attribute__((packed));

#define ACPI_FADT_WBINVD        (1u << 0)
#define ACPI_FADT_C1_SUPPORTED  (1u << 2)
#define ACPI_FADT_SLEEP_BUTTON  (1u << 5) /* set: no fixed-feature sleep button */
#define ACPI_FADT_RESET_REG_SUP (1u << 10)
#define ACPI_BOOT_ARCH_LEGACY   (1u << 0)
#define ACPI_BOOT_ARCH_8042     (1u << 1)

#define ACPI_MADT_LAPIC     0
#define ACPI_MADT_IOAPIC    1
#define ACPI_MADT_ISO       2
#define ACPI_MADT_LAPIC_NMI 4

/* Byte sum of a table; 0 when the checksum is right. */
uint8_t acpi_checksum(const void *p, uint64_t len);

#endif
