/* bpf_ksym_exists() on a kfunc the kernel has: libbpf writes the kfunc's BTF id into the
 * ld_imm64, and verifiers older than about 6.4 accept only variables there. */
#include "common.h"

extern struct bpf_key *bpf_lookup_system_key(__u64 id) __ksym __weak;
extern void bpf_key_put(struct bpf_key *bkey) __ksym __weak;

__u64 lookups;

SEC("tp_btf/sched_process_exec")
int BPF_PROG(guarded_lookup, struct task_struct *p)
{
	if (bpf_ksym_exists(bpf_lookup_system_key)) {
		struct bpf_key *key = bpf_lookup_system_key(0);

		if (key) {
			lookups++;
			bpf_key_put(key);
		}
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
