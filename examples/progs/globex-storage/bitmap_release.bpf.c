// SPDX-License-Identifier: GPL-2.0
/* globex-storage: count, per ext4 bitmap page, how often the block allocator lets a group's
 * buddy go, to size the buddy cache.
 *
 * struct ext4_buddy's bd_bitmap_page became bd_bitmap_folio in 6.1.0-56-cloud-amd64. Both layouts
 * are described here as flavors, so the source builds against either kernel's vmlinux.h; the page
 * is read only where bpf_core_field_exists finds it, and the folio otherwise, so the read that
 * cannot be relocated is dead code on each kernel: compatible on 6.1.0-47-cloud-amd64 and on
 * 6.1.0-56-cloud-amd64. Compare acme-fs/buddy_load.bpf.c, which breaks. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

struct ext4_buddy___page {
	struct page *bd_bitmap_page;
} __attribute__((preserve_access_index));

struct ext4_buddy___folio {
	struct folio *bd_bitmap_folio;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, u64);
	__type(value, u64);
} releases SEC(".maps");

SEC("fentry/ext4_mb_unload_buddy")
int BPF_PROG(bitmap_release, struct ext4_buddy *e4b)
{
	struct ext4_buddy___page *with_page = (void *)e4b;
	struct ext4_buddy___folio *with_folio = (void *)e4b;
	u64 index, one = 1, *count;

	if (bpf_core_field_exists(with_page->bd_bitmap_page))
		index = BPF_CORE_READ(with_page, bd_bitmap_page, index);
	else
		index = BPF_CORE_READ(with_folio, bd_bitmap_folio, index);
	count = bpf_map_lookup_elem(&releases, &index);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&releases, &index, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
