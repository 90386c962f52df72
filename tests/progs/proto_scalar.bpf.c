/* Breaks on Linux 6.8 and later: page_pool_state_release passed a struct page *, and passes a
 * netmem handle (an unsigned long) now. This program dereferences the argument, which the
 * verifier refuses for a scalar: attach-proto. */
#include "common.h"

__u64 refs_seen;

SEC("tp_btf/page_pool_state_release")
int BPF_PROG(on_release, const struct page_pool *pool, const struct page *page, u32 release)
{
	refs_seen |= page->_refcount.counter;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
