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
//! Why not the `nft` program any more: running it was most of what the kill switch cost, and most of that was
//! not the kernel's work: fork and exec of a dynamically linked program, which then parses the text, dumps
//! every link to resolve interface names, fetches the netns's whole ruleset into its cache, and only then
//! sends the batch. Measured with the bench (`WG_BENCH_HOOK_ONLY=1 WG_BENCH_ROUNDS=15 cargo bench --bench
//! container_start`: userspace backend, release builds interleaved with the one before, medians of 15):
//! createRuntime's kill switch (`nftables table loaded in X ms`, debug level) went from 5.2 ms to 0.9 ms, and
//! the whole createRuntime from 18.8 to 12.8 ms. At poststop, deleting the table in a netns that outlives the
//! tunnel went from 14.5 ms to 0.2 ms of the hook's own time (the stage's `duration_ms` from 20.2 to 9.1);
//! its wall time moved less (22.5 to 21.2 ms), because the process's exit waits for its netfilter socket to
//! close, which waits for the kernel to free the transaction after an RCU grace period (`netlink.rs`): nft
//! paid that as it exited, and the hook now pays it as it exits.
//!
//! The encoder is ours. The libraries that do this (libnftnl with libmnl, which Mullvad's nftnl and mnl crates
//! wrap; rustables) would bring C -dev packages, or bindgen and libclang, into the build, and the table
//! would still have to be written twice, once for them and once as the README's text. What we encode is
//! small (a dozen expression kinds), its numbers are the kernel's uapi headers' and nft's own, and it is
//! checked against nft itself. Nothing at run time needs nft now; `nft list ruleset` still shows the table.
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
/// table deleted leaves the kernel more to free after the commit (and an RCU grace period), which the
/// socket's close waits for.
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
