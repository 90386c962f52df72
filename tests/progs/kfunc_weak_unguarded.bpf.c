/* A weak kfunc called without a bpf_ksym_exists() guard: where the kfunc is absent (6.1 lacks
 * bpf_task_acquire), libbpf poisons the call and the verifier rejects the reachable poison. */
#include "common.h"

extern struct task_struct *bpf_task_acquire(struct task_struct *p) __ksym __weak;
extern void bpf_task_release(struct task_struct *p) __ksym __weak;

SEC("tp_btf/task_newtask")
int BPF_PROG(unguarded, struct task_struct *task, u64 clone_flags)
{
	struct task_struct *ref = bpf_task_acquire(task);

	if (ref)
		bpf_task_release(ref);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
