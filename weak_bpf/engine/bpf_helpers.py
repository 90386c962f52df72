"""BPF helpers: their ids, names and whether the kernel reserves them for GPL-compatible programs.

BTF names the helpers (`enum bpf_func_id`) but does not say which are GPL-only, so this module keeps
a table read from kernel sources. Pure data: no I/O.

Source: Linux 6.12.117 (Debian's linux-source-6.12 6.12.117-1~deb12u1):
- ids and names: the `___BPF_FUNC_MAPPER` list in include/uapi/linux/bpf.h (ids 1..211; the list
  has not grown since 6.2, new kernel interfaces are kfuncs);
- GPL-only: the `.gpl_only` flag of each `struct bpf_func_proto` in kernel/bpf/*.c,
  kernel/trace/bpf_trace.c, net/core/*.c, net/ipv4/*.c, drivers/media/rc/bpf-lirc.c and
  security/, matched to a helper through the `case BPF_FUNC_<name>:` branches of the
  `*_func_proto()` switches that return it;
- the license list: `license_is_gpl_compatible()` in include/linux/license.h.

Some helpers have several protos (one per program type) whose flags differ: `get_stackid` is not
GPL-only from perf_event programs and `get_func_ip` is not from kprobe.multi/uprobe.multi ones. A
helper is marked GPL-only when ANY of its protos is: calling a helper "compatible" when the kernel
refuses it is the worst mistake this table could make.
"""

from __future__ import annotations

from typing import NamedTuple

TABLE_KERNEL = "6.12.117"
"""The kernel release whose sources the table was read from."""

GPL_COMPATIBLE_LICENSES = frozenset(
    {
        "GPL",
        "GPL v2",
        "GPL and additional rights",
        "Dual BSD/GPL",
        "Dual MIT/GPL",
        "Dual MPL/GPL",
    }
)


class Helper(NamedTuple):
    name: str  # as in the kernel's mapper and `BPF_FUNC_<name>`, without the "bpf_" prefix
    gpl_only: bool


# Helper id -> Helper. Id 0 (`unspec`) is not a helper.
HELPERS: dict[int, Helper] = {
    1: Helper("map_lookup_elem", False),
    2: Helper("map_update_elem", False),
    3: Helper("map_delete_elem", False),
    4: Helper("probe_read", True),
    5: Helper("ktime_get_ns", False),
    6: Helper("trace_printk", True),
    7: Helper("get_prandom_u32", False),
    8: Helper("get_smp_processor_id", False),
    9: Helper("skb_store_bytes", False),
    10: Helper("l3_csum_replace", False),
    11: Helper("l4_csum_replace", False),
    12: Helper("tail_call", False),
    13: Helper("clone_redirect", False),
    14: Helper("get_current_pid_tgid", False),
    15: Helper("get_current_uid_gid", False),
    16: Helper("get_current_comm", False),
    17: Helper("get_cgroup_classid", False),
    18: Helper("skb_vlan_push", False),
    19: Helper("skb_vlan_pop", False),
    20: Helper("skb_get_tunnel_key", False),
    21: Helper("skb_set_tunnel_key", False),
    22: Helper("perf_event_read", True),
    23: Helper("redirect", False),
    24: Helper("get_route_realm", False),
    25: Helper("perf_event_output", True),
    26: Helper("skb_load_bytes", False),
    27: Helper("get_stackid", True),
    28: Helper("csum_diff", False),
    29: Helper("skb_get_tunnel_opt", False),
    30: Helper("skb_set_tunnel_opt", False),
    31: Helper("skb_change_proto", False),
    32: Helper("skb_change_type", False),
    33: Helper("skb_under_cgroup", False),
    34: Helper("get_hash_recalc", False),
    35: Helper("get_current_task", True),
    36: Helper("probe_write_user", True),
    37: Helper("current_task_under_cgroup", False),
    38: Helper("skb_change_tail", False),
    39: Helper("skb_pull_data", False),
    40: Helper("csum_update", False),
    41: Helper("set_hash_invalid", False),
    42: Helper("get_numa_node_id", False),
    43: Helper("skb_change_head", False),
    44: Helper("xdp_adjust_head", False),
    45: Helper("probe_read_str", True),
    46: Helper("get_socket_cookie", False),
    47: Helper("get_socket_uid", False),
    48: Helper("set_hash", False),
    49: Helper("setsockopt", False),
    50: Helper("skb_adjust_room", False),
    51: Helper("redirect_map", False),
    52: Helper("sk_redirect_map", False),
    53: Helper("sock_map_update", False),
    54: Helper("xdp_adjust_meta", False),
    55: Helper("perf_event_read_value", True),
    56: Helper("perf_prog_read_value", True),
    57: Helper("getsockopt", False),
    58: Helper("override_return", True),
    59: Helper("sock_ops_cb_flags_set", False),
    60: Helper("msg_redirect_map", False),
    61: Helper("msg_apply_bytes", False),
    62: Helper("msg_cork_bytes", False),
    63: Helper("msg_pull_data", False),
    64: Helper("bind", False),
    65: Helper("xdp_adjust_tail", False),
    66: Helper("skb_get_xfrm_state", False),
    67: Helper("get_stack", True),
    68: Helper("skb_load_bytes_relative", False),
    69: Helper("fib_lookup", True),
    70: Helper("sock_hash_update", False),
    71: Helper("msg_redirect_hash", False),
    72: Helper("sk_redirect_hash", False),
    73: Helper("lwt_push_encap", False),
    74: Helper("lwt_seg6_store_bytes", False),
    75: Helper("lwt_seg6_adjust_srh", False),
    76: Helper("lwt_seg6_action", False),
    77: Helper("rc_repeat", True),
    78: Helper("rc_keydown", True),
    79: Helper("skb_cgroup_id", False),
    80: Helper("get_current_cgroup_id", False),
    81: Helper("get_local_storage", False),
    82: Helper("sk_select_reuseport", False),
    83: Helper("skb_ancestor_cgroup_id", False),
    84: Helper("sk_lookup_tcp", False),
    85: Helper("sk_lookup_udp", False),
    86: Helper("sk_release", False),
    87: Helper("map_push_elem", False),
    88: Helper("map_pop_elem", False),
    89: Helper("map_peek_elem", False),
    90: Helper("msg_push_data", False),
    91: Helper("msg_pop_data", False),
    92: Helper("rc_pointer_rel", True),
    93: Helper("spin_lock", False),
    94: Helper("spin_unlock", False),
    95: Helper("sk_fullsock", False),
    96: Helper("tcp_sock", False),
    97: Helper("skb_ecn_set_ce", False),
    98: Helper("get_listener_sock", False),
    99: Helper("skc_lookup_tcp", False),
    100: Helper("tcp_check_syncookie", True),
    101: Helper("sysctl_get_name", False),
    102: Helper("sysctl_get_current_value", False),
    103: Helper("sysctl_get_new_value", False),
    104: Helper("sysctl_set_new_value", False),
    105: Helper("strtol", False),
    106: Helper("strtoul", False),
    107: Helper("sk_storage_get", False),
    108: Helper("sk_storage_delete", False),
    109: Helper("send_signal", False),
    110: Helper("tcp_gen_syncookie", True),
    111: Helper("skb_output", True),
    112: Helper("probe_read_user", True),
    113: Helper("probe_read_kernel", True),
    114: Helper("probe_read_user_str", True),
    115: Helper("probe_read_kernel_str", True),
    116: Helper("tcp_send_ack", False),
    117: Helper("send_signal_thread", False),
    118: Helper("jiffies64", False),
    119: Helper("read_branch_records", True),
    120: Helper("get_ns_current_pid_tgid", False),
    121: Helper("xdp_output", True),
    122: Helper("get_netns_cookie", False),
    123: Helper("get_current_ancestor_cgroup_id", False),
    124: Helper("sk_assign", False),
    125: Helper("ktime_get_boot_ns", False),
    126: Helper("seq_printf", True),
    127: Helper("seq_write", True),
    128: Helper("sk_cgroup_id", False),
    129: Helper("sk_ancestor_cgroup_id", False),
    130: Helper("ringbuf_output", False),
    131: Helper("ringbuf_reserve", False),
    132: Helper("ringbuf_submit", False),
    133: Helper("ringbuf_discard", False),
    134: Helper("ringbuf_query", False),
    135: Helper("csum_level", False),
    136: Helper("skc_to_tcp6_sock", False),
    137: Helper("skc_to_tcp_sock", False),
    138: Helper("skc_to_tcp_timewait_sock", False),
    139: Helper("skc_to_tcp_request_sock", False),
    140: Helper("skc_to_udp6_sock", False),
    141: Helper("get_task_stack", False),
    142: Helper("load_hdr_opt", False),
    143: Helper("store_hdr_opt", False),
    144: Helper("reserve_hdr_opt", False),
    145: Helper("inode_storage_get", False),
    146: Helper("inode_storage_delete", False),
    147: Helper("d_path", False),
    148: Helper("copy_from_user", False),
    149: Helper("snprintf_btf", False),
    150: Helper("seq_printf_btf", True),
    151: Helper("skb_cgroup_classid", False),
    152: Helper("redirect_neigh", False),
    153: Helper("per_cpu_ptr", False),
    154: Helper("this_cpu_ptr", False),
    155: Helper("redirect_peer", False),
    156: Helper("task_storage_get", False),
    157: Helper("task_storage_delete", False),
    158: Helper("get_current_task_btf", True),
    159: Helper("bprm_opts_set", False),
    160: Helper("ktime_get_coarse_ns", False),
    161: Helper("ima_inode_hash", False),
    162: Helper("sock_from_file", False),
    163: Helper("check_mtu", True),
    164: Helper("for_each_map_elem", False),
    165: Helper("snprintf", True),
    166: Helper("sys_bpf", False),
    167: Helper("btf_find_by_name_kind", False),
    168: Helper("sys_close", False),
    169: Helper("timer_init", True),
    170: Helper("timer_set_callback", True),
    171: Helper("timer_start", True),
    172: Helper("timer_cancel", True),
    173: Helper("get_func_ip", True),
    174: Helper("get_attach_cookie", False),
    175: Helper("task_pt_regs", True),
    176: Helper("get_branch_snapshot", True),
    177: Helper("trace_vprintk", True),
    178: Helper("skc_to_unix_sock", False),
    179: Helper("kallsyms_lookup_name", False),
    180: Helper("find_vma", False),
    181: Helper("loop", False),
    182: Helper("strncmp", False),
    183: Helper("get_func_arg", False),
    184: Helper("get_func_ret", False),
    185: Helper("get_func_arg_cnt", False),
    186: Helper("get_retval", False),
    187: Helper("set_retval", False),
    188: Helper("xdp_get_buff_len", False),
    189: Helper("xdp_load_bytes", False),
    190: Helper("xdp_store_bytes", False),
    191: Helper("copy_from_user_task", True),
    192: Helper("skb_set_tstamp", False),
    193: Helper("ima_file_hash", False),
    194: Helper("kptr_xchg", False),
    195: Helper("map_lookup_percpu_elem", False),
    196: Helper("skc_to_mptcp_sock", False),
    197: Helper("dynptr_from_mem", False),
    198: Helper("ringbuf_reserve_dynptr", False),
    199: Helper("ringbuf_submit_dynptr", False),
    200: Helper("ringbuf_discard_dynptr", False),
    201: Helper("dynptr_read", False),
    202: Helper("dynptr_write", False),
    203: Helper("dynptr_data", False),
    204: Helper("tcp_raw_gen_syncookie_ipv4", True),
    205: Helper("tcp_raw_gen_syncookie_ipv6", True),
    206: Helper("tcp_raw_check_syncookie_ipv4", True),
    207: Helper("tcp_raw_check_syncookie_ipv6", True),
    208: Helper("ktime_get_tai_ns", False),
    209: Helper("user_ringbuf_drain", False),
    210: Helper("cgrp_storage_get", False),
    211: Helper("cgrp_storage_delete", False),
}


def license_is_gpl_compatible(license: str) -> bool:
    """Whether the kernel lets a program under `license` call GPL-only helpers and kfuncs.

    The kernel compares the whole NUL-terminated string, exactly (case and spaces count).
    """
    return license.split("\0", 1)[0] in GPL_COMPATIBLE_LICENSES


def helper_name(helper_id: int) -> str:
    """The C name of a helper, e.g. "bpf_map_lookup_elem"; "helper #N" for an unknown id."""
    helper = HELPERS.get(helper_id)
    return f"bpf_{helper.name}" if helper is not None else f"helper #{helper_id}"


def is_gpl_only(helper_id: int) -> bool:
    """Whether a non-GPL program may not call the helper. Unknown ids (newer than the table) count
    as GPL-only, so that a program is never called compatible on a guess."""
    helper = HELPERS.get(helper_id)
    return helper.gpl_only if helper is not None else True
