# The README's commands. Every target that needs tools installs the missing ones first.
PYTHON ?= /usr/bin/python3
DEV_CACHE ?= $(or $(WEAK_BPF_DEV_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/weak-bpf-progs-dev)
RUFF ?= $(shell command -v ruff 2>/dev/null || echo $(DEV_CACHE)/tools/bin/ruff)
DEMO_ROOT ?= build/demo-root
CC ?= cc
CFLAGS ?= -O2 -g -Wall -Wextra
# The verify loader (tools/verify-loader.c) runs inside a VM's initramfs: linked statically where
# the static libraries are there (Debian's libbpf-dev, libelf-dev, zlib1g-dev, libc6-dev), else
# with libbpf.a alone, else dynamically (weak-bpf-progs copies the libraries it needs then).
LOADER = build/verify-loader

.PHONY: all deps demo check test lint bench harden man clean rpm loader

all: check

deps:
	@scripts/install-deps

loader: $(LOADER)

$(LOADER): tools/verify-loader.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -static -o $@ $< -lbpf -lelf -lz 2>/dev/null || \
	$(CC) $(CFLAGS) -o $@ $< -Wl,-Bstatic -lbpf -Wl,-Bdynamic -lelf -lz 2>/dev/null || \
	$(CC) $(CFLAGS) -o $@ $< -lbpf -lelf -lz

# Main job: build the example root from two real kernels and example programs, and show it.
demo: deps loader
	$(PYTHON) scripts/demo.py --root $(DEMO_ROOT)

# Whole suite: pytest, which also runs ruff, mypy and the layering rules (tests/test_static.py).
check: deps loader
	$(PYTHON) -m pytest

test: loader
	$(PYTHON) -m pytest

lint:
	$(RUFF) check .
	$(RUFF) format --check .
	$(PYTHON) -m mypy

bench: deps loader
	$(PYTHON) bench/run.py

# Every hardening campaign at full size, with its figures (docs/reliability.md): about 20 min.
harden: deps
	$(PYTHON) harden/harden.py

man: deps
	scripts/make-man build/man

# Source and binary rpms in build/rpm/; %check runs the whole suite (RPMBUILD_OPTS="--without check" skips it).
rpm: deps
	scripts/make-rpm $(RPMBUILD_OPTS)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
