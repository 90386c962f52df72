// SPDX-License-Identifier: GPL-2.0
/* globex-obs: count epoll instances created and freed, to spot processes that leak them.
 *
 * Frees are seen by an fentry program on ep_free(). 6.1.0-47-cloud-amd64 has that function in its
 * BTF: compatible. 6.1.0-56-cloud-amd64 inlined it away, so the fentry program has nothing to
 * attach to: incompatible (attach-target). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u64);
} epolls SEC(".maps");

static __always_inline void count(u32 slot)
{
	u64 *value = bpf_map_lookup_elem(&epolls, &slot);

	if (value)
		*value += 1;
}

SEC("tracepoint/syscalls/sys_exit_epoll_create1")
int epoll_created(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret >= 0)
		count(0);
	return 0;
}

SEC("fentry/ep_free")
int BPF_PROG(epoll_freed, struct eventpoll *ep)
{
	count(1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
