/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ACPI: find the RSDP (hvm_start_info, else the BIOS area), walk the
 * XSDT/RSDT, read the FADT, MADT and MCFG, and power off through the FADT's
 * PM1a control block (or the sleep control register on hardware-reduced
 * platforms) with SLP_TYP taken from the DSDT's \_S5 package.
 */
#include "rt.h"
#include "io.h"

#define FADT_DSDT        40
#define FADT_PM1A_CNT    64
#define FADT_PM1B_CNT    68
#define FADT_PM_TMR      76
#define FADT_FLAGS       112
#define FADT_X_DSDT      140
#define FADT_X_PM1A_CNT  172
#define FADT_X_PM1B_CNT  184
#define FADT_X_PM_TMR    208
#define FADT_SLEEP_CTL   244
#define FADT_HW_REDUCED  (1u << 20)
#define ACPI_TABLE_MAX   (1u << 20)
#define ACPI_TABLES_MAX  64
#define SLP_EN           (1u << 13)
#define SLP_TYP_SHIFT    10
#define SLEEP_CTL_SLP_EN (1u << 5)
#define SLP_TYP_DEFAULT  5 /* qtvmm's \_S5; QEMU q35 uses 0, read from the DSDT */

struct acpi_gas {
    uint8_t space;
    uint8_t bit_width;
    uint8_t bit_offset;
    uint8_t access_size;
    uint64_t address;
} __attribute__((packed));

struct acpi_state {
    const struct acpi_sdt *tables[ACPI_TABLES_MAX];
    int n_tables;
    const struct acpi_sdt *fadt;
    const struct acpi_sdt *dsdt;
    int slp_typ_s5; /* -1: unknown */
};

static struct acpi_state acpi = {.slp_typ_s5 = -1};

/* Byte sum, eight bytes per step (tables are long and every instruction may be emulated). */
static uint8_t acpi_sum(const void *p, size_t len)
{
    const uint64_t m = 0x00ff00ff00ff00ffull;
    const uint8_t *b = p;
    uint64_t lanes = 0, total = 0;
    size_t i = 0, n = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t w;

        memcpy(&w, b + i, 8);
        /* Four 16-bit lanes, each gains at most 510 per step: flush before they overflow. */
        lanes += (w & m) + ((w >> 8) & m);
        if (++n == 64) {
            total += (lanes & 0xffff) + ((lanes >> 16) & 0xffff) + ((lanes >> 32) & 0xffff) +
                     (lanes >> 48);
            lanes = 0;
            n = 0;
        }
    }
    total += (lanes & 0xffff) + ((lanes >> 16) & 0xffff) + ((lanes >> 32) & 0xffff) + (lanes >> 48);
    for (; i < len; i++)
        total += b[i];
    return (uint8_t)total;
}

static const uint8_t *acpi_rsdp_scan(uint64_t start, uint64_t end)
{
    for (uint64_t a = start; a + 20 <= end; a += 16) {
        const uint8_t *p = (const uint8_t *)a;

        if (!memcmp(p, "RSD PTR ", 8) && acpi_sum(p, 20) == 0)
            return p;
    }
    return NULL;
}

static const struct acpi_sdt *acpi_table_at(uint64_t pa)
{
    const struct acpi_sdt *t = (const struct acpi_sdt *)pa;

    if (!pa || pa >= (1ull << 32))
        return NULL;
    if (t->length < sizeof(*t) || t->length > ACPI_TABLE_MAX) {
        printf("ACPI: table at 0x%lx: bad length %u\n", pa, t->length);
        return NULL;
    }
    if (acpi_sum(t, t->length) != 0) {
        printf("ACPI: table %c%c%c%c at 0x%lx: bad checksum\n", t->sig[0], t->sig[1], t->sig[2],
               t->sig[3], pa);
        return NULL;
    }
    return t;
}

static uint32_t rd32(const void *base, size_t off)
{
    uint32_t v;

    memcpy(&v, (const uint8_t *)base + off, sizeof(v));
    return v;
}

static uint64_t rd64(const void *base, size_t off)
{
    uint64_t v;

    memcpy(&v, (const uint8_t *)base + off, sizeof(v));
    return v;
}

static bool fadt_has(size_t off, size_t len)
{
    return acpi.fadt && acpi.fadt->length >= off + len;
}

/* AML: \_S5 is Name(_S5, Package(){ SLP_TYPa, SLP_TYPb, ...}). */
static int acpi_parse_s5(const struct acpi_sdt *t)
{
    const uint8_t *p = (const uint8_t *)t;
    uint32_t len = t->length;

    for (uint32_t i = sizeof(*t); i + 8 < len; i++) {
        uint32_t j;
        uint8_t lead;

        if (p[i] != '_' || memcmp(p + i, "_S5_", 4))
            continue;
        /* NameOp, optionally followed by the root prefix, must precede the name. */
        if (!(p[i - 1] == 0x08 || (p[i - 1] == '\\' && p[i - 2] == 0x08)))
            continue;
        j = i + 4;
        if (p[j++] != 0x12) /* PackageOp */
            continue;
        lead = p[j];
        j += 1 + (lead >> 6); /* PkgLength: 1 to 4 bytes */
        j++;                  /* NumElements */
        if (j + 2 > len)
            return -EINVAL;
        switch (p[j]) {
        case 0x00: /* ZeroOp */
            return 0;
        case 0x01: /* OneOp */
            return 1;
        case 0x0a: /* BytePrefix */
            return p[j + 1] & 7;
        default:
            if (p[j] < 8) /* bare byte */
                return p[j];
            return -EINVAL;
        }
    }
    return -ENOENT;
}

int acpi_init(void)
{
    const uint8_t *rsdp = NULL;
    const struct acpi_sdt *root = NULL;
    size_t entry_size;
    uint16_t ebda;

    if (rt_start_info.rsdp_paddr) {
        rsdp = (const uint8_t *)rt_start_info.rsdp_paddr;
        if (memcmp(rsdp, "RSD PTR ", 8) || acpi_sum(rsdp, 20)) {
            printf("ACPI: RSDP from start_info at 0x%lx is invalid, scanning\n",
                   rt_start_info.rsdp_paddr);
            rsdp = NULL;
        }
    }
    if (!rsdp) {
        ebda = *(const volatile uint16_t *)0x40e;
        if (ebda)
            rsdp = acpi_rsdp_scan((uint64_t)ebda << 4, ((uint64_t)ebda << 4) + 1024);
    }
    if (!rsdp)
        rsdp = acpi_rsdp_scan(0xe0000, 0x100000);
    if (!rsdp)
        return -ENOENT;

    if (rsdp[15] >= 2 && rd32(rsdp, 20) >= 36 && acpi_sum(rsdp, rd32(rsdp, 20)) == 0)
        root = acpi_table_at(rd64(rsdp, 24));
    if (root && !memcmp(root->sig, "XSDT", 4)) {
        entry_size = 8;
    } else {
        root = acpi_table_at(rd32(rsdp, 16));
        if (!root || memcmp(root->sig, "RSDT", 4))
            return -ENOENT;
        entry_size = 4;
    }

    for (size_t off = sizeof(*root); off + entry_size <= root->length; off += entry_size) {
        uint64_t pa = entry_size == 8 ? rd64(root, off) : rd32(root, off);
        const struct acpi_sdt *t = acpi_table_at(pa);

        if (!t || acpi.n_tables == ACPI_TABLES_MAX)
            continue;
        acpi.tables[acpi.n_tables++] = t;
        if (!memcmp(t->sig, "FACP", 4))
            acpi.fadt = t;
    }
    if (!acpi.fadt)
        return -ENOENT;
    if (fadt_has(FADT_X_DSDT, 8) && rd64(acpi.fadt, FADT_X_DSDT))
        acpi.dsdt = acpi_table_at(rd64(acpi.fadt, FADT_X_DSDT));
    else if (fadt_has(FADT_DSDT, 4))
        acpi.dsdt = acpi_table_at(rd32(acpi.fadt, FADT_DSDT));
    if (acpi.dsdt)
        acpi.slp_typ_s5 = acpi_parse_s5(acpi.dsdt);
    for (int i = 0; i < acpi.n_tables && acpi.slp_typ_s5 < 0; i++) {
        if (!memcmp(acpi.tables[i]->sig, "SSDT", 4))
            acpi.slp_typ_s5 = acpi_parse_s5(acpi.tables[i]);
    }
    return 0;
}

const struct acpi_sdt *acpi_find_table(const char *sig)
{
    if (!memcmp(sig, "DSDT", 4))
        return acpi.dsdt;
    for (int i = 0; i < acpi.n_tables; i++) {
        if (!memcmp(acpi.tables[i]->sig, sig, 4))
            return acpi.tables[i];
    }
    return NULL;
}

int acpi_madt_cpus(uint32_t *apic_ids, int max, uint64_t *lapic_base)
{
    const struct acpi_sdt *madt = acpi_find_table("APIC");
    const uint8_t *p = (const uint8_t *)madt;
    int n = 0;

    if (!madt)
        return -ENOENT;
    if (madt->length < 44)
        return -EINVAL;
    *lapic_base = rd32(madt, 36);
    for (uint32_t off = 44; off + 2 <= madt->length;) {
        uint8_t type = p[off], len = p[off + 1];

        if (len < 2 || off + len > madt->length) {
            printf("ACPI: MADT entry at offset %u: bad length %u\n", off, len);
            return -EINVAL;
        }
        if (type == 0 && len >= 8 && (rd32(p, off + 4) & 1)) {
            if (n < max)
                apic_ids[n] = p[off + 3];
            n++;
        } else if (type == 9 && len >= 16 && (rd32(p, off + 8) & 1)) {
            if (n < max)
                apic_ids[n] = rd32(p, off + 4);
            n++;
        } else if (type == 5 && len >= 12) {
            *lapic_base = rd64(p, off + 4);
        }
        off += len;
    }
    return n;
}

int acpi_mcfg_ecam(uint64_t *base, uint8_t *bus_start, uint8_t *bus_end)
{
    const struct acpi_sdt *mcfg = acpi_find_table("MCFG");
    const uint8_t *p = (const uint8_t *)mcfg;

    if (!mcfg)
        return -ENOENT;
    for (uint32_t off = 44; off + 16 <= mcfg->length; off += 16) {
        uint16_t seg;

        memcpy(&seg, p + off + 8, sizeof(seg));
        if (seg != 0)
            continue;
        *base = rd64(p, off);
        *bus_start = p[off + 10];
        *bus_end = p[off + 11];
        return 0;
    }
    return -ENOENT;
}

uint16_t acpi_pm_timer_port(void)
{
    struct acpi_gas gas;

    if (fadt_has(FADT_X_PM_TMR, sizeof(gas))) {
        memcpy(&gas, (const uint8_t *)acpi.fadt + FADT_X_PM_TMR, sizeof(gas));
        if (gas.space == 1 && gas.address && gas.address < 0x10000)
            return (uint16_t)gas.address;
    }
    if (fadt_has(FADT_PM_TMR, 4) && rd32(acpi.fadt, FADT_PM_TMR) < 0x10000)
        return (uint16_t)rd32(acpi.fadt, FADT_PM_TMR);
    return 0;
}

static void acpi_gas_write8(const struct acpi_gas *g, uint8_t v)
{
    if (g->space == 0)
        mmio_write8(g->address, v);
    else if (g->space == 1 && g->address < 0x10000)
        outb((uint16_t)g->address, v);
}

static uint16_t acpi_pm1_cnt_port(size_t x_off, size_t off)
{
    struct acpi_gas gas;

    if (fadt_has(x_off, sizeof(gas))) {
        memcpy(&gas, (const uint8_t *)acpi.fadt + x_off, sizeof(gas));
        if (gas.space == 1 && gas.address && gas.address < 0x10000)
            return (uint16_t)gas.address;
    }
    if (fadt_has(off, 4) && rd32(acpi.fadt, off) < 0x10000)
        return (uint16_t)rd32(acpi.fadt, off);
    return 0;
}

void acpi_poweroff(void)
{
    int typ = acpi.slp_typ_s5 >= 0 ? acpi.slp_typ_s5 : SLP_TYP_DEFAULT;
    uint16_t port;

    if (acpi.fadt && fadt_has(FADT_FLAGS, 4) && (rd32(acpi.fadt, FADT_FLAGS) & FADT_HW_REDUCED)) {
        struct acpi_gas gas;

        if (fadt_has(FADT_SLEEP_CTL, sizeof(gas))) {
            memcpy(&gas, (const uint8_t *)acpi.fadt + FADT_SLEEP_CTL, sizeof(gas));
            printf("poweroff: hardware-reduced, sleep control register %s 0x%lx, SLP_TYP %d\n",
                   gas.space == 0 ? "mmio" : "port", gas.address, typ);
            serial_puts("POWEROFF\n");
            if (gas.address)
                acpi_gas_write8(&gas, (uint8_t)(((typ & 7) << 2) | SLEEP_CTL_SLP_EN));
        }
    } else if (acpi.fadt) {
        port = acpi_pm1_cnt_port(FADT_X_PM1A_CNT, FADT_PM1A_CNT);
        printf("poweroff: PM1a_CNT port 0x%x, SLP_TYP %d%s\n", port, typ,
               acpi.slp_typ_s5 >= 0 ? " (from \\_S5)" : " (default)");
        serial_puts("POWEROFF\n");
        if (port) {
            uint16_t v = inw(port) & ~(7u << SLP_TYP_SHIFT);

            outw(port, (uint16_t)(v | ((unsigned)typ << SLP_TYP_SHIFT) | SLP_EN));
        }
        port = acpi_pm1_cnt_port(FADT_X_PM1B_CNT, FADT_PM1B_CNT);
        if (port) {
            uint16_t v = inw(port) & ~(7u << SLP_TYP_SHIFT);

            outw(port, (uint16_t)(v | ((unsigned)typ << SLP_TYP_SHIFT) | SLP_EN));
        }
    }
    if (!acpi.fadt)
        serial_puts("POWEROFF\n");
    for (volatile int i = 0; i < 100000; i++)
        cpu_relax();
    serial_puts("POWEROFF FAILED: the VM is still running, halting\n");
    for (;;)
        __asm__ volatile("cli; hlt");
}
