/* fmt.c: formatting, CRC-32 and string helpers, linked into both the kernel
 * and the user programs.  No division by 64-bit numbers (there is no libgcc
 * for -m32 here) and nothing that could pull in floating point. */
#include "fmt.h"

struct out { char *buf; int size, len; };

static void emit(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void emit_num(struct out *o, u32 v, u32 base, int width, char pad, int neg)
{
    char tmp[12];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg)
        width--;
    if (neg && pad == '0')
        emit(o, '-');
    for (int i = n; i < width; i++)
        emit(o, pad);
    if (neg && pad != '0')
        emit(o, '-');
    while (n)
        emit(o, tmp[--n]);
}

int vfmt(char *buf, int size, const char *f, va_list ap)
{
    struct out o = { buf, size, 0 };
    for (; *f; f++) {
        if (*f != '%') {
            emit(&o, *f);
            continue;
        }
        f++;
        char pad = ' ';
        int width = 0;
        if (*f == '0') {
            pad = '0';
            f++;
        }
        while (*f >= '0' && *f <= '9')
            width = width * 10 + (*f++ - '0');
        switch (*f) {
        case 'd': {
            i32 v = va_arg(ap, i32);
            emit_num(&o, v < 0 ? (u32)-v : (u32)v, 10, width, pad, v < 0);
            break;
        }
        case 'u': emit_num(&o, va_arg(ap, u32), 10, width, pad, 0); break;
        case 'x': emit_num(&o, va_arg(ap, u32), 16, width, pad, 0); break;
        case 'c': emit(&o, (char)va_arg(ap, int)); break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int n = (int)strlen(s);
            for (int i = n; i < width; i++)
                emit(&o, ' ');
            while (*s)
                emit(&o, *s++);
            break;
        }
        case '%': emit(&o, '%'); break;
        case '\0': f--; break;
        default: emit(&o, '%'); emit(&o, *f); break;
        }
    }
    if (size > 0)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return o.len;
}

int fmt(char *buf, int size, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vfmt(buf, size, f, ap);
    va_end(ap);
    return n;
}

u32 crc32_update(u32 crc, const void *data, u32 len)
{
    const u8 *p = data;
    while (len--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1));
    }
    return crc;
}

/* memset and memcpy work a word at a time when they can: zeroing a page
 * is the most frequent loop in the kernel, and on a simulated CPU every
 * instruction counts. */
void *memset(void *dst, int c, size_t n)
{
    u8 *d = dst;
    if ((((u32)d | n) & 3) == 0) {
        u32 v = (u8)c * 0x01010101u;
        for (u32 *w = dst; n; n -= 4)
            *w++ = v;
        return dst;
    }
    while (n--)
        *d++ = (u8)c;
    return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
    u8 *d = dst;
    const u8 *s = src;
    if ((((u32)d | (u32)s | n) & 3) == 0) {
        u32 *dw = dst;
        const u32 *sw = src;
        for (; n; n -= 4)
            *dw++ = *sw++;
        return dst;
    }
    while (n--)
        *d++ = *s++;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const u8 *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return (u8)*a - (u8)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (u8)*a - (u8)*b;
        if (!*a)
            return 0;
    }
    return 0;
}
