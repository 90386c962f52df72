/* Breaks on 6.1.0-56: struct ext4_buddy's bd_bitmap_page became bd_bitmap_folio. The read is not
 * guarded, so libbpf poisons a reachable instruction: core-relo. */
#include "common.h"

SEC("kprobe/ext4_mb_release")
int BPF_KPROBE(buddy_page, struct ext4_buddy *e4b)
{
	struct page *page = BPF_CORE_READ(e4b, bd_bitmap_page);

	bpf_printk("bitmap page %p", page);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
