// SPDX-License-Identifier: GPL-2.0
/* acme-fs: report which ext4 block groups the block allocator loads, with the page index of each
 * group's bitmap, to see which groups are hot.
 *
 * It reads struct ext4_buddy's bd_bitmap_page without a guard. Built against 6.1.0-47-cloud-amd64,
 * it is compatible there; 6.1.0-56-cloud-amd64 renamed the field to bd_bitmap_folio, so the read
 * cannot be relocated and the verifier would reject it: incompatible (core-relo). The guarded way
 * to write it is globex-storage/bitmap_release.bpf.c. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct buddy_event {
	u32 group;
	u64 bitmap_index;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16384);
} events SEC(".maps");

SEC("fexit/ext4_mb_load_buddy_gfp")
int BPF_PROG(buddy_load, struct super_block *sb, ext4_group_t group, struct ext4_buddy *e4b,
	     gfp_t gfp, int ret)
{
	struct buddy_event *event;

	if (ret)
		return 0;
	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event)
		return 0;
	event->group = group;
	event->bitmap_index = e4b->bd_bitmap_page->index;
	bpf_ringbuf_submit(event, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
