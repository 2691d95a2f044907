# make demo: a throwaway WireGuard peer and a podman container on a tunnel to it (root, Debian).
# make test: unit tests, then the end-to-end tests with real podman, runc and wireguard-go (root).
CARGO ?= cargo

.PHONY: build deps demo test lint

build:
	$(CARGO) build --release --locked

deps:
	bash tests/install-deps.sh

demo: deps build
	bash tests/demo.sh target/release/wg-oci-hook

test: deps
	$(CARGO) test --locked -- --test-threads=2

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
