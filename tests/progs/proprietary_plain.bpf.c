/* Not GPL-compatible, but only non-GPL helpers: loads anywhere. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} bytes SEC(".maps");

SEC("socket")
int count_bytes(struct __sk_buff *skb)
{
	u32 key = 0;
	u64 *total = bpf_map_lookup_elem(&bytes, &key);

	if (total)
		__sync_fetch_and_add(total, skb->len);
	return 0;
}

char LICENSE[] SEC("license") = "Proprietary";
