/* .kconfig externs: libbpf fills them from the kernel's config at load time. */
#include "common.h"

extern int LINUX_KERNEL_VERSION __kconfig;
extern int CONFIG_HZ __kconfig;
extern bool CONFIG_BPF_LSM __kconfig __weak;
extern const char CONFIG_NO_SUCH_OPTION[8] __kconfig __weak;

__u64 seen;

SEC("raw_tp/sys_enter")
int kconfig_user(void *ctx)
{
	seen = (__u64)LINUX_KERNEL_VERSION << 32 | CONFIG_HZ;
	if (CONFIG_BPF_LSM)
		seen |= 1ULL << 63;
	if (CONFIG_NO_SUCH_OPTION[0])
		seen |= 1ULL << 62;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
