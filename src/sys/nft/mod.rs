//! Our nftables table in a container's netns, written by this process over netlink (NETLINK_NETFILTER): the
//! table loaded, replaced or deleted, and the forwarded-port set's element replaced, each as one nfnetlink
//! batch, which the kernel applies as one transaction or not at all.
//!
//! The table is a value ([`Table`], `table.rs`) that writes itself two ways: as nft's text (`Display`: the
//! README's rendering, what `nft -f` would load) and as the nf_tables messages nft sends for that text
//! (`compile.rs`, `netlink.rs`). A test loads the text with the real `nft -f -` into one fresh netns and the
//! batch into another and requires `nft list table` to print the same in both, over a matrix of our tables
//! (`hook::firewall`'s tests), so the two cannot drift apart.
//!
//! Why not the `nft` program any more: exec'ing it was most of the kill switch's cost. It was 6.5 ms of an
//! 18 ms createRuntime (fork and exec of a dynamically linked program that then parses, resolves interface
//! names by dumping every link, fetches the netns's whole ruleset into its cache, and only then sends its
//! batch) and 7-9 ms of a 15 ms poststop (deleting the table). Over netlink from the hook's own thread inside
//! the netns, the kernel's work is all that is left. The encoder
//! is ours rather than libnftnl's: a C library would add -dev packages and bindgen/libclang to the build, and
//! the Rust crate that wraps it (nftnl) is the part of Mullvad's daemon we would need least; what we encode
//! is small (a dozen expression kinds) and checked against nft itself. Nothing at run time needs nft now;
//! `nft list ruleset` still shows the table.
//!
//! The socket is opened on a thread that entered the netns ([`NetNs::run`]): a netlink socket talks to the
//! netns it was created in, and the interface names the rules use are resolved to indexes there, as nft
//! resolves them when it loads the text.

mod compile;
mod netlink;
pub mod table;
#[cfg(test)]
pub(crate) mod tests;

pub use netlink::Refusal;
pub use table::{
    AddrField, Chain, ChainKind, ChainPolicy, Hook, Icmpv6Type, Match, NamedSet, Nets, PortMatch,
    Ports, Priority, Rule, Table, Verdict, L4,
};

use crate::sys::netns::NetNs;
use log::debug;
use std::io;
use std::time::Instant;

/// Our table in the container's netns.
pub const TABLE: &str = "wg-oci-hook";

/// The named set of the PIA forwarded port, which the port-forwarding worker keeps up to date.
pub const FORWARDED_SET: &str = "forwarded";

/// Loads `table` in one transaction inside `netns`.
pub fn load(netns: &NetNs, table: &Table) -> io::Result<()> {
    netns.run(|| {
        let messages = compile::load(table, &mut index_of)?;
        exchange("loading the table", &messages)
    })
}

/// `load`, replacing a table of that name that may be there already (a member's kill switch, kept while a
/// dead tunnel was taken down) in the same transaction, so that the netns is never without one. Only then: a
/// table deleted in a transaction costs the commit an RCU grace period (10-15 ms here).
pub fn replace(netns: &NetNs, table: &Table) -> io::Result<()> {
    netns.run(|| {
        let mut messages = compile::add_and_delete_table(table.name);
        messages.extend(compile::load(table, &mut index_of)?);
        exchange("replacing the table", &messages)
    })
}

/// Deletes our table from `netns`; no table is not an error.
pub fn delete_table(netns: &NetNs) -> io::Result<()> {
    netns.run(
        || match exchange("deleting the table", &[compile::delete_table(TABLE)]) {
            Err(e) if Refusal::of(&e).is_some_and(|r| r.errno == nix::libc::ENOENT) => Ok(()),
            other => other,
        },
    )
}

/// Makes `port` the one element of our table's forwarded-port set in `netns`, in one transaction (the old
/// port shuts as the new one opens).
pub fn set_forwarded_port(netns: &NetNs, port: u16) -> io::Result<()> {
    netns.run(|| {
        exchange(
            "setting the forwarded port",
            &compile::set_one_port(TABLE, FORWARDED_SET, port),
        )
    })
}

fn exchange(doing: &str, messages: &[netlink::Message]) -> io::Result<()> {
    let started = Instant::now();
    let result = netlink::exchange(messages);
    debug!(
        "nf_tables: {doing}: {} messages, answered in {:.2} ms",
        messages.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    result
}

/// The index of interface `name` in the calling thread's netns.
fn index_of(name: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("interface {name:?} in the netns: {e}"),
        )
    })
}
