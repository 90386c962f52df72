/* schedule() is in vmlinux's BTF, but no kfunc set registers it: libbpf resolves the extern,
 * and the verifier refuses the call ("calling kernel function schedule is not allowed"). */
#include "common.h"

extern void schedule(void) __ksym;

SEC("tp_btf/sched_process_exec")
int BPF_PROG(calls_schedule, struct task_struct *p)
{
	schedule();
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
