/* elf.c: load an ELF32 i386 executable into a user address space.
 * Only PT_LOAD segments matter; each must lie inside the user half. */
#include "kernel.h"
#include "syscall.h"

struct elf_hdr {
    u8 ident[16];
    u16 type, machine;
    u32 version, entry, phoff, shoff, flags;
    u16 ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};
struct elf_phdr { u32 type, offset, vaddr, paddr, filesz, memsz, flags, align; };
#define PT_LOAD 1

int elf_load(pde_t *pgdir, const u8 *image, u32 size, u32 *entry, u32 *image_end)
{
    const struct elf_hdr *h = (const void *)image;
    if (size < sizeof *h || memcmp(h->ident, "\177ELF", 4) != 0 ||
        h->ident[4] != 1 /* 32-bit */ || h->ident[5] != 1 /* little endian */ ||
        h->type != 2 /* executable */ || h->machine != 3 /* i386 */ ||
        h->phentsize != sizeof(struct elf_phdr) ||
        h->phoff > size || h->phnum > (size - h->phoff) / sizeof(struct elf_phdr))
        return -1;
    u32 end = 0;
    for (u32 n = 0; n < h->phnum; n++) {
        const struct elf_phdr *ph = (const void *)(image + h->phoff + n * sizeof *ph);
        if (ph->type != PT_LOAD)
            continue;
        if (ph->filesz > ph->memsz || ph->offset > size || ph->filesz > size - ph->offset ||
            ph->vaddr < USER_BASE || ph->memsz > USER_HEAP_MAX - ph->vaddr)
            return -1;
        for (u32 va = PGROUNDDOWN(ph->vaddr); va < ph->vaddr + ph->memsz; va += PGSIZE) {
            pte_t *pte = vm_lookup(pgdir, va);
            if (pte && (*pte & PG_P))
                continue;   /* shared with the previous segment */
            void *page = kalloc();
            if (!page || vm_map(pgdir, va, page, PG_W | PG_U) < 0)
                return -1;
        }
        /* Copy page by page through the kernel's identity map; the pages
         * were zeroed by kalloc, which also gives the bss. */
        for (u32 done = 0; done < ph->filesz;) {
            u32 va = ph->vaddr + done;
            u32 room = PGSIZE - (va & (PGSIZE - 1));
            u32 chunk = ph->filesz - done < room ? ph->filesz - done : room;
            u8 *dst = (u8 *)PTE_ADDR(*vm_lookup(pgdir, va)) + (va & (PGSIZE - 1));
            memcpy(dst, image + ph->offset + done, chunk);
            done += chunk;
        }
        if (ph->vaddr + ph->memsz > end)
            end = ph->vaddr + ph->memsz;
    }
    if (!end || h->entry < USER_BASE || h->entry >= end)
        return -1;
    *entry = h->entry;
    *image_end = end;
    return 0;
}
