/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PCI bus 0: host bridge, configuration space (ports 0xCF8/0xCFC and ECAM),
 * BAR sizing, allocation and reprogramming, capability lists and MSI-X.
 *
 * A device model embeds a struct pci_dev, fills it with pci_dev_init(),
 * pci_dev_add_bar(), pci_dev_add_cap() and pci_msix_init(), then plugs it with
 * pci_bus_add_dev(). BARs are registered with the VM (vm_io_register) only
 * while the guest has the matching decode bit set in the command register and
 * the BAR holds a real address; reprogramming moves them (vm_io_move).
 *
 * MSI-X vectors are delivered through one eventfd per vector. While a vector
 * is enabled and unmasked its eventfd is an irqfd on an MSI route holding the
 * table's address/data; while masked the irqfd is detached, so signals stay
 * pending in the eventfd (that is the PBA bit) and are injected when the
 * vector is unmasked. The same eventfds serve as vhost-user call fds.
 */
#ifndef QT_VMM_DEVICES_PCI_H
#define QT_VMM_DEVICES_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/vm.h"

#define PCI_MAX_SLOTS 32
#define PCI_CFG_SIZE  4096
#define PCI_NUM_BARS  6
#define PCI_MSIX_MAX  2048
#define PCI_NO_VECTOR 0xffff

/* Standard header offsets. */
#define PCI_VENDOR_ID       0x00
#define PCI_DEVICE_ID       0x02
#define PCI_COMMAND         0x04
#define PCI_STATUS          0x06
#define PCI_REVISION_ID     0x08
#define PCI_CLASS_PROG      0x09
#define PCI_HEADER_TYPE     0x0e
#define PCI_BAR0            0x10
#define PCI_SUBSYSTEM_VID   0x2c
#define PCI_SUBSYSTEM_ID    0x2e
#define PCI_ROM_ADDRESS     0x30
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE  0x3c
#define PCI_INTERRUPT_PIN   0x3d

#define PCI_COMMAND_IO           0x1
#define PCI_COMMAND_MEMORY       0x2
#define PCI_COMMAND_MASTER       0x4
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_STATUS_CAP_LIST      0x10

#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11

#define PCI_MSIX_ENTRY_SIZE      16
#define PCI_MSIX_FLAGS_MASKALL   0x4000
#define PCI_MSIX_FLAGS_ENABLE    0x8000
#define PCI_MSIX_ENTRY_CTRL_MASK 0x1

enum pci_bar_type { PCI_BAR_NONE = 0, PCI_BAR_MEM32, PCI_BAR_MEM64, PCI_BAR_IO };

struct pci_dev;
struct pci_bus;

struct pci_bar {
    enum pci_bar_type type;
    uint64_t size;   /* power of two; 0 = unused */
    uint64_t addr;   /* address programmed in the BAR registers */
    uint64_t mapped; /* address registered with the VM, when is_mapped */
    bool is_mapped;
    vm_io_fn fn;
    void *opaque;
};

struct pci_msix_vector {
    int fd; /* eventfd the device (or a vhost-user backend) signals */
    uint32_t gsi;
    bool has_route;
    bool irqfd; /* fd currently attached as an irqfd to gsi */
    uint64_t route_addr;
    uint32_t route_data;
};

struct pci_msix {
    uint16_t cap; /* config offset of the capability, 0 = none */
    uint16_t nvec;
    int bar;
    uint32_t pba_offset;
    uint8_t *table; /* nvec * 16 bytes, little endian */
    struct pci_msix_vector *vec;
};

struct pci_dev_ops {
    /* A BAR was mapped at addr (mapped) or unmapped; used to move ioeventfds. */
    void (*bar_remap)(struct pci_dev *dev, int bar, bool mapped, uint64_t addr);
    /*
     * Device-specific config space access for [off, off+len) inside one of the
     * device's own capabilities; return true when handled (for reads, data
     * holds the value). Called with the device lock held.
     */
    bool (*cfg_access)(struct pci_dev *dev, uint32_t off, void *data, uint32_t len, bool is_write);
};

struct pci_dev {
    struct pci_bus *bus;
    char name[48];
    int slot; /* -1 until plugged */
    pthread_mutex_t lock;
    uint8_t cfg[PCI_CFG_SIZE];
    uint8_t wmask[PCI_CFG_SIZE];
    uint16_t cap_end;  /* next free config offset for capabilities */
    uint16_t cap_last; /* offset of the last capability, 0 = none */
    struct pci_bar bars[PCI_NUM_BARS];
    struct pci_msix msix;
    const struct pci_dev_ops *ops;
    void *owner; /* the device model embedding this pci_dev */
};

struct pci_bus {
    struct vm *vm;
    pthread_mutex_t lock;
    uint32_t cf8;
    struct pci_dev *slots[PCI_MAX_SLOTS];
    struct pci_dev host;
    uint64_t mmio32_next, mmio32_end;
    uint64_t mmio64_next, mmio64_end;
    uint64_t io_next, io_end;
};

/* Bus lifetime: created by the host bridge device at DEV_LEVEL_PCI. */
int pci_bus_create(struct vm *vm, struct pci_bus **out);
void pci_bus_destroy(struct pci_bus *bus);
/* The VM's bus, or NULL when the host bridge was not created. */
struct pci_bus *pci_bus_of(struct vm *vm);

/*
 * Config space access on bus 0. slot/func select the function, off the byte
 * offset, len 1, 2 or 4. Absent functions read as all ones.
 */
void pci_bus_cfg_access(struct pci_bus *bus, unsigned slot, unsigned func, uint32_t off, void *data,
                        uint32_t len, bool is_write);

void pci_dev_init(struct pci_dev *dev, const char *name, uint16_t vendor, uint16_t device,
                  uint32_t class_code, uint8_t revision, uint16_t subsys_vendor,
                  uint16_t subsys_id);
/* Add a BAR of 'size' bytes (rounded up to a power of two, at least 4 KiB for memory). */
int pci_dev_add_bar(struct pci_dev *dev, int idx, enum pci_bar_type type, uint64_t size,
                    vm_io_fn fn, void *opaque);
/* Append a capability (cap[0] = id, cap[1] is filled in); returns its offset or -errno. */
int pci_dev_add_cap(struct pci_dev *dev, const void *cap, uint8_t len);
/* MSI-X with nvec vectors; the table and PBA live in BAR bar_idx (a new MEM32 BAR). */
int pci_msix_init(struct pci_dev *dev, uint16_t nvec, int bar_idx);
/* Plug into the first free slot (allocates BAR addresses). */
int pci_bus_add_dev(struct pci_bus *bus, struct pci_dev *dev);
/* Unplug, unmap BARs, release MSI-X routes and eventfds. */
void pci_dev_remove(struct pci_dev *dev);

/* Signal vector vec; pending in the PBA while masked. -EINVAL for a bad vector. */
int pci_msix_notify(struct pci_dev *dev, uint16_t vec);
/* The eventfd behind vector vec (for vhost-user call fds), or -1. */
int pci_msix_vector_fd(struct pci_dev *dev, uint16_t vec);
bool pci_msix_enabled(struct pci_dev *dev);
/* Whether vector vec is pending (read from the PBA semantics). */
bool pci_msix_pending(struct pci_dev *dev, uint16_t vec);

#endif
