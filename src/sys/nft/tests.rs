//! The netlink path against the kernel and the real nft (root, and nft, as CI installs them). Each test works
//! in network namespaces of its own, made by `unshare` on a thread and gone with it whatever the test does:
//! nothing is named, so nothing can clash or be left behind. `hook::firewall`'s tests use the helpers here to
//! tie our table's text to its netlink batch.

use super::*;
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `work` on a thread in a fresh netns that has `lo` and a TUN named `tunnel`, after `pads` other TUNs
/// (so that the tunnel's index differs from one such netns to another), and a handle on that netns.
pub(crate) fn in_fresh_netns<T: Send>(
    tunnel: &str,
    pads: usize,
    work: impl FnOnce(&NetNs) -> T + Send,
) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("a netns of its own for the test thread (root)");
                let _pads: Vec<_> = (0..pads)
                    .map(|i| crate::wg::tun::create(&format!("pad{i}")).expect("a TUN"))
                    .collect();
                let _tun = crate::wg::tun::create(tunnel).expect("a TUN");
                let file = std::fs::File::open("/proc/thread-self/ns/net").expect("our netns");
                let ns = NetNs::from_file(file, "the test's netns".into());
                work(&ns)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs the real nft in the calling thread's netns: its stdout, or its stderr as the error.
pub(crate) fn nft(args: &[&str], stdin: &str) -> Result<String, String> {
    let mut child = Command::new("nft")
        .args(args)
        .env("PATH", crate::sys::command::DEFAULT_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft (apt install nftables)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `nft list table inet wg-oci-hook` in the calling thread's netns.
pub(crate) fn listing() -> String {
    nft(&["list", "table", "inet", TABLE], "").unwrap_or_else(|e| format!("(no table: {e})"))
}

/// What `nft list` shows after `nft -f -` loaded `script` into a fresh netns whose tunnel is `tunnel`.
pub(crate) fn listed_after_nft(script: &str, tunnel: &str) -> String {
    in_fresh_netns(tunnel, 0, |_| {
        nft(&["-f", "-"], script).unwrap_or_else(|e| panic!("nft -f refused:\n{e}\n{script}"));
        listing()
    })
}

/// What `nft list` shows after `load` put `table` into a fresh netns whose tunnel is `tunnel` (at another
/// index than in `listed_after_nft`'s).
pub(crate) fn listed_after_netlink(table: &Table, tunnel: &str) -> String {
    in_fresh_netns(tunnel, 2, |ns| {
        load(ns, table).unwrap_or_else(|e| panic!("netlink load refused: {e}\n{table}"));
        listing()
    })
}

fn small_table(policy: ChainPolicy, ports: &[u16]) -> Table {
    let mut table = Table::new(TABLE);
    table.sets.push(NamedSet {
        name: FORWARDED_SET,
    });
    table.chains.push(Chain {
        name: "input",
        kind: ChainKind::Filter,
        hook: Hook::Input,
        priority: Priority::Filter,
        policy,
        rules: vec![
            Rule {
                matches: vec![Match::Iif {
                    name: "lo".into(),
                    negate: false,
                }],
                verdict: Verdict::Accept,
            },
            Rule {
                matches: vec![
                    Match::Iif {
                        name: "wg0".into(),
                        negate: false,
                    },
                    Match::Dport {
                        protocol: L4::Tcp,
                        ports: PortMatch::Set(ports.iter().map(|p| Ports::one(*p)).collect()),
                    },
                ],
                verdict: Verdict::Accept,
            },
            Rule {
                matches: vec![
                    Match::Iif {
                        name: "wg0".into(),
                        negate: false,
                    },
                    Match::L4ProtoIn(vec![L4::Tcp, L4::Udp]),
                    Match::ThDportIn(FORWARDED_SET),
                ],
                verdict: Verdict::Accept,
            },
        ],
    });
    table
}

#[test]
fn a_table_loaded_over_netlink_lists_as_nft_loads_its_text() {
    let table = small_table(ChainPolicy::Drop, &[8080, 6000]);
    assert_eq!(
        listed_after_netlink(&table, "wg0"),
        listed_after_nft(&table.to_string(), "wg0")
    );
}

#[test]
fn replace_swaps_the_table_in_one_transaction() {
    let old = small_table(ChainPolicy::Drop, &[1111, 2222]);
    let new = small_table(ChainPolicy::Accept, &[3333, 4444]);
    let expected = listed_after_nft(&new.to_string(), "wg0");
    in_fresh_netns("wg0", 0, |ns| {
        // Replacing where there is none is a load.
        replace(ns, &old).unwrap();
        set_forwarded_port(ns, 5555).unwrap();
        replace(ns, &new).unwrap();
        // The set was made anew: empty, as in a table loaded from scratch.
        assert_eq!(listing(), expected);
        // A replacement the kernel refuses (a nat chain cannot hook forward) changes nothing: the old table
        // stays whole.
        let mut bad = new.clone();
        bad.chains.push(Chain {
            name: "bad",
            kind: ChainKind::Nat,
            hook: Hook::Forward,
            priority: Priority::DstNat,
            policy: ChainPolicy::Accept,
            rules: Vec::new(),
        });
        let err = replace(ns, &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "nf_tables refused 'add chain inet wg-oci-hook bad { type nat hook forward priority dstnat; \
             policy accept; }': Operation not supported (os error 95)"
        );
        assert_eq!(
            Refusal::of(&err).map(|r| r.errno),
            Some(nix::libc::EOPNOTSUPP)
        );
        assert_eq!(listing(), expected);
    });
}

#[test]
fn delete_takes_the_table_away_and_no_table_is_no_error() {
    in_fresh_netns("wg0", 0, |ns| {
        delete_table(ns).unwrap();
        load(ns, &small_table(ChainPolicy::Drop, &[80, 443])).unwrap();
        delete_table(ns).unwrap();
        assert!(
            nft(&["list", "tables"], "").unwrap().is_empty(),
            "{}",
            listing()
        );
        delete_table(ns).unwrap();
    });
}

#[test]
fn the_forwarded_port_is_replaced_in_one_transaction_as_nft_would() {
    let table = small_table(ChainPolicy::Drop, &[80, 443]);
    let by_nft = in_fresh_netns("wg0", 0, |_| {
        nft(&["-f", "-"], &table.to_string()).unwrap();
        let mut seen = Vec::new();
        for port in [47001, 47002] {
            let script = format!(
                "flush set inet {TABLE} {FORWARDED_SET}\nadd element inet {TABLE} {FORWARDED_SET} {{ {port} }}\n"
            );
            nft(&["-f", "-"], &script).unwrap();
            seen.push(listing());
        }
        seen
    });
    let by_netlink = in_fresh_netns("wg0", 0, |ns| {
        load(ns, &table).unwrap();
        let mut seen = Vec::new();
        for port in [47001, 47002] {
            set_forwarded_port(ns, port).unwrap();
            seen.push(listing());
        }
        seen
    });
    assert_eq!(by_netlink, by_nft);
    assert!(
        by_netlink[1].contains("elements = { 47002 }"),
        "{}",
        by_netlink[1]
    );
}

#[test]
fn refusals_name_the_message_and_leave_nothing() {
    in_fresh_netns("wg0", 0, |ns| {
        // No table: the set's update is refused as a whole.
        let err = set_forwarded_port(ns, 1234).unwrap_err();
        assert_eq!(
            err.to_string(),
            "nf_tables refused 'flush set inet wg-oci-hook forwarded': No such file or directory (os error 2)"
        );
        // An interface the netns does not have: refused before anything is sent.
        let mut table = small_table(ChainPolicy::Drop, &[80]);
        table.chains[0].rules[0].matches = vec![Match::Oif { name: "wg9".into() }];
        let err = load(ns, &table).unwrap_err();
        assert_eq!(
            err.to_string(),
            "interface \"wg9\" in the netns: ENODEV: No such device"
        );
        // A rule that looks up a set the table does not have.
        let mut table = small_table(ChainPolicy::Drop, &[80]);
        table.sets.clear();
        let err = load(ns, &table).unwrap_err();
        assert!(
            err.to_string().contains("the table has no set forwarded"),
            "{err}"
        );
        assert!(listing().starts_with("(no table"), "{}", listing());
    });
}
