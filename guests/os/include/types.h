/* types.h: fixed-size integer types for the kernel and user programs
 * (there is no libc, so no <stdint.h> beyond what gcc ships freestanding). */
#ifndef TVOS_TYPES_H
#define TVOS_TYPES_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed int i32;
typedef unsigned int size_t;
typedef unsigned int uintptr_t;

#define NULL ((void *)0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
