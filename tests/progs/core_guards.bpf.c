/* CO-RE guards: field, type and enum-value existence, and a type size. The `state` branch is dead
 * on every kernel since 5.14 (task_struct.state became __state), and must be pruned. */
#include "common.h"

struct task_struct___new {
	unsigned int __state;
} __attribute__((preserve_access_index));

struct task_struct___old {
	long state;
} __attribute__((preserve_access_index));

enum bpf_func_id___local {
	BPF_FUNC_loop___local = 181,
	BPF_FUNC_no_such_helper___local = 9999,
};

struct bpf_key___local {
	void *key;
	bool has_ref;
} __attribute__((preserve_access_index));

__u64 task_state;
__u64 flags;
__u64 key_size;

static __always_inline __u64 get_state(struct task_struct *task)
{
	if (bpf_core_field_exists(((struct task_struct___new *)task)->__state))
		return BPF_CORE_READ((struct task_struct___new *)task, __state);
	return BPF_CORE_READ((struct task_struct___old *)task, state);
}

SEC("tp/sched/sched_process_fork")
int fork_guarded(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	task_state = get_state(task);
	if (bpf_core_field_exists(task->__state))
		flags |= 4;
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_loop))
		flags |= 1;
	if (bpf_core_enum_value_exists(enum bpf_func_id___local, BPF_FUNC_no_such_helper___local))
		flags |= 2;
	if (bpf_core_type_exists(struct bpf_key___local))
		key_size = bpf_core_type_size(struct bpf_key___local);
	flags |= (__u64)bpf_core_enum_value(enum bpf_func_id, BPF_FUNC_loop) << 8;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
