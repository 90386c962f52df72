/* An object with alternatives, as libbpf tools ship them: one kprobe on the function's name
 * before Linux 6.8 (swap_readpage) and one on its name since (swap_read_folio). The tool turns
 * off the one the kernel lacks; kprobe programs load whatever their target, so the object loads
 * everywhere and works wherever one of the two names exists: compatible-partial. */
#include "common.h"

__u64 reads;

SEC("kprobe/swap_readpage")
int BPF_KPROBE(on_swap_readpage)
{
	reads++;
	return 0;
}

SEC("kprobe/swap_read_folio")
int BPF_KPROBE(on_swap_read_folio)
{
	reads++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
