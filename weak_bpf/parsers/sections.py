"""libbpf's section-name conventions: a section name gives a program type, an expected attach
type and, for tracing programs, the kernel object the program attaches to.

The table follows the order and matching rules of libbpf's `section_defs[]` (src/libbpf.c):
an entry ending in "/" matches any name with that prefix, one ending in "+" matches the bare
name or the name followed by "/...", any other entry matches exactly. The first match wins.
"""

from __future__ import annotations

import dataclasses
import enum
import re


class ProgType(enum.IntEnum):
    """enum bpf_prog_type, kernel numbering. UNKNOWN: a section libbpf does not recognise."""

    UNKNOWN = -1
    UNSPEC = 0
    SOCKET_FILTER = 1
    KPROBE = 2
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6
    PERF_EVENT = 7
    CGROUP_SKB = 8
    CGROUP_SOCK = 9
    LWT_IN = 10
    LWT_OUT = 11
    LWT_XMIT = 12
    SOCK_OPS = 13
    SK_SKB = 14
    CGROUP_DEVICE = 15
    SK_MSG = 16
    RAW_TRACEPOINT = 17
    CGROUP_SOCK_ADDR = 18
    LWT_SEG6LOCAL = 19
    LIRC_MODE2 = 20
    SK_REUSEPORT = 21
    FLOW_DISSECTOR = 22
    CGROUP_SYSCTL = 23
    RAW_TRACEPOINT_WRITABLE = 24
    CGROUP_SOCKOPT = 25
    TRACING = 26
    STRUCT_OPS = 27
    EXT = 28
    LSM = 29
    SK_LOOKUP = 30
    SYSCALL = 31
    NETFILTER = 32


class AttachType(enum.IntEnum):
    """enum bpf_attach_type, kernel numbering."""

    CGROUP_INET_INGRESS = 0
    CGROUP_INET_EGRESS = 1
    CGROUP_INET_SOCK_CREATE = 2
    CGROUP_SOCK_OPS = 3
    SK_SKB_STREAM_PARSER = 4
    SK_SKB_STREAM_VERDICT = 5
    CGROUP_DEVICE = 6
    SK_MSG_VERDICT = 7
    CGROUP_INET4_BIND = 8
    CGROUP_INET6_BIND = 9
    CGROUP_INET4_CONNECT = 10
    CGROUP_INET6_CONNECT = 11
    CGROUP_INET4_POST_BIND = 12
    CGROUP_INET6_POST_BIND = 13
    CGROUP_UDP4_SENDMSG = 14
    CGROUP_UDP6_SENDMSG = 15
    LIRC_MODE2 = 16
    FLOW_DISSECTOR = 17
    CGROUP_SYSCTL = 18
    CGROUP_UDP4_RECVMSG = 19
    CGROUP_UDP6_RECVMSG = 20
    CGROUP_GETSOCKOPT = 21
    CGROUP_SETSOCKOPT = 22
    TRACE_RAW_TP = 23
    TRACE_FENTRY = 24
    TRACE_FEXIT = 25
    MODIFY_RETURN = 26
    LSM_MAC = 27
    TRACE_ITER = 28
    CGROUP_INET4_GETPEERNAME = 29
    CGROUP_INET6_GETPEERNAME = 30
    CGROUP_INET4_GETSOCKNAME = 31
    CGROUP_INET6_GETSOCKNAME = 32
    XDP_DEVMAP = 33
    CGROUP_INET_SOCK_RELEASE = 34
    XDP_CPUMAP = 35
    SK_LOOKUP = 36
    XDP = 37
    SK_SKB_VERDICT = 38
    SK_REUSEPORT_SELECT = 39
    SK_REUSEPORT_SELECT_OR_MIGRATE = 40
    PERF_EVENT = 41
    TRACE_KPROBE_MULTI = 42
    LSM_CGROUP = 43
    STRUCT_OPS = 44
    NETFILTER = 45
    TCX_INGRESS = 46
    TCX_EGRESS = 47
    TRACE_UPROBE_MULTI = 48
    CGROUP_UNIX_CONNECT = 49
    CGROUP_UNIX_SENDMSG = 50
    CGROUP_UNIX_RECVMSG = 51
    CGROUP_UNIX_GETPEERNAME = 52
    CGROUP_UNIX_GETSOCKNAME = 53
    NETKIT_PRIMARY = 54
    NETKIT_PEER = 55
    TRACE_KPROBE_SESSION = 56
    TRACE_UPROBE_SESSION = 57


class TargetKind(str, enum.Enum):
    """What kind of kernel object the section's target names, i.e. where to look it up."""

    NONE = "none"  # no kernel target (xdp, tc, socket, ...) or the target was left out
    BTF_FUNC = "btf-func"  # a BTF FUNC: fentry, fexit, fmod_ret, lsm (bpf_lsm_*), iter (bpf_iter_*)
    BTF_TYPEDEF = "btf-typedef"  # tp_btf: the BTF TYPEDEF btf_trace_<name>
    KSYM = "ksym"  # kprobe/kretprobe: a kernel symbol (kallsyms, System.map)
    KSYM_PATTERN = "ksym-pattern"  # kprobe.multi: a glob over kernel symbols
    SYSCALL = "syscall"  # ksyscall: a syscall name, wrapped per arch (__x64_sys_*)
    TRACEPOINT = "tracepoint"  # tracepoint/tp: "category/name"
    RAW_TP = "raw-tp"  # raw_tp: a tracepoint name
    STRUCT_OPS = "struct-ops"  # struct_ops/<member>: checked through the .struct_ops maps
    BPF_PROG = "bpf-prog"  # freplace: a function of another BPF program
    USER = "user"  # uprobe, usdt: user space, nothing in the kernel to check


class _Flag(enum.IntFlag):
    NONE = 0
    SLEEPABLE = 1
    XDP_FRAGS = 2


@dataclasses.dataclass(frozen=True)
class SecDef:
    """One entry of the table: libbpf's pattern and what it implies."""

    pattern: str
    prog_type: ProgType
    attach_type: AttachType | None  # None: libbpf passes no meaningful expected attach type
    target_kind: TargetKind = TargetKind.NONE
    btf_prefix: str = ""  # prepended to the target to name the BTF type (bpf_lsm_, ...)
    sleepable: bool = False
    xdp_frags: bool = False

    def matches(self, section: str) -> bool:
        if self.pattern.endswith("/"):
            return section.startswith(self.pattern)
        if self.pattern.endswith("+"):
            stem = self.pattern[:-1]
            return section == stem or section.startswith(stem + "/")
        return section == self.pattern


def _d(  # noqa: PLR0917 (the table reads best positionally)
    pattern: str,
    prog_type: ProgType,
    attach_type: AttachType | None = None,
    target_kind: TargetKind = TargetKind.NONE,
    btf_prefix: str = "",
    flags: _Flag = _Flag.NONE,
) -> SecDef:
    return SecDef(
        pattern,
        prog_type,
        attach_type,
        target_kind,
        btf_prefix,
        sleepable=bool(flags & _Flag.SLEEPABLE),
        xdp_frags=bool(flags & _Flag.XDP_FRAGS),
    )


P, A, K = ProgType, AttachType, TargetKind
_S, _F = _Flag.SLEEPABLE, _Flag.XDP_FRAGS

SECTION_DEFS: tuple[SecDef, ...] = (
    _d("socket", P.SOCKET_FILTER),
    _d("sk_reuseport/migrate", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT_OR_MIGRATE),
    _d("sk_reuseport", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT),
    _d("kprobe+", P.KPROBE, None, K.KSYM),
    _d("uprobe+", P.KPROBE, None, K.USER),
    _d("uprobe.s+", P.KPROBE, None, K.USER, flags=_S),
    _d("kretprobe+", P.KPROBE, None, K.KSYM),
    _d("uretprobe+", P.KPROBE, None, K.USER),
    _d("uretprobe.s+", P.KPROBE, None, K.USER, flags=_S),
    _d("kprobe.multi+", P.KPROBE, A.TRACE_KPROBE_MULTI, K.KSYM_PATTERN),
    _d("kretprobe.multi+", P.KPROBE, A.TRACE_KPROBE_MULTI, K.KSYM_PATTERN),
    _d("kprobe.session+", P.KPROBE, A.TRACE_KPROBE_SESSION, K.KSYM_PATTERN),
    _d("uprobe.multi+", P.KPROBE, A.TRACE_UPROBE_MULTI, K.USER),
    _d("uretprobe.multi+", P.KPROBE, A.TRACE_UPROBE_MULTI, K.USER),
    _d("uprobe.session+", P.KPROBE, A.TRACE_UPROBE_SESSION, K.USER),
    _d("uprobe.multi.s+", P.KPROBE, A.TRACE_UPROBE_MULTI, K.USER, flags=_S),
    _d("uretprobe.multi.s+", P.KPROBE, A.TRACE_UPROBE_MULTI, K.USER, flags=_S),
    _d("uprobe.session.s+", P.KPROBE, A.TRACE_UPROBE_SESSION, K.USER, flags=_S),
    _d("ksyscall+", P.KPROBE, None, K.SYSCALL),
    _d("kretsyscall+", P.KPROBE, None, K.SYSCALL),
    _d("usdt+", P.KPROBE, None, K.USER),
    _d("usdt.s+", P.KPROBE, None, K.USER, flags=_S),
    _d("tc/ingress", P.SCHED_CLS, A.TCX_INGRESS),
    _d("tc/egress", P.SCHED_CLS, A.TCX_EGRESS),
    _d("tcx/ingress", P.SCHED_CLS, A.TCX_INGRESS),
    _d("tcx/egress", P.SCHED_CLS, A.TCX_EGRESS),
    _d("tc", P.SCHED_CLS),
    _d("classifier", P.SCHED_CLS),
    _d("action", P.SCHED_ACT),
    _d("netkit/primary", P.SCHED_CLS, A.NETKIT_PRIMARY),
    _d("netkit/peer", P.SCHED_CLS, A.NETKIT_PEER),
    _d("tracepoint+", P.TRACEPOINT, None, K.TRACEPOINT),
    _d("tp+", P.TRACEPOINT, None, K.TRACEPOINT),
    _d("tracepoint.s+", P.TRACEPOINT, None, K.TRACEPOINT, flags=_S),
    _d("tp.s+", P.TRACEPOINT, None, K.TRACEPOINT, flags=_S),
    _d("raw_tracepoint+", P.RAW_TRACEPOINT, None, K.RAW_TP),
    _d("raw_tp+", P.RAW_TRACEPOINT, None, K.RAW_TP),
    _d("raw_tracepoint.s+", P.RAW_TRACEPOINT, None, K.RAW_TP, flags=_S),
    _d("raw_tp.s+", P.RAW_TRACEPOINT, None, K.RAW_TP, flags=_S),
    _d("raw_tracepoint.w+", P.RAW_TRACEPOINT_WRITABLE, None, K.RAW_TP),
    _d("raw_tp.w+", P.RAW_TRACEPOINT_WRITABLE, None, K.RAW_TP),
    _d("tp_btf+", P.TRACING, A.TRACE_RAW_TP, K.BTF_TYPEDEF, "btf_trace_"),
    _d("tp_btf.s+", P.TRACING, A.TRACE_RAW_TP, K.BTF_TYPEDEF, "btf_trace_", _S),
    _d("fentry+", P.TRACING, A.TRACE_FENTRY, K.BTF_FUNC),
    _d("fmod_ret+", P.TRACING, A.MODIFY_RETURN, K.BTF_FUNC),
    _d("fexit+", P.TRACING, A.TRACE_FEXIT, K.BTF_FUNC),
    _d("fentry.s+", P.TRACING, A.TRACE_FENTRY, K.BTF_FUNC, flags=_S),
    _d("fmod_ret.s+", P.TRACING, A.MODIFY_RETURN, K.BTF_FUNC, flags=_S),
    _d("fexit.s+", P.TRACING, A.TRACE_FEXIT, K.BTF_FUNC, flags=_S),
    _d("freplace+", P.EXT, None, K.BPF_PROG),
    _d("lsm+", P.LSM, A.LSM_MAC, K.BTF_FUNC, "bpf_lsm_"),
    _d("lsm.s+", P.LSM, A.LSM_MAC, K.BTF_FUNC, "bpf_lsm_", _S),
    _d("lsm_cgroup+", P.LSM, A.LSM_CGROUP, K.BTF_FUNC, "bpf_lsm_"),
    _d("iter+", P.TRACING, A.TRACE_ITER, K.BTF_FUNC, "bpf_iter_"),
    _d("iter.s+", P.TRACING, A.TRACE_ITER, K.BTF_FUNC, "bpf_iter_", _S),
    _d("syscall", P.SYSCALL, None, flags=_S),
    _d("xdp.frags/devmap", P.XDP, A.XDP_DEVMAP, flags=_F),
    _d("xdp/devmap", P.XDP, A.XDP_DEVMAP),
    _d("xdp.frags/cpumap", P.XDP, A.XDP_CPUMAP, flags=_F),
    _d("xdp/cpumap", P.XDP, A.XDP_CPUMAP),
    _d("xdp.frags", P.XDP, A.XDP, flags=_F),
    _d("xdp", P.XDP, A.XDP),
    _d("perf_event", P.PERF_EVENT),
    _d("lwt_in", P.LWT_IN),
    _d("lwt_out", P.LWT_OUT),
    _d("lwt_xmit", P.LWT_XMIT),
    _d("lwt_seg6local", P.LWT_SEG6LOCAL),
    _d("sockops", P.SOCK_OPS, A.CGROUP_SOCK_OPS),
    _d("sk_skb/stream_parser", P.SK_SKB, A.SK_SKB_STREAM_PARSER),
    _d("sk_skb/stream_verdict", P.SK_SKB, A.SK_SKB_STREAM_VERDICT),
    _d("sk_skb/verdict", P.SK_SKB, A.SK_SKB_VERDICT),
    _d("sk_skb", P.SK_SKB),
    _d("sk_msg", P.SK_MSG, A.SK_MSG_VERDICT),
    _d("lirc_mode2", P.LIRC_MODE2, A.LIRC_MODE2),
    _d("flow_dissector", P.FLOW_DISSECTOR, A.FLOW_DISSECTOR),
    _d("cgroup_skb/ingress", P.CGROUP_SKB, A.CGROUP_INET_INGRESS),
    _d("cgroup_skb/egress", P.CGROUP_SKB, A.CGROUP_INET_EGRESS),
    _d("cgroup/skb", P.CGROUP_SKB),
    _d("cgroup/sock_create", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE),
    _d("cgroup/sock_release", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_RELEASE),
    _d("cgroup/sock", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE),
    _d("cgroup/post_bind4", P.CGROUP_SOCK, A.CGROUP_INET4_POST_BIND),
    _d("cgroup/post_bind6", P.CGROUP_SOCK, A.CGROUP_INET6_POST_BIND),
    _d("cgroup/bind4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_BIND),
    _d("cgroup/bind6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_BIND),
    _d("cgroup/connect4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT),
    _d("cgroup/connect6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_CONNECT),
    _d("cgroup/connect_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_CONNECT),
    _d("cgroup/sendmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_SENDMSG),
    _d("cgroup/sendmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_SENDMSG),
    _d("cgroup/sendmsg_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_SENDMSG),
    _d("cgroup/recvmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_RECVMSG),
    _d("cgroup/recvmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_RECVMSG),
    _d("cgroup/recvmsg_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_RECVMSG),
    _d("cgroup/getpeername4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETPEERNAME),
    _d("cgroup/getpeername6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETPEERNAME),
    _d("cgroup/getpeername_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_GETPEERNAME),
    _d("cgroup/getsockname4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETSOCKNAME),
    _d("cgroup/getsockname6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETSOCKNAME),
    _d("cgroup/getsockname_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_GETSOCKNAME),
    _d("cgroup/sysctl", P.CGROUP_SYSCTL, A.CGROUP_SYSCTL),
    _d("cgroup/getsockopt", P.CGROUP_SOCKOPT, A.CGROUP_GETSOCKOPT),
    _d("cgroup/setsockopt", P.CGROUP_SOCKOPT, A.CGROUP_SETSOCKOPT),
    _d("cgroup/dev", P.CGROUP_DEVICE, A.CGROUP_DEVICE),
    _d("struct_ops+", P.STRUCT_OPS, None, K.STRUCT_OPS),
    _d("struct_ops.s+", P.STRUCT_OPS, None, K.STRUCT_OPS, flags=_S),
    _d("sk_lookup", P.SK_LOOKUP, A.SK_LOOKUP),
    _d("netfilter", P.NETFILTER, A.NETFILTER),
)
del P, A, K, _S, _F

# kprobe/<func>[+<offset>], as libbpf's sscanf("%m[a-zA-Z0-9_.]+%li") reads it.
_KPROBE_TARGET = re.compile(r"([A-Za-z0-9_.]+)(?:\+(.*))?\Z")


@dataclasses.dataclass(frozen=True)
class SectionInfo:
    """What a section name says about the programs in it."""

    section: str
    prog_type: ProgType
    attach_type: AttachType | None
    target_kind: TargetKind
    target: str = ""  # the text after the "type/" part, as written ("" if none)
    module: str | None = None  # "nf_conntrack" in fentry/nf_conntrack:nf_ct_delete
    lookup_name: str = ""  # BTF type (btf_trace_x, bpf_lsm_x, func), kprobe symbol, tracepoint
    sleepable: bool = False
    xdp_frags: bool = False
    sec_def: SecDef | None = None  # None for an unknown section

    @property
    def known(self) -> bool:
        return self.sec_def is not None

    @property
    def needs_kernel_target(self) -> bool:
        """True when loading or attaching needs a kernel object named by the section."""
        return bool(self.target) and self.target_kind not in (
            TargetKind.NONE,
            TargetKind.USER,
            TargetKind.BPF_PROG,
            TargetKind.STRUCT_OPS,
        )


def find_sec_def(section: str) -> SecDef | None:
    for sec_def in SECTION_DEFS:
        if sec_def.matches(section):
            return sec_def
    return None


def section_info(section: str) -> SectionInfo:
    """Interpret a program's section name the way libbpf does. Never raises."""
    sec_def = find_sec_def(section)
    if sec_def is None:
        return SectionInfo(section, ProgType.UNKNOWN, None, TargetKind.NONE)
    kind = sec_def.target_kind
    target = ""
    if kind is not TargetKind.NONE and "/" in section:
        target = section.split("/", 1)[1]
    module: str | None = None
    lookup_name = ""
    if not target:
        kind = TargetKind.NONE if kind is not TargetKind.USER else kind
    elif kind in (TargetKind.BTF_FUNC, TargetKind.BTF_TYPEDEF):
        func = target
        if ":" in target:
            module, func = target.split(":", 1)
        lookup_name = sec_def.btf_prefix + func
    elif kind is TargetKind.KSYM:
        match = _KPROBE_TARGET.match(target)
        lookup_name = match.group(1) if match else target
    elif kind in (TargetKind.SYSCALL, TargetKind.TRACEPOINT, TargetKind.RAW_TP):
        lookup_name = target
    return SectionInfo(
        section=section,
        prog_type=sec_def.prog_type,
        attach_type=sec_def.attach_type,
        target_kind=kind,
        target=target,
        module=module,
        lookup_name=lookup_name,
        sleepable=sec_def.sleepable,
        xdp_frags=sec_def.xdp_frags,
        sec_def=sec_def,
    )
