# make demo: a throwaway WireGuard peer and a podman container on a tunnel to it (root, Debian).
# make test: unit tests, then the end-to-end tests with real podman, runc and wireguard-go (root), but many::.
# make test-many: the fifty-container end-to-end tests (tests/e2e/many.rs), one at a time (root).
# make fuzz: the cargo-fuzz targets in fuzz/, each for FUZZ_SECONDS (default 45; see tests/fuzz.sh).
# make deb: the Debian package, target/debian/wg-oci-hook_VERSION-1_ARCH.deb (cargo-deb, installed if missing);
#   prints its path. Install it with: apt install ./target/debian/wg-oci-hook_*.deb
# make test-deb: builds the package, lints it, installs it with apt, runs the demo against the installed files
#   alone, purges it and checks that nothing is left (root, Debian; tests/deb.sh; a CI step of its own).
# make icount: the release build's instruction counts of createRuntime and poststop under valgrind's callgrind,
#   against a lab netns, held against benches/instruction-budget.toml: over budget*(1+tolerance) fails, and so
#   does under budget*(1-2*tolerance) (root; tests/icount.rs; a CI step of its own). UPDATE=1 make icount writes
#   the budget from a fresh measurement instead, for a change that moves it on purpose.
CARGO ?= cargo

PREFIX ?= /usr/local

# cargo-deb's version, pinned: its output (file list, control fields) is part of what test-deb checks.
CARGO_DEB_VERSION = 3.8.0
# What tools/gen_docs.rs writes for the package (man pages, completions, hooks.d for /usr/bin); the paths
# [package.metadata.deb] in Cargo.toml names, in the repository whatever CARGO_TARGET_DIR is.
DEB_ASSETS = target/deb-assets

.PHONY: build deps demo test test-many lint fuzz install deb deb-tool test-deb icount

build:
	$(CARGO) build --release --locked

deps:
	bash tests/install-deps.sh

demo: deps build
	bash tests/demo.sh target/release/wg-oci-hook

# The fifty-container tests (tests/e2e/many.rs) run in a step of their own: make test-many.
test: deps
	$(CARGO) test --locked --no-fail-fast --features fault-injection -- --test-threads=2 --skip many::

test-many: deps
	$(CARGO) test --locked --features fault-injection --test e2e many:: -- --test-threads=1

# --all-targets leaves out test targets with `test = false` (tests/icount.rs): it is named on its own.
lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets --all-features -- -D warnings
	$(CARGO) clippy --locked --all-features --test icount -- -D warnings

fuzz:
	bash tests/fuzz.sh

# The binaries, the podman/CRI-O registration and the example policy (kept if one is there already).
install: build
	install -D -m 0755 target/release/wg-oci-hook $(DESTDIR)$(PREFIX)/bin/wg-oci-hook
	install -D -m 0755 target/release/wg-oci-runtime $(DESTDIR)$(PREFIX)/bin/wg-oci-runtime
	install -d -m 0755 $(DESTDIR)/etc/wg-oci-hook
	test -e $(DESTDIR)/etc/wg-oci-hook/policy.toml || install -m 0644 etc/policy.toml $(DESTDIR)/etc/wg-oci-hook/policy.toml
	$(DESTDIR)$(PREFIX)/bin/wg-oci-hook install hooks --dir $(DESTDIR)/usr/share/containers/oci/hooks.d

# What make deb needs besides cargo-deb: protoc for the dev-dependencies gen-docs is built with (k8s-cri),
# dpkg-shlibdeps for the package's libc dependency, strip.
DEB_BUILD_PACKAGES = protobuf-compiler dpkg-dev binutils

deb-tool:
	@missing=$$(for p in $(DEB_BUILD_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -qx 'install ok installed' || echo $$p; done); \
	[ -z "$$missing" ] || { echo "make deb needs: apt-get install" $$missing >&2; exit 1; }
	@[ "$$($(CARGO) deb --version 2>/dev/null)" = "cargo-deb $(CARGO_DEB_VERSION)" ] || \
	  $(CARGO) install --locked --quiet cargo-deb --version $(CARGO_DEB_VERSION)

# The release build, the generated docs (a dev build of tools/gen_docs.rs), then the package of both; the last
# line printed is the .deb's path.
deb: deb-tool build
	$(CARGO) run --locked --quiet --example gen-docs -- $(DEB_ASSETS)
	$(CARGO) deb --locked --no-build --output target/debian/

test-deb: deps
	bash tests/deb.sh

# tests/icount.rs counts the release build (make build: the same `cargo build --release --locked` as make deb's,
# so CI reuses test-deb's), run by the test build of the lab. `test = false` in Cargo.toml keeps that test out of
# make test; its features are make test's, so that its debug build is shared. --nocapture: the counts, the
# budgets and their ratios are printed whether it passes or not.
UPDATE ?=
icount: deps build
	WG_ICOUNT_UPDATE=$(UPDATE) $(CARGO) test --locked --features fault-injection --test icount -- --nocapture
