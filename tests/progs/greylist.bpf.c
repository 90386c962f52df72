/* A program that carries its greylist in an ELF section (SPEC §3). The CRCs are the kfuncs' BTF
 * signature CRCs, as `weak-bpf-progs greylist --kernel 6.1.0-47-cloud-amd64` prints them. */
#include "common.h"

extern struct bpf_key *bpf_lookup_system_key(__u64 id) __ksym;
extern void bpf_key_put(struct bpf_key *bkey) __ksym;

__attribute__((section(".greylist"), used))
static const char greylist[] =
	"# build-kernel: 6.1.0-47-cloud-amd64\n"
	"0xe1c9c661\tbpf_lookup_system_key\tvmlinux\tEXPORT_SYMBOL_BPF_GPL__acquires\n"
	"0x8b737d5b\tbpf_key_put\tvmlinux\tEXPORT_SYMBOL_BPF_GPL__releases\n";

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_greylisted, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct bpf_key *key = bpf_lookup_system_key(0);

	if (key)
		bpf_key_put(key);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
