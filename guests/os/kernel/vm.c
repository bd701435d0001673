/* vm.c: address spaces.
 *
 * Every process has its own page directory.  The lower half of every
 * directory (virtual 0 - 2 GiB, PDEs 0-511) is the kernel's: an identity
 * map of physical memory through page tables built once at boot and shared
 * by pointer, so kernel code and data are at the same address in every
 * process.  Those PDEs lack PG_U, so ring 3 cannot touch them.  The upper
 * half (USER_BASE and up) is private to the process.  Virtual page 0 is
 * left unmapped to catch null pointers in the kernel.
 *
 * Every PTE/PDE store goes through cpu_set_pte() and every TLB flush
 * through cpu_invlpg()/cpu_write_cr3(). */
#include "kernel.h"
#include "cpuops.h"
#include "syscall.h"

pde_t *kernel_pgdir;
u32 mem_top;

#define KERNEL_PDES PDX(USER_BASE)
#ifdef TVOS_PV
#define PDE_SCAN_END PDX(0xfc000000u)   /* the hypervisor's slots are not ours */
#else
#define PDE_SCAN_END NPDENTRIES
#endif

void vm_init(u32 top)
{
    mem_top = top;
#ifdef TVOS_PV
    /* The hypervisor's bootstrap tables already map memory 1:1: adopt them,
     * leaving virtual page 0 unmapped as below. */
    kernel_pgdir = cpu_boot_pgdir();
    cpu_set_pte(&((pte_t *)PTE_ADDR(kernel_pgdir[0]))[0], 0);
    cpu_invlpg(0);
    cpu_write_cr0(CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG);
    return;
#endif
    kernel_pgdir = kalloc();
    if (!kernel_pgdir)
        panic("vm_init: no memory for the kernel page directory");
    for (u32 va = 0; va < top; va += PGSIZE) {
        pde_t *pde = &kernel_pgdir[PDX(va)];
        if (!(*pde & PG_P)) {
            pte_t *pt = kalloc();
            if (!pt)
                panic("vm_init: no memory for kernel page tables");
            cpu_set_pte(pde, (u32)pt | PG_P | PG_W);
        }
        pte_t *pt = (pte_t *)PTE_ADDR(*pde);
        if (va != 0)
            cpu_set_pte(&pt[PTX(va)], va | PG_P | PG_W);
    }
    cpu_write_cr3((u32)kernel_pgdir);
    /* Protected mode, paging, write-protect (the kernel honours read-only
     * pages too), native FPU error reporting; ET is fixed at 1 on i686. */
    cpu_write_cr0(CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG);
}

pde_t *vm_new_pgdir(void)
{
    pde_t *pgdir = kalloc();
    if (!pgdir)
        return NULL;
#ifdef TVOS_PV
    cpu_pagetable_new(pgdir);
#endif
    for (u32 i = 0; i < KERNEL_PDES; i++)
        if (kernel_pgdir[i] & PG_P)
#ifdef TVOS_PV   /* cpu_set_pte takes pseudo-physical entries */
            cpu_set_pte(&pgdir[i], PTE_ADDR(kernel_pgdir[i]) | (kernel_pgdir[i] & 0xfff));
    cpu_pagetable_pin(pgdir);
#else
            cpu_set_pte(&pgdir[i], kernel_pgdir[i]);
#endif
    return pgdir;
}

pte_t *vm_lookup(pde_t *pgdir, u32 va)
{
    pde_t pde = pgdir[PDX(va)];
    if (!(pde & PG_P))
        return NULL;
    return &((pte_t *)PTE_ADDR(pde))[PTX(va)];
}

static int is_current(pde_t *pgdir) { return cpu_read_cr3() == (u32)pgdir; }

int vm_map(pde_t *pgdir, u32 va, void *page, u32 flags)
{
    KASSERT(va >= USER_BASE && va % PGSIZE == 0);
    pde_t *pde = &pgdir[PDX(va)];
    if (!(*pde & PG_P)) {
        pte_t *pt = kalloc();
        if (!pt)
            return -1;
#ifdef TVOS_PV
        cpu_pagetable_new(pt);
#endif
        cpu_set_pte(pde, (u32)pt | PG_P | PG_W | PG_U);
    }
    pte_t *pte = &((pte_t *)PTE_ADDR(*pde))[PTX(va)];
    if (*pte & PG_P)
        panic("vm_map: 0x%08x already mapped", va);
    cpu_set_pte(pte, (u32)page | flags | PG_P);
    return 0;
}

void *vm_unmap(pde_t *pgdir, u32 va)
{
    pte_t *pte = vm_lookup(pgdir, va);
    if (!pte || !(*pte & PG_P))
        return NULL;
    void *page = (void *)PTE_ADDR(*pte);
    cpu_set_pte(pte, 0);
    if (is_current(pgdir))
        cpu_invlpg(va);
    return page;
}

void vm_free_pgdir(pde_t *pgdir)
{
    KASSERT(!is_current(pgdir));
#ifdef TVOS_PV
    cpu_pagetable_unpin(pgdir);
#endif
    for (u32 i = KERNEL_PDES; i < PDE_SCAN_END; i++) {
        if (!(pgdir[i] & PG_P))
            continue;
        pte_t *pt = (pte_t *)PTE_ADDR(pgdir[i]);
        for (u32 j = 0; j < NPTENTRIES; j++)
            if (pt[j] & PG_P)
                kfree((void *)PTE_ADDR(pt[j]));
#ifdef TVOS_PV
        cpu_pagetable_free(pt);
#endif
        kfree(pt);
    }
#ifdef TVOS_PV
    cpu_pagetable_free(pgdir);
#endif
    kfree(pgdir);
}

/* fork: copy every present user page (no copy-on-write: simple and
 * deterministic; the workloads fork small processes). */
int vm_copy_user(pde_t *dst, pde_t *src)
{
    for (u32 i = KERNEL_PDES; i < PDE_SCAN_END; i++) {
        if (!(src[i] & PG_P))
            continue;
        pte_t *pt = (pte_t *)PTE_ADDR(src[i]);
        for (u32 j = 0; j < NPTENTRIES; j++) {
            if (!(pt[j] & PG_P))
                continue;
            void *page = kalloc();
            if (!page)
                return -1;
            memcpy(page, (void *)PTE_ADDR(pt[j]), PGSIZE);
            if (vm_map(dst, (i << 22) | (j << 12), page, pt[j] & (PG_W | PG_U)) < 0) {
                kfree(page);
                return -1;
            }
        }
    }
    return 0;
}

/* Demand paging: a fault on a missing page inside the heap (below the
 * break) or the stack area gets a fresh zeroed page.  Returns 0 if the
 * fault is not ours to fix (the process then dies). */
int vm_user_fault(u32 va)
{
    struct proc *p = current;
    u32 page_va = PGROUNDDOWN(va);
    int in_heap = va >= p->heap_start && va < p->brk;
    int in_stack = va >= USER_STACK_LOW && va < USER_STACK_TOP;
    if (!in_heap && !in_stack)
        return 0;
    pte_t *pte = vm_lookup(p->pgdir, page_va);
    if (pte && (*pte & PG_P))
        return 0;   /* present: a protection fault, not a missing page */
    void *page = kalloc();
    if (!page)
        return 0;
    if (vm_map(p->pgdir, page_va, page, PG_W | PG_U) < 0) {
        kfree(page);
        return 0;
    }
    return 1;
}

/* May the kernel read or write [va, va+len) on behalf of the current
 * process?  Faults missing heap/stack pages in first, so the kernel itself
 * never takes a page fault on user memory. */
int vm_user_range_ok(u32 va, u32 len)
{
    if (va < USER_BASE || va >= USER_TOP || len > USER_TOP - va)
        return 0;
    for (u32 pg = PGROUNDDOWN(va); pg < va + len; pg += PGSIZE) {
        pte_t *pte = vm_lookup(current->pgdir, pg);
        if (pte && (*pte & PG_P) && (*pte & PG_U))
            continue;
        if (!vm_user_fault(pg))
            return 0;
    }
    return 1;
}
