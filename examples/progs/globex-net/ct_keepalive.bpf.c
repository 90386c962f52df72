// SPDX-License-Identifier: GPL-2.0
/* globex-net: keep the conntrack entries of idle long-poll connections (TCP port 5222) alive,
 * from a tc ingress filter, with nf_conntrack's kfuncs.
 *
 * The package ships a greylist beside the object, made at build time against
 * 6.1.0-47-cloud-amd64 (`weak-bpf-progs greylist --kernel`, as the %weak_bpf_greylist macro does):
 * the kfuncs' BTF signature CRCs. Both kernels have the kfuncs with unchanged prototypes, and
 * Debian ships no kABI stablelist: compatible-unstable on 6.1.0-47-cloud-amd64 and on
 * 6.1.0-56-cloud-amd64, and the program needs the nf_conntrack module loaded. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define TC_ACT_OK 0
#define XMPP_PORT 5222
#define KEEPALIVE_MS (60 * 60 * 1000)

/* vmlinux.h has no struct bpf_ct_opts: it lives in nf_conntrack's BTF */
struct bpf_ct_opts___local {
	s32 netns_id;
	s32 error;
	u8 l4proto;
	u8 dir;
	u8 reserved[2];
} __attribute__((preserve_access_index));

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
					 u32 tuple__sz, struct bpf_ct_opts___local *opts,
					 u32 opts__sz) __ksym;
extern int bpf_ct_change_timeout(struct nf_conn *ct, u32 timeout) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;

SEC("tc")
int ct_keepalive(struct __sk_buff *skb)
{
	struct bpf_ct_opts___local opts = { .netns_id = -1, .l4proto = IPPROTO_TCP };
	void *data_end = (void *)(long)skb->data_end;
	void *data = (void *)(long)skb->data;
	struct bpf_sock_tuple tuple = {};
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct tcphdr *tcp;
	struct nf_conn *ct;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || iph->protocol != IPPROTO_TCP || iph->ihl != 5)
		return TC_ACT_OK;
	tcp = (void *)(iph + 1);
	if ((void *)(tcp + 1) > data_end || tcp->dest != bpf_htons(XMPP_PORT))
		return TC_ACT_OK;
	tuple.ipv4.saddr = iph->saddr;
	tuple.ipv4.daddr = iph->daddr;
	tuple.ipv4.sport = tcp->source;
	tuple.ipv4.dport = tcp->dest;

	ct = bpf_skb_ct_lookup(skb, &tuple, sizeof(tuple.ipv4), &opts, sizeof(opts));
	if (!ct)
		return TC_ACT_OK;
	bpf_ct_change_timeout(ct, KEEPALIVE_MS);
	bpf_ct_release(ct);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
