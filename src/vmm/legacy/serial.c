/* SPDX-License-Identifier: Apache-2.0 */
/*
 * 16550A UART on COM1 (0x3f8, IRQ 4). Transmission is immediate (THR is
 * always empty); received bytes queue in a 16-byte FIFO. The backend is the
 * tty, a file, a unix socket (one client at a time) or nothing.
 */
#include "vmm/vmm.h"
#include "vmm/device.h"
#include "vmm/layout.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#define UART_RBR 0 /* read, DLAB=0 */
#define UART_THR 0 /* write, DLAB=0 */
#define UART_IER 1
#define UART_IIR 2 /* read */
#define UART_FCR 2 /* write */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7

#define IER_RDI  0x01
#define IER_THRI 0x02
#define IER_RLSI 0x04
#define IER_MSI  0x08

#define IIR_NO_INT  0x01
#define IIR_THRI    0x02
#define IIR_RDI     0x04
#define IIR_FIFO_ON 0xc0

#define FCR_ENABLE    0x01
#define FCR_CLEAR_RCV 0x02

#define LCR_DLAB 0x80

#define MCR_DTR  0x01
#define MCR_RTS  0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10

#define LSR_DR   0x01
#define LSR_OE   0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI  0x40
#define MSR_DCD 0x80

#define RX_FIFO_SIZE 16

struct serial_dev {
    struct vm *vm;
    pthread_mutex_t lock;
    uint8_t ier, lcr, mcr, lsr_extra, msr, scr, dll, dlm, fcr;
    bool thri_pending; /* THR-empty interrupt armed and not yet acknowledged */
    uint8_t rx[RX_FIFO_SIZE];
    int rx_head, rx_count;
    int irq_level;
    /* backend */
    enum serial_mode mode;
    int out_fd, in_fd, listen_fd, stop_fd;
    char *sock_path;
    bool tty_raw;
    struct termios tty_saved;
    pthread_t in_thread;
    bool in_thread_started;
    uint64_t tx_bytes, tx_dropped, rx_bytes, rx_dropped;
};

/* Called with the lock held. */
static uint8_t serial_iir(struct serial_dev *s)
{
    uint8_t fifo = (s->fcr & FCR_ENABLE) ? IIR_FIFO_ON : 0;

    if ((s->ier & IER_RDI) && s->rx_count)
        return fifo | IIR_RDI;
    if ((s->ier & IER_THRI) && s->thri_pending)
        return fifo | IIR_THRI;
    return fifo | IIR_NO_INT;
}

static void serial_update_irq(struct serial_dev *s)
{
    int level = !(serial_iir(s) & IIR_NO_INT);

    /* OUT2 gates the interrupt on PC-compatible boards; Linux sets it. */
    if (!(s->mcr & MCR_OUT2) || (s->mcr & MCR_LOOP))
        level = 0;
    if (level != s->irq_level) {
        s->irq_level = level;
        vm_irq_line(s->vm, IRQ_COM1, level);
    }
}

static void serial_rx_push(struct serial_dev *s, uint8_t c)
{
    if (s->rx_count == RX_FIFO_SIZE) {
        s->lsr_extra |= LSR_OE;
        s->rx_dropped++;
        return;
    }
    s->rx[(s->rx_head + s->rx_count) % RX_FIFO_SIZE] = c;
    s->rx_count++;
    s->rx_bytes++;
}

static void serial_tx(struct serial_dev *s, uint8_t c)
{
    if (s->mcr & MCR_LOOP) {
        serial_rx_push(s, c);
        return;
    }
    s->tx_bytes++;
    if (s->out_fd < 0) {
        if (s->mode == SERIAL_SOCKET)
            s->tx_dropped++; /* no client connected */
        return;
    }
    if (write(s->out_fd, &c, 1) == 1)
        return;
    if (s->mode != SERIAL_SOCKET)
        return; /* tty or file: nothing better to do than lose the byte */
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        s->tx_dropped++; /* a slow client never stalls the vCPU */
    } else {
        close(s->out_fd);
        s->out_fd = -1; /* the client left; the input thread accepts the next one */
    }
}

static uint8_t serial_msr(struct serial_dev *s)
{
    uint8_t m = 0;

    if (!(s->mcr & MCR_LOOP))
        return MSR_DCD | MSR_DSR | MSR_CTS;
    /* Loopback: modem outputs feed the inputs (Linux probes this). */
    if (s->mcr & MCR_RTS)
        m |= MSR_CTS;
    if (s->mcr & MCR_DTR)
        m |= MSR_DSR;
    if (s->mcr & MCR_OUT1)
        m |= MSR_RI;
    if (s->mcr & MCR_OUT2)
        m |= MSR_DCD;
    return m;
}

static void serial_io(void *opaque, uint64_t offset, void *data, uint32_t len, bool is_write)
{
    struct serial_dev *s = opaque;
    uint8_t *v = data;
    bool dlab;

    if (len != 1) {
        if (!is_write)
            memset(data, 0xff, len);
        return;
    }
    pthread_mutex_lock(&s->lock);
    dlab = s->lcr & LCR_DLAB;
    if (is_write) {
        switch (offset) {
        case UART_THR:
            if (dlab) {
                s->dll = *v;
            } else {
                serial_tx(s, *v);
                s->thri_pending = true;
            }
            break;
        case UART_IER:
            if (dlab) {
                s->dlm = *v;
            } else {
                /* Enabling THRI with an empty THR raises it at once (16550 behaviour). */
                if (!(s->ier & IER_THRI) && (*v & IER_THRI))
                    s->thri_pending = true;
                s->ier = *v & 0x0f;
            }
            break;
        case UART_FCR:
            s->fcr = *v;
            if (*v & FCR_CLEAR_RCV)
                s->rx_count = 0;
            break;
        case UART_LCR:
            s->lcr = *v;
            break;
        case UART_MCR:
            s->mcr = *v & 0x1f;
            break;
        case UART_SCR:
            s->scr = *v;
            break;
        default: /* LSR and MSR are read-only */
            break;
        }
    } else {
        switch (offset) {
        case UART_RBR:
            if (dlab) {
                *v = s->dll;
            } else if (s->rx_count) {
                *v = s->rx[s->rx_head];
                s->rx_head = (s->rx_head + 1) % RX_FIFO_SIZE;
                s->rx_count--;
            }
            break;
        case UART_IER:
            *v = dlab ? s->dlm : s->ier;
            break;
        case UART_IIR:
            *v = serial_iir(s);
            if ((*v & 0x0f) == IIR_THRI)
                s->thri_pending = false; /* reading IIR acknowledges THRE */
            break;
        case UART_LCR:
            *v = s->lcr;
            break;
        case UART_MCR:
            *v = s->mcr;
            break;
        case UART_LSR:
            *v = LSR_THRE | LSR_TEMT | (s->rx_count ? LSR_DR : 0) | s->lsr_extra;
            s->lsr_extra = 0;
            break;
        case UART_MSR:
            *v = serial_msr(s);
            break;
        case UART_SCR:
            *v = s->scr;
            break;
        }
    }
    serial_update_irq(s);
    pthread_mutex_unlock(&s->lock);
}

/* Feed host input to the guest; returns how many bytes were taken. */
static size_t serial_receive(struct serial_dev *s, const uint8_t *buf, size_t n)
{
    size_t i;

    pthread_mutex_lock(&s->lock);
    for (i = 0; i < n && s->rx_count < RX_FIFO_SIZE; i++)
        serial_rx_push(s, buf[i]);
    serial_update_irq(s);
    pthread_mutex_unlock(&s->lock);
    return i;
}

static void *serial_input_thread(void *arg)
{
    struct serial_dev *s = arg;
    uint8_t buf[64];
    size_t have = 0, off = 0;

    for (;;) {
        struct pollfd p[2] = {{.fd = s->stop_fd, .events = POLLIN}, {.fd = -1, .events = POLLIN}};
        int in_fd, timeout = -1;

        pthread_mutex_lock(&s->lock);
        in_fd = s->mode == SERIAL_SOCKET ? s->out_fd : s->in_fd;
        pthread_mutex_unlock(&s->lock);
        if (s->mode == SERIAL_SOCKET && in_fd < 0)
            p[1].fd = s->listen_fd;
        else if (have == off)
            p[1].fd = in_fd;
        else
            timeout = 1; /* FIFO full: retry shortly */
        if (poll(p, 2, timeout) < 0 && errno != EINTR)
            break;
        if (p[0].revents)
            break;
        if (have > off) {
            off += serial_receive(s, buf + off, have - off);
            continue;
        }
        if (!p[1].revents)
            continue;
        if (p[1].fd == s->listen_fd) {
            int c = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

            if (c >= 0) {
                pthread_mutex_lock(&s->lock);
                s->out_fd = c;
                pthread_mutex_unlock(&s->lock);
            }
            continue;
        }
        {
            ssize_t r = read(p[1].fd, buf, sizeof(buf));

            if (r <= 0) {
                if (r < 0 && (errno == EINTR || errno == EAGAIN))
                    continue;
                if (s->mode != SERIAL_SOCKET)
                    break; /* tty closed: no more input */
                pthread_mutex_lock(&s->lock);
                if (s->out_fd == p[1].fd) {
                    close(s->out_fd);
                    s->out_fd = -1;
                }
                pthread_mutex_unlock(&s->lock);
                continue;
            }
            have = (size_t)r;
            off = serial_receive(s, buf, have);
            if (off == have)
                have = off = 0;
        }
    }
    return NULL;
}

static int serial_open_socket(struct serial_dev *s, const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, ret;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        log_err("serial socket '%s': path too long", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0) {
        ret = -errno;
        log_err("serial socket '%s': %s", path, strerror(errno));
        close(fd);
        return ret;
    }
    s->listen_fd = fd;
    s->sock_path = strdup(path);
    return 0;
}

static int serial_open_backend(struct serial_dev *s, const struct vm_config *cfg)
{
    int ret;

    switch (cfg->serial) {
    case SERIAL_TTY:
        s->out_fd = STDOUT_FILENO;
        s->in_fd = STDIN_FILENO;
        if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &s->tty_saved) == 0) {
            struct termios raw = s->tty_saved;

            cfmakeraw(&raw);
            raw.c_oflag |= OPOST; /* keep host-side output newline handling */
            raw.c_lflag |= ISIG;  /* Ctrl-C still stops qtvmm */
            if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0)
                s->tty_raw = true;
        }
        return 0;
    case SERIAL_FILE:
        s->out_fd = open(cfg->serial_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (s->out_fd < 0) {
            ret = -errno;
            log_err("serial file '%s': %s", cfg->serial_path, strerror(errno));
            return ret;
        }
        return 0;
    case SERIAL_SOCKET:
        return serial_open_socket(s, cfg->serial_path);
    default:
        return 0;
    }
}

static void serial_free(struct serial_dev *s)
{
    uint64_t one = 1;

    if (s->in_thread_started) {
        if (write(s->stop_fd, &one, sizeof(one)) < 0)
            log_warn("serial: cannot stop the input thread: %s", strerror(errno));
        pthread_join(s->in_thread, NULL);
    }
    if (s->tty_raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &s->tty_saved);
    if (s->out_fd > STDERR_FILENO)
        close(s->out_fd);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->sock_path) {
        unlink(s->sock_path);
        free(s->sock_path);
    }
    if (s->stop_fd >= 0)
        close(s->stop_fd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static int serial_init(struct vm *vm, const struct vm_config *cfg)
{
    struct serial_dev *s;
    int ret;

    if (cfg->serial == SERIAL_OFF)
        return 0;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->vm = vm;
    s->mode = cfg->serial;
    s->out_fd = s->in_fd = s->listen_fd = -1;
    s->msr = MSR_DCD | MSR_DSR | MSR_CTS;
    pthread_mutex_init(&s->lock, NULL);
    s->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (s->stop_fd < 0) {
        ret = -errno;
        goto fail;
    }
    ret = serial_open_backend(s, cfg);
    if (ret)
        goto fail;
    ret = vm_io_register(vm, VM_IO_PIO, PORT_COM1, 8, serial_io, s);
    if (ret) {
        log_err("serial: cannot register ports 0x%x-0x%x: %s", PORT_COM1, PORT_COM1 + 7,
                strerror(-ret));
        goto fail;
    }
    if (s->in_fd >= 0 || s->listen_fd >= 0) {
        ret = -pthread_create(&s->in_thread, NULL, serial_input_thread, s);
        if (ret) {
            vm_io_unregister(vm, VM_IO_PIO, PORT_COM1);
            goto fail;
        }
        s->in_thread_started = true;
    }
    vm->serial = s;
    return 0;
fail:
    serial_free(s);
    return ret;
}

static void serial_exit(struct vm *vm)
{
    if (!vm->serial)
        return;
    vm_io_unregister(vm, VM_IO_PIO, PORT_COM1);
    serial_free(vm->serial);
    vm->serial = NULL;
}

static void serial_stats(struct vm *vm, json_object *devices)
{
    struct serial_dev *s = vm->serial;
    json_object *o;

    if (!s)
        return;
    o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string("serial0"));
    json_object_object_add(o, "type", json_object_new_string("16550a"));
    pthread_mutex_lock(&s->lock);
    json_object_object_add(o, "tx_bytes", json_object_new_int64((int64_t)s->tx_bytes));
    json_object_object_add(o, "tx_dropped", json_object_new_int64((int64_t)s->tx_dropped));
    json_object_object_add(o, "rx_bytes", json_object_new_int64((int64_t)s->rx_bytes));
    json_object_object_add(o, "rx_dropped", json_object_new_int64((int64_t)s->rx_dropped));
    pthread_mutex_unlock(&s->lock);
    json_object_array_add(devices, o);
}

VMM_DEVICE(serial, DEV_LEVEL_LEGACY, serial_init, serial_exit, serial_stats)
