// SPDX-License-Identifier: GPL-2.0
/* acme-probe: count TCP small-queue checks with a kprobe on a compiler clone of a static function
 * (.isra.0). No BTF describes it: only a symbol table does, and Debian's System.map is a
 * placeholder, so offline its verdict is unknown; `weak-bpf-progs verify` asks the kernel.
 * Used by the demo (scripts/demo.py), outside examples/progs/. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 checks;

SEC("kprobe/tcp_small_queue_check.isra.0")
int BPF_KPROBE(queue_probe)
{
	__sync_fetch_and_add(&checks, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
