/* An LSM hook (bpf_lsm_file_open), denying nothing. */
#include "common.h"

__u64 opens;

SEC("lsm/file_open")
int BPF_PROG(audit_open, struct file *file, int ret)
{
	if (ret)
		return ret;
	opens++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
