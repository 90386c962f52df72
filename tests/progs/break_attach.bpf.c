/* Breaks on 6.1.0-56: ep_free() is gone from its BTF (inlined away), so the fentry program has
 * no attach target: attach-target. */
#include "common.h"

__u64 frees;

SEC("fentry/ep_free")
int BPF_PROG(count_ep_free, struct eventpoll *ep)
{
	frees++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
