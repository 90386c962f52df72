/* Reads sched_stat_runtime's vruntime argument (context slot 2) only on kernels without EEVDF's
 * sched_entity.deadline (6.6): the kernels that lost the argument (6.8) all have the field, so
 * there the read is dead code, which the verifier never checks. Loads everywhere. The slots are
 * read with inline assembly: with BPF_PROG, or plain ctx[i], clang merges the two reads into one
 * through a moved context pointer, which every verifier refuses. */
#include "common.h"

struct sched_entity___eevdf {
	u64 deadline;
} __attribute__((preserve_access_index));

__u64 total_runtime;
__u64 total_vruntime;

SEC("tp_btf/sched_stat_runtime")
int on_runtime(u64 *ctx)
{
	u64 value;

	if (bpf_core_field_exists(struct sched_entity___eevdf, deadline)) {
		asm volatile("%0 = *(u64 *)(%1 + 8)" : "=r"(value) : "r"(ctx));
		total_runtime += value;
	} else {
		asm volatile("%0 = *(u64 *)(%1 + 16)" : "=r"(value) : "r"(ctx));
		total_vruntime += value;
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
