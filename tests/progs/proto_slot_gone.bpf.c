/* Breaks on Linux 6.8 and later: the sched_stat_runtime tracepoint lost its vruntime argument,
 * and this program reads it (the third 8-byte slot of its context): attach-proto. */
#include "common.h"

__u64 total_vruntime;

SEC("tp_btf/sched_stat_runtime")
int BPF_PROG(on_runtime, struct task_struct *curr, u64 runtime, u64 vruntime)
{
	total_vruntime += vruntime;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
