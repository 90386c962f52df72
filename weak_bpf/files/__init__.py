"""Files below a root: looked up as in a chroot, read with a bound on their size, unpacked."""
