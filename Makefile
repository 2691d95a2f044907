# make demo: a throwaway WireGuard peer and a podman container on a tunnel to it (root, Debian).
# make test: unit tests, then the end-to-end tests with real podman, runc and wireguard-go (root).
# make fuzz: the cargo-fuzz targets in fuzz/, each for FUZZ_SECONDS (default 45; see tests/fuzz.sh).
CARGO ?= cargo

PREFIX ?= /usr/local

.PHONY: build deps demo test lint fuzz install

build:
	$(CARGO) build --release --locked

deps:
	bash tests/install-deps.sh

demo: deps build
	bash tests/demo.sh target/release/wg-oci-hook

test: deps
	$(CARGO) test --locked --no-fail-fast --features fault-injection -- --test-threads=2

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets --all-features -- -D warnings

fuzz:
	bash tests/fuzz.sh

# The binaries, the podman/CRI-O registration and the example policy (kept if one is there already).
install: build
	install -D -m 0755 target/release/wg-oci-hook $(DESTDIR)$(PREFIX)/bin/wg-oci-hook
	install -D -m 0755 target/release/wg-oci-runtime $(DESTDIR)$(PREFIX)/bin/wg-oci-runtime
	install -d -m 0755 $(DESTDIR)/etc/wg-oci-hook
	test -e $(DESTDIR)/etc/wg-oci-hook/policy.toml || install -m 0644 etc/policy.toml $(DESTDIR)/etc/wg-oci-hook/policy.toml
	$(DESTDIR)$(PREFIX)/bin/wg-oci-hook install hooks --dir $(DESTDIR)/usr/share/containers/oci/hooks.d
