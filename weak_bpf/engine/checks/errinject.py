"""Where fmod_ret programs, and sleepable fentry and fexit ones, may attach: the verifier lets
them only at functions on K's error-injection list (ALLOW_ERROR_INJECTION) or, for fmod_ret, at
security_*() hooks; BTF says nothing of it (docs/decisions.md)."""

from __future__ import annotations

from weak_bpf.engine.checks.base import CheckerBase
from weak_bpf.model import Area, Check, Outcome, ReasonCode
from weak_bpf.parsers.btf import Kind
from weak_bpf.parsers.objvalues import Function
from weak_bpf.parsers.sections import AttachType

# the verifier's has_arch_syscall_prefix(), by RPM architecture
_SYSCALL_WRAPPER_PREFIXES = {
    "x86_64": "__x64_",
    "i686": "__ia32_",
    "s390x": "__s390x_",
    "aarch64": "__arm64_",
    "riscv64": "__riscv_",
    "ppc64le": "sys_",
    "ppc64": "sys_",
    "loongarch64": "sys_",
}


class ErrorInjectionChecks(CheckerBase):
    @staticmethod
    def _needs_error_injection(program: Function) -> bool:
        """fmod_ret programs, and sleepable fentry and fexit ones, attach only where K allows
        error injection (an fmod_ret program also at security_*() hooks)."""
        tracing = (AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT)
        info = program.info
        return info.attach_type is AttachType.MODIFY_RETURN or (
            info.sleepable and info.attach_type in tracing
        )

    def _error_injection(self, program: Function, subject: str, module: str | None) -> Check | None:
        """Why K's verifier refuses the program at its target, or why that is unknown; None when
        it accepts it. The rule is the verifier's: an fmod_ret program may change what a
        security_*() hook or a function on K's error-injection list (ALLOW_ERROR_INJECTION)
        returns; a sleepable one needs the list, and no kernel denylist of its own."""
        info, k = program.info, self.k.kver
        name = info.lookup_name
        sleepable = info.sleepable
        if not sleepable and name.startswith("security_"):
            return None
        what = (
            f"a sleepable {info.section.split('/')[0]} program"
            if sleepable
            else "an fmod_ret program"
        )

        def undecided(why: str, code: ReasonCode = ReasonCode.ATTACH_TARGET) -> Check:
            """Unknown: for want of K's data (code kernel-data-missing), or because nothing
            offline tells (code attach-target: loading it on K does)."""
            return self._check(
                Area.ATTACH,
                Outcome.UNDECIDED,
                subject,
                f"whether {k} lets {what} attach to {name} is unknown: {why}",
                code=code,
                symbol=name,
                program=program.name,
            )

        listed = self.k.error_injection
        if listed is None:
            return undecided(self._no_error_injection_list(), ReasonCode.KERNEL_DATA_MISSING)
        if module is not None and listed:  # without the list, modules have none either
            return undecided(
                f"{name} is in module {module}, and modules' error-injection lists are not read"
            )
        symbols = self.k.system_map
        symbol = None
        if listed and symbols is not None:
            if name in symbols and not symbols.is_unique(name):
                return undecided(f"{k} has several functions called {name}")
            symbol = symbols.get(name)
        if symbol is None or symbol.address not in listed:
            if not listed and name.startswith(self._syscall_wrapper_prefixes()):
                return undecided(
                    f"{k} is built without the error-injection list, and newer kernels built "
                    "so accept syscall wrappers such as this one instead"
                )
            own_sets = self._fmodret_set_may_hold(name)
            if own_sets is not None:
                return undecided(own_sets)
            allowed = "on its error-injection list (ALLOW_ERROR_INJECTION)"
            if not sleepable:
                allowed += " or a security_*() hook"
            if not listed:
                where = "is built without that list"
            elif symbol is None:
                where = f"has no symbol {name} to look it up by"
            else:
                where = "does not list it"
            return self._check(
                Area.ATTACH,
                Outcome.FAIL,
                subject,
                f"{k}'s verifier refuses {what} at {name}: the function must be {allowed}, "
                f"and {k} {where}",
                code=ReasonCode.ATTACH_TARGET,
                symbol=name,
                program=program.name,
            )
        if sleepable:
            func = self._find_func(name)
            ids = self.k.vmlinux_btf_ids
            if func is None or not ids or func[1] in ids:
                return undecided(
                    f"{name} is on the error-injection list, but {k} may deny sleepable "
                    "programs there (its .BTF_ids lists the function, or cannot be read)"
                )
        return None

    def _fmodret_set_may_hold(self, name: str) -> str | None:
        """Why K may let fmod_ret attach to `name` through a set of its own: since 6.3 a
        subsystem can name such targets (register_btf_fmodret_id_set), and they are listed in
        `.BTF_ids` among every other set. None when K has no such sets or does not list `name`."""
        vmlinux = self.k.vmlinux
        assert vmlinux is not None
        if not vmlinux.find("register_btf_fmodret_id_set", Kind.FUNC):
            return None
        func = self._find_func(name)
        ids = self.k.vmlinux_btf_ids
        if func is not None and func[2] is None and ids and func[1] not in ids:
            return None  # a module's own sets are not read
        return (
            f"{self.k.kver} lets subsystems name fmod_ret targets of their own "
            f"(register_btf_fmodret_id_set), and whether {name} is one cannot be told from "
            + ("its .BTF_ids, which list it" if ids else "its BTF alone (no .BTF_ids)")
        )

    def _no_error_injection_list(self) -> str:
        k = self.k.kver
        if any(p.startswith("error-injection list: ") for p in self.k.problems):
            return f"{k}'s error-injection list could not be read: " + self._problem(
                "error-injection list"
            )
        if self.k.system_map is None:
            return f"{k}'s error-injection list is placed by its symbols: " + self._no_system_map()
        if self.k.system_map_is_kallsyms:
            return (
                f"the running kernel's kallsyms cannot place {k}'s error-injection list (its "
                "addresses are randomized): install its System.map or debuginfo vmlinux"
            )
        return f"{k} has no vmlinux or image to read its error-injection list from"

    def _syscall_wrapper_prefixes(self) -> tuple[str, ...]:
        """The syscall wrappers' prefix on K's architecture; every one when it is unknown."""
        arch = getattr(self.k.artifacts, "arch", None)
        prefix = _SYSCALL_WRAPPER_PREFIXES.get(arch or "")
        return (prefix,) if prefix else tuple(set(_SYSCALL_WRAPPER_PREFIXES.values()))
