#!/bin/busybox sh
# /init of the kernel-backend test VM (see tests/vm/mod.rs). Runs under Debian's kernel in qemu, with the
# kernel's WireGuard module: runc starts containers whose config.json carries our hooks, a kernel WireGuard
# peer answers in another netns. Every check prints one line on the serial console:
#   WGVM RESULT <name> PASS|FAIL <detail>     WGVM TIMING <backend> <ms>     WGVM DONE
# The harness turns them into tests. Nothing here leaves the VM (it has no network device).

/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /var /sys/fs/cgroup /run/netns /etc/wgoh
ln -s /run /var/run
mount -t cgroup2 cgroup2 /sys/fs/cgroup

# busybox's sh runs its own applets before searching PATH: iproute2's ip (netns, wireguard links) by path.
ip() { /usr/bin/ip "$@"; }
say() { echo "WGVM $*"; }
pass() { say RESULT "$1" PASS; }
fail() { say RESULT "$1" FAIL "$2"; }
# check NAME "detail on failure" COMMAND...: PASS when COMMAND succeeds.
check() { n=$1; d=$2; shift 2; if "$@" >/dev/null 2>&1; then pass "$n"; else fail "$n" "$d"; fi; }
show() { sed 's/^/  | /'; }

for m in $(cat /modules/order); do
  insmod "/modules/$m" || say RESULT modules FAIL "insmod $m"
done
say BOOTED "$(uname -r)"
ip link set lo up

# --- the server: kernel WireGuard in its own netns, reached over a veth -----------------------------
ip netns add srv
ip link add vh type veth peer name vs netns srv
ip addr add 198.18.0.1/30 dev vh && ip link set vh up
ip -n srv addr add 198.18.0.2/30 dev vs && ip -n srv link set vs up && ip -n srv link set lo up
umask 077
wg genkey > /tmp/server.key; wg genkey > /tmp/client.key; wg genpsk > /tmp/psk
server_pub=$(wg pubkey < /tmp/server.key); client_pub=$(wg pubkey < /tmp/client.key)
ip -n srv link add wgs type wireguard
ip netns exec srv wg set wgs private-key /tmp/server.key listen-port 51820 \
  peer "$client_pub" preshared-key /tmp/psk allowed-ips 10.77.0.2/32,fd77::2/128
ip -n srv addr add 10.77.0.1/24 dev wgs
ip -n srv addr add fd77::1/64 dev wgs
ip -n srv link set wgs up
mkdir -p /www && echo hello-via-kernel-wg > /www/index.html
ip netns exec srv httpd -p 10.77.0.1:8080 -h /www

# The client's wg-quick file: PresharedKey, ListenPort and FwMark set, no MTU (computed: veth 1500 - 80).
cat > /etc/wgoh/lab.conf <<EOF
[Interface]
PrivateKey = $(cat /tmp/client.key)
Address = 10.77.0.2/32, fd77::2/128
DNS = 10.77.0.53, vm.example
ListenPort = 51999
FwMark = 0x42

[Peer]
PublicKey = $server_pub
PresharedKey = $(cat /tmp/psk)
Endpoint = 198.18.0.2:51820
AllowedIPs = 0.0.0.0/0, ::/0
EOF
umask 022
policy() { # NAME BACKEND
  printf 'default_profile = "lab"\nstate_dir = "/run/wgoh"\nbackend = "%s"\nlog_level = "info"\n[profiles.lab]\nconfig = "/etc/wgoh/lab.conf"\n' \
    "$2" > "/etc/wgoh/$1.toml"
}
policy kernel kernel
policy auto auto
policy userspace userspace

# bundle NAME POLICY SCRIPT [NETNS-PATH]: a runc bundle on /rootfs whose process runs /t/SCRIPT.
bundle() {
  mkdir -p "/b/$1"
  ns='{"type": "network"}'
  [ -n "$4" ] && ns="{\"type\": \"network\", \"path\": \"$4\"}"
  cat > "/b/$1/config.json" <<EOF
{
  "ociVersion": "1.0.2",
  "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/sh", "/t/$3"],
              "env": ["PATH=/bin"], "cwd": "/",
              "capabilities": {"bounding": ["CAP_NET_RAW"], "effective": ["CAP_NET_RAW"], "permitted": ["CAP_NET_RAW"]}},
  "root": {"path": "/rootfs"},
  "hostname": "c-$1",
  "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
             {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
             {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}],
  "annotations": {"wg.enable": "true"},
  "hooks": {
    "createRuntime": [{"path": "/bin/wg-oci-hook", "args": ["wg-oci-hook", "create-runtime", "--policy", "/etc/wgoh/$2.toml"], "timeout": 60}],
    "poststop": [{"path": "/bin/wg-oci-hook", "args": ["wg-oci-hook", "poststop", "--policy", "/etc/wgoh/$2.toml"], "timeout": 60}]
  },
  "linux": {"namespaces": [{"type": "pid"}, $ns, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
}
EOF
}
runc_() { runc --root /run/runc "$@"; }
no_links_left() { ! ip -o link | grep -q ': wgo'; }
no_record_left() { [ -z "$(ls -A /run/wgoh 2>/dev/null)" ]; }

# --- 1. a container on the kernel backend: tunnel up before its first instruction ----------------------
mkdir -p /rootfs/t
cat > /rootfs/t/first.sh <<'EOF'
ping -c 1 -W 5 10.77.0.1 >/dev/null && echo FIRST-PING-OK
ping6 -c 1 -W 5 fd77::1 >/dev/null && echo PING6-OK
printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 10.77.0.1 8080 | tail -n 1
echo "MTU $(cat /sys/class/net/wg0/mtu)"
ip addr show wg0; ip route; ip -6 route; cat /etc/resolv.conf
EOF
bundle first kernel first.sh
out=$(runc_ run --no-pivot -b /b/first first 2>&1); echo "$out" | show
check kernel_first_packet "first ping failed" sh -c "echo \"\$0\" | grep -q FIRST-PING-OK" "$out"
check kernel_ipv6 "ping6 failed" sh -c "echo \"\$0\" | grep -q PING6-OK" "$out"
check kernel_tcp_through_tunnel "no reply from the server" sh -c "echo \"\$0\" | grep -q hello-via-kernel-wg" "$out"
check kernel_addresses "wg0 lacks the config's addresses" sh -c "echo \"\$0\" | grep -q 'inet 10.77.0.2/32' && echo \"\$0\" | grep -q 'inet6 fd77::2/128'" "$out"
check kernel_mtu "MTU is not 1420" sh -c "echo \"\$0\" | grep -qx 'MTU 1420'" "$out"
check kernel_default_routes "default routes not into wg0" sh -c "echo \"\$0\" | grep '^default' | grep -qv 'dev wg0' && exit 1; [ \$(echo \"\$0\" | grep -c '^default.*dev wg0') -eq 2 ]" "$out"
check kernel_dns "resolv.conf lacks the config's DNS" sh -c "echo \"\$0\" | grep -qx 'nameserver 10.77.0.53' && echo \"\$0\" | grep -qx 'search vm.example'" "$out"
check kernel_teardown "a link or record is left after the container" sh -c "! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(ls -A /run/wgoh 2>/dev/null)\" ]"

# --- 2. ListenPort, FwMark and PresharedKey honoured, seen from a running container --------------------
cat > /rootfs/t/sleep.sh <<'EOF'
sleep 60
EOF
bundle long kernel sleep.sh
runc_ run -d --no-pivot -b /b/long long </dev/null >/dev/null 2>&1
pid=$(runc_ state long | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
runc_ exec long ping -c 1 -W 5 10.77.0.1 >/dev/null 2>&1; ping_rc=$?
port=$(nsenter -t "$pid" -n wg show wg0 listen-port 2>&1)
mark=$(nsenter -t "$pid" -n wg show wg0 fwmark 2>&1)
psk=$(nsenter -t "$pid" -n wg show wg0 preshared-keys 2>&1 | awk '{print $2}')
seen=$(ip netns exec srv wg show wgs endpoints 2>&1)
echo "port=$port mark=$mark endpoints=$seen" | show
check kernel_psk_handshake "ping through the PSK tunnel failed" [ "$ping_rc" = 0 ]
check kernel_psk_configured "the device lacks the config's PresharedKey" [ "$psk" = "$(cat /tmp/psk)" ]
check kernel_listen_port "listen-port is $port" [ "$port" = 51999 ]
check kernel_listen_port_on_the_wire "the server saw $seen" sh -c "echo '$seen' | grep -q '198.18.0.1:51999'"
check kernel_fwmark "fwmark is $mark" [ "$mark" = 0x42 ]
check kernel_running_has_record "no state record while running" [ -s /run/wgoh/long.json ]
check kernel_record_has_no_key "the record holds the private key" sh -c "! grep -q \"\$(cat /tmp/client.key)\" /run/wgoh/long.json"
runc_ kill long KILL; sleep 1; runc_ delete -f long
check kernel_teardown_after_kill "a link or record is left after delete" sh -c "! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(ls -A /run/wgoh 2>/dev/null)\" ]"

# --- 3. a failure after the kernel link exists rolls everything back ---------------------------------
# The container's netns already has a wg0: the move fails after the link was made and configured.
ip netns add taken
ip -n taken link add wg0 type veth peer name wgpeer
bundle taken kernel first.sh /run/netns/taken
out=$(runc_ run --no-pivot -b /b/taken taken 2>&1); rc=$?
echo "$out" | show
runc_ delete -f taken >/dev/null 2>&1
check kernel_failure_fails_start "runc started the container" [ "$rc" != 0 ]
check kernel_failure_names_cause "no clear error" sh -c "echo \"\$0\" | grep -q 'already has an interface named wg0'" "$out"
check kernel_failure_rolls_back "a link or record is left after the failure" sh -c "! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(ls -A /run/wgoh 2>/dev/null)\" ]"
check kernel_failure_leaves_their_wg0 "the netns' own wg0 was touched" sh -c "/usr/bin/ip -n taken -o link | grep -q 'wg0@'"
ip netns del taken

# --- 4. auto picks the kernel here, and says so; timings of both backends -----------------------------
# hook_direct STAGE POLICY ID PID: the hook as runc runs it, state on stdin, no environment.
hook_direct() {
  mkdir -p "/b/direct-$3/rootfs"
  echo '{"root": {"path": "rootfs"}}' > "/b/direct-$3/config.json"
  printf '{"ociVersion":"1.0.2","id":"%s","status":"creating","pid":%s,"bundle":"/b/direct-%s","annotations":{"wg.enable":"true"}}' \
    "$3" "$4" "$3" | env -i /bin/wg-oci-hook "$1" --policy "/etc/wgoh/$2.toml"
}
unshare -n sleep 60 & sleeper=$!; sleep 1
log=$(hook_direct create-runtime auto auto1 "$sleeper" 2>&1); rc=$?
echo "$log" | show
check auto_picks_kernel "auto did not choose the kernel: $log" sh -c "[ $rc = 0 ] && echo \"\$0\" | grep -q 'backend auto: kernel WireGuard link created, using the kernel'" "$log"
check auto_record_says_kernel "the record does not say kernel" grep -q '"backend": "kernel"' /run/wgoh/auto1.json
hook_direct poststop auto auto1 "$sleeper" >/dev/null 2>&1
kill "$sleeper"
check auto_teardown "a link or record is left" sh -c "! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(ls -A /run/wgoh 2>/dev/null)\" ]"

# A runc container on the auto policy gets its tunnel from the kernel too.
bundle autorun auto first.sh
out=$(runc_ run --no-pivot -b /b/autorun autorun 2>&1); echo "$out" | show
check auto_container_first_packet "first ping failed on the auto policy" sh -c "echo \"\$0\" | grep -q FIRST-PING-OK" "$out"
check auto_container_teardown "a link or record is left" sh -c "! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(ls -A /run/wgoh 2>/dev/null)\" ]"

for round in 1 2 3 4 5 6 7; do
  for backend in kernel userspace; do
    unshare -n sleep 60 & sleeper=$!; sleep 0.3
    log=$(hook_direct create-runtime "$backend" "t$round$backend" "$sleeper" 2>&1)
    ms=$(echo "$log" | sed -n 's/.*create-runtime done in \([0-9.]*\) ms.*/\1/p')
    [ -n "$ms" ] && say TIMING "$backend" "$ms" || say RESULT "timing_$backend" FAIL "$log"
    hook_direct poststop "$backend" "t$round$backend" "$sleeper" >/dev/null 2>&1
    kill "$sleeper"
  done
done
check timings_leave_nothing "a link, daemon or record is left" sh -c "! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(ls -A /run/wgoh 2>/dev/null)\" ] && ! pgrep wireguard-go"

say DONE
poweroff -f
