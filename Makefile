# trapvisor: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Every Debian package a test, the demo, the benchmarks or the fuzzers use, by name, including
# those that other packages only link into (Bochs's VGA BIOS is a link into vgabios, which
# bochs does not pull in when seabios satisfies its dependency).  trapvisor/hosttools.py says
# which program or file comes from which; tests/test_hosttools.py checks this list against it.
APT_PACKAGES := gcc binutils qemu-system-x86 qemu-system-data seabios bochs bochsbios vgabios gdb apt dpkg

.PHONY: demo demo-linux test test-linux fuzz setup apt guests linux-guest clean bench kut

# Checked on every run (dpkg -s is quick), so a package removed since the last run is reinstalled.
setup: apt $(STAMP)
	@$(VENV)/bin/trapvisor doctor --quiet

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=""; \
	  if [ "$$(id -u)" != 0 ]; then \
	    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; else \
	      echo "trapvisor set-up: the Debian packages$$missing are missing and apt-get needs root: run 'sudo apt-get install$$missing', then make again" >&2; exit 1; fi; \
	  fi; \
	  echo "installing Debian packages:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	    || { echo "trapvisor set-up: apt-get install$$missing failed (network to the Debian mirrors?)" >&2; exit 1; }; \
	fi

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
# Where KVM is not hardware-assisted it boots guest:linux (i386) on the simulated PC instead.
demo-linux: setup
	$(VENV)/bin/trapvisor demo-linux

# guest:linux on the simulated PC: Debian's i386 686 kernel and busybox-static:i386, fetched
# with apt-get download (dpkg must list the i386 architecture) into build/linux/i386.
linux-guest: setup
	@dpkg --print-foreign-architectures | grep -qx i386 || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  echo "adding the i386 architecture to dpkg (for apt-get download of guest:linux)"; \
	  $$SUDO dpkg --add-architecture i386 && $$SUDO apt-get update -qq; }
	$(PY) -m trapvisor.guests build linux

test: guests linux-guest
	$(PY) -m pytest -n 2 --dist loadfile tests

# The Linux boots that take an hour or more (the strict PC, trap-emulate): not in make test.
test-linux: guests linux-guest
	TRAPVISOR_LINUX_FULL=1 $(PY) -m pytest tests/guests/test_linux.py

# The property tests with fresh random examples (make test replays fixed ones),
# four times as many for the unicorn oracle; failures are kept in .hypothesis/.
fuzz: guests
	TRAPVISOR_FUZZ=1 TRAPVISOR_ORACLE_EXAMPLES=4 $(PY) -m pytest -n 2 --dist loadfile \
	  tests/machine/cpu/test_integer_vs_unicorn.py tests/machine/cpu/test_blockgen.py tests/system/test_hypothesis.py tests/machine/devices tests/vmm/test_random_kernels.py

bench: guests
	$(PY) benchmarks/run_all.py

clean:
	rm -rf build $(VENV)

# The bundled kvm-unit-tests on trapvisor and QEMU, slow ones included (sieve: minutes);
# make test runs all but the slow ones (docs/kvm-unit-tests.md).
kut: guests
	TRAPVISOR_KUT_SLOW=1 $(PY) -m pytest -q tests/kut
