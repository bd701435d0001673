/* fmt.h: a small snprintf-style formatter shared by kernel and user code.
 * Supports %d %u %x %s %c %% with an optional zero-pad width (%08x). */
#ifndef TVOS_FMT_H
#define TVOS_FMT_H
#include <stdarg.h>
#include "types.h"

int vfmt(char *buf, int size, const char *fmt, va_list ap);
int fmt(char *buf, int size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), bitwise. */
u32 crc32_update(u32 crc, const void *data, u32 len);
#define CRC32_INIT 0xffffffffu
#define crc32_final(c) ((c) ^ 0xffffffffu)

/* Compare / copy helpers used everywhere. */
void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

#endif
