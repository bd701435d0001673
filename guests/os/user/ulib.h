/* ulib.h: what user programs have instead of a libc. */
#ifndef TVOS_ULIB_H
#define TVOS_ULIB_H
#include "types.h"
#include "fmt.h"
#include "syscall.h"

int write(int fd, const void *buf, u32 len);
void exit(int status) __attribute__((noreturn));
int getpid(void);
int yield(void);
int fork(void);
int wait(int pid, int *status);
void *sbrk(i32 delta);
int map(u32 va);
int unmap(u32 va);
u32 time(void);
int catch(void (*handler)(void));

void printf(const char *f, ...) __attribute__((format(printf, 1, 2)));
void fail(const char *f, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Divide-error handler (usys.S) and its count. */
void divzero_handler(void);
extern volatile u32 divzero_caught;

/* The workloads (work.c): each returns its checksum. */
u32 w_compute(u32 n);
u32 w_syscall(u32 n);
u32 w_ctxswitch(u32 n);
u32 w_pgfault(u32 n);
u32 w_ptemod(u32 n);
u32 w_forkwait(u32 n);
u32 w_divzero(u32 n);
u32 w_mixed(u32 n);
u32 w_protect(u32 n);

/* Fold a word into a running CRC-32 (for checksums). */
static inline u32 fold(u32 crc, u32 v) { return crc32_update(crc, &v, 4); }

#endif
