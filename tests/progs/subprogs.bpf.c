/* BPF-to-BPF calls: a static and a global subprogram in .text, and a bpf_loop() callback. */
#include "common.h"

extern struct bpf_key *bpf_lookup_system_key(__u64 id) __ksym;
extern void bpf_key_put(struct bpf_key *bkey) __ksym;

__u64 counter;

static __noinline int bump(__u64 by)
{
	counter += by + bpf_get_smp_processor_id();
	return 0;
}

__noinline int probe_key(__u64 id)
{
	struct bpf_key *key = bpf_lookup_system_key(id);

	if (!key)
		return 0;
	bpf_key_put(key);
	return 1;
}

static int loop_body(__u32 index, void *ctx)
{
	bump(index);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_subprogs, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	bpf_loop(4, loop_body, NULL, 0);
	bump(1);
	return probe_key(0);
}

char LICENSE[] SEC("license") = "GPL";
