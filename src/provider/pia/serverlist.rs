//! PIA's server list (`/vpninfo/servers/v6`): one line of JSON, a blank line, and a base64 RSA-SHA256
//! signature of that line, checked against PIA's regions-list public key before anything in it is used.
//!
//! Servers are found by the services they offer, never by a group's name. `groups` maps a group name to its
//! services (`{"name": "wireguard", "ports": [1337]}`, `{"name": "meta", ...}`, `openvpn_udp`, ...) and a
//! region's `servers` maps group names to that group's servers there. Every group offering `wireguard` holds
//! WireGuard servers, whose API (addKey) port is the first port that group lists for the service; every group
//! offering `meta` holds meta servers. PIA renames, splits and merges groups at will (its own test lists do),
//! and adds services and fields: services and fields we do not know are skipped, and the servers of a group
//! offering neither service are not read at all.

use super::tls::der;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::Path;

/// rsaEncryption, 1.2.840.113549.1.1.1.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// The WireGuard API's port where no list names one: a fixed `server`, or a dedicated IP's server.
pub const DEFAULT_API_PORT: u16 = 1337;
/// The service names we look for in `groups`.
const WIREGUARD: &str = "wireguard";
const META: &str = "meta";

/// The verified list, its servers resolved by service.
#[derive(Debug)]
pub struct ServerList {
    pub regions: Vec<Region>,
}

#[derive(Debug)]
pub struct Region {
    pub id: String,
    pub name: String,
    pub port_forward: bool,
    pub offline: bool,
    pub servers: Servers,
}

/// A region's servers of each service we use: those of every group offering it, in the order of `groups`,
/// each server (address and name) once.
#[derive(Debug, Default)]
pub struct Servers {
    pub meta: Vec<Server>,
    pub wg: Vec<Server>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub ip: IpAddr,
    pub cn: String,
    /// The first port its group lists for the service it was found by: for a WireGuard server, the API's
    /// (addKey); for a meta server, the meta service's (unused: meta servers are asked on 443, `api.rs`).
    pub port: u16,
}

impl ServerList {
    pub fn region(&self, id: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.id == id)
    }

    /// The signed JSON line, once `verify_and_parse` has checked its signature.
    pub fn parse(signed: &[u8]) -> Result<ServerList, String> {
        let raw: RawList = serde_json::from_slice(signed)
            .map_err(|e| format!("signed, but not a server list: {e}"))?;
        let offers = Offers::of(&raw.groups)?;
        let regions = raw
            .regions
            .iter()
            .map(|region| {
                Ok(Region {
                    id: region.id.clone(),
                    name: region.name.clone(),
                    port_forward: region.port_forward,
                    offline: region.offline,
                    servers: Servers {
                        meta: servers(region, &offers.meta)?,
                        wg: servers(region, &offers.wg)?,
                    },
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(ServerList { regions })
    }
}

/// The signed line as read. Groups and a region's servers stay unparsed text until we know which groups
/// offer a service we use.
#[derive(Deserialize)]
struct RawList<'a> {
    #[serde(default, borrow)]
    groups: Members<&'a RawValue>,
    #[serde(borrow)]
    regions: Vec<RawRegion<'a>>,
}

#[derive(Deserialize)]
struct RawRegion<'a> {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    port_forward: bool,
    #[serde(default)]
    offline: bool,
    #[serde(default, borrow)]
    servers: Members<&'a RawValue>,
}

/// One entry of a group: a service (`name`, `ports`), a comment, or something newer.
#[derive(Deserialize)]
struct RawService<'a> {
    #[serde(default, borrow)]
    name: Option<&'a RawValue>,
    #[serde(default, borrow)]
    ports: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawServer {
    ip: IpAddr,
    cn: String,
}

/// A JSON object's members in their order, repeated names kept.
struct Members<T>(Vec<(String, T)>);

impl<T> Default for Members<T> {
    fn default() -> Self {
        Members(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Members<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for MembersVisitor<T> {
            type Value = Members<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<T>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor(PhantomData))
    }
}

/// A group offering a service we use: its place in `groups` and the service's first port.
struct Offer {
    order: usize,
    port: u16,
}

/// The groups offering `wireguard` and those offering `meta`, by group name.
#[derive(Default)]
struct Offers<'a> {
    wg: BTreeMap<&'a str, Offer>,
    meta: BTreeMap<&'a str, Offer>,
}

impl<'a> Offers<'a> {
    fn of(groups: &'a Members<&RawValue>) -> Result<Offers<'a>, String> {
        let mut offers = Offers::default();
        let mut names = BTreeSet::new();
        for (order, (group, services)) in groups.0.iter().enumerate() {
            if !names.insert(group.as_str()) {
                return Err(format!("group {} is listed twice", shown(group)));
            }
            // A group is a list of services; any other shape offers nothing we know.
            let Ok(services) = serde_json::from_str::<Vec<&RawValue>>(services.get()) else {
                continue;
            };
            for entry in services {
                let Ok(entry) = serde_json::from_str::<RawService>(entry.get()) else {
                    continue;
                };
                let Some(name) = entry
                    .name
                    .and_then(|n| serde_json::from_str::<String>(n.get()).ok())
                else {
                    continue;
                };
                let found = match name.as_str() {
                    WIREGUARD => &mut offers.wg,
                    META => &mut offers.meta,
                    _ => continue,
                };
                let port = first_port(group, &name, entry.ports)?;
                if found.insert(group, Offer { order, port }).is_some() {
                    return Err(format!(
                        "group {}: the {name} service is listed twice",
                        shown(group)
                    ));
                }
            }
        }
        if offers.wg.is_empty() {
            return Err("the server list names no WireGuard service".into());
        }
        Ok(offers)
    }
}

/// The first of a service's ports: a non-empty list of ports 1-65535, all checked.
fn first_port(group: &str, service: &str, ports: Option<&RawValue>) -> Result<u16, String> {
    let what = || format!("group {}: the {service} service's ports", shown(group));
    let ports: Vec<u16> = match ports {
        Some(ports) => serde_json::from_str(ports.get()).map_err(|e| format!("{}: {e}", what()))?,
        None => Vec::new(),
    };
    match ports.first() {
        None => Err(format!("{} are missing", what())),
        Some(_) if ports.contains(&0) => Err(format!("{} include 0", what())),
        Some(&port) => Ok(port),
    }
}

/// A region's servers in the groups `offers` names: in the groups' order (not the region's), each once, each
/// with its group's port. A listed server must have an IP address and a name; `cn` is checked where it is used.
fn servers(region: &RawRegion, offers: &BTreeMap<&str, Offer>) -> Result<Vec<Server>, String> {
    let mut listed: Vec<(&Offer, &str, &RawValue)> = region
        .servers
        .0
        .iter()
        .filter_map(|(group, list)| Some((offers.get(group.as_str())?, group.as_str(), *list)))
        .collect();
    listed.sort_by_key(|(offer, _, _)| offer.order);
    let mut seen = BTreeSet::new();
    let mut servers = Vec::new();
    for (offer, group, list) in listed {
        let list: Vec<RawServer> = serde_json::from_str(list.get())
            .map_err(|e| format!("region {}: group {}: {e}", shown(&region.id), shown(group)))?;
        for server in list {
            if seen.insert((server.ip, server.cn.clone())) {
                servers.push(Server {
                    ip: server.ip,
                    cn: server.cn,
                    port: offer.port,
                });
            }
        }
    }
    Ok(servers)
}

/// A name from the list for a message: quoted, escaped (one line), at most 64 characters.
fn shown(name: &str) -> String {
    format!("{:?}", name.chars().take(64).collect::<String>())
}

/// The regions-list public key: a PEM "PUBLIC KEY" (SubjectPublicKeyInfo) holding an RSA key, returned as
/// the PKCS#1 RSAPublicKey that ring verifies with.
pub fn load_public_key(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("regions_key {}: {e}", path.display()))?;
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(&pem).map_err(|_| {
        format!(
            "regions_key {}: expected a PEM \"BEGIN PUBLIC KEY\" block",
            path.display()
        )
    })?;
    rsa_public_key(spki.as_ref())
        .ok_or_else(|| format!("regions_key {}: not an RSA public key", path.display()))
}

/// SubjectPublicKeyInfo ::= SEQUENCE { SEQUENCE { OID rsaEncryption, NULL }, BIT STRING { RSAPublicKey } }.
fn rsa_public_key(spki: &[u8]) -> Option<Vec<u8>> {
    let (_, body) = der::expect(&mut der::Reader(spki), der::SEQUENCE)?;
    let mut body = der::Reader(body);
    let (_, algorithm) = der::expect(&mut body, der::SEQUENCE)?;
    let (_, oid) = der::expect(&mut der::Reader(algorithm), der::OID)?;
    if oid != OID_RSA_ENCRYPTION {
        return None;
    }
    let (_, bits) = der::expect(&mut body, der::BIT_STRING)?;
    match bits.split_first() {
        Some((0, key)) => Some(key.to_vec()),
        _ => None,
    }
}

/// Checks the signature, then parses the signed line. Nothing unsigned is ever read.
pub fn verify_and_parse(body: &[u8], rsa_public_key: &[u8]) -> Result<ServerList, String> {
    let split = body
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no signature after the JSON line")?;
    let (signed, rest) = body.split_at(split);
    let signature_b64: Vec<u8> = rest
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let signature = STANDARD
        .decode(&signature_b64)
        .map_err(|_| "the signature is not base64")?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        rsa_public_key,
    )
    .verify(signed, &signature)
    .map_err(|_| "the signature does not verify with regions_key (not PIA's list, or altered)")?;
    ServerList::parse(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PIA's v6 shape: group `wg` offers the `wireguard` service, group `meta` the `meta` service.
    const LIST: &str = r#"{"groups":{"ovpnudp":[{"name":"openvpn_udp","ports":[8080,53]}],"wg":[{"name":"wireguard","ports":[1337]}],"meta":[{"name":"meta","ports":[443,8080]}]},"regions":[{"id":"swiss","name":"Switzerland","country":"CH","auto_region":true,"dns":"swiss.example","port_forward":true,"geo":false,"offline":false,"servers":{"ovpnudp":[{"ip":"192.0.2.3","cn":"zurich401","van":true}],"meta":[{"ip":"192.0.2.1","cn":"zurich401"}],"wg":[{"ip":"192.0.2.2","cn":"zurich402"}]}}]}"#;

    // Lists shaped after PIA's published test lists (pia-foss/desktop, tools/modern-servers-list-tests/*.json:
    // bridge, renamed groups, split groups, favored, regional port, new service, regional defaults), with our
    // own names and documentation addresses. Before issue 17 only the split groups found a WireGuard server.
    const BRIDGE: &str = r#"{"groups":{
        "vpn":[{"name":"openvpn_tcp","ports":[443,80]},{"name":"openvpn_udp","ports":[8080,53]},
               {"name":"wireguard","ports":[1337]},{"name":"ikev2","ports":[500,4500]},{"name":"latency","ports":[8888]}],
        "proxy":[{"name":"socks","ports":[1080]},{"name":"shadowsocks","ports":[443]},{"name":"latency","ports":[8888]}]},
      "regions":[
        {"id":"west","name":"West","country":"ZZ","auto_region":true,
         "servers":{"vpn":[{"ip":"192.0.2.10","cn":"west401"},{"ip":"192.0.2.11","cn":"west402"}]}},
        {"id":"east","name":"East","country":"ZZ","auto_region":true,
         "servers":{"vpn":[{"ip":"192.0.2.20","cn":"east401"}],"proxy":[{"ip":"192.0.2.29","cn":"n/a"}]}}]}"#;

    const SPLIT_GROUPS: &str = r#"{"groups":{
        "ovpntcp":[{"name":"openvpn_tcp","ports":[443,80]},{"name":"latency","ports":[8888]}],
        "ovpnudp":[{"name":"openvpn_udp","ports":[8080,53]},{"name":"latency","ports":[8888]}],
        "wg":[{"name":"wireguard","ports":[1337]},{"name":"latency","ports":[8888]}],
        "ikevtwo":[{"name":"ikev2","ports":[500,4500]},{"name":"latency","ports":[8888]}],
        "proxyss":[{"name":"shadowsocks","ports":[443]},{"name":"latency","ports":[8888]}]},
      "regions":[
        {"id":"west","name":"West","servers":{"ovpntcp":[{"ip":"192.0.2.10","cn":"west401"}],
          "ovpnudp":[{"ip":"192.0.2.11","cn":"west402"}],"wg":[{"ip":"192.0.2.12","cn":"west403"}],
          "ikevtwo":[{"ip":"192.0.2.13","cn":"west404"}],"proxyss":[{"ip":"192.0.2.19","cn":"n/a"}]}}]}"#;

    const FAVORED: &str = r#"{"groups":{
        "ovpn_favored":[{"name":"openvpn_tcp","ports":[443,80]},{"name":"openvpn_udp","ports":[8080,53]},
                        {"name":"wireguard","ports":[1337]},{"name":"ikev2","ports":[4500]},{"name":"latency","ports":[8888]}],
        "wg_favored":[{"name":"comment","comment":"imagine more WireGuard ports here"},{"name":"wireguard","ports":[1337]},
                      {"name":"openvpn_tcp","ports":[443]},{"name":"latency","ports":[8888]}],
        "ikevtwo_favored":[{"name":"ikev2","ports":[500,4500]},{"name":"openvpn_udp","ports":[8080]},
                           {"name":"wireguard","ports":[1337]},{"name":"latency","ports":[8888]}],
        "proxyss":[{"name":"shadowsocks","ports":[443]},{"name":"latency","ports":[8888]}]},
      "regions":[
        {"id":"west","servers":{"ovpn_favored":[{"ip":"192.0.2.10","cn":"west401"},{"ip":"192.0.2.11","cn":"west402"}],
          "wg_favored":[{"ip":"192.0.2.12","cn":"west403"}],"ikevtwo_favored":[{"ip":"192.0.2.13","cn":"west404"}],
          "proxyss":[{"ip":"192.0.2.19","cn":"n/a"}]}},
        {"id":"east","servers":{"ikevtwo_favored":[{"ip":"192.0.2.23","cn":"east404"}],
          "wg_favored":[{"ip":"192.0.2.22","cn":"east403"}],"ovpn_favored":[{"ip":"192.0.2.20","cn":"east401"}]}}]}"#;

    const REGIONAL_PORT: &str = r#"{"groups":{
        "vpn":[{"name":"openvpn_tcp","ports":[443,80]},{"name":"openvpn_udp","ports":[8080,53]},
               {"name":"wireguard","ports":[1337]},{"name":"ikev2","ports":[500,4500]},{"name":"latency","ports":[8888]}],
        "vpn_north":[{"name":"comment","comment":"only the north has UDP 9201 and TCP 110"},
                     {"name":"openvpn_tcp","ports":[443,110,80]},{"name":"openvpn_udp","ports":[8080,9201,53]},
                     {"name":"wireguard","ports":[1337]},{"name":"ikev2","ports":[500,4500]},{"name":"latency","ports":[8888]}],
        "proxyss":[{"name":"shadowsocks","ports":[443]},{"name":"latency","ports":[8888]}]},
      "regions":[
        {"id":"west","servers":{"vpn":[{"ip":"192.0.2.10","cn":"west401"},{"ip":"192.0.2.11","cn":"west402"}],
          "proxyss":[{"ip":"192.0.2.19","cn":"n/a"}]}},
        {"id":"north","servers":{"vpn_north":[{"ip":"198.51.100.10","cn":"north401"},{"ip":"198.51.100.11","cn":"north402"}]}}]}"#;

    const NEW_SERVICE: &str = r#"{"groups":{
        "vpn":[{"name":"openvpn_tcp","ports":[443,80]},{"name":"openvpn_udp","ports":[8080,53]},
               {"name":"wireguard","ports":[1337]},{"name":"ikev2","ports":[500,4500]},
               {"name":"comment","comment":"a new service with other fields than ports"},
               {"name":"vpn_future","auth_ports":[88],"tunnel_ports":[1985,1955],"power":["plutonium","lightning"]},
               {"name":"mystery","ports":{"udp":[53],"tcp":[443]}},{"name":"latency","ports":[8888]}],
        "proxysocks":[{"name":"socks","ports":[1080]},{"name":"latency","ports":[8888]}]},
      "regions":[
        {"id":"west","servers":{"vpn":[{"ip":"192.0.2.10","cn":"west401"},{"ip":"192.0.2.11","cn":"west402"}],
          "proxysocks":[{"ip":"192.0.2.19","cn":"n/a"}]}}]}"#;

    const REGIONAL_DEFAULTS: &str = r#"{"groups":{
        "vpn":[{"name":"openvpn_udp","ports":[8080,1194,9201,53]},{"name":"wireguard","ports":[1337]},{"name":"latency","ports":[8888]}],
        "vpn_prefer9201":[{"name":"openvpn_udp","ports":[9201,8080,1194,53]},{"name":"wireguard","ports":[1337]}],
        "vpn_prefer1194":[{"name":"openvpn_udp","ports":[1194,8080,9201,53]},{"name":"wireguard","ports":[1337]}],
        "vpn_prefer53":[{"name":"openvpn_udp","ports":[53,8080,1194,9201]},{"name":"wireguard","ports":[1337]}]},
      "regions":[
        {"id":"west","servers":{"vpn_prefer9201":[{"ip":"192.0.2.10","cn":"west401"},{"ip":"192.0.2.11","cn":"west402"}]}},
        {"id":"north","servers":{"vpn_prefer1194":[{"ip":"198.51.100.10","cn":"north401"}],
          "vpn_prefer53":[{"ip":"198.51.100.11","cn":"north402"}]}},
        {"id":"east","servers":{"vpn":[{"ip":"192.0.2.20","cn":"east401"}]}}]}"#;

    fn renamed_groups() -> String {
        BRIDGE
            .replace(r#""vpn""#, r#""renamed_vpn""#)
            .replace(r#""proxy""#, r#""renamed_proxy""#)
    }

    fn server(ip: &str, cn: &str, port: u16) -> Server {
        Server {
            ip: ip.parse().unwrap(),
            cn: cn.into(),
            port,
        }
    }

    /// A region's WireGuard servers as (name, port).
    fn wg(region: &Region) -> Vec<(&str, u16)> {
        region
            .servers
            .wg
            .iter()
            .map(|s| (s.cn.as_str(), s.port))
            .collect()
    }

    /// Every region's WireGuard servers, by region.
    fn wg_by_region(json: &str) -> Vec<(String, Vec<(String, u16)>)> {
        let list = ServerList::parse(json.as_bytes()).unwrap();
        list.regions
            .iter()
            .map(|r| {
                let servers = wg(r)
                    .into_iter()
                    .map(|(cn, p)| (cn.to_owned(), p))
                    .collect();
                (r.id.clone(), servers)
            })
            .collect()
    }

    fn by_region(expected: &[(&str, &[(&str, u16)])]) -> Vec<(String, Vec<(String, u16)>)> {
        expected
            .iter()
            .map(|(id, servers)| {
                let servers = servers
                    .iter()
                    .map(|(cn, p)| ((*cn).to_owned(), *p))
                    .collect();
                ((*id).to_owned(), servers)
            })
            .collect()
    }

    fn refused(json: &str) -> String {
        let e = ServerList::parse(json.as_bytes()).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        e
    }

    /// A 2048-bit key made with openssl for these tests, and a signature of LIST made with it.
    fn key_and_signature() -> (Vec<u8>, String) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs1 = include_bytes!("testdata/list-key.der");
        let key = ring::signature::RsaKeyPair::from_der(pkcs1).unwrap();
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &rng,
            LIST.as_bytes(),
            &mut sig,
        )
        .unwrap();
        (key.public().as_ref().to_vec(), STANDARD.encode(sig))
    }

    #[test]
    fn a_signed_list_parses_and_an_altered_one_is_refused() {
        let (public, sig) = key_and_signature();
        let body = format!("{LIST}\n\n{sig}\n");
        let list = verify_and_parse(body.as_bytes(), &public).unwrap();
        let swiss = list.region("swiss").unwrap();
        assert!(swiss.port_forward && !swiss.offline);
        assert_eq!(swiss.name, "Switzerland");
        assert_eq!(wg(swiss), [("zurich402", 1337)]);
        assert_eq!(swiss.servers.meta, [server("192.0.2.1", "zurich401", 443)]);

        let altered = body.replace("192.0.2.2", "192.0.2.9");
        let e = verify_and_parse(altered.as_bytes(), &public).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        assert!(verify_and_parse(LIST.as_bytes(), &public).is_err());
        let e = verify_and_parse(format!("{LIST}\n\n!!\n").as_bytes(), &public).unwrap_err();
        assert!(e.contains("base64"), "{e}");
    }

    /// Groups named other than `wg` (bridge, renamed groups): found by the service; other groups' servers
    /// (a proxy named "n/a") are not read.
    #[test]
    fn wireguard_servers_are_found_in_any_group_offering_the_service() {
        let expected = by_region(&[
            ("west", &[("west401", 1337), ("west402", 1337)]),
            ("east", &[("east401", 1337)]),
        ]);
        assert_eq!(wg_by_region(BRIDGE), expected);
        assert_eq!(wg_by_region(&renamed_groups()), expected);
        let list = ServerList::parse(BRIDGE.as_bytes()).unwrap();
        assert!(list.regions.iter().all(|r| r.servers.meta.is_empty()));
    }

    /// One service per group (split groups), with another service listed after it in the same group.
    #[test]
    fn a_group_per_service_is_read_as_well() {
        assert_eq!(
            wg_by_region(SPLIT_GROUPS),
            by_region(&[("west", &[("west403", 1337)])])
        );
    }

    /// Several groups offer WireGuard (favored): merged in the order of `groups`, not the region's; a comment
    /// entry without ports is no service.
    #[test]
    fn groups_offering_wireguard_merge_in_the_groups_order() {
        assert_eq!(
            wg_by_region(FAVORED),
            by_region(&[
                (
                    "west",
                    &[
                        ("west401", 1337),
                        ("west402", 1337),
                        ("west403", 1337),
                        ("west404", 1337)
                    ]
                ),
                (
                    "east",
                    &[("east401", 1337), ("east403", 1337), ("east404", 1337)]
                ),
            ])
        );
    }

    /// A region served by its own group (regional port), and regions mixing groups (regional defaults).
    #[test]
    fn regions_may_use_groups_of_their_own() {
        assert_eq!(
            wg_by_region(REGIONAL_PORT),
            by_region(&[
                ("west", &[("west401", 1337), ("west402", 1337)]),
                ("north", &[("north401", 1337), ("north402", 1337)]),
            ])
        );
        assert_eq!(
            wg_by_region(REGIONAL_DEFAULTS),
            by_region(&[
                ("west", &[("west401", 1337), ("west402", 1337)]),
                ("north", &[("north401", 1337), ("north402", 1337)]),
                ("east", &[("east401", 1337)]),
            ])
        );
    }

    /// New services with other fields (or `ports` of another shape) beside the known ones are skipped.
    #[test]
    fn unknown_services_and_fields_are_skipped() {
        assert_eq!(
            wg_by_region(NEW_SERVICE),
            by_region(&[("west", &[("west401", 1337), ("west402", 1337)])])
        );
        // Unknown top-level, group, region and server fields; a group that is not a list; entries that are
        // not objects or whose name is not a string; a region naming a group that `groups` does not.
        let list = r#"{"version":7,"pubdns":["192.0.2.53"],"groups":{
            "odd":{"services":[{"name":"wireguard","ports":[9]}]},
            "mixed":[7,"wireguard",{"name":17,"ports":[9]},{"name":["wireguard"]},
                     {"ports":[1337],"name":"wireguard","ncp":false,"extra":{"a":[1]}}]},
          "regions":[{"id":"r","new":true,"servers":{"nowhere":[{"ip":"not an address"}],
            "odd":[{"ip":"192.0.2.9","cn":"odd"}],
            "mixed":[{"ip":"192.0.2.1","cn":"r1","fqdn":"r1.example","van":false}]}}]}"#;
        assert_eq!(wg_by_region(list), by_region(&[("r", &[("r1", 1337)])]));
    }

    /// Ports differing per group stay with each server; a server listed by two groups is kept once, with the
    /// first group's port; a group offering both services lists its servers under both.
    #[test]
    fn each_server_keeps_its_groups_port() {
        let list = r#"{"groups":{
            "b":[{"name":"meta","ports":[8443]},{"name":"wireguard","ports":[2337,1337]}],
            "a":[{"name":"wireguard","ports":[1337]}]},
          "regions":[{"id":"r","servers":{
            "a":[{"ip":"192.0.2.1","cn":"r1"},{"ip":"192.0.2.2","cn":"r2"}],
            "b":[{"ip":"192.0.2.2","cn":"r2"},{"ip":"192.0.2.3","cn":"r3"}]}}]}"#;
        let parsed = ServerList::parse(list.as_bytes()).unwrap();
        let r = parsed.region("r").unwrap();
        assert_eq!(wg(r), [("r2", 2337), ("r3", 2337), ("r1", 1337)]);
        assert_eq!(
            r.servers.meta,
            [
                server("192.0.2.2", "r2", 8443),
                server("192.0.2.3", "r3", 8443)
            ]
        );
    }

    /// No group offers WireGuard: a clear error, not port 1337 and no server in any region. A list naming
    /// its services after the groups (`wg`, `meta`) is such a list.
    #[test]
    fn a_list_without_the_wireguard_service_is_refused() {
        for list in [
            r#"{"groups":{"wg":[{"name":"wg","ports":[1337]}],"meta":[{"name":"meta","ports":[443]}]},
                "regions":[{"id":"r","servers":{"wg":[{"ip":"192.0.2.1","cn":"r1"}]}}]}"#,
            r#"{"groups":{"vpn":[{"name":"openvpn_udp","ports":[1194]},"wireguard"]},"regions":[]}"#,
            r#"{"regions":[]}"#,
        ] {
            assert_eq!(
                refused(list),
                "the server list names no WireGuard service",
                "{list}"
            );
        }
    }

    /// What we use is typed strictly: the services' ports, the servers' addresses; and a group name once.
    #[test]
    fn malformed_services_and_servers_are_refused() {
        let with_ports = |ports: &str| {
            format!(r#"{{"groups":{{"vpn":[{{"name":"wireguard"{ports}}}]}},"regions":[]}}"#)
        };
        for (ports, error) in [
            ("", "are missing"),
            (r#","ports":null"#, "are missing"),
            (r#","ports":[]"#, "are missing"),
            (r#","ports":[1337,0]"#, "include 0"),
            (r#","ports":[1337,65536]"#, "invalid value"),
            (r#","ports":[13.37]"#, "invalid type"),
            (r#","ports":[1.2e3]"#, "invalid type"),
            (r#","ports":[-1]"#, "invalid value"),
            (r#","ports":1337"#, "invalid type"),
            (r#","ports":{"udp":[1337]}"#, "invalid type"),
        ] {
            let e = refused(&with_ports(ports));
            assert!(
                e.starts_with(r#"group "vpn": the wireguard service's ports"#) && e.contains(error),
                "{ports}: {e}"
            );
        }
        let e = refused(
            r#"{"groups":{"m":[{"name":"meta","ports":[443]},{"name":"meta","ports":[8080]}],"w":[{"name":"wireguard","ports":[1]}]},"regions":[]}"#,
        );
        assert_eq!(e, r#"group "m": the meta service is listed twice"#);
        let e = refused(
            r#"{"groups":{"w":[{"name":"wireguard","ports":[1]}],"w":[{"name":"wireguard","ports":[2]}]},"regions":[]}"#,
        );
        assert_eq!(e, r#"group "w" is listed twice"#);
        for (server, error) in [
            (r#"{"ip":"192.0.2.300","cn":"r1"}"#, "invalid IP address"),
            (r#"{"cn":"r1"}"#, "missing field `ip`"),
            (r#"{"ip":"192.0.2.1","cn":7}"#, "invalid type"),
        ] {
            let list = format!(
                r#"{{"groups":{{"vpn":[{{"name":"wireguard","ports":[1337]}}]}},"regions":[{{"id":"r\n1","servers":{{"vpn":[{server}]}}}}]}}"#
            );
            let e = refused(&list);
            assert!(
                e.starts_with(r#"region "r\n1": group "vpn": "#) && e.contains(error),
                "{e}"
            );
        }
        let e = refused(r#"{"groups":{},"regions":[{"servers":{}}]}"#);
        assert!(
            e.starts_with("signed, but not a server list: missing field `id`"),
            "{e}"
        );
    }

    #[test]
    fn the_public_key_is_read_from_spki_pem() {
        let (public, _) = key_and_signature();
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/provider/pia/testdata/list-key.pub.pem"
        ));
        assert_eq!(load_public_key(path).unwrap(), public);
        let e = load_public_key(Path::new("/nonexistent/key.pem")).unwrap_err();
        assert!(e.starts_with("regions_key /nonexistent/key.pem: "), "{e}");
    }
}
