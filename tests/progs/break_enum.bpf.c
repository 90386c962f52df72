/* Breaks on 6.1.0-56: the enumerator CPUHP_PADATA_DEAD is gone, and its value is used unguarded:
 * libbpf poisons the instruction (core-relo). The type-existence guard on struct fbcon_ops, gone
 * in 6.1.0-56 too, is fine: it only decides a branch. */
#include "common.h"

__u64 seen;

SEC("tracepoint/syscalls/sys_enter_getpid")
int cpuhp_bits(void *ctx)
{
	seen |= bpf_core_enum_value(enum cpuhp_state, CPUHP_PADATA_DEAD);
	if (bpf_core_type_exists(struct fbcon_ops))
		seen |= 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
