/* The same tracepoint as proto_slot_gone, but only the arguments every kernel has are read: the
 * slot of the lost vruntime argument is never touched, so this loads everywhere. */
#include "common.h"

__u64 total_runtime;
__u32 last_pid;

SEC("tp_btf/sched_stat_runtime")
int BPF_PROG(on_runtime, struct task_struct *curr, u64 runtime, u64 vruntime)
{
	total_runtime += runtime;
	last_pid = curr->pid;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
