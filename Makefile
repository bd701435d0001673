# trapvisor: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_STAMP := build/.apt-installed
APT_PACKAGES := gcc binutils qemu-system-x86 bochs bochsbios

.PHONY: demo demo-linux test fuzz setup guests clean bench

setup: $(STAMP) $(APT_STAMP)

$(APT_STAMP):
	@mkdir -p build
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

guests: setup
	$(PY) -m trapvisor.guests build-all

demo: guests
	$(VENV)/bin/trapvisor demo

# Boot Debian's stock kernel to a busybox shell through /dev/kvm (docs/kvm.md).
# On software KVM (no VT-x/AMD-V) it stops after the kernel's first console lines.
demo-linux: setup
	$(PY) -m trapvisor.kvm demo-linux

test: guests
	$(PY) -m pytest -n 2 --dist loadfile tests

# The property tests with fresh random examples (make test replays fixed ones),
# four times as many for the unicorn oracle; failures are kept in .hypothesis/.
fuzz: guests
	TRAPVISOR_FUZZ=1 TRAPVISOR_ORACLE_EXAMPLES=4 $(PY) -m pytest -n 2 --dist loadfile \
	  tests/machine/cpu/test_integer_vs_unicorn.py tests/machine/cpu/test_blockgen.py tests/system/test_hypothesis.py tests/machine/devices

bench: guests
	$(PY) benchmarks/run_all.py

clean:
	rm -rf build $(VENV)
