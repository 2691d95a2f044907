#!/usr/bin/env bash
# =====================================================================================================================
# A BENCHMARK REFERENCE, NOT A PRODUCT. Nothing installs it, nothing ships it, and it must never guard a real
# container: it checks almost nothing, trusts its input, and races with anything else touching the same container.
# =====================================================================================================================
#
# benches/container_start.rs times it beside wg-oci-hook: the same createRuntime steps for a static wg-quick profile
# on the userspace backend, done with the obvious tools (bash, wireguard-go, wg, ip, nsenter, nft), so that what the
# hook costs can be held against what a plain shell hook costs. The steps, in the hook's order (ARCHITECTURE.md,
# "createRuntime, step by step"):
#
#   create-runtime (the OCI state JSON on stdin, as runc sends it):
#     1. the container's id and init pid from the state (bash's own regex matching; see there why not jq);
#     2. wireguard-go started for a random temporary name (wgr + 12 hex digits) in the current (host) netns,
#        detached in its own session with no stdio of ours (runc waits for the hook's pipes to close), its pid and
#        start time recorded in $WG_REF_RUN_DIR/<id>; then a wait for its UAPI socket /var/run/wireguard/NAME.sock;
#     3. `wg setconf` with the wg-quick file stripped of wg-quick's own keys, as `wg-quick strip` does (Address,
#        DNS, MTU, Table, SaveConfig, Pre/PostUp/Down);
#     4. the MTU: the file's, else wg-quick's rule (the route to the endpoint: its mtu, else its device's; else
#        the default route's; else 1500; minus 80), set in the host netns, where the daemon hears of it;
#     5. the link moved into the container's netns (/proc/PID/ns/net) and renamed wg0 there, in one
#        `ip link set ... netns ... name wg0` (one RTM_SETLINK, as the hook does it);
#     6. in the container's netns: lo up, the addresses (IPv6 with nodad), wg0 up (one `ip -batch`);
#     7. the kill switch: the nftables table that src/hook/firewall.rs renders for this kind of profile (kill
#        switch on, no allow_local, no port maps, inbound "replies" when AllowedIPs has a /0, else "all"), loaded
#        with one `nft -f -`; `reference-hook.sh nft-script` prints it, and the bench checks it against
#        `Rules::render` before timing anything;
#     8. the routes, proto static as the hook makes them: a route per AllowedIPs prefix; a /0 into table 51820
#        behind wg-quick's two rules (32764: main without its default routes; 32765: table 51820), per family;
#     9. DNS: NOTHING is written to the container's resolv.conf (the hook writes the profile's DNS there; this
#        reference does not, so it does a little less than the hook).
#
#   poststop: the daemon recorded for this container is stopped (SIGTERM, then SIGKILL after 2 s; only if its pid
#     still runs wireguard-go with our name and the recorded start time), its socket and record removed. When the
#     state still names a live init (the bench's direct runs; runc sends no pid at poststop), its table and rules
#     are deleted from its netns too, as the hook does for a netns that outlives the container.
#
# Usage: reference-hook.sh create-runtime|poststop < state.json; reference-hook.sh nft-script (prints the table).
# Environment: WG_REF_CONFIG, the wg-quick file (required); WG_REF_RUN_DIR, where the records go (default
# /run/wg-oci-reference-hook). Exits non-zero with one line on stderr when a step fails, after stopping what it
# started (the table and rules in the container's netns die with that netns).

set -euo pipefail

stage=${1:?usage: reference-hook.sh create-runtime|poststop|nft-script}
config=${WG_REF_CONFIG:?WG_REF_CONFIG must name the wg-quick file}
run_dir=${WG_REF_RUN_DIR:-/run/wg-oci-reference-hook}
ifname=wg0
table=wg-oci-hook

die() {
	echo "reference-hook: $*" >&2
	exit 1
}

# ----- the wg-quick file: wg's part (for wg setconf), and wg-quick's keys ---------------------------------------------
addresses=() allowed=() endpoints=() mtu='' route_table=auto stripped='' section=''
trim() {
	local s=$1
	s=${s#"${s%%[![:space:]]*}"}
	REPLY=${s%"${s##*[![:space:]]}"}
}
while IFS= read -r line || [[ -n $line ]]; do
	trim "${line%%#*}"
	line=$REPLY
	[[ -n $line ]] || continue
	if [[ $line == \[* ]]; then
		section=${line,,}
		section=${section//[[:space:]]/}
		stripped+=$line$'\n'
		continue
	fi
	trim "${line%%=*}"
	key=${REPLY,,}
	trim "${line#*=}"
	value=$REPLY
	if [[ $section == '[interface]' ]]; then
		case $key in
		address)
			for a in ${value//,/ }; do addresses+=("$a"); done
			continue
			;;
		mtu)
			mtu=$value
			continue
			;;
		table)
			route_table=${value:-auto}
			continue
			;;
		dns | saveconfig | preup | postup | predown | postdown) continue ;;
		esac
	elif [[ $section == '[peer]' ]]; then
		case $key in
		allowedips) for a in ${value//,/ }; do allowed+=("$a"); done ;;
		endpoint) endpoints+=("${value//[[:space:]]/}") ;;
		esac
	fi
	stripped+=$line$'\n'
done <"$config"

has_default() { # has_default 4|6: whether AllowedIPs has that family's /0
	local a
	for a in "${allowed[@]}"; do
		case $1/$a in 4/0.0.0.0/0 | 6/::/0) return 0 ;; esac
	done
	return 1
}

# ----- the table: what src/hook/firewall.rs renders for this profile --------------------------------------------------
nft_script() {
	local v4=() v6=() a host inbound
	for a in "${addresses[@]}"; do
		host=${a%/*}
		if [[ $host == *:* ]]; then
			[[ " ${v6[*]} " == *" $host "* ]] || v6+=("$host")
		else
			[[ " ${v4[*]} " == *" $host "* ]] || v4+=("$host")
		fi
	done
	if has_default 4 || has_default 6; then
		inbound="iif \"$ifname\" ct state established,related accept"
	else
		inbound="iif \"$ifname\" accept"
	fi
	printf 'table inet %s {\n' "$table"
	printf '\tchain anti-spoof {\n\t\ttype filter hook prerouting priority raw; policy accept;\n'
	if ((${#v4[@]})); then
		join "${v4[@]}"
		printf '\t\tiif != "%s" ip daddr { %s } fib saddr type != local drop\n' "$ifname" "$REPLY"
	fi
	if ((${#v6[@]})); then
		join "${v6[@]}"
		printf '\t\tiif != "%s" ip6 daddr { %s } fib saddr type != local drop\n' "$ifname" "$REPLY"
	fi
	printf '\t}\n'
	printf '\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tiif "lo" accept\n\t\t%s\n\t}\n' "$inbound"
	printf '\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n'
	printf '\t\toif "%s" accept\n\t\tiif "%s" ct state established,related accept\n\t}\n' "$ifname" "$ifname"
	printf '\tchain output {\n\t\ttype filter hook output priority filter; policy drop;\n'
	printf '\t\toif "lo" accept\n\t\toif "%s" accept\n\t}\n' "$ifname"
	printf '}\n'
}
join() { # join ITEM...: "a, b, c" in REPLY
	local IFS=,
	REPLY="$*"
	REPLY=${REPLY//,/, }
}

if [[ $stage == nft-script ]]; then
	nft_script
	exit 0
fi

# ----- the state ------------------------------------------------------------------------------------------------------
# The first "id" and "pid" members: runc and crun write them before the annotations. With bash alone: jq, the
# obvious tool, takes 20-30 ms to start (jq 1.6 compiles its builtins each time), more than the rest of a step.
IFS= read -r -d '' state || true
id='' pid=0
[[ $state =~ \"id\"[[:space:]]*:[[:space:]]*\"([A-Za-z0-9_+.-]+)\" ]] && id=${BASH_REMATCH[1]}
[[ $state =~ \"pid\"[[:space:]]*:[[:space:]]*([0-9]+) ]] && pid=${BASH_REMATCH[1]}
[[ -n $id && $id != . && $id != .. ]] || die "no valid container id in the state on stdin"
record=$run_dir/$id

# STAT: the fields of /proc/PID/stat after the command: [0] is the state, [19] the start time. Fails if PID is gone.
stat_of() {
	local line
	STAT=()
	read -r line 2>/dev/null </proc/"$1"/stat || return 1
	# shellcheck disable=SC2206 # the fields are numbers and one letter
	STAT=(${line##*) })
}

# Whether PID still runs the process of the record: wireguard-go serving NAME, started at START.
is_daemon() { # is_daemon PID NAME START
	local argv=()
	stat_of "$1" && [[ ${STAT[0]} != Z && ${STAT[19]} == "$3" ]] || return 1
	mapfile -d '' argv </proc/"$1"/cmdline 2>/dev/null || return 1
	# Empty once it is exiting (its memory gone).
	((${#argv[@]} >= 2)) && [[ ${argv[0]##*/} == wireguard-go && ${argv[-1]} == "$2" ]]
}

# Microseconds since the epoch, in REPLY.
now_us() { REPLY=${EPOCHREALTIME/./}; }

stop_daemon() { # stop_daemon PID NAME START
	local deadline
	is_daemon "$@" || return 0
	kill -TERM "$1" 2>/dev/null || return 0
	now_us
	deadline=$((REPLY + 2000000))
	while is_daemon "$@"; do
		now_us
		if ((REPLY > deadline)); then
			kill -KILL "$1" 2>/dev/null || true
			return 0
		fi
		sleep 0.002
	done
}

in_container() { nsenter --net=/proc/"$pid"/ns/net "$@"; }

if [[ $stage == poststop ]]; then
	[[ -f $record ]] || exit 0
	read -r daemon name start netns_start <"$record"
	stop_daemon "$daemon" "$name" "$start"
	rm -f "/var/run/wireguard/$name.sock"
	# A netns that outlives the container (the bench's direct runs): our table and rules out of it.
	if ((pid > 0)) && stat_of "$pid" && [[ ${STAT[0]} != Z && ${STAT[19]} == "$netns_start" ]]; then
		in_container nft delete table inet "$table" 2>/dev/null || true
		printf 'rule del priority %s\n' 32764 32765 | in_container ip -force -batch - 2>/dev/null || true
		printf 'rule del priority %s\n' 32764 32765 | in_container ip -6 -force -batch - 2>/dev/null || true
	fi
	rm -f "$record"
	exit 0
fi

[[ $stage == create-runtime ]] || die "unknown stage $stage"
if ((pid == 0)) || ! stat_of "$pid"; then
	die "container $id: its init (pid $pid) does not run"
fi
init_start=${STAT[19]}

# ----- the daemon -----------------------------------------------------------------------------------------------------
printf -v name 'wgr%04x%04x%04x' "$RANDOM" "$RANDOM" "$RANDOM"
sock=/var/run/wireguard/$name.sock
daemon='' done=''
undo() {
	[[ -z $done ]] || return 0
	# Still our child (not reaped), so its pid cannot have been reused.
	[[ -z $daemon ]] || kill -KILL "$daemon" 2>/dev/null || true
	rm -f "$sock" "$record"
}
trap undo EXIT
[[ -d $run_dir ]] || mkdir -m 0700 -- "$run_dir"
# In a session of its own; setsid execs it without forking (a script's background job leads no process group), so
# $! is the daemon's pid.
setsid wireguard-go -f "$name" </dev/null >/dev/null 2>&1 &
daemon=$!
stat_of "$daemon" || die "wireguard-go exited at once"
daemon_start=${STAT[19]}
printf '%s %s %s %s\n' "$daemon" "$name" "$daemon_start" "$init_start" >"$record"
now_us
deadline=$((REPLY + 5000000))
until [[ -S $sock ]]; do
	if ! stat_of "$daemon" || [[ ${STAT[0]} == Z ]]; then
		die "wireguard-go exited before opening $sock"
	fi
	now_us
	((REPLY < deadline)) || die "wireguard-go did not open $sock within 5 s"
	sleep 0.002
done

# ----- WireGuard's configuration --------------------------------------------------------------------------------------
# The socket file exists from bind(2); listen(2) follows at once: one retry covers the moment in between.
wg setconf "$name" /dev/stdin <<<"$stripped" 2>/dev/null || { sleep 0.002 && wg setconf "$name" /dev/stdin <<<"$stripped"; }

# ----- the MTU (wg-quick's set_mtu_up), in the host netns -------------------------------------------------------------
if [[ -z $mtu ]]; then
	best=0
	route_mtu() { # route_mtu ROUTE-TEXT: its mtu, else its device's
		local out=$1
		if [[ $out =~ mtu\ ([0-9]+) ]] || { [[ $out =~ dev\ ([^ ]+) ]] && [[ $(ip -o link show dev "${BASH_REMATCH[1]}") =~ mtu\ ([0-9]+) ]]; }; then
			((BASH_REMATCH[1] > best)) && best=${BASH_REMATCH[1]}
		fi
		return 0
	}
	for e in "${endpoints[@]}"; do
		[[ $e =~ ^\[?([0-9A-Fa-f:.]+)\]?:[0-9]+$ ]] || continue
		route_mtu "$(ip -o route get "${BASH_REMATCH[1]}" 2>/dev/null || true)"
	done
	if ((best == 0)); then
		read -r out < <(ip route show default 2>/dev/null || true) || true
		route_mtu "${out:-}"
	fi
	((best > 0)) || best=1500
	mtu=$((best - 80))
	((mtu >= 1280)) || mtu=1280
fi
ip link set dev "$name" mtu "$mtu"

# ----- into the container's netns, up, kill switch, routes ------------------------------------------------------------
ip link set dev "$name" netns /proc/"$pid"/ns/net name "$ifname"
{
	echo "link set lo up"
	for a in "${addresses[@]}"; do
		if [[ $a == *:* ]]; then echo "address add $a dev $ifname nodad"; else echo "address add $a dev $ifname"; fi
	done
	echo "link set $ifname up"
} | in_container ip -batch -
nft_script | in_container nft -f -
if [[ ${route_table,,} != off ]]; then
	{
		for a in "${allowed[@]}"; do
			case $a in
			0.0.0.0/0 | ::/0) echo "route add $a dev $ifname table 51820 proto static" ;;
			*) echo "route add $a dev $ifname proto static" ;;
			esac
		done
		if has_default 4; then
			echo "rule add priority 32764 table main suppress_prefixlength 0"
			echo "rule add priority 32765 table 51820"
		fi
	} | in_container ip -batch -
	if has_default 6; then
		printf 'rule add priority 32764 table main suppress_prefixlength 0\nrule add priority 32765 table 51820\n' |
			in_container ip -6 -batch -
	fi
fi
done=1
