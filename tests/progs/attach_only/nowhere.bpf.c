/* Not in the matrix (tests/progs/*.bpf.c): a kprobe whose target no kernel has. The object
 * loads, but none of its programs can attach anywhere: incompatible, not compatible-partial. */
#include "common.h"

__u64 hits;

SEC("kprobe/weak_bpf_progs_no_such_function")
int BPF_KPROBE(on_nothing)
{
	hits++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
