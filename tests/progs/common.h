/* Shared bits for the test programs: vmlinux.h plus libbpf's headers. */
#ifndef WEAK_BPF_TEST_COMMON_H
#define WEAK_BPF_TEST_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

/* libbpf-dev 1.1 predates bpf_ksym_exists(): a weak extern resolves to 0 when absent. */
#ifndef bpf_ksym_exists
#define bpf_ksym_exists(sym) (!!(&(sym)))
#endif

#endif
