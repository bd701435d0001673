/* kalloc.c: the physical page allocator.
 *
 * Free 4 KiB pages form a singly linked list threaded through the pages
 * themselves.  The list is LIFO, so the page freed last is handed out
 * next: a loop that maps and unmaps keeps touching the same frame.
 * Physical memory is identity-mapped in the kernel half, so a page's
 * physical address is also its kernel virtual address. */
#include "kernel.h"

struct run { struct run *next; };

static struct run *freelist;
static u32 nfree;
static u32 range_start, range_end;

void kalloc_init(u32 start, u32 end)
{
    range_start = PGROUNDUP(start);
    range_end = PGROUNDDOWN(end);
    /* Free from the top down so the first allocations come from low
     * memory, which keeps the order (and any debugging) predictable. */
    for (u32 pa = range_end; pa > range_start; pa -= PGSIZE)
        kfree((void *)(pa - PGSIZE));
}

void kfree(void *page)
{
    u32 pa = (u32)page;
    if (pa % PGSIZE || pa < range_start || pa >= range_end)
        panic("kfree: bad page 0x%08x", pa);
    struct run *r = page;
    r->next = freelist;
    freelist = r;
    nfree++;
}

void *kalloc(void)
{
    struct run *r = freelist;
    if (!r)
        return NULL;
    freelist = r->next;
    nfree--;
    memset(r, 0, PGSIZE);
    return r;
}

u32 kalloc_free_pages(void) { return nfree; }
