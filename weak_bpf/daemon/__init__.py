"""weak-bpf-progsd: the D-Bus service and its entry point (`python3 -m weak_bpf.daemon`)."""
