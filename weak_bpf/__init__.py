"""weak-bpf-progs: keep third-party BPF programs working across kernel updates."""

__version__ = "0.1.0"
