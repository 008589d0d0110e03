# virtkit — see README.md. `make demo` and `make test` are the quick start.
CARGO   ?= cargo
PREFIX  ?= /usr/local
BIN     := target/release/virtkit
# Names under which the binary speaks a classic tool's command line.
LINKS   := qemu-img virt-ls virt-cat virt-copy-out virt-tar-out virt-filesystems virt-df \
           virt-inspector virt-diff guestfish runc

.PHONY: all release deps test lint unit fuzz-smoke containerd-test demo bench bench-ctr conformance install uninstall check-full clean

all: release

# The released binary is linked statically (glibc's static-pie) with packed relative
# relocations: a process that starts in a millisecond and maps no shared libraries, which
# is what `runc create`, run thousands of times by containerd, needs (see bench/ctr.sh).
# --target keeps these flags off build scripts and proc-macros.
TRIPLE       := $(shell rustc -vV | sed -n 's/^host: //p')
STATIC_FLAGS := -C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs

release:
	RUSTFLAGS="$(STATIC_FLAGS)" $(CARGO) build --release --locked --target $(TRIPLE)
	mkdir -p target/release
	ln -f target/$(TRIPLE)/release/virtkit $(BIN)
	ln -sf virtkit target/release/runc

# Installs what the tests need (apt packages, nightly + cargo-fuzz), only when missing.
deps:
	scripts/deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets --locked -- -D warnings

unit:
	scripts/unit.sh

fuzz-smoke:
	scripts/fuzz-smoke.sh

# containerd 1.6 (Debian's) driving virtkit as its runc binary: run, exec, tty, kill, delete.
# Uses the binary the unit stage built (profile ci), through a `runc` link.
containerd-test:
	ln -sf virtkit target/ci/runc
	scripts/containerd-test.sh $(CURDIR)/target/ci/runc

test: deps lint unit containerd-test fuzz-smoke
	@echo "== make test: all stages passed"
	@echo "tests: $$(cat .build/test-summary)"

demo: release
	VIRTKIT=$(BIN) scripts/demo.sh

bench: release
	VK_IMG="$(CURDIR)/$(BIN) img" bench/run.sh
	VIRTKIT_RUNC=$(CURDIR)/target/release/runc bench/ctr.sh

# The container start-up benchmark alone (virtkit vs crun vs runc, 100 containers each).
bench-ctr: release
	VIRTKIT_RUNC=$(CURDIR)/target/release/runc bench/ctr.sh

# The OCI runtime conformance suites (opencontainers/runtime-tools validation and youki's
# contest), fetched and built locally under PEER_DIR, compared with Debian's runc.
PEER_DIR ?= $(CURDIR)/.build/peer
conformance: release
	PEER_DIR=$(PEER_DIR) scripts/conformance/runtime-tools.sh /usr/sbin/runc >/dev/null || true
	PEER_DIR=$(PEER_DIR) RT_BASELINE=usr_sbin_runc scripts/conformance/runtime-tools.sh $(CURDIR)/target/release/runc || true
	PEER_DIR=$(PEER_DIR) scripts/conformance/contest.sh /usr/sbin/runc >/dev/null || true
	PEER_DIR=$(PEER_DIR) CONTEST_BASELINE=usr_sbin_runc scripts/conformance/contest.sh $(CURDIR)/target/release/runc || true

# Long runs that do not belong in CI: ten minutes of fuzzing per target.
check-full: test conformance
	FUZZ_SECONDS=600 scripts/fuzz-smoke.sh

install: release
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/virtkit
	for l in $(LINKS); do ln -sf virtkit $(DESTDIR)$(PREFIX)/bin/$$l; done

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/virtkit
	for l in $(LINKS); do rm -f $(DESTDIR)$(PREFIX)/bin/$$l; done

clean:
	$(CARGO) clean
