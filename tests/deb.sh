#!/usr/bin/env bash
# make test-deb (a CI step): the Debian package as a user gets it. Builds it (make deb), checks it with lintian,
# installs it with apt (which resolves its dependencies), checks what it put where, runs the demo against the
# installed files alone (tests/demo.sh --installed: /usr/bin/wg-oci-hook, the package's hooks.d registration,
# /etc/wg-oci-hook/policy.toml as shipped), then purges it and checks that nothing is left: nothing dpkg listed,
# no state dir, no link `install containerd --profile` made, and the same files under / as before the install.
# Root, on Debian; any missing prerequisite fails it. It refuses to run where the package is installed, or where
# a `make install` (or anything else) already has files at the package's paths, since the purge would take them.
# DEB_TEST_IGNORE: more paths (space-separated) to leave out of the before-and-after comparison of /, for a
# machine where other work writes files meanwhile (CI runs nothing else).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export DEBIAN_FRONTEND=noninteractive
# dpkg's progress lines are for a terminal.
apt_quiet=(-y -q -o Dpkg::Use-Pty=0)
fail() {
  echo "deb test: FAILED: $*" >&2
  exit 1
}
# grep -q in a pipeline may stop reading before the writer is done, which pipefail takes for a failure.
has() { grep "$@" >/dev/null; }
step() { echo "== deb test: $*"; }

[ "$(id -u)" = 0 ] || fail "needs root"
for tool in apt-get dpkg dpkg-deb dpkg-query find sha256sum man lintian podman runc nsenter ip wg wireguard-go busybox; do
  command -v "$tool" >/dev/null || fail "$tool is missing (make deps installs the test prerequisites)"
done
if dpkg-query -W -f='${Status}' wg-oci-hook 2>/dev/null | has -v 'not-installed'; then
  fail "wg-oci-hook is installed (or half-removed) on this machine already: this test would purge it"
fi

step "make deb"
deb=$(make -s deb | tail -n 1)
[ -f "$deb" ] || fail "make deb printed no package path (got: $deb)"
deb=$(realpath "$deb")
echo "$deb"
dpkg-deb -c "$deb"
dpkg-deb -f "$deb" Depends | has '^libc6 (>= [0-9.]*)$' ||
  fail "Depends is $(dpkg-deb -f "$deb" Depends)"

# None of the package's files may be there yet, nor the state dir, nor anything in /etc/wg-oci-hook.
# Directories may (the package shares /usr/bin and the like); those that dpkg's purge removes with the package
# because they are empty and no other package lists them are put back afterwards, as they were (so only an
# empty /etc/wg-oci-hook is let through).
dirs_before=()
while read -r type path; do
  path=${path#.}
  path=${path%/}
  if [ "$type" = d ]; then
    [ ! -d "$path" ] || dirs_before+=("$(stat -c '%a %U %G' "$path") $path")
  elif [ -e "$path" ] || [ -L "$path" ]; then
    fail "$path exists already (a make install?): the package and its purge would take it over"
  fi
done < <(dpkg-deb --fsys-tarfile "$deb" | tar -t --verbose --numeric-owner | awk '{ print substr($1, 1, 1), $6 }')
for path in /run/wg-oci-hook /usr/bin/wg-oci-runtime@vpn; do
  [ ! -e "$path" ] && [ ! -L "$path" ] || fail "$path exists already"
done
[ -z "$(ls -A /etc/wg-oci-hook 2>/dev/null)" ] || fail "/etc/wg-oci-hook has files already (a make install?)"

step "lintian"
# initial-upload-closes-no-bugs is about uploads to Debian's archive (an ITP bug), which this is not one of.
lintian --info --pedantic --fail-on error,warning --suppress-tags initial-upload-closes-no-bugs "$deb" ||
  fail "lintian found errors or warnings"

# What / holds outside the places that change by themselves (kernel and runtime file systems, temporary
# files, apt's and the logs' caches) and outside the build (this repository, cargo's target and home).
# /run is left out too: the state dir /run/wg-oci-hook and the netns are checked on their own.
snapshot() {
  local prune=(/proc /sys /dev /run /tmp /var/tmp /var/cache /var/log /var/lib/apt "$repo"
    "${CARGO_TARGET_DIR:-$repo/target}" "${CARGO_HOME:-$HOME/.cargo}" "$HOME/.rustup" "$HOME/.cache")
  local args=() p
  for p in "${prune[@]}" ${DEB_TEST_IGNORE:-}; do args+=(-path "$p" -prune -o); done
  find / -xdev "${args[@]}" -printf '%y %p\n' | LC_ALL=C sort
}
local_files() { find /usr/local -name 'wg-oci-*' -type f -exec sha256sum {} + 2>/dev/null | LC_ALL=C sort; }
# /etc/cdi is the container engines' directory, not the package's: `install cdi` below makes it if missing, and
# the purge leaves it. Made here (before the snapshot) if missing, and removed again at the end.
made_cdi_dir=
if [ ! -d /etc/cdi ]; then
  mkdir -m 0755 /etc/cdi
  made_cdi_dir=1
fi
before=$(mktemp) after=$(mktemp) listed=$(mktemp) containerd_config=$(mktemp)
trap 'rm -f "$before" "$after" "$listed" "$containerd_config"; [ -z "$made_cdi_dir" ] || { rm -f /etc/cdi/wg-oci-hook.json; rmdir /etc/cdi; }' EXIT
snapshot >"$before"
local_before=$(local_files)
packages_before=$(dpkg-query -W -f='${Package}\n' | LC_ALL=C sort)

step "apt-get install $deb"
apt-get install "${apt_quiet[@]}" "$deb" || { apt-get update -qq && apt-get install "${apt_quiet[@]}" "$deb"; } || fail "apt-get install"
pulled=$(comm -13 <(echo "$packages_before") <(dpkg-query -W -f='${Package}\n' | LC_ALL=C sort) | grep -vx wg-oci-hook || true)
[ -z "$pulled" ] || echo "apt installed these dependencies too (purged again at the end): $pulled"

step "what the package installed"
dpkg -L wg-oci-hook >"$listed"
dpkg-query -W -f='${Conffiles}\n' wg-oci-hook | has '^ /etc/wg-oci-hook/policy.toml ' ||
  fail "/etc/wg-oci-hook/policy.toml is not a conffile"
for f in /usr/share/containers/oci/hooks.d/wg-oci-hook-create-runtime.json \
  /usr/share/containers/oci/hooks.d/wg-oci-hook-poststop.json; do
  grep -qx "$f" "$listed" || fail "$f is not the package's"
  grep -q '"path": "/usr/bin/wg-oci-hook"' "$f" || fail "$f does not run /usr/bin/wg-oci-hook"
done
/usr/bin/wg-oci-hook --version | has -x "wg-oci-hook $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)" ||
  fail "wg-oci-hook --version"
/usr/bin/wg-oci-runtime --wg-version >/dev/null || fail "wg-oci-runtime --wg-version"
# The shipped policy parses as it is; what it reports are only the files the operator has yet to put there.
check=$(/usr/bin/wg-oci-hook check 2>&1) && fail "check passed on the policy as shipped, with no vpn.conf: $check"
echo "$check"
if echo "$check" | grep -v 'No such file or directory' | has '^/etc/wg-oci-hook/policy.toml:[0-9]'; then
  fail "the shipped policy has problems besides files still to be put in place"
fi
# A man page per command and visible subcommand, found by man and naming what it documents.
for page in wg-oci-hook wg-oci-runtime $(/usr/bin/wg-oci-hook --help | sed -n '/^Commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/wg-oci-hook-\1/p' | grep -vx wg-oci-hook-help); do
  where=$(man -w "$page") || fail "no man page $page"
  grep -qx "$where" "$listed" || fail "$where is not the package's"
  MANWIDTH=100 man "$page" 2>/dev/null | has "^NAME" || fail "man $page does not render"
done
for sub in hooks docker containerd cdi; do man -w "wg-oci-hook-install-$sub" >/dev/null || fail "no man page wg-oci-hook-install-$sub"; done
for f in /usr/share/bash-completion/completions/wg-oci-hook /usr/share/zsh/vendor-completions/_wg-oci-hook \
  /usr/share/fish/vendor_completions.d/wg-oci-hook.fish /usr/share/doc/wg-oci-hook/README.md \
  /usr/share/doc/wg-oci-hook/copyright /usr/share/doc/wg-oci-hook/changelog.Debian.gz; do
  grep -qx "$f" "$listed" || fail "$f is not in the package"
done
bash -c 'source /usr/share/bash-completion/completions/wg-oci-hook && complete -p wg-oci-hook' >/dev/null ||
  fail "the bash completion does not register"

step "the demo, on the installed files alone"
bash tests/demo.sh --installed || fail "the demo on the installed package"
echo "state dir after the demo: $(find /run/wg-oci-hook 2>/dev/null | tr '\n' ' ')"
# A containerd handler bound to a profile: a link beside /usr/bin/wg-oci-runtime, which the purge must take.
# (containerd's configuration here is a file of the test's own.)
printf 'version = 2\n' >"$containerd_config"
/usr/bin/wg-oci-hook install containerd --profile vpn --config "$containerd_config" ||
  fail "install containerd --profile vpn"
[ "$(readlink /usr/bin/wg-oci-runtime@vpn)" = wg-oci-runtime ] || fail "no link /usr/bin/wg-oci-runtime@vpn"
# The CDI spec, with a device per profile of the shipped policy running the installed hook: the purge takes it.
/usr/bin/wg-oci-hook install cdi || fail "install cdi"
grep -q '"path": "/usr/bin/wg-oci-hook"' /etc/cdi/wg-oci-hook.json || fail "the CDI spec does not run /usr/bin/wg-oci-hook"
has '"name": "vpn"' /etc/cdi/wg-oci-hook.json || fail "the CDI spec has no device vpn"

step "apt-get purge wg-oci-hook"
apt-get purge "${apt_quiet[@]}" wg-oci-hook || fail "apt-get purge"
if [ -n "$pulled" ]; then
  # shellcheck disable=SC2086
  apt-get purge "${apt_quiet[@]}" $pulled || fail "apt-get purge of the dependencies apt pulled in"
fi

for entry in ${dirs_before[@]+"${dirs_before[@]}"}; do
  read -r mode owner group path <<<"$entry"
  if [ ! -d "$path" ]; then
    echo "putting back $path: it was there before the install, and the purge removed it with the package's own"
    install -d -m "$mode" -o "$owner" -g "$group" "$path"
  fi
done

step "nothing left"
dpkg -L wg-oci-hook >/dev/null 2>&1 && fail "dpkg still knows wg-oci-hook"
dpkg-query -W -f='${Status}' wg-oci-hook 2>/dev/null | has -v 'not-installed' && fail "dpkg still lists wg-oci-hook"
while read -r path; do
  [ -d "$path" ] || [ ! -e "$path" ] || fail "$path is still there"
done <"$listed"
for path in /usr/bin/wg-oci-hook /usr/bin/wg-oci-runtime /usr/bin/wg-oci-runtime@vpn /etc/wg-oci-hook /etc/cdi/wg-oci-hook.json \
  /run/wg-oci-hook /usr/share/doc/wg-oci-hook /usr/share/man/man1/wg-oci-hook.1.gz; do
  if [ -d "$path" ] && [[ " ${dirs_before[*]+${dirs_before[*]}} " == *" $path "* ]]; then
    [ -z "$(ls -A "$path")" ] || fail "$path has files left: $(ls -A "$path")"
  else
    [ ! -e "$path" ] && [ ! -L "$path" ] || fail "$path is still there"
  fi
done
ls /var/lib/dpkg/info/wg-oci-hook.* >/dev/null 2>&1 && fail "dpkg's records of wg-oci-hook are still there"
snapshot >"$after"
if ! diff -u "$before" "$after"; then
  fail "the files under / differ from before the install (above)"
fi
[ "$(local_files)" = "$local_before" ] || fail "files under /usr/local changed"
echo "== deb test: ok ($(wc -l <"$before") paths under / compared)"
