/* vmlinux kfuncs present since 6.1: the keyring lookup pair. */
#include "common.h"

extern struct bpf_key *bpf_lookup_system_key(__u64 id) __ksym;
extern void bpf_key_put(struct bpf_key *bkey) __ksym;

__u64 lookups;

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct bpf_key *key = bpf_lookup_system_key(0);

	if (key) {
		lookups++;
		bpf_key_put(key);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
