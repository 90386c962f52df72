// SPDX-License-Identifier: GPL-2.0
/* acme-example: report the state of each task that calls exec, with CO-RE reads. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_state, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	unsigned int state = BPF_CORE_READ(p, __state);

	bpf_ringbuf_output(&events, &state, sizeof(state), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
