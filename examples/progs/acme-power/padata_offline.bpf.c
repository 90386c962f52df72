// SPDX-License-Identifier: GPL-2.0
/* acme-power: time the padata step of taking a CPU offline, to find what makes offlining slow.
 *
 * The step is the CPU hotplug state CPUHP_PADATA_DEAD. Its value is read through CO-RE
 * (bpf_core_enum_value) rather than compiled in, since the states are renumbered between
 * kernels. 6.1.0-47-cloud-amd64 has the enumerator: compatible. 6.1.0-56-cloud-amd64 removed it,
 * and the program uses it unguarded: incompatible (core-relo). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, u64);
} started SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} durations SEC(".maps");

SEC("tracepoint/cpuhp/cpuhp_enter")
int padata_enter(struct trace_event_raw_cpuhp_enter *ctx)
{
	u32 cpu = ctx->cpu;
	u64 now;

	if (ctx->idx != bpf_core_enum_value(enum cpuhp_state, CPUHP_PADATA_DEAD))
		return 0;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&started, &cpu, &now, BPF_ANY);
	return 0;
}

SEC("tracepoint/cpuhp/cpuhp_exit")
int padata_exit(struct trace_event_raw_cpuhp_exit *ctx)
{
	u32 cpu = ctx->cpu;
	u64 *start, took;

	if (ctx->idx != bpf_core_enum_value(enum cpuhp_state, CPUHP_PADATA_DEAD))
		return 0;
	start = bpf_map_lookup_elem(&started, &cpu);
	if (!start)
		return 0;
	took = bpf_ktime_get_ns() - *start;
	bpf_map_delete_elem(&started, &cpu);
	bpf_ringbuf_output(&durations, &took, sizeof(took), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
