/* acme-sec: a proprietary agent that takes task references with kfuncs. The kernel refuses
 * kfuncs to programs whose license is not GPL-compatible. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

extern struct task_struct *bpf_task_acquire(struct task_struct *p) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;

SEC("tp_btf/task_newtask")
int BPF_PROG(task_guard, struct task_struct *task, u64 clone_flags)
{
	struct task_struct *ref = bpf_task_acquire(task);

	if (ref)
		bpf_task_release(ref);
	return 0;
}

char LICENSE[] SEC("license") = "Proprietary";
