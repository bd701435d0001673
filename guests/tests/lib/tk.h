/* tk.h: the few helpers the small C test kernels share.
 * Port I/O, a polled 16550 on COM1, number printing, the multiboot command
 * line, and the debug-exit port.  Header-only so each kernel stays one file.
 */
#ifndef TK_H
#define TK_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

#define COM1 0x3f8
#define EXIT_PORT 0xf4

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline void serial_init(void)
{
    outb(COM1 + 1, 0x00);   /* no UART interrupts: we poll */
    outb(COM1 + 3, 0x80);   /* DLAB on to set the divisor */
    outb(COM1 + 0, 0x01);   /* 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);   /* 8 bits, no parity, one stop bit */
    outb(COM1 + 2, 0xc7);   /* FIFOs on and cleared */
    outb(COM1 + 4, 0x03);   /* DTR, RTS */
}

static inline void putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20))
        ;
    outb(COM1, (u8)c);
}

static inline void puts(const char *s)
{
    while (*s)
        putc(*s++);
}

static inline void putdec(u32 v)
{
    char buf[12];
    int i = 0;
    do {
        buf[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (i)
        putc(buf[--i]);
}

static inline void puthex(u32 v, int digits)
{
    puts("0x");
    for (int i = digits - 1; i >= 0; i--)
        putc("0123456789abcdef"[(v >> (i * 4)) & 0xf]);
}

static inline __attribute__((noreturn)) void tk_exit(u8 value)
{
    outb(EXIT_PORT, value);
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* Multiboot 1 information: only the fields the test kernels read. */
struct mb_info {
    u32 flags, mem_lower, mem_upper, boot_device, cmdline;
};
#define MB_INFO_CMDLINE (1u << 2)

/* Value of "key=<decimal>" on the command line, or dflt. */
static inline u32 cmdline_uint(const struct mb_info *mbi, const char *key, u32 dflt)
{
    if (!mbi || !(mbi->flags & MB_INFO_CMDLINE) || !mbi->cmdline)
        return dflt;
    const char *s = (const char *)mbi->cmdline;
    while (*s) {
        while (*s == ' ')
            s++;
        const char *k = key, *t = s;
        while (*k && *t == *k)
            k++, t++;
        if (!*k && *t == '=') {
            u32 v = 0;
            int any = 0;
            for (t++; *t >= '0' && *t <= '9'; t++, any = 1)
                v = v * 10 + (u32)(*t - '0');
            return any ? v : dflt;
        }
        while (*s && *s != ' ')
            s++;
    }
    return dflt;
}

/* Segment descriptor helpers. */
struct seg_desc { u32 lo, hi; };
#define SEG(base, limit, access, gran) ((struct seg_desc){ \
    ((base) << 16) | ((limit) & 0xffff), \
    ((base) & 0xff000000) | ((gran) << 20) | ((limit) & 0xf0000) | ((access) << 8) | (((base) >> 16) & 0xff) })

struct gate_desc { u16 off_lo, sel; u8 zero, type_attr; u16 off_hi; };

static inline void set_gate(struct gate_desc *g, void (*handler)(void), u16 sel, u8 type_attr)
{
    u32 off = (u32)handler;
    g->off_lo = (u16)off;
    g->sel = sel;
    g->zero = 0;
    g->type_attr = type_attr;
    g->off_hi = (u16)(off >> 16);
}

struct __attribute__((packed)) dt_ptr { u16 limit; u32 base; };

#endif
