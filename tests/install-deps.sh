#!/usr/bin/env bash
# Installs the Debian packages the hook's tests and demo need, if any is missing. Idempotent; needs root.
set -euo pipefail
# podman with its recommends (netavark, aardvark-dns, catatonit, ...): the set the tests were proven with.
# netavark and aardvark-dns are named too (the leak tests need them even where podman came without its
# recommends; netavark drives iptables); tcpdump captures the leak tests' bridges.
with_recommends=(podman netavark aardvark-dns iptables runc conmon wireguard-go busybox-static iproute2 nftables tcpdump)
# wireguard-tools recommends a whole kernel image (wireguard-modules): only the `wg` tool is needed.
# qemu, cpio, xz and kmod build and boot the kernel-backend test VM (tests/vm).
# openssl makes the lab PIA server's regions-list RSA key (tests/lab/pia.rs).
# docker.io (20.10; pulls containerd, runc, tini) for the Docker lab (tests/lab/docker.rs), which starts its own
# dockerd and containerd inside a lab netns: its recommends (apparmor, git, needrestart, ...) are not needed.
# containernetworking-plugins (bridge, host-local, loopback in /usr/lib/cni) for the Kubernetes lab's CRI pods
# (tests/lab/cri.rs, containerd's CRI plugin); protobuf-compiler (protoc) builds the k8s-cri crate, its CRI client.
# docker-compose (1.29, Python) runs examples/docker-compose.yml against the Docker lab's dockerd
# (tests/e2e/examples.rs); it recommends docker.io, named above. podman-compose (1.0.3, Python) runs
# examples/compose-cdi.yaml against the lab's podman (tests/e2e/examples.rs). patch applies the diffs `install --dry-run`
# prints (tests/e2e/install.rs). dpkg-dev (dpkg-shlibdeps) and binutils (strip) for cargo-deb (make deb); lintian
# and man-db for the package's test (tests/deb.sh). valgrind (its callgrind) counts the hook's instructions
# (make icount, tests/icount.rs); its recommends (gdb, valgrind-dbg) are not needed. iperf3 for the throughput
# bench (WG_BENCH_THROUGHPUT=1 cargo bench --bench container_start), between the lab's namespaces only.
without_recommends=(wireguard-tools qemu-system-x86 cpio xz-utils kmod docker.io openssl containernetworking-plugins
  protobuf-compiler docker-compose podman-compose patch dpkg-dev binutils lintian man-db valgrind iperf3)
missing() {
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
need_a=$(missing "${with_recommends[@]}")
need_b=$(missing "${without_recommends[@]}")
if [ -n "$need_a$need_b" ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start their services (docker.io and containerd would start daemons in the machine's
  # netns): deny that for the install, unless a policy is in place already.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  # shellcheck disable=SC2086
  [ -z "$need_a" ] || apt-get install -y -qq $need_a >/dev/null
  # shellcheck disable=SC2086
  [ -z "$need_b" ] || apt-get install -y -qq --no-install-recommends $need_b >/dev/null
fi
# Debian's kernel for the VM tests: downloaded and unpacked, not installed.
bash "$(dirname "$0")/vm/fetch-kernel.sh"
