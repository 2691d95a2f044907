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
at() { say AT "$(cut -d ' ' -f 1 /proc/uptime)" "$@"; } # where the guest's time goes

for m in $(cat /modules/order); do
  insmod "/modules/$m" || say RESULT modules FAIL "insmod $m"
done
say BOOTED "$(uname -r)" modules: $(cat /modules/order)
ip link set lo up

# --- the server: kernel WireGuard in its own netns, reached over a veth -----------------------------
at section server
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
policy() { # NAME BACKEND [LINE...]: the profile "lab" on that backend; further LINEs go into the profile
  name=$1 backend=$2; shift 2
  { printf 'default_profile = "lab"\nstate_dir = "/run/wgoh"\nbackend = "%s"\nlog_level = "info"\nlog = "stderr"\n[profiles.lab]\nconfig = "/etc/wgoh/lab.conf"\n' \
      "$backend"; for line in "$@"; do echo "$line"; done; } > "/etc/wgoh/$name.toml"
}
policy kernel kernel # the kill switch on, as by default
policy auto auto
policy userspace userspace
# The userspace timings' peer is nobody: gotatun (the built-in daemon) stamps its handshakes 27 s ahead of the
# kernel and wireguard-go (TAI64 base 2^62 + 37, theirs + 10), so a handshake of it with this key would make the
# server refuse the kernel client's next ones, as replays, for 27 s (section 5 right after would see no tunnel).
sed 's/^Endpoint = .*/Endpoint = 198.18.0.99:51820/' /etc/wgoh/lab.conf > /etc/wgoh/timing.conf
chmod 600 /etc/wgoh/timing.conf
sed -i 's|/etc/wgoh/lab.conf|/etc/wgoh/timing.conf|' /etc/wgoh/userspace.toml
policy noks kernel 'kill_switch = false'
policy full kernel 'allow_local = ["192.0.2.0/24", "fd99::/64"]' 'port_maps = ["8080:8081/tcp"]'

# bundle NAME POLICY SCRIPT [NETNS-PATH] [ANNOTATIONS]: a runc bundle on /rootfs whose process runs /t/SCRIPT.
bundle() {
  mkdir -p "/b/$1"
  ns='{"type": "network"}'
  [ -n "$4" ] && ns="{\"type\": \"network\", \"path\": \"$4\"}"
  annotations=${5:-'{"wg.enable": "true"}'}
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
  "annotations": $annotations,
  "hooks": {
    "createRuntime": [{"path": "/bin/wg-oci-hook", "args": ["wg-oci-hook", "create-runtime", "--policy", "/etc/wgoh/$2.toml"], "timeout": 60}],
    "poststop": [{"path": "/bin/wg-oci-hook", "args": ["wg-oci-hook", "poststop", "--policy", "/etc/wgoh/$2.toml"], "timeout": 60}]
  },
  "linux": {"namespaces": [{"type": "pid"}, $ns, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
}
EOF
}
runc_() { runc --root /run/runc "$@"; }
# start NAME: runc run -d; its output (a file: the container inherits it) shown when it fails.
start() { runc_ run -d --no-pivot -b "/b/$1" "$1" </dev/null >"/tmp/start-$1.log" 2>&1 || show <"/tmp/start-$1.log"; }
no_links_left() { ! ip -o link | grep -q ': wgo'; }
# state_files: what the hook keeps in its state dir (tunnel records and locks, memberships, leases), but the
# profiles' lease locks, which stay as the profiles do.
state_files() { find /run/wgoh -type f ! -path '/run/wgoh/leases/*.lock' 2>/dev/null; }
no_record_left() { [ -z "$(state_files)" ]; }
# record_of ID: the record of container ID's tunnel.
record_of() { echo "/run/wgoh/tunnels/$(cat "/run/wgoh/members/$1" 2>/dev/null).json"; }
# hook_direct STAGE POLICY ID PID: the hook as runc runs it, state on stdin, no environment.
hook_direct() { hook_prepare "$3"; hook_run "$@"; }
# hook_prepare ID: the bundle; hook_run STAGE POLICY ID PID: the hook alone ($HOOK, else /bin/wg-oci-hook).
hook_prepare() {
  mkdir -p "/b/direct-$1/rootfs"
  echo '{"root": {"path": "rootfs"}}' > "/b/direct-$1/config.json"
}
hook_run() {
  printf '{"ociVersion":"1.0.2","id":"%s","status":"creating","pid":%s,"bundle":"/b/direct-%s","annotations":{"wg.enable":"true"}}' \
    "$3" "$4" "$3" | env -i "${HOOK:-/bin/wg-oci-hook}" "$1" --policy "/etc/wgoh/$2.toml"
}

# --- 1. a container on the kernel backend: tunnel up before its first instruction ----------------------
at section 1
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
check kernel_dns "resolv.conf lacks the config's DNS" sh -c "echo \"\$0\" | grep -qx 'nameserver 10.77.0.53' && echo \"\$0\" | grep -qx 'search vm.example'" "$out"
check kernel_teardown "a link or record is left after the container" sh -c "! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(find /run/wgoh -type f ! -path '/run/wgoh/leases/*.lock' 2>/dev/null)\" ]"

# --- 2. ListenPort, FwMark and PresharedKey honoured, seen from a running container --------------------
at section 2
cat > /rootfs/t/sleep.sh <<'EOF'
sleep 60
EOF
bundle long kernel sleep.sh
start long
pid=$(runc_ state long | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
runc_ exec long ping -c 1 -W 5 10.77.0.1 >/dev/null 2>&1; ping_rc=$?
port=$(nsenter -t "$pid" -n wg show wg0 listen-port 2>&1)
mark=$(nsenter -t "$pid" -n wg show wg0 fwmark 2>&1)
psk=$(nsenter -t "$pid" -n wg show wg0 preshared-keys 2>&1 | awk '{print $2}')
seen=$(ip netns exec srv wg show wgs endpoints 2>&1)
echo "port=$port mark=$mark endpoints=$seen" | show
# wg-quick's policy routing: each family's /0 in table 51820, main (its default routes suppressed) looked up first.
in_ns() { nsenter -t "$pid" -n /usr/bin/ip "$@" 2>&1; }
get4=$(in_ns route get 203.0.113.77); get6=$(in_ns -6 route get 2001:db8::77)
table4=$(in_ns route show table 51820); table6=$(in_ns -6 route show table 51820)
rules4=$(in_ns rule); rules6=$(in_ns -6 rule)
printf '%s\n' "$get4" "$get6" "table 51820:" "$table4" "$table6" "rules:" "$rules4" "$rules6" | show
routes_ok() {
  echo "$get4" | grep -q '^203\.0\.113\.77 dev wg0 table 51820 ' &&
    echo "$get6" | grep -q '^2001:db8::77 .*dev wg0 table 51820 ' &&
    echo "$table4" | grep -q '^default dev wg0 ' && echo "$table6" | grep -q '^default dev wg0 ' || return 1
  for rules in "$rules4" "$rules6"; do
    echo "$rules" | grep -qE '^32764:[[:space:]]+from all lookup main suppress_prefixlength 0 *$' &&
      echo "$rules" | grep -qE '^32765:[[:space:]]+from all lookup 51820 *$' || return 1
  done
}
check kernel_default_routes "outside addresses not routed into wg0 by table 51820 and rules 32764/32765" routes_ok
check kernel_psk_handshake "ping through the PSK tunnel failed" [ "$ping_rc" = 0 ]
check kernel_psk_configured "the device lacks the config's PresharedKey" [ "$psk" = "$(cat /tmp/psk)" ]
check kernel_listen_port "listen-port is $port" [ "$port" = 51999 ]
check kernel_listen_port_on_the_wire "the server saw $seen" sh -c "echo '$seen' | grep -q '198.18.0.1:51999'"
# The device is the container's, its UDP socket the host's: the kernel opens it in the netns the link was
# created from (the hook's), though the link was made in the container's. The server above saw the host's
# address; the container has no way to 198.18.0.0/30 but wg0, and no UDP socket at all.
udp_host=$(ss -Hanu 2>&1); udp_ctr=$(nsenter -t "$pid" -n /usr/bin/ss -Hanu 2>&1)
links_ctr=$(in_ns -o link | awk '{print $2}' | tr '\n' ' ')
printf '%s\n' "host netns, ss -Hanu:" "$udp_host" "container netns, ss -Hanu:" "$udp_ctr" "container links: $links_ctr" | show
check kernel_socket_in_host_netns "no UDP socket on port 51999 in the host netns: $udp_host" sh -c "echo \"\$0\" | grep -qE '[]*:]51999 '" "$udp_host"
check kernel_no_socket_in_container "UDP sockets in the container's netns: $udp_ctr" [ -z "$udp_ctr" ]
check kernel_container_has_lo_and_wg0 "the container's links: $links_ctr" [ "$links_ctr" = "lo: wg0: " ]
check kernel_fwmark "fwmark is $mark" [ "$mark" = 0x42 ]
check kernel_running_has_record "no state record while running" [ -s "$(record_of long)" ]
check kernel_record_has_no_key "the record holds the private key" sh -c "! grep -q \"\$(cat /tmp/client.key)\" \"\$0\"" "$(record_of long)"
# wg-oci-hook status asks the kernel for the device from inside the container's netns: text and JSON.
status_of() { /bin/wg-oci-hook status --policy /etc/wgoh/kernel.toml "$@" 2>&1; }
# The supervisor's first verdict (it reads the device from inside the netns too) before status shows it.
for _ in $(seq 50); do ls /run/wgoh/*.health >/dev/null 2>&1 && break; sleep 0.2; done
st=$(status_of); st_rc=$?; echo "$st" | show
stj=$(status_of long --json); stj_rc=$?; echo "$stj" | show
status_table_ok() {
  [ "$st_rc" = 0 ] && echo "$st" | head -n 1 | grep -qE '^CONTAINER +PROFILE +BACKEND +INTERFACE +ADDRESSES +ENDPOINT +HANDSHAKE +RX +TX +DAEMON +PORT +HEALTH$' || return 1
  row=$(echo "$st" | grep '^long ') || return 1
  # HEALTH: the supervisor's verdict, from its read of the kernel's device inside the netns.
  echo "$row" | grep -qE '^long +lab +kernel +wg0 +10\.77\.0\.2/32,fd77::2/128 +198\.18\.0\.2:51820 +[0-9a-z]+ ago +[0-9.]+ (B|KiB) +[0-9.]+ (B|KiB) +kernel +- +healthy$'
}
status_json_ok() {
  [ "$stj_rc" = 0 ] || return 1
  for field in '"ok":true' '"containers":["long"]' '"backend":"kernel"' '"link":"up"' \
    '"addresses":["10.77.0.2/32","fd77::2/128"]' '"daemon":null' '"listen_port":51999' \
    "\"public_key\":\"$server_pub\"" '"endpoint":"198.18.0.2:51820"' '"allowed_ips":["0.0.0.0/0","::/0"]' \
    '"healthy":true' '"problems":[]' '"dead_tunnels":0'; do
    echo "$stj" | grep -qF "$field" || { echo "missing $field" | show; return 1; }
  done
  echo "$stj" | grep -qE '"latest_handshake":[1-9][0-9]*,"handshake_age_seconds":[0-9]+,"rx_bytes":[1-9][0-9]*,"tx_bytes":[1-9][0-9]*'
}
hex_of() { base64 -d < "$1" | od -An -tx1 | tr -d ' \n'; }
status_no_key() {
  for secret in "$(cat /tmp/client.key)" "$(cat /tmp/psk)" "$(hex_of /tmp/client.key)" "$(hex_of /tmp/psk)"; do
    [ ${#secret} -ge 44 ] || return 1
    echo "$st$stj" | grep -qF "$secret" && return 1
  done
  return 0
}
check kernel_status_table "status's row is not what the device says: $(echo "$st" | tail -n 1); the supervisor's log: $(tail -n 5 /run/wgoh/*.supervisor.log 2>&1 | tr '\n' ' ')" status_table_ok
check kernel_status_json "status --json lacks what the device says" status_json_ok
check kernel_status_no_key "status printed a private or preshared key" status_no_key
# wg0 deleted inside the container: the tunnel is shown broken, and status exits 1.
nsenter -t "$pid" -n /usr/bin/ip link del wg0
gone=$(status_of); gone_rc=$?; echo "$gone" | show
gonej=$(status_of long --json); gonej_rc=$?; echo "$gonej" | show
check kernel_status_link_gone "exit $gone_rc: $(echo "$gone" | tail -n 2 | tr '\n' ' ')" sh -c \
  "[ $gone_rc = 1 ] && echo \"\$0\" | grep -qE '^long +lab +kernel +wg0 \(gone\) +- +- +- +- +- +kernel +- +(healthy|unhealthy)$' && echo \"\$0\" | grep -qx 'wg-oci-hook: tunnel of long: wg0 is gone from its network namespace'" "$gone"
check kernel_status_link_gone_json "exit $gonej_rc" sh -c \
  "[ $gonej_rc = 1 ] && echo \"\$0\" | grep -qF '\"ok\":false' && echo \"\$0\" | grep -qF '\"link\":\"gone\"' && echo \"\$0\" | grep -qF '\"healthy\":false'" "$gonej"
runc_ kill long KILL; sleep 1; runc_ delete -f long
check kernel_teardown_after_kill "a link or record is left after delete" sh -c "! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(find /run/wgoh -type f ! -path '/run/wgoh/leases/*.lock' 2>/dev/null)\" ]"

# --- 3. failures: a name taken, a step after the link exists, a kill half-way; a host with its own wg0 ----
at section 3
# The container's netns already has a wg0: the start fails before anything is made, their wg0 left alone.
ip netns add taken
ip -n taken link add wg0 type veth peer name wgpeer
bundle taken kernel first.sh /run/netns/taken
out=$(runc_ run --no-pivot -b /b/taken taken 2>&1); rc=$?
echo "$out" | show
runc_ delete -f taken >/dev/null 2>&1
check kernel_failure_fails_start "runc started the container" [ "$rc" != 0 ]
check kernel_failure_names_cause "no clear error" sh -c "echo \"\$0\" | grep -q 'already has an interface named wg0'" "$out"
check kernel_failure_rolls_back "a link or record is left after the failure" sh -c "! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(find /run/wgoh -type f ! -path '/run/wgoh/leases/*.lock' 2>/dev/null)\" ]"
check kernel_failure_leaves_their_wg0 "the netns' own wg0 was touched" sh -c "/usr/bin/ip -n taken -o link | grep -q 'wg0@'"
ip netns del taken

# A step after the link was made in the container's netns fails: the netns holds a table of our name whose
# chain anti-spoof is a regular chain, which the kill switch's base chain of that name cannot update, so the
# kernel refuses the batch. The undo deletes the link there (and the table of our name), in a netns that
# outlives the container.
ip netns add later
ip netns exec later nft add table inet wg-oci-hook
ip netns exec later nft add chain inet wg-oci-hook anti-spoof
bundle nftfail kernel first.sh /run/netns/later
out=$(runc_ run --no-pivot -b /b/nftfail nftfail 2>&1); rc=$?
echo "$out" | show
runc_ delete -f nftfail >/dev/null 2>&1
check kernel_late_failure_fails_start "runc started the container" [ "$rc" != 0 ]
check kernel_late_failure_names_cause "no nftables error" sh -c "echo \"\$0\" | grep -q 'loading the kill switch (nftables): nf_tables refused .*add chain inet wg-oci-hook anti-spoof'" "$out"
check kernel_late_failure_rolls_back "a link, table or record is left: $(ip -n later -o link | awk '{print $2}' | tr '\n' ' ')" sh -c "[ \"\$(/usr/bin/ip -n later -o link | wc -l)\" = 1 ] && [ -z \"\$(/usr/bin/ip netns exec later nft list tables)\" ] && ! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(find /run/wgoh -type f ! -path '/run/wgoh/leases/*.lock' 2>/dev/null)\" ]"
ip netns del later

# The hook killed (as runc kills one at its timeout) once the kernel link exists in the container's netns:
# poststop takes it out of that netns, which lives on.
ip netns add killed
/usr/bin/ip netns exec killed sleep 60 & sleeper=$!; sleep 0.5
hook_prepare killed1
rm -f /tmp/paused-killed1
printf '{"ociVersion":"1.0.2","id":"killed1","status":"creating","pid":%s,"bundle":"/b/direct-killed1","annotations":{"wg.enable":"true"}}' "$sleeper" |
  env -i WG_OCI_HOOK_PAUSE_AT="configuring WireGuard" WG_OCI_HOOK_PAUSED_FILE=/tmp/paused-killed1 \
    /bin/wg-oci-hook create-runtime --policy /etc/wgoh/kernel.toml >/tmp/killed1.log 2>&1 & hook=$!
for i in $(seq 1 100); do [ -e /tmp/paused-killed1 ] && break; sleep 0.2; done
made=$(ip -n killed -d -o link show wg0 2>&1); echo "paused at $(cat /tmp/paused-killed1 2>&1): $made" | show
show </tmp/killed1.log
kill -9 "$hook"; wait "$hook" 2>/dev/null
check kernel_killed_link_in_container "no wireguard wg0 in the container's netns while paused: $made" sh -c "echo \"\$0\" | grep -q wireguard" "$made"
hook_run poststop kernel killed1 "$sleeper" 2>&1 | show
check kernel_killed_poststop_cleans "a link or record is left: $(ip -n killed -o link | awk '{print $2}' | tr '\n' ' ')" sh -c "[ \"\$(/usr/bin/ip -n killed -o link | wc -l)\" = 1 ] && ! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(find /run/wgoh -type f ! -path '/run/wgoh/leases/*.lock' 2>/dev/null)\" ]"
kill "$sleeper"; ip netns del killed

# The host has a wg0 of its own (its own VPN). Whether the kernel refuses to make another wg0 in a netns
# from here depends on where it looks the name up (the requester's netns, in older kernels); shown, not
# checked. The hook makes the container's wg0 either way and leaves the host's alone.
ip link add wg0 type veth peer name wg0peer
unshare -n sleep 30 & probe=$!; sleep 0.3
echo "ip link add wg0 netns PID type wireguard, with a host wg0: $(ip link add wg0 netns "$probe" type wireguard 2>&1 && echo made)" | show
kill "$probe"
bundle hostwg0 kernel first.sh
out=$(runc_ run --no-pivot -b /b/hostwg0 hostwg0 2>&1); echo "$out" | show
check kernel_host_wg0_first_packet "first ping failed with a host wg0" sh -c "echo \"\$0\" | grep -q FIRST-PING-OK" "$out"
check kernel_host_wg0_untouched "the host's wg0 is not its veth any more: $(ip -d -o link show wg0 2>&1)" sh -c "/usr/bin/ip -d -o link show wg0 | grep -q 'wg0@wg0peer.* veth'"
check kernel_host_wg0_teardown "a link or record is left" sh -c "! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(find /run/wgoh -type f ! -path '/run/wgoh/leases/*.lock' 2>/dev/null)\" ]"
ip link del wg0

# --- 4. auto picks the kernel here, and says so; timings of both backends -----------------------------
at section 4
unshare -n -m sleep 60 & sleeper=$!; sleep 1
log=$(hook_direct create-runtime auto auto1 "$sleeper" 2>&1); rc=$?
echo "$log" | show
check auto_picks_kernel "auto did not choose the kernel: $log" sh -c "[ $rc = 0 ] && echo \"\$0\" | grep -q 'backend auto: kernel WireGuard link created, using the kernel'" "$log"
check auto_record_says_kernel "the record does not say kernel" grep -q '"backend": "kernel"' "$(record_of auto1)"
hook_direct poststop auto auto1 "$sleeper" >/dev/null 2>&1
kill "$sleeper"
check auto_teardown "a link or record is left" sh -c "! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(find /run/wgoh -type f ! -path '/run/wgoh/leases/*.lock' 2>/dev/null)\" ]"

# A runc container on the auto policy gets its tunnel from the kernel too.
bundle autorun auto first.sh
out=$(runc_ run --no-pivot -b /b/autorun autorun 2>&1); echo "$out" | show
check auto_container_first_packet "first ping failed on the auto policy" sh -c "echo \"\$0\" | grep -q FIRST-PING-OK" "$out"
check auto_container_teardown "a link or record is left" sh -c "! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(find /run/wgoh -type f ! -path '/run/wgoh/leases/*.lock' 2>/dev/null)\" ]"

at timings
# Wall-clock times in microseconds (busybox's date has no %N: coreutils' date, by path). A region's time
# includes one exec of date; the "clock" timing is that cost alone (an empty region).
now_us() { /usr/bin/date +%s%6N; }
# timing NAME T0 T1: a TIMING line in milliseconds.
timing() { say TIMING "$1" "$(awk "BEGIN { printf \"%.1f\", ($3 - $2) / 1000 }")"; }
# The same device made by hand, for comparison (7 rounds, each in a fresh netns): `ip link add` + `wg set`
# in the host, then moved into the netns (ip_move: the kernel backend's path before it made the link in the
# netns); or `ip link add` straight into the netns + `wg set` run inside it (ip_direct).
wg_set() { wg set "$1" private-key /tmp/client.key peer "$server_pub" endpoint 198.18.0.2:51820 allowed-ips 0.0.0.0/0,::/0; }
# A second hook binary in the guest (WG_OCI_HOOK_VM_BASELINE, another build) is timed on the kernel backend
# beside this one, as "baseline" (first in every other round): two builds compared under the same load.
for round in 1 2 3 4 5 6 7; do
  backends="kernel userspace"
  if [ -x /bin/wg-oci-hook-baseline ]; then
    [ $((round % 2)) = 1 ] && backends="kernel baseline userspace" || backends="baseline kernel userspace"
  fi
  for backend in $backends; do
    pol=$backend HOOK=/bin/wg-oci-hook
    [ "$backend" = baseline ] && pol=kernel HOOK=/bin/wg-oci-hook-baseline
    unshare -n -m sleep 60 & sleeper=$!; sleep 0.3
    hook_prepare "t$round$backend"
    t0=$(now_us)
    log=$(hook_run create-runtime "$pol" "t$round$backend" "$sleeper" 2>&1)
    t1=$(now_us)
    ms=$(echo "$log" | sed -n 's/.*create-runtime container=.* duration_ms=\([0-9.]*\) outcome=ok.*/\1/p')
    [ -n "$ms" ] && say TIMING "$backend" "$ms" || say RESULT "timing_$backend" FAIL "$log"
    [ -n "$ms" ] && timing "${backend}_wall" "$t0" "$t1"
    log=$(hook_run poststop "$pol" "t$round$backend" "$sleeper" 2>&1)
    ms=$(echo "$log" | sed -n 's/.*poststop container=.* duration_ms=\([0-9.]*\) outcome=ok.*/\1/p')
    [ -n "$ms" ] && say TIMING "${backend}_poststop" "$ms" || say RESULT "timing_${backend}_poststop" FAIL "$log"
    kill "$sleeper"
  done
  HOOK=/bin/wg-oci-hook
  unshare -n -m sleep 60 & sleeper=$!; sleep 0.3
  t0=$(now_us)
  ip link add wgb type wireguard && wg_set wgb && ip link set wgb netns "$sleeper"; rc=$?
  t1=$(now_us)
  [ "$rc" = 0 ] && timing ip_move "$t0" "$t1" || say RESULT timing_ip_move FAIL "exit $rc"
  nsenter -t "$sleeper" -n /usr/bin/ip link del wgb
  t0=$(now_us)
  ip link add wgb netns "$sleeper" type wireguard && nsenter -t "$sleeper" -n /usr/bin/wg set wgb private-key /tmp/client.key \
    peer "$server_pub" endpoint 198.18.0.2:51820 allowed-ips 0.0.0.0/0,::/0; rc=$?
  t1=$(now_us)
  [ "$rc" = 0 ] && timing ip_direct "$t0" "$t1" || say RESULT timing_ip_direct FAIL "exit $rc"
  nsenter -t "$sleeper" -n /usr/bin/ip link del wgb
  kill "$sleeper"
  t0=$(now_us); t1=$(now_us); timing clock "$t0" "$t1"
done
ps -eo pid,stat,args | grep -E 'tunnel-daemo[n]|wireguard-g[o]' | show
check timings_leave_nothing "a link, daemon or record is left" sh -c "! /usr/bin/ip -o link | grep -qE ': (wgo|wgb)' && [ -z \"\$(find /run/wgoh -type f ! -path '/run/wgoh/leases/*.lock' 2>/dev/null)\" ] && ! pgrep wireguard-go && ! pgrep -f 'tunnel-daemo[n]'"

# --- 5. the kill switch: nothing leaves but through the tunnel, even by an interface added later ---------
at section 5
# The "Docker 28" case: after the hook has run, a veth c9 joins the container's netns (named ctr here) with
# addresses and default routes, its peer l9 in a netns "lan". A veth counts on l9 as rx_packets what c9
# transmitted and as tx_packets what it delivered to c9, so l9's counters are the container side's tx and rx.
# A netdev table on l9 counts by kind what arrives, to name any packet that got out.
cat > /etc/watch.nft <<'NFT'
table netdev watch {
  chain in {
    type filter hook ingress device "l9" priority filter; policy accept;
    ether type arp counter comment "arp"
    icmpv6 type nd-neighbor-solicit ip6 saddr :: counter comment "dad-ns"
    icmpv6 type nd-neighbor-solicit ip6 saddr != :: counter comment "ns"
    icmpv6 type nd-neighbor-advert counter comment "na"
    icmpv6 type nd-router-solicit counter comment "rs"
    icmpv6 type { mld-listener-report, mld2-listener-report } counter comment "mld-report"
    icmpv6 type echo-request counter comment "ping6"
    icmpv6 type echo-reply counter comment "pong6"
    icmp type echo-request counter comment "ping"
    icmp type echo-reply counter comment "pong"
    meta l4proto tcp counter comment "tcp"
    meta l4proto udp counter comment "udp"
    counter comment "all"
  }
}
NFT
lan_stat() { ip netns exec lan cat "/sys/class/net/l9/statistics/$1"; }
watch_list() { ip netns exec lan nft list table netdev watch 2>&1; }
# What arrived on l9, by kind: "arp=2 mld-report=3 all=5".
watched() { watch_list | sed -n 's/.*packets \([1-9][0-9]*\) bytes [0-9]* comment "\([^"]*\)".*/\2=\1/p' | tr '\n' ' '; }
# count KIND SEEN: how many of KIND in a watched() line.
count() { n=$(echo " $2" | sed -n "s/.* $1=\([0-9]*\).*/\1/p"); echo "${n:-0}"; }
# seen_since BEFORE AFTER: what arrived between two watched() lines.
seen_since() {
  for kind in arp dad-ns ns na rs mld-report ping6 pong6 ping pong tcp udp all; do
    d=$(($(count $kind "$2") - $(count $kind "$1"))); [ "$d" -gt 0 ] && printf '%s=%s ' "$kind" "$d"
  done; return 0
}
# lan_attach PID IPV6(yes|no): the late veth. Sets lan_rx0 (l9's rx_packets before anything was moved or up)
# and late ("ok" when the container side took its addresses and default routes).
lan_attach() {
  ip netns attach ctr "$1"
  ip netns add lan
  ip link add c9 type veth peer name l9
  lan_rx0=$(cat /sys/class/net/l9/statistics/rx_packets)
  ip link set l9 netns lan
  ip link set c9 netns ctr
  ip -n lan link set lo up
  ip -n lan addr add 172.31.9.1/24 dev l9
  ip -n lan addr add fd31:9::1/64 dev l9 nodad
  ip netns exec lan nft -f /etc/watch.nft || say RESULT watch_table FAIL "nft -f /etc/watch.nft in lan"
  ip -n lan link set l9 up
  late=ok
  if [ "$2" = yes ]; then
    ip -n ctr addr add fd31:9::2/64 dev c9 nodad || late="ip addr add fd31:9::2/64 failed"
  else
    ip netns exec ctr sh -c 'echo 1 > /proc/sys/net/ipv6/conf/c9/disable_ipv6'
  fi
  ip -n ctr addr add 172.31.9.2/24 dev c9 && ip -n ctr link set c9 up || late="172.31.9.2/24 on c9 failed"
  ip -n ctr route add default via 172.31.9.1 || late="ip route add default via 172.31.9.1 failed"
  if [ "$2" = yes ]; then
    ip -n ctr -6 route add default via fd31:9::1 || late="ip -6 route add default via fd31:9::1 failed"
  fi
}
lan_detach() { ip netns del lan; ip netns del ctr; }
# Every way out that is not the tunnel, at once: ICMP, TCP and UDP (DNS) to the lan peer and to outside
# addresses, by the routes and bound to c9 (SO_BINDTODEVICE: no routing rule applies).
probe_outside() {
  ip netns exec ctr sh -c '
    for a in 172.31.9.1 203.0.113.77 fd31:9::1 2001:db8::77; do
      ping -c 1 -W 1 $a & ping -c 1 -W 1 -I c9 $a &
      echo probe | nc -w 1 $a 80 & timeout 2 nslookup probe.example $a &
    done
    wait' >/dev/null 2>&1
}
# spoof: from lan, ping the tunnel's address 10.77.0.2 through the container's veth (CVE-2019-14899). Sets
# spoof_reply (yes|no), spoof_in (packets the container side received) and spoof_out (packets it sent).
# The lan side knows c9's MAC, so no ARP has to be answered.
spoof() {
  ip -n lan neigh replace 172.31.9.2 lladdr "$(ip netns exec ctr cat /sys/class/net/c9/address)" dev l9 nud permanent
  ip -n lan route replace 10.77.0.2/32 via 172.31.9.2
  in0=$(lan_stat tx_packets); out0=$(lan_stat rx_packets); seen0=$(watched)
  ip netns exec lan ping -c 2 -W 1 10.77.0.2 >/dev/null 2>&1 && spoof_reply=yes || spoof_reply=no
  spoof_in=$(($(lan_stat tx_packets) - in0)); spoof_out=$(($(lan_stat rx_packets) - out0))
  spoof_seen=$(seen_since "$seen0" "$(watched)")
  echo "spoofed ping: reply=$spoof_reply, container side received $spoof_in, sent $spoof_out: $spoof_seen" | show
}
container_pid() { runc_ state "$1" | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p'; }

# 5a-b, 5d: a container with the tunnel and the kill switch (the policy's default).
bundle ks kernel sleep.sh
start ks
pid=$(container_pid ks)
table=$(nsenter -t "$pid" -n nft list table inet wg-oci-hook 2>&1); echo "$table" | show
chains_drop() {
  for chain in input forward output; do
    echo "$table" | grep -A 1 "chain $chain {" | grep -q 'policy drop;' || return 1
  done
  echo "$table" | grep -q 'fib saddr type != local drop'
}
check kernel_killswitch_table "no input/forward/output chains with policy drop in the container's netns" chains_drop
lan_attach "$pid" yes
probe_outside
sleep 3 # the kernel's own IPv6 on c9: DAD, MLD reports, router solicitations (the control below sees them)
lan_rx1=$(lan_stat rx_packets); lan_tx=$(lan_stat tx_packets); seen=$(watched)
echo "late veth: $late; l9 rx_packets $lan_rx0 -> $lan_rx1, tx_packets $lan_tx; lan saw: $seen" | show
check kernel_killswitch_late_default_route "$late" [ "$late" = ok ]
# Not vacuous: the veth was up in the container with its routes, and carried the lan's own packets to it.
no_leak() { [ "$late" = ok ] && [ "$lan_tx" -gt 0 ] && [ "$lan_rx0" -ge 0 ] && [ "$lan_rx1" = "$lan_rx0" ]; }
check kernel_killswitch_no_leak_on_late_veth "the container side sent $((lan_rx1 - lan_rx0)) packets to lan (late veth: $late, lan sent $lan_tx): $seen" no_leak
tunnel=$(ip netns exec ctr sh -c 'ping -c 1 -W 5 10.77.0.1 >/dev/null && echo PING-OK; ping6 -c 1 -W 5 fd77::1 >/dev/null && echo PING6-OK
  printf "GET / HTTP/1.0\r\n\r\n" | nc -w 5 10.77.0.1 8080 | tail -n 1' 2>&1); echo "$tunnel" | show
# What each end of the tunnel says, for a failure's report.
{ echo "server:"; ip netns exec srv wg show wgs; echo "container:"; nsenter -t "$pid" -n wg show wg0
  nsenter -t "$pid" -n ip rule; nsenter -t "$pid" -n ip route show table all | grep -v '^local\|^broadcast\|^multicast'; } 2>&1 | show
check kernel_killswitch_tunnel_still_works "the tunnel failed beside the late veth: $tunnel" sh -c "echo \"\$0\" | grep -q PING-OK && echo \"\$0\" | grep -q PING6-OK && echo \"\$0\" | grep -q hello-via-kernel-wg" "$tunnel"
spoof
check kernel_killswitch_antispoof "reply=$spoof_reply, received $spoof_in, sent $spoof_out: $spoof_seen" [ "$spoof_reply" = no -a "$spoof_in" -ge 2 -a "$spoof_out" = 0 ]
lan_detach
runc_ delete -f ks >/dev/null 2>&1

# 5d without the kill switch: the anti-spoofing rule alone keeps the tunnel's address from answering the lan.
# No IPv6 on c9, so that nothing the kernel sends by itself is counted.
bundle noks noks sleep.sh
start noks
lan_attach "$(container_pid noks)" no
spoof
check kernel_killswitch_antispoof_without_kill_switch "reply=$spoof_reply, received $spoof_in, sent $spoof_out: $spoof_seen" [ "$spoof_reply" = no -a "$spoof_in" -ge 2 -a "$spoof_out" = 0 ]
# And it is that rule: without the anti-spoof chain the same container answers.
ip netns exec ctr nft delete chain inet wg-oci-hook anti-spoof
spoof
check kernel_killswitch_antispoof_rule_is_what_stops_it "without the anti-spoof chain: reply=$spoof_reply, sent $spoof_out: $spoof_seen" [ "$spoof_reply" = yes -a "$spoof_out" -gt 0 ]
lan_detach
runc_ delete -f noks >/dev/null 2>&1

# 5c, the control: the same veth and probes on a container without wg.enable. The counters must see it all.
bundle open kernel sleep.sh "" '{}'
start open
lan_attach "$(container_pid open)" yes
probe_outside
sleep 3
lan_rx1=$(lan_stat rx_packets); seen=$(watched)
echo "control: l9 rx_packets $lan_rx0 -> $lan_rx1; lan saw: $seen" | show
check kernel_killswitch_control_sees_leaks "the lan side received only $((lan_rx1 - lan_rx0)) packets without a tunnel: $seen" [ "$lan_rx1" -gt "$lan_rx0" ]
# The kernel's own IPv6 (no probe sends these) got out within the same window: the window is long enough.
check kernel_killswitch_control_sees_kernel_ipv6 "no DAD NS, MLD report or RS from c9 within the window: $seen" [ "$(count dad-ns "$seen")" -gt 0 -a "$(count mld-report "$seen")" -gt 0 -a "$(count rs "$seen")" -gt 0 ]
check kernel_killswitch_control_lan_answers "no ping reply from 172.31.9.1" ip netns exec ctr ping -c 1 -W 2 172.31.9.1
ip -n ctr addr add 10.77.0.2/32 dev lo
spoof
check kernel_killswitch_antispoof_control "without our table the address did not answer: reply=$spoof_reply, sent $spoof_out" [ "$spoof_reply" = yes -a "$spoof_out" -gt 0 ]
lan_detach
runc_ delete -f open >/dev/null 2>&1

# The whole ruleset (allow_local in both families, a port map) loads, and the port map works.
# An unprivileged inner port: the container has CAP_NET_RAW only.
cat > /rootfs/t/listen.sh <<'SH'
ping -c 1 -W 5 10.77.0.1 >/dev/null
nc -l -p 8081 -e echo portmap-ok
SH
bundle pm full listen.sh
start pm
table=$(nsenter -t "$(container_pid pm)" -n nft list table inet wg-oci-hook 2>&1); echo "$table" | show
full_ok() {
  for rule in 'ct original ip daddr 192.0.2.0/24 ct state established,related accept' \
    'ct original ip6 daddr fd99::/64 ct state established,related accept' 'nd-neighbor-solicit' \
    'fib saddr type != local drop' 'iif "wg0" tcp dport 8080 redirect to :8081'; do
    echo "$table" | grep -qF "$rule" || return 1
  done
}
check kernel_killswitch_full_ruleset "the table lacks allow_local, ND or port-map rules" full_ok
for try in 1 2 3 4 5 6; do
  got=$(ip netns exec srv nc -w 2 10.77.0.2 8080 </dev/null 2>&1)
  [ "$got" = portmap-ok ] && break; sleep 0.5
done
check kernel_killswitch_port_map "10.77.0.2:8080 through the tunnel said: $got" [ "$got" = portmap-ok ]
runc_ delete -f pm >/dev/null 2>&1
check kernel_killswitch_teardown "a link, record or netns is left" sh -c "! /usr/bin/ip -o link | grep -q ': wgo' && [ -z \"\$(find /run/wgoh -type f ! -path '/run/wgoh/leases/*.lock' 2>/dev/null)\" ] && ! /usr/bin/ip netns list | grep -qE '^(lan|ctr)'"

at done
say DONE
poweroff -f
