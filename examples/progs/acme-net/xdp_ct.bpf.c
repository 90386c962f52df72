// SPDX-License-Identifier: GPL-2.0
/* acme-net: pass only packets of flows that conntrack knows. Uses nf_conntrack's kfuncs. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct bpf_ct_opts___local {
	s32 netns_id;
	s32 error;
	u8 l4proto;
	u8 dir;
	u8 reserved[2];
} __attribute__((preserve_access_index));

extern struct nf_conn *bpf_xdp_ct_lookup(struct xdp_md *ctx, struct bpf_sock_tuple *tuple,
					 u32 tuple__sz, struct bpf_ct_opts___local *opts,
					 u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;

SEC("xdp")
int xdp_ct(struct xdp_md *ctx)
{
	struct bpf_ct_opts___local opts = { .netns_id = -1, .l4proto = IPPROTO_TCP };
	struct bpf_sock_tuple tuple = {};
	struct nf_conn *ct;

	ct = bpf_xdp_ct_lookup(ctx, &tuple, sizeof(tuple.ipv4), &opts, sizeof(opts));
	if (!ct)
		return XDP_DROP;
	bpf_ct_release(ct);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
