// SPDX-License-Identifier: GPL-2.0
/* acme-trace: report the state of each task that calls exec. task_struct.state was renamed
 * to __state in 5.14; the field_exists guard makes one object work on both. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_state, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	long state;

	if (bpf_core_field_exists(p->__state))
		state = BPF_CORE_READ(p, __state);
	else
		state = BPF_CORE_READ((struct task_struct___pre514 *)p, state);
	bpf_ringbuf_output(&events, &state, sizeof(state), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
