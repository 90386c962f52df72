/* Networking programs with BTF-defined maps: xdp, tc and a socket filter. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} pkt_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__uint(key_size, 4);
	__uint(value_size, 8);
} by_ifindex SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

static __always_inline void count(u32 slot)
{
	u64 *value = bpf_map_lookup_elem(&pkt_count, &slot);

	if (value)
		*value += 1;
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	u32 ifindex = ctx->ingress_ifindex;
	u64 now = bpf_ktime_get_ns();

	count(0);
	bpf_map_update_elem(&by_ifindex, &ifindex, &now, BPF_ANY);
	return XDP_PASS;
}

SEC("tc")
int tc_count(struct __sk_buff *skb)
{
	u32 *event;

	count(1);
	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (event) {
		*event = skb->len;
		bpf_ringbuf_submit(event, 0);
	}
	return 0; /* TC_ACT_OK */
}

SEC("socket")
int sock_count(struct __sk_buff *skb)
{
	count(2);
	return skb->len;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
