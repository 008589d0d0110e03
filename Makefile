# virtkit — see README.md. `make demo` and `make test` are the quick start.
CARGO   ?= cargo
PREFIX  ?= /usr/local
BIN     := target/release/virtkit
# Names under which the binary speaks a classic tool's command line.
LINKS   := qemu-img virt-ls virt-cat virt-copy-out virt-tar-out virt-filesystems virt-df \
           virt-inspector virt-diff guestfish

.PHONY: all release deps test lint unit fuzz-smoke demo bench install uninstall check-full clean

all: release

release:
	$(CARGO) build --release --locked

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

test: deps lint unit fuzz-smoke
	@echo "== make test: all stages passed"
	@echo "tests: $$(cat .build/test-summary)"

demo: release
	VIRTKIT=$(BIN) scripts/demo.sh

bench: release
	VK_IMG="$(CURDIR)/$(BIN) img" bench/run.sh

# Long runs that do not belong in CI: ten minutes of fuzzing per target.
check-full: test
	FUZZ_SECONDS=600 scripts/fuzz-smoke.sh

install: release
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/virtkit
	for l in $(LINKS); do ln -sf virtkit $(DESTDIR)$(PREFIX)/bin/$$l; done

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/virtkit
	for l in $(LINKS); do rm -f $(DESTDIR)$(PREFIX)/bin/$$l; done

clean:
	$(CARGO) clean
