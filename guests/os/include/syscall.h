/* syscall.h: the system-call numbers, shared by the kernel and user code.
 *
 * ABI: INT 0x80 with EAX = number, EBX, ECX, EDX = arguments; the result
 * comes back in EAX (negative = error).
 */
#ifndef TVOS_SYSCALL_H
#define TVOS_SYSCALL_H

#define SYS_write   1   /* write(fd, buf, len) -> len: fd 1 and 2 are the console */
#define SYS_exit    2   /* exit(status): never returns */
#define SYS_getpid  3   /* getpid() -> pid */
#define SYS_yield   4   /* yield(): give the CPU to the next runnable process */
#define SYS_fork    5   /* fork() -> child pid in the parent, 0 in the child */
#define SYS_wait    6   /* wait(pid, &status) -> pid; pid -1 = any child */
#define SYS_sbrk    7   /* sbrk(delta) -> old break; pages appear on first touch */
#define SYS_map     8   /* map(va) -> 0: a fresh zeroed page at va (map area only) */
#define SYS_unmap   9   /* unmap(va) -> 0: remove and free the page at va */
#define SYS_time   10   /* time() -> timer ticks since boot (100 per second) */
#define SYS_catch  11   /* catch(handler): divide errors call handler (see divzero) */

#define NSYSCALLS  12

/* User address-space layout (the kernel owns everything below USER_BASE). */
#define USER_BASE      0x80000000u
#define USER_HEAP_MAX  0x90000000u   /* the break may not pass this */
#define USER_MAP_BASE  0xA0000000u   /* map()/unmap() work only in [BASE, END) */
#define USER_MAP_END   0xB0000000u
#define USER_STACK_LOW 0xBFF00000u   /* stack grows down on demand to here */
#define USER_STACK_TOP 0xBFFFF000u
#define USER_TOP       0xC0000000u

#endif
