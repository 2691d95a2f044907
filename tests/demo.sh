#!/usr/bin/env bash
# make demo: a throwaway WireGuard server in its own network namespace, and a podman container whose only
# network is a tunnel to it. Prints what the container sees, checks that the page behind the tunnel came
# through and that nothing is left after the container, then removes everything. Root, Debian.
# Usage: tests/demo.sh PATH/TO/wg-oci-hook
#          the built hook, with a policy and hooks.d files of the demo's own (from the repository's hooks.d/)
#        tests/demo.sh --installed
#          the Debian package's files alone (tests/deb.sh): /usr/bin/wg-oci-hook, the package's hooks.d files
#          and policy /etc/wg-oci-hook/policy.toml as installed. As a user would, it puts the tunnel's wg-quick
#          file where that policy's default profile looks, /etc/wg-oci-hook/vpn.conf (it must not exist yet; it
#          is removed at the end).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tag=$(printf '%04x' $((RANDOM)))
host_ns="wgdemo-$tag-h" server_ns="wgdemo-$tag-s" server_if="wgsdemo$tag"
work=$(mktemp -d /tmp/wg-oci-hook-demo.XXXXXX)
pids=()
if [ "${1:-}" = --installed ]; then
  installed=1 hook=/usr/bin/wg-oci-hook hooks_dir=/usr/share/containers/oci/hooks.d
  policy=/etc/wg-oci-hook/policy.toml profile=vpn config=/etc/wg-oci-hook/vpn.conf state=/run/wg-oci-hook
else
  installed='' hook=$(realpath "${1:?usage: $0 PATH/TO/wg-oci-hook | --installed}") hooks_dir=$work/hooks.d
  policy=$work/policy.toml profile=demo config=$work/demo.conf state=$work/state
fi
config_written=''

cleanup() {
  set +e
  nsenter --net="/var/run/netns/$host_ns" podman --root "$work/storage" --runroot "$work/run" rm -fa >/dev/null 2>&1
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  pkill -f "wireguard-go $server_if" 2>/dev/null
  ip netns del "$host_ns" 2>/dev/null
  ip netns del "$server_ns" 2>/dev/null
  umount -R "$work/storage" 2>/dev/null
  [ -z "$config_written" ] || rm -f "$config"
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "$installed" ]; then
  for f in "$hooks_dir"/wg-oci-hook-create-runtime.json "$hooks_dir"/wg-oci-hook-poststop.json; do
    grep -q "\"path\": \"$hook\"" "$f" || { echo "demo: $f does not run $hook" >&2; exit 1; }
  done
  [ -f "$policy" ] || { echo "demo: no $policy" >&2; exit 1; }
  [ ! -e "$config" ] || { echo "demo: $config exists: not overwriting it" >&2; exit 1; }
fi

echo "== lab: network namespaces $host_ns (where podman runs) and $server_ns (the WireGuard server)"
ip netns add "$host_ns"; ip netns add "$server_ns"
ip -n "$host_ns" link set lo up; ip -n "$server_ns" link set lo up
ip link add "vd$tag-h" netns "$host_ns" type veth peer name "vd$tag-s" netns "$server_ns"
ip -n "$host_ns" addr add 198.18.0.1/30 dev "vd$tag-h"; ip -n "$host_ns" link set "vd$tag-h" up
ip -n "$server_ns" addr add 198.18.0.2/30 dev "vd$tag-s"; ip -n "$server_ns" link set "vd$tag-s" up

server_key=$(wg genkey); client_key=$(wg genkey)
server_pub=$(echo "$server_key" | wg pubkey); client_pub=$(echo "$client_key" | wg pubkey)
nsenter --net="/var/run/netns/$server_ns" wireguard-go "$server_if" >/dev/null 2>&1
nsenter --net="/var/run/netns/$server_ns" wg set "$server_if" private-key <(echo "$server_key") listen-port 51820 \
  peer "$client_pub" allowed-ips 10.77.0.2/32,fd77::2/128
ip -n "$server_ns" addr add 10.77.0.1/24 dev "$server_if"
ip -n "$server_ns" addr add fd77::1/64 dev "$server_if"
ip -n "$server_ns" link set "$server_if" up
mkdir -p "$work/www"
echo "hello from the far side of the tunnel (server $server_ns)" > "$work/www/index.html"
nsenter --net="/var/run/netns/$server_ns" busybox httpd -f -p 10.77.0.1:8080 -h "$work/www" &
pids+=($!)

echo "== wg-quick config $config, policy $policy"
umask 077
[ -z "$installed" ] || config_written=1
cat > "$config" <<CONF
[Interface]
PrivateKey = $client_key
Address = 10.77.0.2/32, fd77::2/128
DNS = 10.77.0.53, demo.example

[Peer]
PublicKey = $server_pub
Endpoint = 198.18.0.2:51820
AllowedIPs = 0.0.0.0/0, ::/0
CONF
if [ -z "$installed" ]; then
  cat > "$policy" <<POLICY
default_profile = "$profile"
state_dir = "$state"
backend = "auto"
[profiles.$profile]
config = "$config"
POLICY
  umask 022
  mkdir -p "$hooks_dir"
  for f in "$repo"/hooks.d/*.json; do
    sed -e "s#\"/usr/local/bin/wg-oci-hook\"#\"$hook\"#" \
        -e "/\"args\"/s#\"\\(create-runtime\\|poststop\\)\"\\]#\"\\1\", \"--policy\", \"$policy\"]#" "$f" > "$hooks_dir/$(basename "$f")"
  done
fi
umask 022
"$hook" check --policy "$policy" --profile "$profile"
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/proc" "$work/rootfs/sys" "$work/rootfs/dev" "$work/rootfs/tmp"
cp /bin/busybox "$work/rootfs/bin/"
for a in sh ip cat nc printf echo; do ln -s busybox "$work/rootfs/bin/$a"; done

echo "== podman run --network none --annotation wg.enable=true"
echo
nsenter --net="/var/run/netns/$host_ns" podman --root "$work/storage" --runroot "$work/run" \
  --cgroup-manager cgroupfs --runtime runc --events-backend file --hooks-dir "$hooks_dir" \
  run --rm --network none --annotation wg.enable=true \
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --rootfs "$work/rootfs" \
  /bin/sh -c 'echo "--- interfaces"; ip addr show wg0; echo "--- IPv4 routes"; ip route; echo "--- IPv6 routes"; ip -6 route;
              echo "--- /etc/resolv.conf"; cat /etc/resolv.conf;
              echo "--- http://10.77.0.1:8080/ (reachable only through the tunnel)"; printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 3 10.77.0.1 8080 | tail -n 1' | tee "$work/seen"
echo
links=$(ip -n "$host_ns" -o link | grep -c ': wgo' || true)
records=$(find "$state/tunnels" -name '*.json' 2>/dev/null | wc -l)
echo "== after the container: links named wgo* in $host_ns: $links, tunnel records in $state: $records"
fail() { echo "demo: FAILED: $*" >&2; exit 1; }
grep -q '^hello from the far side of the tunnel' "$work/seen" || fail "the page behind the tunnel did not come through"
grep -q '^nameserver 10.77.0.53$' "$work/seen" || fail "resolv.conf does not name the tunnel's DNS server"
[ "$links" = 0 ] || fail "$links wgo* links left in $host_ns"
[ "$records" = 0 ] || fail "$records tunnel records left in $state"
echo "== ok"
