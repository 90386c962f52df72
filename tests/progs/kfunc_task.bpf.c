/* bpf_task_acquire/bpf_task_release: kfuncs added after 6.1 (absent from the 6.1 BTF). */
#include "common.h"

extern struct task_struct *bpf_task_acquire(struct task_struct *p) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;

__u32 last_pid;

SEC("tp_btf/task_newtask")
int BPF_PROG(on_newtask, struct task_struct *task, u64 clone_flags)
{
	struct task_struct *acquired = bpf_task_acquire(task);

	if (!acquired)
		return 0;
	last_pid = acquired->pid;
	bpf_task_release(acquired);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
