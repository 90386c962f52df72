/* BTF-attached tracing: fentry, fexit, fmod_ret, a module-prefixed fentry and a task iterator. */
#include "common.h"

__u64 unlinks;
__u64 failures;

SEC("fentry/do_unlinkat")
int BPF_PROG(unlink_fentry, int dfd, struct filename *name)
{
	unlinks++;
	return 0;
}

SEC("fexit/do_unlinkat")
int BPF_PROG(unlink_fexit, int dfd, struct filename *name, long ret)
{
	if (ret)
		failures++;
	return 0;
}

/* a module function: libbpf looks in vmlinux, then in the modules (the "module:func" form
 * needs a newer libbpf than some distributions ship) */
SEC("fentry/nf_ct_delete")
int BPF_PROG(ct_delete, struct nf_conn *ct, u32 portid, int report)
{
	unlinks += 0x10000;
	return 0;
}

SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	static const char fmt[] = "%d\n";
	__u64 args[1];

	if (!task)
		return 0;
	args[0] = task->pid;
	bpf_seq_printf(ctx->meta->seq, fmt, sizeof(fmt), args, sizeof(args));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
