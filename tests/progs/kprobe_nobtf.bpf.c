/* A kprobe on a function that BTF does not describe: a compiler clone (.isra.0) of a static
 * function. Only a symbol table knows it: System.map, kallsyms, or the .symtab of a debuginfo
 * vmlinux. Without one, whether the kprobe can attach is unknown. */
#include "common.h"

__u64 checks;

SEC("kprobe/tcp_small_queue_check.isra.0")
int BPF_KPROBE(on_small_queue_check)
{
	checks++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
