"""The installed BPF programs under a root, their greylists, and the packages that own them."""
