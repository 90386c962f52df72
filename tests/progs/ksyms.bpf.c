/* Typed ksyms (BTF VARs, per-CPU) and a typeless one (a plain kernel address). */
#include "common.h"

extern const struct rq runqueues __ksym;
extern const void bpf_prog_active __ksym;
extern const void init_task_typeless __ksym __weak;

__u64 nr_running_seen;
__u64 active_addr;

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct rq *rq = bpf_per_cpu_ptr(&runqueues, 0);

	if (rq)
		nr_running_seen = rq->nr_running;
	active_addr = (__u64)&bpf_prog_active;
	if (&init_task_typeless)
		active_addr++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
