# SPDX-License-Identifier: GPL-2.0-or-later
#
# vfio-user-pci: a vfio-user client device for Debian's QEMU 10.0.
# See README.rst.  Every target sets up what it needs: dependencies
# (scripts/install-deps), the base tree (./configure) and the build.

SHELL := /bin/bash
TOP := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
BUILD := $(TOP)/build
TREE := $(BUILD)/qemu
QBUILD := $(TREE)/build
# One ninja at a time in build/qemu/build, whoever runs it.
NINJA := flock $(BUILD)/.ninja.lock ninja
export CCACHE_BASEDIR := $(BUILD)
export CCACHE_NOHASHDIR := 1

.PHONY: all build setup deps check check-patches export-patches series \
        check-series check-bisect check-ubsan check-debian demo bench \
        bench-peers debian \
        fuzz clean \
        distclean \
        help

all: build

help:
	@sed -n '/^## /s/^## //p' $(TOP)/README.rst 2>/dev/null; \
	echo "targets: all check check-ubsan check-debian check-bisect demo bench fuzz debian export-patches check-patches series check-series clean distclean"

deps:
	@$(TOP)/scripts/install-deps

# Create build/qemu and configure QEMU when needed; re-apply patches/
# when it changed (git pull); refresh the overlay links.
setup: deps
	@if [ ! -f $(QBUILD)/build.ninja ]; then \
	    $(TOP)/configure --no-deps; \
	else \
	    $(TOP)/scripts/tree sync && $(TOP)/scripts/tree link; \
	fi

# What the tests and the demo need: QEMU, the libvfio-user samples (test
# peers) and every test executable of ours; not the rest of QEMU's tests.
SAMPLES := $(addprefix subprojects/libvfio-user/samples/,server null gpio-pci-idio-16 client)

build: setup
	@echo "ninja: building QEMU and the test peers in build/qemu/build"
	@$(NINJA) -C $(QBUILD) build.ninja > $(BUILD)/ninja.log 2>&1 && \
	targets="qemu-system-x86_64 $(SAMPLES) $$(ninja -C $(QBUILD) -t targets all | \
	    sed -n 's|^\(tests/[a-z]*/[^:/]*vfio-user[^:/]*\): .*LINKER.*|\1|p')" && \
	$(NINJA) -C $(QBUILD) $$targets >> $(BUILD)/ninja.log 2>&1 || { \
	    grep -B2 -A12 -m3 -E 'error|FAILED' $(BUILD)/ninja.log; \
	    echo "build failed: see build/ninja.log"; exit 1; }
	@tail -n 1 $(BUILD)/ninja.log
	@$(TOP)/tools-tests/peers/build-libvfio-user $(TOP)
	@$(TOP)/tools-tests/peers/build-spdk $(TOP)
	@$(TOP)/tools-tests/mkguest $(BUILD)/guest
	@# Where the device tests look for the peers by default (the
	@# VFIO_USER_TEST_* variables of tests/vfio-user/guest-lib.sh)
	@mkdir -p $(QBUILD)/vfio-user-peers && \
	ln -sfn $(BUILD)/guest $(QBUILD)/vfio-user-peers/guest && \
	ln -sfn $(BUILD)/peers/spdk $(QBUILD)/vfio-user-peers/spdk && \
	ln -sfn $(BUILD)/peers/libvfio-user/build/samples $(QBUILD)/vfio-user-peers/libvfio-user

check-patches:
	@$(TOP)/scripts/tree check

export-patches:
	@$(TOP)/scripts/tree export

series: setup
	@$(TOP)/scripts/tree series

check-series: series
	@$(TOP)/scripts/tree check-series

# Each patch of the series builds on its own and is checkpatch-clean
# (build/bisect-tree); not part of check: a build per patch.
check-bisect: series
	@$(TOP)/scripts/check-bisect

# All tests.  The last line is "N passed, N failed"; non-zero exit on any
# failure.  check-patches runs first: unexported work fails the check.
check: setup
	@$(TOP)/scripts/tree check
	@$(MAKE) --no-print-directory build
	@echo "fuzz: building the fuzz targets (build/qemu/build-fuzz, build/fuzz)"
	@$(TOP)/scripts/fuzz 0 > $(BUILD)/fuzz-build.log 2>&1 || \
	    { tail -n 30 $(BUILD)/fuzz-build.log; echo "see build/fuzz-build.log"; exit 1; }
	@/usr/bin/python3 $(TOP)/tools-tests/run-tests $(TESTS)

# The unit test and the qtest under UBSan, in a second build directory
# (build/qemu/build-ubsan); not part of check: it is a second QEMU build.
check-ubsan: build
	@$(TOP)/scripts/check-ubsan $(TESTS)

demo: build
	@$(TOP)/scripts/demo

bench: build
	@$(TOP)/bench/run

# The libFuzzer targets (FUZZ_TARGET: proxy, device or all), each for
# FUZZ_SECONDS (build/fuzz/; the device's in build/qemu/build-fuzz).
FUZZ_SECONDS ?= 600
FUZZ_TARGET ?= all
fuzz: build
	@$(TOP)/scripts/fuzz --target $(FUZZ_TARGET) $(FUZZ_SECONDS)

# x86_64 built from that source package as Debian builds it, and a guest
# test with it (build/debian-check/); not part of check: a third build.
check-debian: debian build
	@$(TOP)/scripts/check-debian

# A Debian source package of QEMU with our series (build/debian/).
debian: setup
	@$(TOP)/scripts/debian $(TOP)

# The benchmark peer (bench/peers.pin): QEMU 10.2's upstream client.
bench-peers: deps
	@$(TOP)/scripts/bench-peers $(TOP)

clean:
	@if [ -f $(QBUILD)/build.ninja ]; then $(NINJA) -C $(QBUILD) clean >/dev/null; fi
	@rm -rf $(BUILD)/series $(BUILD)/series-tree $(BUILD)/series-check $(BUILD)/tests
	@echo "clean: build outputs removed (build/qemu and the download cache kept; 'make distclean' removes them)"

distclean:
	@if [ -d $(TREE)/.git ] && ! $(TOP)/scripts/tree check >/dev/null 2>&1; then \
	    echo "distclean: build/qemu holds work that patches/ does not; export it first" >&2; \
	    $(TOP)/scripts/tree check; exit 1; fi
	rm -rf $(BUILD)
