//! The wg-quick(8) config format: everything wg(8) and wg-quick(8) accept, with errors that name FILE:LINE.
//!
//! As in wg's config.c: section names and keys are case-insensitive, whitespace around them is ignored, `#`
//! starts a comment anywhere, a singular key given twice keeps its last value, list keys (Address, DNS,
//! AllowedIPs) repeat and take comma lists. Unlike wg-quick, PreUp/PostUp/PreDown/PostDown are refused:
//! they would run as root on the host. No error ever quotes a key or a whole line.

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
    pub table: Option<String>,
    pub save_config: bool,
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

/// `FILE:LINE: message`, or `FILE: message` for what no one line is to blame for (the file cannot be read, a
/// section is missing).
#[derive(Debug)]
pub struct WgQuickError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for WgQuickError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for WgQuickError {}

/// Reads a config file: a regular file of at most 64 KiB that neither group nor others can access.
pub fn load(path: &Path) -> Result<WgQuickConfig, WgQuickError> {
    let text = private_file::read(path, MAX_CONFIG_BYTES).map_err(|message| WgQuickError {
        file: path.display().to_string(),
        line: None,
        message,
    })?;
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

pub fn parse(text: &str, file: &Path) -> Result<WgQuickConfig, WgQuickError> {
    let file = file.display().to_string();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut section = Section::None;
    let mut interface_line = None;
    let mut private_key = None;
    let (mut listen_port, mut fwmark, mut mtu, mut table) = (None, None, None, None);
    let mut save_config = false;
    let (mut addresses, mut dns_servers, mut dns_search) = (Vec::new(), Vec::new(), Vec::new());
    let mut peers: Vec<PeerDraft> = Vec::new();

    for (index, raw_line) in text.lines().enumerate() {
        let line_no = index + 1;
        let err = |message: String| WgQuickError {
            file: file.clone(),
            line: Some(line_no),
            message,
        };
        let line = raw_line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = match name.trim().to_ascii_lowercase().as_str() {
                "interface" if interface_line.is_some() => {
                    return Err(err("a second [Interface] section".into()));
                }
                "interface" => {
                    interface_line = Some(line_no);
                    Section::Interface
                }
                "peer" => {
                    peers.push(PeerDraft {
                        line: line_no,
                        ..PeerDraft::default()
                    });
                    Section::Peer
                }
                _ => return Err(err(format!("unknown section [{}]", short(name)))),
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err("expected Key = Value".into()));
        };
        let (key, value) = (key.trim(), value.trim());
        let lower = key.to_ascii_lowercase();
        if matches!(lower.as_str(), "preup" | "postup" | "predown" | "postdown") {
            return Err(err(format!(
                "{key} runs a shell command as root on the host; scripts are not supported, remove the line"
            )));
        }
        if value.is_empty() && !matches!(lower.as_str(), "dns" | "address" | "allowedips") {
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
                    listen_port = Some(value.parse::<u16>().map_err(|_| {
                        err(format!("ListenPort {}: expected 0-65535", short(value)))
                    })?)
                }
                "fwmark" => {
                    fwmark = parse_fwmark(value).ok_or_else(|| {
                        err(format!(
                            "FwMark {}: expected a number, 0x-hex or off",
                            short(value)
                        ))
                    })?
                }
                "address" => {
                    for item in list(value) {
                        addresses.push(
                            parse_net(item, false)
                                .map_err(|m| err(format!("Address {}: {m}", short(item))))?,
                        );
                    }
                }
                "dns" => {
                    for item in list(value) {
                        match item.parse::<IpAddr>() {
                            Ok(ip) => dns_servers.push(ip),
                            Err(_) if is_dns_name(item) => dns_search.push(item.to_owned()),
                            Err(_) => {
                                return Err(err(format!(
                                    "DNS {}: neither an IP address nor a domain name",
                                    short(item)
                                )))
                            }
                        }
                    }
                }
                "mtu" => {
                    let value = value
                        .parse::<u32>()
                        .ok()
                        .filter(|m| (576..=65535).contains(m));
                    mtu =
                        Some(value.ok_or_else(|| {
                            err("MTU: expected a number from 576 to 65535".into())
                        })?);
                }
                "table" => table = Some(value.to_owned()),
                "saveconfig" => {
                    save_config = match value.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(err("SaveConfig: expected true or false".into())),
                    }
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
                        for item in list(value) {
                            peer.allowed_ips
                                .push(parse_net(item, true).map_err(|m| {
                                    err(format!("AllowedIPs {}: {m}", short(item)))
                                })?);
                        }
                    }
                    "persistentkeepalive" => {
                        peer.persistent_keepalive = match value.to_ascii_lowercase().as_str() {
                            "off" => None,
                            v => match v.parse::<u16>() {
                                Ok(0) => None,
                                Ok(n) => Some(n),
                                Err(_) => {
                                    return Err(err(
                                        "PersistentKeepalive: expected 1-65535 or off".into()
                                    ))
                                }
                            },
                        }
                    }
                    _ => return Err(err(format!("unknown key {} in [Peer]", short(key)))),
                }
            }
        }
    }

    let file_err = |message: &str| WgQuickError {
        file: file.clone(),
        line: None,
        message: message.to_owned(),
    };
    if interface_line.is_none() {
        return Err(file_err("no [Interface] section"));
    }
    let private_key = private_key.ok_or_else(|| file_err("[Interface] has no PrivateKey"))?;
    if peers.is_empty() {
        return Err(file_err("no [Peer] section"));
    }
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
            let public_key = p.public_key.ok_or_else(|| WgQuickError {
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
        .collect::<Result<Vec<_>, WgQuickError>>()?;
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

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_key(value: &str) -> Option<Key> {
    Key::from_base64(value)
}

fn parse_fwmark(value: &str) -> Option<Option<u32>> {
    if value.eq_ignore_ascii_case("off") {
        return Some(None);
    }
    let mark = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
        None => value.parse::<u32>().ok()?,
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
        Some(p) => p
            .parse::<u8>()
            .ok()
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
        let (host, port) = value.rsplit_once(':').ok_or("expected host:port")?;
        if host.contains(':') {
            return Err("an IPv6 endpoint needs brackets: [address]:port".into());
        }
        if host.parse::<std::net::Ipv4Addr>().is_err() && !is_dns_name(host) {
            return Err("not an IPv4 address or host name".into());
        }
        (host, port)
    };
    let port = port
        .parse::<u16>()
        .ok()
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

    fn parse_str(text: &str) -> Result<WgQuickConfig, WgQuickError> {
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
             Allowedips = 0.0.0.0/0\r\nAllowedIPs = ::/0, 10.1.2.3/24,, \r\nPersistentKeepalive = 25\r\n\
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
        assert_eq!(i.table.as_deref(), Some("off"));
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
        assert!(err(&minimal("", "Endpoint = 2001:db8::1:51820")).contains("needs brackets"));
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
            err(&format!("[Interface]\nPrivateKey = {PRIV}\n")),
            "/etc/wg/vpn.conf: no [Peer] section"
        );
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
        assert!(err(&minimal("DNS = 1.1.1.1\nMTU =", "")).ends_with(":4: MTU has no value"));
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
}
