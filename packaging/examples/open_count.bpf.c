// SPDX-License-Identifier: GPL-2.0
/* acme-example: count file opens per process with an fentry program. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, u32);
	__type(value, u64);
} opens SEC(".maps");

SEC("fentry/do_sys_openat2")
int BPF_PROG(open_count, int dfd, const char *filename, struct open_how *how)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;
	u64 one = 1, *count;

	count = bpf_map_lookup_elem(&opens, &pid);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&opens, &pid, &one, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
