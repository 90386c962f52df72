/* Plain CO-RE reads of task_struct fields, in a kprobe and two tracepoints (one section holds two
 * programs). */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, u64);
} parent_of SEC(".maps");

SEC("kprobe/do_unlinkat")
int BPF_KPROBE(unlink_entry, int dfd, struct filename *name)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	u32 pid = BPF_CORE_READ(task, pid);
	u64 ppid = BPF_CORE_READ(task, real_parent, tgid);

	bpf_map_update_elem(&parent_of, &pid, &ppid, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int openat_enter(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	u32 pid = BPF_CORE_READ(task, tgid);
	u64 start = BPF_CORE_READ(task, start_time);

	bpf_map_update_elem(&parent_of, &pid, &start, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int openat_enter_flags(struct trace_event_raw_sys_enter *ctx)
{
	u32 key = (u32)BPF_CORE_READ(ctx, args[2]);
	u64 one = 1;

	bpf_map_update_elem(&parent_of, &key, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
