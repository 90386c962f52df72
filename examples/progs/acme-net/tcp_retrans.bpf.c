// SPDX-License-Identifier: GPL-2.0
/* acme-net: count TCP retransmissions per remote port with a kprobe, to spot lossy services.
 *
 * It only needs the kprobe target tcp_retransmit_skb and fields of struct sock_common that both
 * kernels have: compatible on 6.1.0-47-cloud-amd64 and on 6.1.0-56-cloud-amd64. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u16);
	__type(value, u64);
} retransmits SEC(".maps");

SEC("kprobe/tcp_retransmit_skb")
int BPF_KPROBE(tcp_retrans, struct sock *sk, struct sk_buff *skb, int segs)
{
	u16 port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	u64 one = 1, *count;

	count = bpf_map_lookup_elem(&retransmits, &port);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&retransmits, &port, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
