//! The wg-quick(8) config format: everything wg(8) and wg-quick(8) accept, with errors that name FILE:LINE.
//!
//! Each line is read as the program that reads it would: wg's keys as wireguard-tools' src/config.c does (every
//! blank deleted, AllowedIPs split on commas only, every entry valid), wg-quick's own keys (Address, DNS, MTU,
//! Table, SaveConfig) as src/wg-quick/linux.bash does (trimmed; Address and DNS split on commas and blanks).
//! Section names and keys are case-insensitive, `#` starts a comment anywhere, a singular key given twice keeps
//! its last value. The deliberate differences (scripts, custom tables, ...) are listed in the README's "The
//! wg-quick file". No error ever quotes a key or a whole line.

use crate::config::file_error::FileError;
use crate::sys::private_file;
use crate::wg::key::Key;
use ipnetwork::IpNetwork;
use std::net::IpAddr;
use std::path::Path;

const MAX_CONFIG_BYTES: u64 = 64 * 1024;

#[derive(Debug)]
pub struct WgQuickConfig {
    pub interface: InterfaceSection,
    pub peers: Vec<PeerSection>,
}

#[derive(Debug)]
pub struct InterfaceSection {
    pub private_key: Key,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub addresses: Vec<IpNetwork>,
    pub dns_servers: Vec<IpAddr>,
    pub dns_search: Vec<String>,
    pub mtu: Option<u32>,
    pub table: Table,
    pub save_config: bool,
}

/// wg-quick's `Table`, as far as a container can have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Not given, empty, `auto`, or `main` (254): AllowedIPs are routed as described in the README's Routes.
    Auto,
    /// `off`: no routes at all.
    Off,
}

#[derive(Debug)]
pub struct PeerSection {
    /// The line of its `[Peer]`.
    pub line: usize,
    pub public_key: Key,
    pub preshared_key: Option<Key>,
    pub endpoint: Option<Endpoint>,
    pub allowed_ips: Vec<IpNetwork>,
    pub persistent_keepalive: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// An IPv4 literal, an IPv6 literal without brackets, or a DNS name (resolved by the caller).
    pub host: String,
    pub port: u16,
}

/// Reads a config file: a regular file of at most 64 KiB that neither group nor others can access.
pub fn load(path: &Path) -> Result<WgQuickConfig, FileError> {
    let text = private_file::read(path, MAX_CONFIG_BYTES)
        .map_err(|message| FileError::whole(path, message))?;
    parse(&text, path)
}

#[derive(PartialEq)]
enum Section {
    None,
    Interface,
    Peer,
}

#[derive(Default)]
struct PeerDraft {
    line: usize,
    public_key: Option<Key>,
    preshared_key: Option<Key>,
    endpoint: Option<Endpoint>,
    allowed_ips: Vec<IpNetwork>,
    persistent_keepalive: Option<u16>,
}

pub fn parse(text: &str, file: &Path) -> Result<WgQuickConfig, FileError> {
    // What wg-quick would name the interface: the file's name without `.conf`.
    let tunnel = file
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".conf").unwrap_or(n));
    let file = file.display().to_string();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut section = Section::None;
    // wg-quick reads its own keys only under a line that is exactly `[Interface]` once trimmed (linux.bash:
    // `[[ $key == "[Interface]" ]]`), where wg, deleting every blank first, also takes `[ Interface ]`.
    let mut quick_interface = false;
    let mut interface_line = None;
    let mut private_key = None;
    let (mut listen_port, mut fwmark, mut mtu) = (None, None, None);
    let mut table = Table::Auto;
    let mut save_config = false;
    let (mut addresses, mut dns_servers, mut dns_search) = (Vec::new(), Vec::new(), Vec::new());
    let mut peers: Vec<PeerDraft> = Vec::new();

    for (index, raw_line) in text.lines().enumerate() {
        let line_no = index + 1;
        let err = |message: String| FileError {
            file: file.clone(),
            line: Some(line_no),
            message,
        };
        let stripped = raw_line.split('#').next().unwrap_or("");
        // wg's view of the line (config.c, config_read_line): every blank deleted, keys and values alike.
        let compact: String = stripped.chars().filter(|c| !is_blank(*c)).collect();
        if compact.is_empty() {
            continue;
        }
        // wg-quick's view (linux.bash, parse_options): key and value split at the first `=`, each trimmed.
        let (quick_key, quick_value) = match stripped.split_once('=') {
            Some((k, v)) => (trim_blanks(k), trim_blanks(v)),
            None => (trim_blanks(stripped), ""),
        };
        if compact.starts_with('[') {
            quick_interface = quick_key.eq_ignore_ascii_case("[Interface]");
            section = match compact.to_ascii_lowercase().as_str() {
                "[interface]" if interface_line.is_some() => {
                    return Err(err("a second [Interface] section".into()));
                }
                "[interface]" => {
                    interface_line = Some(line_no);
                    Section::Interface
                }
                "[peer]" => {
                    peers.push(PeerDraft {
                        line: line_no,
                        ..PeerDraft::default()
                    });
                    Section::Peer
                }
                _ => {
                    let name = compact.trim_start_matches('[').trim_end_matches(']');
                    return Err(err(format!("unknown section [{}]", short(name))));
                }
            };
            continue;
        }
        let Some((key, value)) = compact.split_once('=') else {
            return Err(err("expected Key = Value".into()));
        };
        let lower = key.to_ascii_lowercase();
        if matches!(lower.as_str(), "preup" | "postup" | "predown" | "postdown") {
            return Err(err(format!(
                "{} runs a shell command as root on the host; scripts are not supported, remove the line",
                key_name(key)
            )));
        }
        let quick_lower = quick_key.to_ascii_lowercase();
        let quick_key_here = section == Section::Interface
            && stripped.contains('=')
            && matches!(
                quick_lower.as_str(),
                "address" | "dns" | "mtu" | "table" | "saveconfig"
            );
        if section == Section::Interface
            && !quick_key_here
            && matches!(
                lower.as_str(),
                "address" | "dns" | "mtu" | "table" | "saveconfig"
            )
        {
            // `Save Config = true`: wg-quick does not know the key with a blank in it, and wg knows no SaveConfig.
            return Err(err(format!(
                "unknown key {} in [Interface] (no blanks inside a key)",
                short(quick_key)
            )));
        }
        if quick_key_here && !quick_interface {
            return Err(err(format!(
                "{quick_key} is read by wg-quick only under a line that is exactly [Interface]: \
                 remove the blanks from the section line"
            )));
        }
        if quick_key_here {
            match quick_lower.as_str() {
                // linux.bash: `ADDRESSES+=( ${value//,/ } )`: commas and blanks both separate, empty items vanish.
                "address" => {
                    for item in quick_list(quick_value) {
                        addresses.push(
                            parse_net(item, false)
                                .map_err(|m| err(format!("Address {}: {m}", short(item))))?,
                        );
                    }
                }
                "dns" => {
                    for item in quick_list(quick_value) {
                        match parse_dns(item, tunnel) {
                            Ok(Dns::Server(ip)) => dns_servers.push(ip),
                            Ok(Dns::Search(name)) => dns_search.push(name.to_owned()),
                            Err(m) => return Err(err(format!("DNS {}: {m}", short(item)))),
                        }
                    }
                }
                // linux.bash: an empty MTU (set_mtu_up: `[[ -n $MTU ]]`) is computed, as if not given.
                "mtu" if quick_value.is_empty() => mtu = None,
                "mtu" => {
                    let value = decimal::<u32>(quick_value).filter(|m| (576..=65535).contains(m));
                    mtu =
                        Some(value.ok_or_else(|| {
                            err("MTU: expected a number from 576 to 65535".into())
                        })?);
                }
                "table" => table = parse_table(quick_value).map_err(err)?,
                "saveconfig" if quick_value.is_empty() => {
                    return Err(err("SaveConfig has no value".into()))
                }
                _ => {
                    save_config = match quick_value.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(err("SaveConfig: expected true or false".into())),
                    }
                }
            }
            continue;
        }
        if value.is_empty() {
            // config.c, get_value: a key with nothing after its `=` is an unrecognized line.
            return Err(err(format!("{} has no value", key_name(key))));
        }
        match section {
            Section::None => {
                return Err(err(format!(
                    "{} outside of an [Interface] or [Peer] section",
                    key_name(key)
                )))
            }
            Section::Interface => match lower.as_str() {
                "privatekey" => {
                    let key_value = parse_key(value).ok_or_else(|| {
                        err(format!(
                            "{key} is not a valid WireGuard key (base64 of 32 bytes)"
                        ))
                    })?;
                    if key_value.is_zero() {
                        return Err(err(format!("{key} is all zeros")));
                    }
                    private_key = Some(key_value);
                }
                "listenport" => {
                    listen_port = Some(decimal::<u16>(value).ok_or_else(|| {
                        err(format!("ListenPort {}: expected 0-65535", short(value)))
                    })?)
                }
                "fwmark" => {
                    fwmark = parse_fwmark(value).ok_or_else(|| {
                        err(format!(
                            "FwMark {}: expected off, 0-4294967295 or 0x0-0xffffffff",
                            short(value)
                        ))
                    })?
                }
                _ => return Err(err(format!("unknown key {} in [Interface]", short(key)))),
            },
            Section::Peer => {
                let peer = peers.last_mut().expect("a [Peer] line pushed a draft");
                match lower.as_str() {
                    "publickey" => {
                        peer.public_key = Some(parse_key(value).ok_or_else(|| {
                            err(format!(
                                "{key} is not a valid WireGuard key (base64 of 32 bytes)"
                            ))
                        })?)
                    }
                    "presharedkey" => {
                        peer.preshared_key = Some(parse_key(value).ok_or_else(|| {
                            err(format!(
                                "{key} is not a valid WireGuard key (base64 of 32 bytes)"
                            ))
                        })?)
                    }
                    "endpoint" => {
                        peer.endpoint = Some(
                            parse_endpoint(value)
                                .map_err(|m| err(format!("Endpoint {}: {m}", short(value))))?,
                        )
                    }
                    "allowedips" => {
                        // config.c, parse_allowedips: `strsep(&sep, ",")` on the blank-free value, and every
                        // entry must parse: an empty one (`a,,b`, a trailing comma) is refused.
                        let originals = quick_value.split(',');
                        for (item, original) in value.split(',').zip(originals) {
                            let net = if item.is_empty() {
                                Err("an empty entry (a stray or trailing comma)".to_owned())
                            } else {
                                parse_net(item, true)
                            };
                            peer.allowed_ips.push(net.map_err(|m| {
                                let hint = if trim_blanks(original).contains(is_blank) {
                                    " (wg deletes blanks, so only commas separate entries)"
                                } else {
                                    ""
                                };
                                err(format!("AllowedIPs {}: {m}{hint}", short(item)))
                            })?);
                        }
                    }
                    "persistentkeepalive" => {
                        peer.persistent_keepalive = if value.eq_ignore_ascii_case("off") {
                            None
                        } else {
                            match decimal::<u16>(value) {
                                Some(0) => None,
                                Some(n) => Some(n),
                                None => {
                                    return Err(err(
                                        "PersistentKeepalive: expected 0-65535 or off".into()
                                    ))
                                }
                            }
                        }
                    }
                    _ => return Err(err(format!("unknown key {} in [Peer]", short(key)))),
                }
            }
        }
    }

    let file_err = |message: &str| FileError {
        file: file.clone(),
        line: None,
        message: message.to_owned(),
    };
    if interface_line.is_none() {
        return Err(file_err("no [Interface] section"));
    }
    let private_key = private_key.ok_or_else(|| file_err("[Interface] has no PrivateKey"))?;
    if let Some(m) = mtu {
        if m < 1280 && addresses.iter().any(IpNetwork::is_ipv6) {
            return Err(file_err(
                "MTU below 1280 with an IPv6 Address (IPv6 needs at least 1280)",
            ));
        }
    }
    let peers = peers
        .into_iter()
        .map(|p| {
            let public_key = p.public_key.ok_or_else(|| FileError {
                file: file.clone(),
                line: Some(p.line),
                message: "[Peer] has no PublicKey".into(),
            })?;
            Ok(PeerSection {
                line: p.line,
                public_key,
                preshared_key: p.preshared_key,
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips,
                persistent_keepalive: p.persistent_keepalive,
            })
        })
        .collect::<Result<Vec<_>, FileError>>()?;
    Ok(WgQuickConfig {
        interface: InterfaceSection {
            private_key,
            listen_port,
            fwmark,
            addresses,
            dns_servers,
            dns_search,
            mtu,
            table,
            save_config,
        },
        peers,
    })
}

/// A blank as wg (ctype.h, char_is_space) and bash's `[[:space:]]` in the C locale see it.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r')
}

fn trim_blanks(s: &str) -> &str {
    s.trim_matches(is_blank)
}

/// A list as wg-quick splits Address and DNS (`${value//,/ }`, unquoted): commas, spaces and tabs separate;
/// empty items vanish.
fn quick_list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split([',', ' ', '\t'])
        .map(trim_blanks)
        .filter(|s| !s.is_empty())
}

/// Plain decimal digits only, as config.c demands (`char_is_digit(value[0])`, then strtoul to the end): Rust's
/// own parser would also take a leading `+`.
fn decimal<T: std::str::FromStr>(value: &str) -> Option<T> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// fe80::/10 (`Ipv6Addr::is_unicast_link_local` needs Rust 1.84).
pub fn is_link_local(ip: &std::net::Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

enum Dns<'a> {
    Server(IpAddr),
    Search(&'a str),
}

/// wg-quick's rule (linux.bash, parse_options): `[[ $v =~ (^[0-9.]+$)|(^.*:.*$) ]]` makes a server, anything
/// else a search domain. So `10.0.0.256` is a server to wg-quick, one no resolver can use: refused here.
fn parse_dns<'a>(item: &'a str, tunnel: Option<&str>) -> Result<Dns<'a>, String> {
    let server = item.bytes().all(|b| b.is_ascii_digit() || b == b'.') || item.contains(':');
    if !server {
        return if is_dns_name(item) {
            Ok(Dns::Search(item))
        } else {
            Err("neither an IP address nor a domain name".to_owned())
        };
    }
    if let Some((ip, zone)) = item.split_once('%') {
        let ip: std::net::Ipv6Addr = ip
            .parse()
            .map_err(|_| "not a valid IPv6 address before the %zone".to_owned())?;
        if !is_link_local(&ip) {
            return Err("a %zone is only for a link-local (fe80::/10) address".to_owned());
        }
        // wg-quick names the tunnel after its file (wg0.conf: wg0). Any other zone is a host interface,
        // which the container does not have.
        if Some(zone) != tunnel {
            return Err(format!(
                "the zone must be the tunnel itself (%{}, as wg-quick names it after the file): \
                 the container has no other interface of the host",
                tunnel.unwrap_or("NAME")
            ));
        }
        return Ok(Dns::Server(IpAddr::V6(ip)));
    }
    let ip: IpAddr = item.parse().map_err(|_| {
        if item.contains(':') {
            "not a valid IPv6 address (wg-quick takes anything with a colon for a server)"
                .to_owned()
        } else {
            "not a valid IPv4 address (wg-quick takes digits and dots for a server)".to_owned()
        }
    })?;
    if matches!(ip, IpAddr::V6(v6) if is_link_local(&v6)) {
        return Err(format!(
            "a link-local server needs its zone: %{} (the tunnel)",
            tunnel.unwrap_or("NAME")
        ));
    }
    Ok(Dns::Server(ip))
}

/// wg-quick (linux.bash, add_route): `off` adds no routes, empty or `auto` is the default; both compared
/// case-sensitively, as ip(8) then compares table names. Any other table needs policy rules the container lacks.
fn parse_table(value: &str) -> Result<Table, String> {
    match value {
        "" | "auto" | "main" | "254" => Ok(Table::Auto),
        "off" => Ok(Table::Off),
        _ => Err(format!(
            "Table {}: inside a container only auto, main or off apply (its routes go to its main table)",
            short(value)
        )),
    }
}

fn parse_key(value: &str) -> Option<Key> {
    Key::from_base64(value)
}

/// config.c, parse_fwmark: `off` in any case; else it must start with a digit; `0x` (lowercase, with digits
/// after it) is hex, anything else decimal, up to 0xffffffff. 0 is off.
fn parse_fwmark(value: &str) -> Option<Option<u32>> {
    if value.eq_ignore_ascii_case("off") {
        return Some(None);
    }
    let mark = match value.strip_prefix("0x").filter(|hex| !hex.is_empty()) {
        Some(hex) if hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16).ok()?
        }
        Some(_) => return None,
        None => decimal::<u32>(value)?,
    };
    Some((mark != 0).then_some(mark))
}

/// An address or prefix; without a prefix, a host (/32 or /128). AllowedIPs are masked to their network, as
/// wg does; interface addresses keep their host bits.
fn parse_net(item: &str, mask: bool) -> Result<IpNetwork, String> {
    let (ip, prefix) = match item.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (item, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| "not an IP address".to_owned())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => decimal::<u8>(p)
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("prefix must be 0-{max}"))?,
        None => max,
    };
    let net = IpNetwork::new(ip, prefix).map_err(|e| e.to_string())?;
    if mask {
        IpNetwork::new(net.network(), prefix).map_err(|e| e.to_string())
    } else {
        Ok(net)
    }
}

fn parse_endpoint(value: &str) -> Result<Endpoint, String> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or("expected [IPv6]:port")?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "not an IPv6 address inside [ ]")?;
        (host, port)
    } else {
        // config.c, parse_endpoint: without brackets the port follows the last colon, so wg takes
        // `2001:db8::1:51820` as [2001:db8::1]:51820.
        let (host, port) = value.rsplit_once(':').ok_or("expected host:port")?;
        if host.contains(':') {
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| "not an IPv6 address before the last colon (write [address]:port)")?;
        } else if host.parse::<std::net::Ipv4Addr>().is_err() && !is_dns_name(host) {
            return Err("not an IPv4 address or host name".into());
        }
        (host, port)
    };
    let port = decimal::<u16>(port)
        .filter(|p| *p != 0)
        .ok_or("port must be 1-65535")?;
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A key as written when it is a plain word (`PrivateKey`, `MTU`), else quoted like any other input: the text
/// before `=` may be anything, a pasted key or control characters included.
fn key_name(key: &str) -> String {
    if key.len() <= 32 && key.bytes().all(|b| b.is_ascii_alphabetic()) {
        key.to_owned()
    } else {
        short(key)
    }
}

/// Quotes a piece of non-secret input, bounded, unless it looks like a key: a key pasted into the wrong
/// field (Address = <private key>) must not reach an error message.
fn short(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    let quoted = format!("{cut:?}");
    // The quoted text too: an escape such as `\0` can complete a run of key characters.
    if looks_like_key(s) || looks_like_key(&quoted) {
        return "(value not shown: it looks like a key)".to_owned();
    }
    quoted
}

/// A run of 40 or more base64 characters: what a WireGuard key looks like (kept out of every error).
pub fn looks_like_key(s: &str) -> bool {
    let mut run = 0;
    for c in s.chars() {
        run = if c.is_ascii_alphanumeric() || c == '+' || c == '/' {
            run + 1
        } else {
            0
        };
        if run >= 40 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIV: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const PUB: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const PSK: &str = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=";

    fn parse_str(text: &str) -> Result<WgQuickConfig, FileError> {
        parse(text, Path::new("/etc/wg/vpn.conf"))
    }

    fn err(text: &str) -> String {
        let e = parse_str(text).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            !e.contains(PRIV) && !e.contains(PSK),
            "secret in error: {e}"
        );
        e
    }

    fn minimal(extra_interface: &str, extra_peer: &str) -> String {
        format!("[Interface]\nPrivateKey = {PRIV}\n{extra_interface}\n[Peer]\nPublicKey = {PUB}\n{extra_peer}\n")
    }

    #[test]
    fn parses_a_real_world_config_with_odd_spelling() {
        let text = format!(
            "\u{feff}# from the provider\r\n[interface]\r\nprivatekey={PRIV}   # mine\r\nAddress = 10.2.0.2/32\r\n\
             ADDRESS=fd00::2/128 , 10.3.0.2\r\nDNS = 10.2.0.1, 2001:db8::53 , corp.example, lab.example.\r\n\
             MTU = 1380\r\nListenPort = 51821\r\nFwMark = 0x1234\r\nTable = off\r\nSaveConfig = True\r\n\r\n\
             [Peer]\r\n  PublicKey  =  {PUB}\r\nPresharedKey = {PSK}\r\nEndpoint = [2001:db8::1]:51820\r\n\
             Allowedips = 0.0.0.0/0\r\nAllowedIPs = ::/0, 10.1.2.3/24 \r\nPersistentKeepalive = 25\r\n\
             [Peer]\nPublicKey = {PRIV}\nEndpoint = vpn.example.com:443\nPersistentKeepalive = off\n"
        );
        let c = parse_str(&text).unwrap();
        let i = &c.interface;
        assert_eq!(i.private_key.to_base64(), PRIV);
        let addrs: Vec<String> = i.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["10.2.0.2/32", "fd00::2/128", "10.3.0.2/32"]);
        assert_eq!(
            i.dns_servers,
            [
                "10.2.0.1".parse::<IpAddr>().unwrap(),
                "2001:db8::53".parse().unwrap()
            ]
        );
        assert_eq!(i.dns_search, ["corp.example", "lab.example."]);
        assert_eq!(
            (i.mtu, i.listen_port, i.fwmark),
            (Some(1380), Some(51821), Some(0x1234))
        );
        assert_eq!(i.table, Table::Off);
        assert!(i.save_config);
        assert_eq!(c.peers.len(), 2);
        let p = &c.peers[0];
        assert_eq!(p.preshared_key.as_ref().unwrap().to_base64(), PSK);
        assert_eq!(
            p.endpoint,
            Some(Endpoint {
                host: "2001:db8::1".into(),
                port: 51820
            })
        );
        let allowed: Vec<String> = p.allowed_ips.iter().map(|a| a.to_string()).collect();
        assert_eq!(allowed, ["0.0.0.0/0", "::/0", "10.1.2.0/24"]);
        assert_eq!(p.persistent_keepalive, Some(25));
        assert_eq!(
            c.peers[1].endpoint,
            Some(Endpoint {
                host: "vpn.example.com".into(),
                port: 443
            })
        );
        assert_eq!(c.peers[1].persistent_keepalive, None);
        assert!(!format!("{c:?}").contains(PRIV));
    }

    #[test]
    fn last_value_of_a_singular_key_wins_and_fwmark_off() {
        let c = parse_str(&minimal(
            "MTU = 1400\nMTU = 1300\nFwMark = off",
            "PersistentKeepalive = 0",
        ))
        .unwrap();
        assert_eq!(c.interface.mtu, Some(1300));
        assert_eq!(c.interface.fwmark, None);
        assert_eq!(c.peers[0].persistent_keepalive, None);
    }

    #[test]
    fn scripts_are_refused_naming_the_line() {
        let e = err(&minimal(
            "Address = 10.0.0.2/32\nPostUp = iptables -A FORWARD -j ACCEPT",
            "",
        ));
        assert_eq!(
            e,
            "/etc/wg/vpn.conf:4: PostUp runs a shell command as root on the host; scripts are not supported, remove the line"
        );
        assert!(err(&minimal("predown = echo hi", "")).contains(":3: predown runs"));
    }

    #[test]
    fn errors_name_file_and_line() {
        assert!(err(&minimal("Colour = blue", "")).starts_with("/etc/wg/vpn.conf:3: unknown key"));
        assert!(err(&format!("PrivateKey = {PRIV}\n"))
            .starts_with("/etc/wg/vpn.conf:1: PrivateKey outside"));
        assert!(err("[Interface]\nPrivateKey = abc\n")
            .contains(":2: PrivateKey is not a valid WireGuard key"));
        let bad_b64 = format!("{}!=", &PRIV[..42]);
        assert!(err(&format!("[Interface]\nPrivateKey = {bad_b64}\n"))
            .contains(":2: PrivateKey is not a valid"));
        let zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert!(err(&format!("[Interface]\nPrivateKey = {zero}\n"))
            .contains(":2: PrivateKey is all zeros"));
        assert!(err(&minimal("Address = 10.0.0.2/33", ""))
            .contains(":3: Address \"10.0.0.2/33\": prefix must be 0-32"));
        assert!(err(&minimal("", "Endpoint = 192.0.2.1")).contains(":6: Endpoint"));
        assert!(err(&minimal("", "Endpoint = 192.0.2.1:0")).contains("port must be"));
        assert!(err(&minimal("MTU = 100", "")).contains(":3: MTU"));
        assert!(err(&minimal("MTU = 1000\nAddress = fd00::2", "")).contains("1280"));
        assert!(
            err(&minimal("", "PresharedKey = short")).contains(":6: PresharedKey is not a valid")
        );
        assert!(err(&minimal("ListenPort", "")).contains(":3: expected Key = Value"));
        assert!(err(&minimal("[Tunnel]", "")).contains("unknown section"));
        assert!(err(&minimal("DNS = not a name!", "")).contains("DNS"));
        assert_eq!(
            err("[Peer]\nPublicKey = x\n").split(": ").nth(1),
            Some("PublicKey is not a valid WireGuard key (base64 of 32 bytes)")
        );
        assert_eq!(
            err(&format!(
                "[Interface]\nPrivateKey = {PRIV}\n[Peer]\nEndpoint = 1.2.3.4:5\n"
            )),
            "/etc/wg/vpn.conf:3: [Peer] has no PublicKey"
        );
        assert_eq!(
            err(&format!("[Peer]\nPublicKey = {PUB}\n")),
            "/etc/wg/vpn.conf: no [Interface] section"
        );
        assert_eq!(
            err("[Interface]\n[Peer]\n"),
            "/etc/wg/vpn.conf: [Interface] has no PrivateKey"
        );
    }

    #[test]
    fn a_key_in_the_wrong_field_is_not_echoed() {
        for line in [
            format!("Address = {PRIV}"),
            format!("{PRIV} = 1"),
            format!("DNS = {PRIV}"),
        ] {
            let e = err(&minimal(&line, ""));
            assert!(e.contains(":3:"), "{e}");
            assert!(!e.contains(&PRIV[..40]), "{e}");
        }
        assert!(!err(&minimal("", &format!("Endpoint = {PRIV}:51820"))).contains(&PRIV[..40]));
    }

    /// Found by fuzzing (fuzz/corpus/wgquick/crash-02800fe7…): a line `<key material>=` with no value, or a key
    /// line before any section, put the whole "key" into the error, control characters and all.
    #[test]
    fn a_key_name_that_is_not_a_word_is_quoted_bounded() {
        let pasted = format!("PrivateKey\0\0\0{}", &PRIV[..43]);
        for text in [
            minimal(&format!("{pasted}="), ""),
            format!("{PRIV} = 1\n"),
            minimal("Bad\u{1b}[2JKey =", ""),
            minimal(&format!("{} =", "k".repeat(5000)), ""),
        ] {
            let e = err(&text);
            assert!(!e.contains(&PRIV[..40]), "{e}");
            assert!(!e.chars().any(char::is_control), "{e:?}");
            assert!(e.len() < 200, "{e}");
        }
        assert!(err(&minimal("Bad\u{1b}Key =", "")).contains(":3: \"Bad\\u{1b}Key\" has no value"));
        assert!(err(&minimal("DNS = 1.1.1.1\nListenPort =", ""))
            .ends_with(":4: ListenPort has no value"));
    }

    /// Found by fuzzing (fuzz/corpus/wgquick/crash-2ed7b1bb…): 39 characters of a key after a NUL are no key
    /// run, but quoted the NUL becomes `\0` and its `0` makes the run 40 long in the message.
    #[test]
    fn an_escape_next_to_key_material_does_not_complete_a_key_run() {
        let e = err(&minimal(&format!("Priv\0{} =", &PRIV[4..43]), ""));
        assert!(!looks_like_key(&e), "{e}");
        assert!(
            e.ends_with(":3: (value not shown: it looks like a key) has no value"),
            "{e}"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let path = std::env::temp_dir().join(format!("wgoh-wgquick-fifo-{}", std::process::id()));
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = load(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(e.ends_with(": not a regular file"), "{e}");
    }

    fn temp_file(tag: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("wgoh-wgquick-{tag}-{}.conf", std::process::id()));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
        path
    }

    #[test]
    fn load_checks_mode_type_and_size() {
        let good = temp_file("good", &minimal("", ""), 0o600);
        assert!(load(&good).is_ok());
        let open = temp_file("open", &minimal("", ""), 0o644);
        let e = load(&open).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{0}: is accessible by group or others (mode 0644); run chmod 600 {0}",
                open.display()
            )
        );
        let big = temp_file("big", &"#".repeat(70_000), 0o600);
        assert!(load(&big).unwrap_err().to_string().contains("64 KiB"));
        assert!(load(&std::env::temp_dir()).is_err());
        let e = load(Path::new("/nonexistent/x.conf"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/x.conf: "), "{e}");
        for p in [good, open, big] {
            std::fs::remove_file(p).unwrap();
        }
    }

    fn dns_of(c: &WgQuickConfig) -> (Vec<String>, Vec<String>) {
        let servers = c.interface.dns_servers.iter().map(|s| s.to_string());
        (servers.collect(), c.interface.dns_search.clone())
    }

    fn allowed_of(c: &WgQuickConfig) -> Vec<String> {
        c.peers[0]
            .allowed_ips
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    /// config.c, parse_allowedips: an empty value never reaches it (get_value: nothing after `=` is an
    /// unrecognized line), and strsep on `,` hands it an empty entry that parse_ip refuses.
    #[test]
    fn allowed_ips_empty_or_with_an_empty_entry_are_refused_as_wg_does() {
        let c = parse_str(&minimal(
            "",
            "AllowedIPs = 10.0.0.0/8 , 10.1.0.0/16\nAllowedIPs=fd00::/64",
        ))
        .unwrap();
        assert_eq!(allowed_of(&c), ["10.0.0.0/8", "10.1.0.0/16", "fd00::/64"]);
        assert_eq!(
            err(&minimal("", "AllowedIPs =")),
            "/etc/wg/vpn.conf:6: AllowedIPs has no value"
        );
        for list in [
            "10.0.0.0/8,",
            "10.0.0.0/8,,10.1.0.0/16",
            ",10.0.0.0/8",
            " , ",
        ] {
            let e = err(&minimal("", &format!("AllowedIPs = {list}")));
            assert!(
                e.starts_with("/etc/wg/vpn.conf:6: AllowedIPs \"\": an empty entry"),
                "{list}: {e}"
            );
        }
        // Blanks are deleted, not separators: wg reads `10.0.0.0/810.1.0.0/16`.
        let e = err(&minimal("", "AllowedIPs = 10.0.0.0/8 10.1.0.0/16"));
        assert!(e.starts_with("/etc/wg/vpn.conf:6: AllowedIPs"), "{e}");
        assert!(
            e.ends_with("(wg deletes blanks, so only commas separate entries)"),
            "{e}"
        );
    }

    /// linux.bash: `ADDRESSES+=( ${value//,/ } )` and `for v in ${value//,/ }`: commas become blanks, then
    /// the unquoted expansion splits on blanks and drops empty words.
    #[test]
    fn address_and_dns_split_on_blanks_and_commas_as_wg_quick_does() {
        let c = parse_str(&minimal(
            "Address = 10.0.0.2/32 fd00::2/128\tfd00::3,,\nDNS = 1.1.1.1 8.8.8.8,\t corp.example ,\nDNS =\nAddress =",
            "",
        ))
        .unwrap();
        let addrs: Vec<String> = c
            .interface
            .addresses
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(addrs, ["10.0.0.2/32", "fd00::2/128", "fd00::3/128"]);
        assert_eq!(
            dns_of(&c),
            (
                vec!["1.1.1.1".to_owned(), "8.8.8.8".to_owned()],
                vec!["corp.example".to_owned()]
            )
        );
        assert!(err(&minimal("Address = 10.0.0.2/32 10.0.0.300", ""))
            .starts_with("/etc/wg/vpn.conf:3: Address \"10.0.0.300\": not an IP address"));
    }

    /// linux.bash: `[[ $v =~ (^[0-9.]+$)|(^.*:.*$) ]]` makes a server, anything else a search domain. A server
    /// that no resolver can use (wg-quick writes it anyway) is refused; so is a search domain that is no name.
    #[test]
    fn a_dns_entry_of_digits_and_dots_or_with_a_colon_is_a_server_and_must_be_valid() {
        let c = parse_str(&minimal(
            "DNS = 10.0.0.53, fd00::53, lab, corp.example.",
            "",
        ))
        .unwrap();
        assert_eq!(
            dns_of(&c),
            (
                vec!["10.0.0.53".to_owned(), "fd00::53".to_owned()],
                vec!["lab".to_owned(), "corp.example.".to_owned()]
            )
        );
        for typo in ["10.0.0.256", "127.1", "10.0.0.1.", "010.0.0.1"] {
            assert_eq!(
                err(&minimal(&format!("DNS = {typo}"), "")),
                format!(
                    "/etc/wg/vpn.conf:3: DNS \"{typo}\": not a valid IPv4 address (wg-quick takes digits and dots for a server)"
                )
            );
        }
        for typo in ["1.2.3.4:53", "fd00:::53", "[fd00::53]"] {
            let e = err(&minimal(&format!("DNS = {typo}"), ""));
            assert!(
                e.contains(": not a valid IPv6 address (wg-quick takes anything with a colon"),
                "{e}"
            );
        }
        assert!(err(&minimal("DNS = 1.1.1.1 bad_name!", "")).starts_with(
            "/etc/wg/vpn.conf:3: DNS \"bad_name!\": neither an IP address nor a domain name"
        ));
    }

    /// linux.bash: an IPv6 server may carry a zone (save_config's `nameserver ([a-zA-Z0-9_=+:%.-]+)`). Only the
    /// tunnel, named after the file as wg-quick names it, is an interface the container has.
    #[test]
    fn a_link_local_dns_server_takes_the_tunnel_as_its_zone() {
        let c = parse_str(&minimal("DNS = fe80::53%vpn, 10.0.0.53", "")).unwrap();
        assert_eq!(dns_of(&c).0, ["fe80::53", "10.0.0.53"]);
        let e = err(&minimal("DNS = fe80::53%eth0", ""));
        assert_eq!(
            e,
            "/etc/wg/vpn.conf:3: DNS \"fe80::53%eth0\": the zone must be the tunnel itself (%vpn, as wg-quick \
             names it after the file): the container has no other interface of the host"
        );
        assert!(err(&minimal("DNS = fe80::53", ""))
            .ends_with("DNS \"fe80::53\": a link-local server needs its zone: %vpn (the tunnel)"));
        assert!(err(&minimal("DNS = fd00::53%vpn", ""))
            .ends_with("a %zone is only for a link-local (fe80::/10) address"));
        assert!(err(&minimal("DNS = fe80::zz%vpn", "")).ends_with("before the %zone"));
    }

    /// linux.bash, set_mtu_up: `[[ -n $MTU ]]`, else computed; add_route: an empty Table is auto. The last
    /// line wins, so an empty one undoes an earlier value.
    #[test]
    fn an_empty_mtu_or_table_means_auto() {
        let c = parse_str(&minimal("MTU = 1400\nMTU =\nTable = off\nTable =", "")).unwrap();
        assert_eq!((c.interface.mtu, c.interface.table), (None, Table::Auto));
        assert_eq!(
            err(&minimal("SaveConfig =", "")),
            "/etc/wg/vpn.conf:3: SaveConfig has no value"
        );
    }

    /// wg setconf and wg-quick up both take an [Interface] without peers: a tunnel that carries nothing.
    #[test]
    fn a_config_without_peers_is_accepted() {
        let c = parse_str(&format!(
            "[Interface]\nPrivateKey = {PRIV}\nAddress = 10.0.0.2/32\n"
        ))
        .unwrap();
        assert!(c.peers.is_empty());
    }

    /// config.c, config_read_line: every blank of a line wg reads is deleted, in keys and values alike. The keys
    /// wg-quick reads itself (linux.bash) are only trimmed, so a blank inside one leaves it unknown to both.
    #[test]
    fn blanks_inside_what_wg_reads_are_deleted() {
        let (a, b) = PRIV.split_at(20);
        let text = format!(
            "[ Interface ]\nPrivate Key = {a} {b}\nListen Port = 51 820\nFwMark = 0x 12\n\
             [Peer]\nPublicKey = {PUB}\nEndpoint = 192.0.2.1 : 518 20\nAllowed IPs = 10.0.0.0 / 8\n\
             Persistent Keepalive = 2 5\n"
        );
        let c = parse_str(&text).unwrap();
        assert_eq!(c.interface.private_key.to_base64(), PRIV);
        assert_eq!(
            (c.interface.listen_port, c.interface.fwmark),
            (Some(51820), Some(0x12))
        );
        let p = &c.peers[0];
        assert_eq!(
            p.endpoint,
            Some(Endpoint {
                host: "192.0.2.1".into(),
                port: 51820
            })
        );
        assert_eq!(allowed_of(&c), ["10.0.0.0/8"]);
        assert_eq!(p.persistent_keepalive, Some(25));
        // wg-quick's own keys: trimmed, not compacted.
        assert_eq!(
            err(&minimal("Save Config = true", "")),
            "/etc/wg/vpn.conf:3: unknown key \"Save Config\" in [Interface] (no blanks inside a key)"
        );
        assert!(err(&minimal("MTU = 14 00", "")).starts_with("/etc/wg/vpn.conf:3: MTU: expected"));
        assert!(err(&minimal("SaveConfig = tr ue", "")).contains(":3: SaveConfig: expected"));
        // and wg-quick sees them only under a line that is exactly [Interface].
        assert_eq!(
            err(&format!("[ Interface ]\nPrivateKey = {PRIV}\nAddress = 10.0.0.2/32\n")),
            "/etc/wg/vpn.conf:3: Address is read by wg-quick only under a line that is exactly [Interface]: \
             remove the blanks from the section line"
        );
        assert!(err(&minimal("Address", "")).ends_with(":3: expected Key = Value"));
    }

    /// config.c, parse_fwmark: `off` in any case; a leading digit; `0x` (lowercase) and hex digits, else
    /// decimal digits; at most 0xffffffff; 0 is off.
    #[test]
    fn fwmark_takes_wgs_spellings() {
        for (value, mark) in [
            ("off", None),
            ("OFF", None),
            ("0", None),
            ("0x0", None),
            ("1234", Some(1234)),
            ("0x1234", Some(0x1234)),
            ("0xFFFFffff", Some(u32::MAX)),
            ("4294967295", Some(u32::MAX)),
            ("007", Some(7)),
        ] {
            let c = parse_str(&minimal(&format!("FwMark = {value}"), "")).unwrap();
            assert_eq!(c.interface.fwmark, mark, "{value}");
        }
        for value in [
            "0X12",
            "0x",
            "+5",
            "-1",
            "0x100000000",
            "4294967296",
            "0x+5",
            "12abc",
            "x12",
            "on",
        ] {
            assert_eq!(
                err(&minimal(&format!("FwMark = {value}"), "")),
                format!(
                    "/etc/wg/vpn.conf:3: FwMark \"{value}\": expected off, 0-4294967295 or 0x0-0xffffffff"
                ),
            );
        }
    }

    /// linux.bash, add_route: `off` and `auto` compared case-sensitively (nocasematch is off by then), as ip(8)
    /// compares table names; `main` and 254 put the routes where auto does. A custom table is refused.
    #[test]
    fn table_takes_auto_main_and_off_and_refuses_other_tables() {
        for (value, table) in [
            ("auto", Table::Auto),
            ("main", Table::Auto),
            ("254", Table::Auto),
            ("off", Table::Off),
        ] {
            let c = parse_str(&minimal(&format!("Table = {value}"), "")).unwrap();
            assert_eq!(c.interface.table, table, "{value}");
        }
        for value in ["Off", "AUTO", "1234", "vpn", "0"] {
            assert_eq!(
                err(&minimal(&format!("Table = {value}"), "")),
                format!(
                    "/etc/wg/vpn.conf:3: Table \"{value}\": inside a container only auto, main or off apply \
                     (its routes go to its main table)"
                ),
            );
        }
    }

    /// config.c reads numbers with `char_is_digit(value[0])` then strtoul: no sign. Rust's parser takes `+5`.
    #[test]
    fn numbers_are_plain_digits() {
        for (interface, peer) in [
            ("ListenPort = +5", ""),
            ("MTU = +1400", ""),
            ("Address = 10.0.0.2/+24", ""),
            ("", "PersistentKeepalive = +25"),
            ("", "Endpoint = 192.0.2.1:+51820"),
            ("", "AllowedIPs = 10.0.0.0/+8"),
        ] {
            let e = err(&minimal(interface, peer));
            assert!(e.starts_with("/etc/wg/vpn.conf:"), "{e}");
        }
        assert!(err(&minimal("ListenPort = 65536", "")).contains("expected 0-65535"));
    }

    /// config.c, parse_endpoint: without brackets the port follows the last colon.
    #[test]
    fn an_ipv6_endpoint_without_brackets_splits_at_the_last_colon() {
        let c = parse_str(&minimal("", "Endpoint = 2001:db8::1:51820")).unwrap();
        assert_eq!(
            c.peers[0].endpoint,
            Some(Endpoint {
                host: "2001:db8::1".into(),
                port: 51820
            })
        );
        assert!(err(&minimal("", "Endpoint = 2001:db8::1"))
            .ends_with("not an IPv6 address before the last colon (write [address]:port)"));
    }
}
