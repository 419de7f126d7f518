/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ACPI tables built at start-up into the BIOS area (RSDP at LAYOUT_ACPI_RSDP,
 * the rest from LAYOUT_ACPI_TABLES). The DSDT's AML is generated here with a
 * small byte-buffer encoder following the ACPI 6.x AML grammar.
 */
#include "vmm/acpi.h"
#include "vmm/vmm.h"
#include "vmm/layout.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ACPI_TABLES_END 0x100000ull

uint8_t acpi_checksum(const void *p, uint64_t len)
{
    const uint8_t *b = p;
    uint8_t sum = 0;

    for (uint64_t i = 0; i < len; i++)
        sum = (uint8_t)(sum + b[i]);
    return sum;
}

static void acpi_fill_header(struct acpi_table_header *h, const char *sig, uint32_t len,
                             uint8_t rev)
{
    memcpy(h->signature, sig, 4);
    h->length = len;
    h->revision = rev;
    h->checksum = 0;
    memcpy(h->oem_id, ACPI_OEM_ID, 6);
    memcpy(h->oem_table_id, ACPI_OEM_TABLE_ID, 8);
    h->oem_revision = 1;
    memcpy(h->creator_id, "QTVM", 4);
    h->creator_revision = 1;
}

static void acpi_finish(void *table)
{
    struct acpi_table_header *h = table;

    h->checksum = 0;
    h->checksum = (uint8_t)(0 - acpi_checksum(table, h->length));
}

/* ---- AML encoder ------------------------------------------------------ */

struct aml {
    uint8_t *b;
    size_t len, cap;
    int err;
};

#define AML_ZERO       0x00
#define AML_ONE        0x01
#define AML_NAME       0x08
#define AML_BYTE       0x0a
#define AML_WORD       0x0b
#define AML_DWORD      0x0c
#define AML_QWORD      0x0e
#define AML_SCOPE      0x10
#define AML_BUFFER     0x11
#define AML_PACKAGE    0x12
#define AML_EXT        0x5b
#define AML_EXT_DEVICE 0x82

static void aml_bytes(struct aml *a, const void *p, size_t n)
{
    if (a->err || n == 0)
        return;
    if (a->len + n > a->cap) {
        size_t cap = (a->cap ? a->cap * 2 : 256) + n;
        uint8_t *nb = realloc(a->b, cap);

        if (!nb) {
            a->err = -ENOMEM;
            return;
        }
        a->b = nb;
        a->cap = cap;
    }
    memcpy(a->b + a->len, p, n);
    a->len += n;
}

static void aml_u8(struct aml *a, uint8_t v)
{
    aml_bytes(a, &v, 1);
}

static void aml_le(struct aml *a, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        aml_u8(a, (uint8_t)(v >> (8 * i)));
}

/* Smallest integer encoding. */
static void aml_int(struct aml *a, uint64_t v)
{
    if (v == 0) {
        aml_u8(a, AML_ZERO);
    } else if (v == 1) {
        aml_u8(a, AML_ONE);
    } else if (v <= 0xff) {
        aml_u8(a, AML_BYTE);
        aml_le(a, v, 1);
    } else if (v <= 0xffff) {
        aml_u8(a, AML_WORD);
        aml_le(a, v, 2);
    } else if (v <= 0xffffffff) {
        aml_u8(a, AML_DWORD);
        aml_le(a, v, 4);
    } else {
        aml_u8(a, AML_QWORD);
        aml_le(a, v, 8);
    }
}

/* A NameString: optional '\' root prefix, then one 4-character segment. */
static void aml_name(struct aml *a, const char *name)
{
    if (name[0] == '\\') {
        aml_u8(a, '\\');
        name++;
    }
    aml_bytes(a, name, 4);
}

/* PkgLength counts itself: 1 byte below 64, else 2-4 bytes. */
static void aml_pkg_wrap(struct aml *a, uint8_t op_ext, uint8_t op, const struct aml *body,
                         const uint8_t *prefix, size_t prefix_len)
{
    size_t payload = prefix_len + body->len, total;
    int extra;

    if (body->err) {
        a->err = body->err;
        return;
    }
    if (op_ext)
        aml_u8(a, op_ext);
    aml_u8(a, op);
    if (payload + 1 < 64) {
        aml_u8(a, (uint8_t)(payload + 1));
    } else {
        extra = payload + 2 < (1u << 12) ? 1 : payload + 3 < (1u << 20) ? 2 : 3;
        total = payload + 1 + (size_t)extra;
        aml_u8(a, (uint8_t)((extra << 6) | (total & 0xf)));
        for (int i = 0; i < extra; i++)
            aml_u8(a, (uint8_t)(total >> (4 + 8 * i)));
    }
    aml_bytes(a, prefix, prefix_len);
    aml_bytes(a, body->b, body->len);
}

/* EisaId("PNP0A08") as the compressed, byte-swapped 32-bit value. */
static uint32_t aml_eisa_id(const char *id)
{
    uint32_t v = (uint32_t)((id[0] - '@') & 0x1f) << 26 | (uint32_t)((id[1] - '@') & 0x1f) << 21 |
                 (uint32_t)((id[2] - '@') & 0x1f) << 16;

    for (int i = 3; i < 7; i++) {
        char c = id[i];
        uint32_t h = (uint32_t)(c >= 'A' ? c - 'A' + 10 : c - '0');

        v |= h << (4 * (6 - i));
    }
    return __builtin_bswap32(v);
}

static void aml_name_int(struct aml *a, const char *name, uint64_t v)
{
    aml_u8(a, AML_NAME);
    aml_name(a, name);
    aml_int(a, v);
}

static void aml_name_eisa(struct aml *a, const char *name, const char *id)
{
    aml_u8(a, AML_NAME);
    aml_name(a, name);
    aml_u8(a, AML_DWORD);
    aml_le(a, aml_eisa_id(id), 4);
}

/* Name(name, Buffer(){ resource template + end tag }). */
static void aml_name_crs(struct aml *a, const char *name, struct aml *res)
{
    struct aml body = {0}, size = {0};

    aml_u8(res, 0x79); /* end tag, checksum 0 = not checked */
    aml_u8(res, 0);
    aml_int(&size, res->len);
    aml_bytes(&body, size.b, size.len);
    aml_bytes(&body, res->b, res->len);
    if (res->err)
        body.err = res->err;
    aml_u8(a, AML_NAME);
    aml_name(a, name);
    aml_pkg_wrap(a, 0, AML_BUFFER, &body, NULL, 0);
    free(body.b);
    free(size.b);
}

/* Small IO port descriptor (decode16). */
static void res_io(struct aml *r, uint16_t base, uint8_t len)
{
    aml_u8(r, 0x47);
    aml_u8(r, 1);
    aml_le(r, base, 2);
    aml_le(r, base, 2);
    aml_u8(r, 1);
    aml_u8(r, len);
}

static void res_irq(struct aml *r, unsigned irq)
{
    aml_u8(r, 0x22);
    aml_le(r, 1u << irq, 2);
}

/* Word/DWord/QWord address space descriptors; producer, min/max fixed. */
#define RES_TYPE_MEM 0
#define RES_TYPE_IO  1
#define RES_TYPE_BUS 2

static void res_addr(struct aml *r, int width, uint8_t type, uint8_t tflags, uint64_t min,
                     uint64_t max)
{
    static const uint8_t tags[9] = {[2] = 0x88, [4] = 0x87, [8] = 0x8a};

    aml_u8(r, tags[width]);
    aml_le(r, 3 + 5u * (unsigned)width, 2);
    aml_u8(r, type);
    aml_u8(r, 0x0c); /* MaxFixed, MinFixed, PosDecode, ResourceProducer */
    aml_u8(r, tflags);
    aml_le(r, 0, width);             /* granularity */
    aml_le(r, min, width);           /* min */
    aml_le(r, max, width);           /* max */
    aml_le(r, 0, width);             /* translation */
    aml_le(r, max - min + 1, width); /* length */
}

static uint64_t acpi_mmio64_base(const struct guest_mem *gm)
{
    uint64_t top = guest_mem_top(gm);

    if (top < LAYOUT_RAM_HIGH_START)
        top = LAYOUT_RAM_HIGH_START;
    return (top + LAYOUT_MMIO64_ALIGN - 1) & ~(LAYOUT_MMIO64_ALIGN - 1);
}

static int acpi_build_dsdt(const struct guest_mem *gm, struct aml *out)
{
    struct aml pkg = {0}, sb = {0}, pci = {0}, com = {0}, res = {0};
    uint64_t m64 = acpi_mmio64_base(gm);
    uint8_t name[5];
    int ret;

    /* Name(\_S5, Package(4){5, 5, 0, 0}) */
    aml_u8(&pkg, 4);
    aml_int(&pkg, ACPI_S5_SLP_TYP);
    aml_int(&pkg, ACPI_S5_SLP_TYP);
    aml_int(&pkg, 0);
    aml_int(&pkg, 0);
    aml_u8(out, AML_NAME);
    aml_name(out, "\\_S5_");
    aml_pkg_wrap(out, 0, AML_PACKAGE, &pkg, NULL, 0);

    /* Device(PCI0): the host bridge with its windows. */
    aml_name_eisa(&pci, "_HID", "PNP0A08");
    aml_name_eisa(&pci, "_CID", "PNP0A03");
    aml_name_int(&pci, "_ADR", 0);
    aml_name_int(&pci, "_SEG", 0);
    aml_name_int(&pci, "_UID", 0);
    aml_name_int(&pci, "_BBN", 0);
    res_addr(&res, 2, RES_TYPE_BUS, 0, 0, 0);
    res_io(&res, PORT_PCI_ADDR, 8);
    res_addr(&res, 2, RES_TYPE_IO, 3, 0x0000, PORT_PCI_ADDR - 1);
    res_addr(&res, 2, RES_TYPE_IO, 3, 0x0d00, 0xffff);
    res_addr(&res, 4, RES_TYPE_MEM, 1, LAYOUT_MMIO32_START,
             LAYOUT_MMIO32_START + LAYOUT_MMIO32_SIZE - 1);
    res_addr(&res, 8, RES_TYPE_MEM, 1, m64, m64 + LAYOUT_MMIO64_SIZE - 1);
    aml_name_crs(&pci, "_CRS", &res);
    memcpy(name, "PCI0", 4);
    aml_pkg_wrap(&sb, AML_EXT, AML_EXT_DEVICE, &pci, name, 4);

    /* Device(COM1) */
    free(res.b);
    res = (struct aml){0};
    aml_name_eisa(&com, "_HID", "PNP0501");
    aml_name_int(&com, "_UID", 1);
    res_io(&res, PORT_COM1, 8);
    res_irq(&res, IRQ_COM1);
    aml_name_crs(&com, "_CRS", &res);
    memcpy(name, "COM1", 4);
    aml_pkg_wrap(&sb, AML_EXT, AML_EXT_DEVICE, &com, name, 4);

    /* Scope(\_SB) { ... } */
    name[0] = '\\';
    memcpy(name + 1, "_SB_", 4);
    aml_pkg_wrap(out, 0, AML_SCOPE, &sb, name, 5);

    ret = out->err ? out->err : pkg.err ? pkg.err : pci.err ? pci.err : com.err ? com.err : res.err;
    free(pkg.b);
    free(sb.b);
    free(pci.b);
    free(com.b);
    free(res.b);
    return ret;
}

/* ---- tables ----------------------------------------------------------- */

struct acpi_builder {
    const struct guest_mem *gm;
    uint64_t next;
};

/* Reserve len bytes in the table area, aligned; returns the guest address or 0. */
static uint64_t acpi_alloc(struct acpi_builder *b, uint64_t len, uint64_t align, void **hva)
{
    uint64_t at = (b->next + align - 1) & ~(align - 1);

    if (at + len > ACPI_TABLES_END)
        return 0;
    *hva = guest_mem_ptr(b->gm, at, len);
    if (!*hva)
        return 0;
    memset(*hva, 0, len);
    b->next = at + len;
    return at;
}

static struct acpi_gas gas_io(uint16_t port, uint8_t bits, uint8_t access)
{
    return (struct acpi_gas){
        .space_id = 1, .bit_width = bits, .access_size = access, .address = port};
}

static uint64_t acpi_build_fadt(struct acpi_builder *b, uint64_t dsdt, uint64_t facs)
{
    struct acpi_fadt *f;
    uint64_t at = acpi_alloc(b, sizeof(*f), 8, (void **)&f);

    if (!at)
        return 0;
    acpi_fill_header(&f->hdr, "FACP", sizeof(*f), 6);
    f->firmware_ctrl = (uint32_t)facs;
    f->dsdt = (uint32_t)dsdt;
    f->x_firmware_ctrl = 0; /* one of the two only (ACPI 6: the 32-bit one wins) */
    f->x_dsdt = dsdt;
    f->preferred_pm_profile = 0; /* unspecified */
    f->sci_int = IRQ_SCI;
    f->smi_cmd = 0; /* no SMM: the hardware is always in ACPI mode */
    f->pm1a_evt_blk = PORT_ACPI_PM1A_EVT;
    f->pm1a_cnt_blk = PORT_ACPI_PM1A_CNT;
    f->pm_tmr_blk = PORT_ACPI_PM_TMR;
    f->pm1_evt_len = 4;
    f->pm1_cnt_len = 2;
    f->pm_tmr_len = 4;
    f->p_lvl2_lat = 101;  /* > 100: C2 not supported */
    f->p_lvl3_lat = 1001; /* > 1000: C3 not supported */
    f->century = 0x32;
    f->iapc_boot_arch = ACPI_BOOT_ARCH_LEGACY | ACPI_BOOT_ARCH_8042;
    /* Power button is a fixed feature (PWR_BUTTON flag clear); no sleep button. */
    f->flags = ACPI_FADT_WBINVD | ACPI_FADT_C1_SUPPORTED | ACPI_FADT_SLEEP_BUTTON |
               ACPI_FADT_RESET_REG_SUP;
    f->reset_reg = gas_io(PORT_I8042_CMD, 8, 1); /* i8042 pulse reset line */
    f->reset_value = 0xfe;
    f->minor_version = 0;
    f->x_pm1a_evt_blk = gas_io(PORT_ACPI_PM1A_EVT, 32, 2);
    f->x_pm1a_cnt_blk = gas_io(PORT_ACPI_PM1A_CNT, 16, 2);
    f->x_pm_tmr_blk = gas_io(PORT_ACPI_PM_TMR, 32, 3);
    memcpy(&f->hypervisor_vendor_id, "QTVMM\0\0\0", 8);
    acpi_finish(f);
    return at;
}

static uint64_t acpi_build_madt(struct acpi_builder *b, int n_vcpus)
{
    uint64_t len =
        sizeof(struct acpi_table_header) + 8 + 8ull * (uint64_t)n_vcpus + 12 + 10 * 2 + 6;
    uint8_t *t, *p;
    uint64_t at = acpi_alloc(b, len, 8, (void **)&t);
    uint32_t u32;
    uint16_t u16;

    if (!at)
        return 0;
    acpi_fill_header((struct acpi_table_header *)t, "APIC", (uint32_t)len, 4);
    p = t + sizeof(struct acpi_table_header);
    u32 = (uint32_t)LAYOUT_LAPIC;
    memcpy(p, &u32, 4);
    u32 = 1; /* PCAT_COMPAT: dual 8259s present */
    memcpy(p + 4, &u32, 4);
    p += 8;
    for (int i = 0; i < n_vcpus; i++, p += 8) {
        p[0] = ACPI_MADT_LAPIC;
        p[1] = 8;
        p[2] = (uint8_t)i; /* processor UID */
        p[3] = (uint8_t)i; /* APIC ID */
        u32 = 1;           /* enabled */
        memcpy(p + 4, &u32, 4);
    }
    p[0] = ACPI_MADT_IOAPIC;
    p[1] = 12;
    p[2] = 0; /* IOAPIC ID */
    u32 = (uint32_t)LAYOUT_IOAPIC;
    memcpy(p + 4, &u32, 4);
    u32 = 0; /* GSI base */
    memcpy(p + 8, &u32, 4);
    p += 12;
    /* IRQ0 (PIT) -> GSI 2, conforming. */
    p[0] = ACPI_MADT_ISO;
    p[1] = 10;
    p[2] = 0;
    p[3] = 0;
    u32 = 2;
    memcpy(p + 4, &u32, 4);
    u16 = 0;
    memcpy(p + 8, &u16, 2);
    p += 10;
    /* SCI: level triggered, active high. */
    p[0] = ACPI_MADT_ISO;
    p[1] = 10;
    p[2] = 0;
    p[3] = IRQ_SCI;
    u32 = IRQ_SCI;
    memcpy(p + 4, &u32, 4);
    u16 = 0x1 | (0x3 << 2);
    memcpy(p + 8, &u16, 2);
    p += 10;
    /* LINT1 of every processor is the NMI input. */
    p[0] = ACPI_MADT_LAPIC_NMI;
    p[1] = 6;
    p[2] = 0xff;
    u16 = 0;
    memcpy(p + 3, &u16, 2);
    p[5] = 1;
    acpi_finish(t);
    return at;
}

static uint64_t acpi_build_mcfg(struct acpi_builder *b)
{
    uint64_t len = sizeof(struct acpi_table_header) + 8 + 16;
    uint8_t *t, *p;
    uint64_t at = acpi_alloc(b, len, 8, (void **)&t), base = LAYOUT_PCI_ECAM;

    if (!at)
        return 0;
    acpi_fill_header((struct acpi_table_header *)t, "MCFG", (uint32_t)len, 1);
    p = t + sizeof(struct acpi_table_header) + 8;
    memcpy(p, &base, 8); /* segment 0, buses 0..0 */
    p[10] = 0;
    p[11] = 0;
    acpi_finish(t);
    return at;
}

int acpi_build_tables(const struct guest_mem *gm, int n_vcpus, uint64_t *rsdp_out)
{
    struct acpi_builder b = {.gm = gm, .next = LAYOUT_ACPI_TABLES};
    struct aml dsdt_aml = {0};
    struct acpi_rsdp *rsdp;
    uint64_t dsdt, facs, fadt, madt, mcfg, xsdt, entries[3];
    uint8_t *t;
    int ret;

    if (n_vcpus < 1 || n_vcpus > 255)
        return -EINVAL;
    ret = acpi_build_dsdt(gm, &dsdt_aml);
    if (ret)
        goto out;
    ret = -ENOSPC;
    dsdt = acpi_alloc(&b, sizeof(struct acpi_table_header) + dsdt_aml.len, 8, (void **)&t);
    if (!dsdt)
        goto out;
    acpi_fill_header((struct acpi_table_header *)t, "DSDT",
                     (uint32_t)(sizeof(struct acpi_table_header) + dsdt_aml.len), 2);
    memcpy(t + sizeof(struct acpi_table_header), dsdt_aml.b, dsdt_aml.len);
    acpi_finish(t);
    facs = acpi_alloc(&b, 64, 64, (void **)&t);
    if (!facs)
        goto out;
    memcpy(t, "FACS", 4);
    t[4] = 64; /* length */
    t[32] = 2; /* version */
    fadt = acpi_build_fadt(&b, dsdt, facs);
    madt = acpi_build_madt(&b, n_vcpus);
    mcfg = acpi_build_mcfg(&b);
    if (!fadt || !madt || !mcfg)
        goto out;
    entries[0] = fadt;
    entries[1] = madt;
    entries[2] = mcfg;
    xsdt = acpi_alloc(&b, sizeof(struct acpi_table_header) + sizeof(entries), 8, (void **)&t);
    if (!xsdt)
        goto out;
    acpi_fill_header((struct acpi_table_header *)t, "XSDT",
                     (uint32_t)(sizeof(struct acpi_table_header) + sizeof(entries)), 1);
    memcpy(t + sizeof(struct acpi_table_header), entries, sizeof(entries));
    acpi_finish(t);

    rsdp = guest_mem_ptr(gm, LAYOUT_ACPI_RSDP, sizeof(*rsdp));
    if (!rsdp)
        goto out;
    memset(rsdp, 0, sizeof(*rsdp));
    memcpy(rsdp->signature, "RSD PTR ", 8);
    memcpy(rsdp->oem_id, ACPI_OEM_ID, 6);
    rsdp->revision = 2;
    rsdp->length = sizeof(*rsdp);
    rsdp->xsdt_address = xsdt;
    rsdp->checksum = (uint8_t)(0 - acpi_checksum(rsdp, 20));
    rsdp->extended_checksum = (uint8_t)(0 - acpi_checksum(rsdp, sizeof(*rsdp)));
    *rsdp_out = LAYOUT_ACPI_RSDP;
    ret = 0;
out:
    free(dsdt_aml.b);
    return ret;
}
