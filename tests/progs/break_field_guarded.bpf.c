/* Survives 6.1.0-56's rename of ext4_buddy.bd_bitmap_page to bd_bitmap_folio: the old field is
 * read only where it exists, so its poisoned read is dead code there. */
#include "common.h"

struct ext4_buddy___folio {
	struct folio *bd_bitmap_folio;
} __attribute__((preserve_access_index));

SEC("kprobe/ext4_mb_release")
int BPF_KPROBE(buddy_bitmap, struct ext4_buddy *e4b)
{
	void *bitmap;

	if (bpf_core_field_exists(e4b->bd_bitmap_page))
		bitmap = BPF_CORE_READ(e4b, bd_bitmap_page);
	else
		bitmap = BPF_CORE_READ((struct ext4_buddy___folio *)e4b, bd_bitmap_folio);
	bpf_printk("bitmap %p", bitmap);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
