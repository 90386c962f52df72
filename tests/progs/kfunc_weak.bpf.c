/* A weak kfunc behind bpf_ksym_exists(): loads whether or not the kernel has it. */
#include "common.h"

extern struct task_struct *bpf_task_acquire(struct task_struct *p) __ksym __weak;
extern void bpf_task_release(struct task_struct *p) __ksym __weak;

__u32 acquired_pid;
__u64 fallbacks;

SEC("tp_btf/task_newtask")
int BPF_PROG(on_newtask_weak, struct task_struct *task, u64 clone_flags)
{
	struct task_struct *acquired;

	if (!bpf_ksym_exists(bpf_task_acquire)) {
		fallbacks++;
		return 0;
	}
	acquired = bpf_task_acquire(task);
	if (acquired) {
		acquired_pid = acquired->pid;
		bpf_task_release(acquired);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
