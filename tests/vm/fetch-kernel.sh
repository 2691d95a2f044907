#!/usr/bin/env bash
# Downloads Debian's linux-image-amd64 (the package, not installed: this machine keeps its own kernel) and
# unpacks it into /var/cache/wg-oci-hook-vm/kernel with a modules.dep, for the kernel-backend VM tests.
# Idempotent; needs root and apt.
set -euo pipefail
dest=${WG_OCI_HOOK_VM_KERNEL:-/var/cache/wg-oci-hook-vm/kernel}
if compgen -G "$dest/boot/vmlinuz-*" >/dev/null && compgen -G "$dest/lib/modules/*/modules.dep" >/dev/null; then
  exit 0
fi
resolve() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'; }
package=$(resolve)
[ -n "$package" ] || { apt-get update -qq; package=$(resolve); }
[ -n "$package" ] || { echo "cannot resolve Debian's linux-image-amd64" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$package" 2>/dev/null)
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
dpkg-deb -x "$work"/"$package"_*.deb "$dest.tmp"
version=$(basename "$dest.tmp"/lib/modules/*)
depmod -b "$dest.tmp" "$version"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "kernel $version unpacked in $dest"
