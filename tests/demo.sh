#!/usr/bin/env bash
# make demo: a throwaway WireGuard server in its own network namespace, and a podman container whose only
# network is a tunnel to it. Prints what the container sees, then removes everything. Root, Debian.
# Usage: tests/demo.sh PATH/TO/wg-oci-hook
set -euo pipefail
hook=$(realpath "${1:?usage: $0 PATH/TO/wg-oci-hook}")
repo=$(cd "$(dirname "$0")/.." && pwd)
tag=$(printf '%04x' $((RANDOM)))
host_ns="wgdemo-$tag-h" server_ns="wgdemo-$tag-s" server_if="wgsdemo$tag"
work=$(mktemp -d /tmp/wg-oci-hook-demo.XXXXXX)
pids=()

cleanup() {
  set +e
  nsenter --net="/var/run/netns/$host_ns" podman --root "$work/storage" --runroot "$work/run" rm -fa >/dev/null 2>&1
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  pkill -f "wireguard-go $server_if" 2>/dev/null
  ip netns del "$host_ns" 2>/dev/null
  ip netns del "$server_ns" 2>/dev/null
  umount -R "$work/storage" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

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

echo "== policy and wg-quick config in $work"
umask 077
cat > "$work/demo.conf" <<CONF
[Interface]
PrivateKey = $client_key
Address = 10.77.0.2/32, fd77::2/128
DNS = 10.77.0.53, demo.example

[Peer]
PublicKey = $server_pub
Endpoint = 198.18.0.2:51820
AllowedIPs = 0.0.0.0/0, ::/0
CONF
cat > "$work/policy.toml" <<POLICY
default_profile = "demo"
state_dir = "$work/state"
backend = "auto"
[profiles.demo]
config = "$work/demo.conf"
POLICY
umask 022
mkdir -p "$work/hooks.d"
for f in "$repo"/hooks.d/*.json; do
  sed -e "s#\"/usr/local/bin/wg-oci-hook\"#\"$hook\"#" \
      -e "/\"args\"/s#\"\\(create-runtime\\|poststop\\)\"\\]#\"\\1\", \"--policy\", \"$work/policy.toml\"]#" "$f" > "$work/hooks.d/$(basename "$f")"
done
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/proc" "$work/rootfs/sys" "$work/rootfs/dev" "$work/rootfs/tmp"
cp /bin/busybox "$work/rootfs/bin/"
for a in sh ip cat nc printf echo; do ln -s busybox "$work/rootfs/bin/$a"; done

echo "== podman run --network none --annotation wg.enable=true"
echo
nsenter --net="/var/run/netns/$host_ns" podman --root "$work/storage" --runroot "$work/run" \
  --cgroup-manager cgroupfs --runtime runc --events-backend file --hooks-dir "$work/hooks.d" \
  run --rm --network none --annotation wg.enable=true \
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --rootfs "$work/rootfs" \
  /bin/sh -c 'echo "--- interfaces"; ip addr show wg0; echo "--- IPv4 routes"; ip route; echo "--- IPv6 routes"; ip -6 route;
              echo "--- /etc/resolv.conf"; cat /etc/resolv.conf;
              echo "--- http://10.77.0.1:8080/ (reachable only through the tunnel)"; printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 3 10.77.0.1 8080 | tail -n 1'
echo
echo "== after the container: links named wgo* in $host_ns: $(ip -n "$host_ns" -o link | grep -c ': wgo' || true)," \
  "records: $(ls "$work/state" 2>/dev/null | wc -l)"
