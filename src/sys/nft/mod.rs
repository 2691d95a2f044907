//! The `nft` program, run in a container's netns: the whole ruleset in one transaction, our table's removal, and
//! the forwarded-port set's update.
//!
//! We feed `nft -f -` the ruleset as text, in one transaction, from a thread inside the container's netns.
//! Why nft rather than our own nf_tables netlink: the kernel team's parser turns this text into bytecode that
//! nft itself can list back, the README can show the exact rules we load, and the whole table lands atomically
//! or not at all. Hand-encoded nf_tables expressions would be hundreds of lines no reviewer can check against
//! anything, and the one Rust crate that does it is GPL-3.0 and needs libclang. The price is one exec (about
//! 3 ms, measured against `nsenter true`).

pub mod table;

pub use table::{
    AddrField, Chain, ChainKind, ChainPolicy, Hook, Icmpv6Type, Match, NamedSet, Nets, PortMatch,
    Ports, Priority, Rule, Table, Verdict, L4,
};

use crate::sys::command::{output_until, resolve_program};
use crate::sys::deadline::Deadline;
use crate::sys::netns::NetNs;
use log::debug;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Our table in the container's netns.
pub const TABLE: &str = "wg-oci-hook";

/// The named set of the PIA forwarded port, which the port-forwarding worker keeps up to date.
pub const FORWARDED_SET: &str = "forwarded";

/// The `nft` program, found before anything is made so that a missing one costs nothing to undo.
pub struct Nft {
    program: PathBuf,
}

impl Nft {
    pub fn locate(command: &str) -> io::Result<Nft> {
        Ok(Nft {
            program: resolve_program(command)?,
        })
    }

    /// Loads `script` in one transaction inside `netns`, killing nft if it runs past `deadline`.
    pub fn load(&self, netns: &NetNs, script: &str, deadline: Deadline) -> io::Result<()> {
        netns.run(|| self.run(&["-f", "-"], script.as_bytes(), Some(deadline)))
    }

    /// `load`, replacing a table of ours that may be there already (a member's kill switch, kept while a dead
    /// tunnel was taken down) in the same transaction, so that the netns is never without one. Only then: a
    /// table deleted in a transaction costs the commit an RCU grace period (10-15 ms here).
    pub fn replace(&self, netns: &NetNs, script: &str, deadline: Deadline) -> io::Result<()> {
        let script = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n{script}");
        self.load(netns, &script, deadline)
    }

    /// Deletes our table from `netns`; no table is not an error.
    pub fn delete_table(&self, netns: &NetNs) -> io::Result<()> {
        // `destroy` (nft 1.0.8+) would not fail on a missing table; `delete` after `add` works on every nft.
        let script = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
        netns.run(|| self.run(&["-f", "-"], script.as_bytes(), None))
    }

    /// Makes `port` the one forwarded port of the table in `netns`, in one transaction (the old one shuts as
    /// the new one opens).
    pub fn set_forwarded_port(&self, netns: &NetNs, port: u16) -> io::Result<()> {
        let script = format!(
            "flush set inet {TABLE} {FORWARDED_SET}\nadd element inet {TABLE} {FORWARDED_SET} {{ {port} }}\n"
        );
        netns.run(|| self.run(&["-f", "-"], script.as_bytes(), None))
    }

    /// Runs nft from the calling thread (whose netns the child inherits), with no environment of ours. nft only
    /// talks to the kernel and ends in milliseconds, but `nft_command` may be anything: given a deadline, a run
    /// past it is killed.
    fn run(&self, args: &[&str], stdin: &[u8], deadline: Option<Deadline>) -> io::Result<()> {
        let started = std::time::Instant::now();
        let mut child = Command::new(&self.program)
            .args(args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.program.display())))?;
        let spawned = started.elapsed();
        let written = child.stdin.take().expect("piped").write_all(stdin);
        let (status, stderr) = match deadline {
            None => {
                let output = child.wait_with_output()?;
                (output.status, output.stderr)
            }
            Some(deadline) => output_until(child, deadline)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} still ran when the {deadline} passed",
                        self.program.display()
                    ),
                )
            })?,
        };
        debug!(
            "{}: spawned in {:.1} ms, ended {:.1} ms later",
            self.program.display(),
            spawned.as_secs_f64() * 1e3,
            (started.elapsed() - spawned).as_secs_f64() * 1e3
        );
        if status.success() {
            return written;
        }
        let stderr = String::from_utf8_lossy(&stderr);
        Err(io::Error::other(format!(
            "{} failed ({status}): {}",
            self.program.display(),
            first_error_line(&stderr)
        )))
    }
}

/// nft reports an error over several lines (the offending input, then carets); the `Error:` line says it.
fn first_error_line(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains("Error:"))
        .or_else(|| stderr.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("no message");
    line.trim().chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_errors_become_one_line() {
        let stderr =
            "/dev/stdin:3:9-12: Error: Could not process rule: No such file or directory\n\
                      iif \"wg0\" accept\n        ^^^^\n";
        assert_eq!(
            first_error_line(stderr),
            "/dev/stdin:3:9-12: Error: Could not process rule: No such file or directory"
        );
        assert_eq!(first_error_line(""), "no message");
    }
}
