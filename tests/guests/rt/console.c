/* SPDX-License-Identifier: Apache-2.0 */
/* COM1 console and a small printf: %d %i %u %x %X %p %s %c %%, flags 0 -, width, l/ll/z. */
#include "rt.h"
#include "io.h"

#define COM1     0x3f8
#define COM1_LSR (COM1 + 5)
#define LSR_THRE 0x20

void serial_putc(char c)
{
    /* A virtual 8250 is always ready; bound the wait so a missing UART cannot hang us. */
    for (int i = 0; i < 1000 && !(inb(COM1_LSR) & LSR_THRE); i++)
        cpu_relax();
    outb(COM1, (uint8_t)c);
}

void serial_puts(const char *s)
{
    while (*s)
        serial_putc(*s++);
}

struct outbuf {
    char *buf;
    size_t size;
    size_t len;
};

static void out_char(struct outbuf *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void out_number(struct outbuf *o, uint64_t v, unsigned base, bool upper, bool neg, int width,
                       bool zero, bool left)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    int n = 0, len;

    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    len = n + (neg ? 1 : 0);
    if (neg && zero)
        out_char(o, '-');
    if (!left) {
        for (int i = len; i < width; i++)
            out_char(o, zero ? '0' : ' ');
    }
    if (neg && !zero)
        out_char(o, '-');
    while (n)
        out_char(o, tmp[--n]);
    if (left) {
        for (int i = len; i < width; i++)
            out_char(o, ' ');
    }
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct outbuf o = {buf, size, 0};

    for (; *fmt; fmt++) {
        bool zero = false, left = false, is_signed = false;
        int width = 0, lng = 0;
        uint64_t v;

        if (*fmt != '%') {
            out_char(&o, *fmt);
            continue;
        }
        fmt++;
        for (;; fmt++) {
            if (*fmt == '0')
                zero = true;
            else if (*fmt == '-')
                left = true;
            else
                break;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l' || *fmt == 'z') {
            lng++;
            fmt++;
        }
        switch (*fmt) {
        case 'd':
        case 'i':
            is_signed = true;
            /* fall through */
        case 'u':
        case 'x':
        case 'X': {
            bool neg = false;

            if (is_signed) {
                int64_t s = lng ? va_arg(ap, int64_t) : va_arg(ap, int);

                neg = s < 0;
                v = neg ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
            } else {
                v = lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned int);
            }
            out_number(&o, v, *fmt == 'u' || *fmt == 'd' || *fmt == 'i' ? 10 : 16, *fmt == 'X', neg,
                       width, zero && !left, left);
            break;
        }
        case 'p':
            out_char(&o, '0');
            out_char(&o, 'x');
            out_number(&o, (uint64_t)va_arg(ap, void *), 16, false, false, width, zero, left);
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            int len;

            if (!s)
                s = "(null)";
            len = (int)strlen(s);
            if (!left) {
                for (int i = len; i < width; i++)
                    out_char(&o, ' ');
            }
            while (*s)
                out_char(&o, *s++);
            if (left) {
                for (int i = len; i < width; i++)
                    out_char(&o, ' ');
            }
            break;
        }
        case 'c':
            out_char(&o, (char)va_arg(ap, int));
            break;
        case '%':
            out_char(&o, '%');
            break;
        case '\0':
            fmt--;
            break;
        default:
            out_char(&o, '%');
            out_char(&o, *fmt);
            break;
        }
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

int printf(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    serial_puts(buf);
    return n;
}

void panic(const char *fmt, ...)
{
    char buf[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    serial_puts("FAIL ");
    serial_puts(guest_name);
    serial_puts(": ");
    serial_puts(buf);
    serial_puts("\n");
    acpi_poweroff();
}
