// SPDX-License-Identifier: GPL-2.0
/* acme-example: look up the system keyring on every exec with kfuncs. The kfuncs are unstable
 * interfaces: the package's greylist records their CRCs on the build kernel. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

extern struct bpf_key *bpf_lookup_system_key(__u64 id) __ksym;
extern void bpf_key_put(struct bpf_key *bkey) __ksym;

SEC("tp_btf/sched_process_exec")
int BPF_PROG(sys_key, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct bpf_key *key = bpf_lookup_system_key(0);

	if (key)
		bpf_key_put(key);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
