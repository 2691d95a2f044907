//! A [`Table`] as the nf_tables messages nft sends for its text, so that `nft list` prints the same table
//! whichever of the two loaded it (the test that ties them: `hook::firewall`'s tests).
//!
//! What nft (1.0.6, Debian 12's) does when it compiles our phrases, read from `nft --debug=netlink` and from
//! its batches under strace, and done the same here:
//! - **implicit dependencies**, added once per rule unless the rule already established them: `ip`/`ip6`
//!   matches in an inet table get `meta nfproto ipv4|ipv6` first, `tcp dport` gets `meta l4proto tcp`,
//!   `icmpv6 type` gets both `meta nfproto ipv6` and `meta l4proto icmpv6`; `ct original ip daddr` and `th`
//!   get none;
//! - **interface names** (`iif "wg0"`) become `meta iif` compared with the index the name has in the netns at
//!   load time (host byte order);
//! - **a set of one element is that element**: `{ 10.77.0.2 }` is a plain compare; a range is `>=` and `<=`;
//!   a prefix compares its whole bytes only (a byte-aligned prefix of a packet field shortens the load), or
//!   masks the value first (`bitwise`) when it does not end on a byte or is `/0`;
//! - **a set of more** is an anonymous constant set (`__set%d`, found by the batch-local set id) and a
//!   lookup. With a range or a prefix in it the set is an interval set: its elements sorted, overlapping and
//!   adjacent ones merged (nft auto-merges anonymous sets), each range sent as its start and the end-marked
//!   value after it; a leading end marker at 0 unless the first range starts there, and a range up to the
//!   largest value marked open instead of ended. The set's size hint is twice the ranges, plus the leading
//!   marker. Its user data is nft's: the key's byte order, auto-merge, and the `typeof` expression the key
//!   came from, which `nft list` reads back;
//! - `ct state established,related` is ct state masked with 6 and compared `!= 0`; `fib saddr type != local`
//!   compares the address type with RTN_LOCAL; `redirect to :80` loads the port into a register for `redir`.
//!
//! The batch's order is nft's: the table, its chains, its named sets, then each rule in turn, its anonymous
//! set and that set's elements just before it.

use super::netlink::{Attrs, Message, NLM_F_APPEND, NLM_F_CREATE};
use super::table::{
    AddrField, Chain, ChainKind, ChainPolicy, Hook, Icmpv6Type, Match, Nets, PortMatch, Ports,
    Priority, Rule, Table, Verdict, L4,
};
use std::io;

// linux/netfilter/nf_tables.h: message types
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
// attributes
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_CT_DIRECTION: u16 = 3;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_REDIR_REG_PROTO_MIN: u16 = 1;
const NFTA_REDIR_FLAGS: u16 = 3;
// values
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_CMP_LTE: u32 = 3;
const NFT_CMP_GTE: u32 = 5;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_META_IIF: u32 = 4;
const NFT_META_OIF: u32 = 5;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_PROTO_DST: u32 = 12;
const NFT_CT_DST_IP: u32 = 20;
const NFT_CT_DST_IP6: u32 = 22;
/// `IP_CT_DIR_ORIGINAL`
const CT_DIR_ORIGINAL: u8 = 0;
const NFTA_FIB_F_SADDR: u32 = 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFT_SET_ANONYMOUS: u32 = 1;
const NFT_SET_CONSTANT: u32 = 2;
const NFT_SET_INTERVAL: u32 = 4;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
// linux/netfilter.h, linux/in.h, linux/rtnetlink.h, linux/netfilter/nf_nat.h, nf_conntrack_common.h
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const RTN_LOCAL: u32 = 2;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED)`
const CT_STATE_ESTABLISHED_RELATED: u32 = 2 | 4;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_LOCAL_OUT: u32 = 3;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;

// nft's own numbers, which it stores in a set's user data and reads back when it lists the set
// (nftables: include/datatype.h, expression.h, proto.h, payload.h; libnftnl: include/udata.h).
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_ICMP6_TYPE: u32 = 29;
const BYTEORDER_HOST_ENDIAN: u32 = 1;
const BYTEORDER_BIG_ENDIAN: u32 = 2;
const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
const NFTNL_UDATA_SET_MERGE_ELEMENTS: u8 = 2;
const NFTNL_UDATA_SET_KEY_TYPEOF: u8 = 3;
const NFTNL_UDATA_SET_TYPEOF_EXPR: u8 = 0;
const NFTNL_UDATA_SET_TYPEOF_DATA: u8 = 1;
const NFTNL_UDATA_SET_ELEM_FLAGS: u8 = 1;
const NFTNL_SET_ELEM_F_INTERVAL_OPEN: u32 = 1;
const EXPR_PAYLOAD: u32 = 7;
const EXPR_META: u32 = 9;
const EXPR_CT: u32 = 12;
const PROTO_DESC_UDP: u32 = 6;
const PROTO_DESC_TCP: u32 = 8;
const PROTO_DESC_IP: u32 = 12;
const PROTO_DESC_IP6: u32 = 13;
const PROTO_DESC_ICMPV6: u32 = 14;
const IPHDR_SADDR: u32 = 11;
const IPHDR_DADDR: u32 = 12;
const IP6HDR_SADDR: u32 = 8;
const IP6HDR_DADDR: u32 = 9;
const THDR_DPORT: u32 = 2;
const ICMP6HDR_TYPE: u32 = 1;

/// The name nft gives an anonymous set; the kernel numbers it.
const ANONYMOUS_SET: &str = "__set%d";

/// Looks up an interface's index in the netns the messages are for.
pub(super) type IndexOf<'a> = &'a mut dyn FnMut(&str) -> io::Result<u32>;

/// `add table`, then the table's chains, sets and rules.
pub(super) fn load(table: &Table, index_of: IndexOf) -> io::Result<Vec<Message>> {
    let mut c = Compiler {
        table: table.name,
        messages: Vec::new(),
        set_ids: 0,
        named: Vec::new(),
        index_of,
    };
    c.add_table();
    for chain in &table.chains {
        c.add_chain(chain);
    }
    for set in &table.sets {
        c.add_named_set(set.name);
    }
    for chain in &table.chains {
        for rule in &chain.rules {
            c.add_rule(chain, rule)?;
        }
    }
    Ok(c.messages)
}

/// `add table` (a no-op on a table that is there) then `delete table`: both in the batch, so that a missing
/// table is no error.
pub(super) fn add_and_delete_table(name: &str) -> Vec<Message> {
    vec![add_table(name), delete_table(name)]
}

pub(super) fn delete_table(name: &str) -> Message {
    let mut attrs = Attrs::new();
    attrs.str(NFTA_TABLE_NAME, name);
    Message {
        kind: NFT_MSG_DELTABLE,
        flags: 0,
        attrs,
        what: format!("delete table inet {name}"),
    }
}

fn add_table(name: &str) -> Message {
    let mut attrs = Attrs::new();
    attrs.str(NFTA_TABLE_NAME, name).u32(NFTA_TABLE_FLAGS, 0);
    Message {
        kind: NFT_MSG_NEWTABLE,
        flags: 0,
        attrs,
        what: format!("add table inet {name}"),
    }
}

/// `flush set`, then `add element` with `port` alone.
pub(super) fn set_one_port(table: &str, set: &str, port: u16) -> Vec<Message> {
    let mut flush = Attrs::new();
    flush
        .str(NFTA_SET_ELEM_LIST_SET, set)
        .str(NFTA_SET_ELEM_LIST_TABLE, table);
    let mut add = Attrs::new();
    add.str(NFTA_SET_ELEM_LIST_TABLE, table)
        .str(NFTA_SET_ELEM_LIST_SET, set)
        .nest(NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
            l.nest(1, |e| {
                e.nest(NFTA_SET_ELEM_KEY, |k| {
                    k.bytes(NFTA_DATA_VALUE, &port.to_be_bytes());
                });
            });
        });
    vec![
        Message {
            kind: NFT_MSG_DELSETELEM,
            flags: 0,
            attrs: flush,
            what: format!("flush set inet {table} {set}"),
        },
        Message {
            kind: NFT_MSG_NEWSETELEM,
            flags: NLM_F_CREATE,
            attrs: add,
            what: format!("add element inet {table} {set} {{ {port} }}"),
        },
    ]
}

struct Compiler<'a> {
    table: &'static str,
    messages: Vec<Message>,
    /// The last set id given out in this batch (named and anonymous sets alike, from 1).
    set_ids: u32,
    /// The named sets of this batch and their ids.
    named: Vec<(&'static str, u32)>,
    index_of: IndexOf<'a>,
}

/// What a rule has established so far about the packet, for nft's implicit dependencies.
#[derive(Default)]
struct Context {
    nfproto: Option<u8>,
    l4proto: Option<u8>,
}

/// The key of an anonymous set: nft's type, length, byte order, and where the key came from (`typeof`).
struct SetKey {
    kind: u32,
    len: usize,
    byteorder: u32,
    of: Vec<u8>,
}

impl Compiler<'_> {
    fn next_set_id(&mut self) -> u32 {
        self.set_ids += 1;
        self.set_ids
    }

    fn add_table(&mut self) {
        self.messages.push(add_table(self.table));
    }

    fn add_chain(&mut self, chain: &Chain) {
        let mut attrs = Attrs::new();
        let kind = match chain.kind {
            ChainKind::Filter => "filter",
            ChainKind::Nat => "nat",
        };
        let policy = match chain.policy {
            ChainPolicy::Accept => NF_ACCEPT,
            ChainPolicy::Drop => NF_DROP,
        };
        let hook = match chain.hook {
            Hook::Prerouting => NF_INET_PRE_ROUTING,
            Hook::Input => NF_INET_LOCAL_IN,
            Hook::Forward => NF_INET_FORWARD,
            Hook::Output => NF_INET_LOCAL_OUT,
        };
        let priority: i32 = match chain.priority {
            Priority::Raw => -300,
            Priority::DstNat => -100,
            Priority::Filter => 0,
        };
        attrs
            .str(NFTA_CHAIN_TABLE, self.table)
            .str(NFTA_CHAIN_NAME, chain.name)
            .str(NFTA_CHAIN_TYPE, kind)
            .u32(NFTA_CHAIN_POLICY, policy)
            .nest(NFTA_CHAIN_HOOK, |h| {
                h.u32(NFTA_HOOK_HOOKNUM, hook)
                    .bytes(NFTA_HOOK_PRIORITY, &priority.to_be_bytes());
            });
        self.messages.push(Message {
            kind: NFT_MSG_NEWCHAIN,
            flags: NLM_F_CREATE,
            attrs,
            what: format!(
                "add chain inet {} {} {{ {} }}",
                self.table,
                chain.name,
                chain.header()
            ),
        });
    }

    /// `set NAME { type inet_service }`
    fn add_named_set(&mut self, name: &'static str) {
        let id = self.next_set_id();
        self.named.push((name, id));
        let mut attrs = Attrs::new();
        attrs
            .str(NFTA_SET_TABLE, self.table)
            .str(NFTA_SET_NAME, name)
            .u32(NFTA_SET_FLAGS, 0)
            .u32(NFTA_SET_KEY_TYPE, TYPE_INET_SERVICE)
            .u32(NFTA_SET_KEY_LEN, 2)
            .u32(NFTA_SET_ID, id)
            .bytes(
                NFTA_SET_USERDATA,
                &udata_u32(NFTNL_UDATA_SET_KEYBYTEORDER, BYTEORDER_BIG_ENDIAN),
            );
        self.messages.push(Message {
            kind: NFT_MSG_NEWSET,
            flags: NLM_F_CREATE,
            attrs,
            what: format!(
                "add set inet {} {name} {{ type inet_service; }}",
                self.table
            ),
        });
    }

    fn add_rule(&mut self, chain: &Chain, rule: &Rule) -> io::Result<()> {
        let what = format!("add rule inet {} {} {rule}", self.table, chain.name);
        let mut e = Exprs::default();
        let mut cx = Context::default();
        for m in &rule.matches {
            self.compile(m, &mut cx, &mut e, &what)?;
        }
        match rule.verdict {
            Verdict::Accept => e.verdict(NF_ACCEPT),
            Verdict::Drop => e.verdict(NF_DROP),
            Verdict::Redirect(port) => {
                e.expr("immediate", |a| {
                    a.u32(NFTA_IMMEDIATE_DREG, NFT_REG_1)
                        .nest(NFTA_IMMEDIATE_DATA, |d| {
                            d.bytes(NFTA_DATA_VALUE, &port.to_be_bytes());
                        });
                });
                e.expr("redir", |a| {
                    a.u32(NFTA_REDIR_REG_PROTO_MIN, NFT_REG_1)
                        .u32(NFTA_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
                });
            }
        }
        let mut attrs = Attrs::new();
        attrs
            .str(NFTA_RULE_TABLE, self.table)
            .str(NFTA_RULE_CHAIN, chain.name)
            .nest(NFTA_RULE_EXPRESSIONS, |l| {
                l.append(&e.0);
            });
        self.messages.push(Message {
            kind: NFT_MSG_NEWRULE,
            flags: NLM_F_CREATE | NLM_F_APPEND,
            attrs,
            what,
        });
        Ok(())
    }

    fn compile(
        &mut self,
        m: &Match,
        cx: &mut Context,
        e: &mut Exprs,
        what: &str,
    ) -> io::Result<()> {
        match m {
            Match::Iif { name, negate } => {
                let index = (self.index_of)(name)?;
                e.meta(NFT_META_IIF);
                e.cmp(
                    if *negate { NFT_CMP_NEQ } else { NFT_CMP_EQ },
                    &index.to_ne_bytes(),
                );
            }
            Match::Oif { name } => {
                let index = (self.index_of)(name)?;
                e.meta(NFT_META_OIF);
                e.cmp(NFT_CMP_EQ, &index.to_ne_bytes());
            }
            Match::Addr { field, nets } => {
                let (nfproto, offset, desc, id) = match (nets, field) {
                    (Nets::V4(_), AddrField::Saddr) => {
                        (NFPROTO_IPV4, 12, PROTO_DESC_IP, IPHDR_SADDR)
                    }
                    (Nets::V4(_), AddrField::Daddr) => {
                        (NFPROTO_IPV4, 16, PROTO_DESC_IP, IPHDR_DADDR)
                    }
                    (Nets::V6(_), AddrField::Saddr) => {
                        (NFPROTO_IPV6, 8, PROTO_DESC_IP6, IP6HDR_SADDR)
                    }
                    (Nets::V6(_), AddrField::Daddr) => {
                        (NFPROTO_IPV6, 24, PROTO_DESC_IP6, IP6HDR_DADDR)
                    }
                };
                cx.need_nfproto(e, nfproto);
                let load = Load::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset,
                };
                self.nets(e, load, nets, typeof_payload(desc, id), what);
            }
            Match::CtOriginalDaddr(nets) => {
                let key = match nets {
                    Nets::V4(_) => NFT_CT_DST_IP,
                    Nets::V6(_) => NFT_CT_DST_IP6,
                };
                let load = Load::Ct { key };
                self.nets(e, load, nets, typeof_ct(key, CT_DIR_ORIGINAL), what);
            }
            Match::CtStateEstablishedRelated => {
                e.ct(NFT_CT_STATE, None);
                e.bitwise(&CT_STATE_ESTABLISHED_RELATED.to_ne_bytes(), &[0; 4]);
                e.cmp(NFT_CMP_NEQ, &[0; 4]);
            }
            Match::FibSaddrNotLocal => {
                e.expr("fib", |a| {
                    a.u32(NFTA_FIB_FLAGS, NFTA_FIB_F_SADDR)
                        .u32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE)
                        .u32(NFTA_FIB_DREG, NFT_REG_1);
                });
                e.cmp(NFT_CMP_NEQ, &RTN_LOCAL.to_ne_bytes());
            }
            Match::L4Proto(p) => {
                e.meta(NFT_META_L4PROTO);
                e.cmp(NFT_CMP_EQ, &[ipproto(*p)]);
                cx.l4proto = Some(ipproto(*p));
            }
            Match::L4ProtoIn(ps) => {
                e.meta(NFT_META_L4PROTO);
                let key = SetKey {
                    kind: TYPE_INET_PROTOCOL,
                    len: 1,
                    byteorder: BYTEORDER_HOST_ENDIAN,
                    of: typeof_meta(NFT_META_L4PROTO),
                };
                let values = ps.iter().map(|p| vec![ipproto(*p)]).collect();
                self.one_of(e, key, values, what);
            }
            Match::CtOriginalProtoDst(ports) => {
                e.ct(NFT_CT_PROTO_DST, Some(CT_DIR_ORIGINAL));
                let key = SetKey {
                    kind: TYPE_INET_SERVICE,
                    len: 2,
                    byteorder: BYTEORDER_BIG_ENDIAN,
                    of: typeof_ct(NFT_CT_PROTO_DST, CT_DIR_ORIGINAL),
                };
                let values = ports.iter().map(|p| p.to_be_bytes().to_vec()).collect();
                self.one_of(e, key, values, what);
            }
            Match::Dport { protocol, ports } => {
                cx.need_l4proto(e, ipproto(*protocol));
                e.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
                let desc = match protocol {
                    L4::Tcp => PROTO_DESC_TCP,
                    L4::Udp => PROTO_DESC_UDP,
                };
                let ports: &[Ports] = match ports {
                    PortMatch::One(p) => std::slice::from_ref(p),
                    PortMatch::Set(ps) => ps,
                };
                self.ports(e, ports, typeof_payload(desc, THDR_DPORT), what);
            }
            Match::ThDportIn(name) => {
                e.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
                let id = self
                    .named
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, id)| *id)
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("{what}: the table has no set {name}"),
                        )
                    })?;
                e.lookup(name, id);
            }
            Match::Icmpv6TypeIn(types) => {
                cx.need_nfproto(e, NFPROTO_IPV6);
                cx.need_l4proto(e, IPPROTO_ICMPV6);
                e.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1);
                let key = SetKey {
                    kind: TYPE_ICMP6_TYPE,
                    len: 1,
                    byteorder: BYTEORDER_BIG_ENDIAN,
                    of: typeof_payload(PROTO_DESC_ICMPV6, ICMP6HDR_TYPE),
                };
                let values = types
                    .iter()
                    .map(|t| match t {
                        Icmpv6Type::NeighborSolicit => vec![ND_NEIGHBOR_SOLICIT],
                        Icmpv6Type::NeighborAdvert => vec![ND_NEIGHBOR_ADVERT],
                    })
                    .collect();
                self.one_of(e, key, values, what);
            }
            Match::Ip6HopLimit(n) => {
                cx.need_nfproto(e, NFPROTO_IPV6);
                e.payload(NFT_PAYLOAD_NETWORK_HEADER, 7, 1);
                e.cmp(NFT_CMP_EQ, &[*n]);
            }
        }
        Ok(())
    }

    /// Equal to one of `values` (the key already loaded).
    fn one_of(&mut self, e: &mut Exprs, key: SetKey, values: Vec<Vec<u8>>, what: &str) {
        if let [value] = values.as_slice() {
            e.cmp(NFT_CMP_EQ, value);
        } else {
            let id = self.anonymous_set(key, Elements::Values(values), what);
            e.lookup(ANONYMOUS_SET, id);
        }
    }

    /// In one of `ports` (ports or ranges; the port already loaded).
    fn ports(&mut self, e: &mut Exprs, ports: &[Ports], of: Vec<u8>, what: &str) {
        let key = SetKey {
            kind: TYPE_INET_SERVICE,
            len: 2,
            byteorder: BYTEORDER_BIG_ENDIAN,
            of,
        };
        match ports {
            [p] if p.first == p.last => e.cmp(NFT_CMP_EQ, &p.first.to_be_bytes()),
            [p] => {
                e.cmp(NFT_CMP_GTE, &p.first.to_be_bytes());
                e.cmp(NFT_CMP_LTE, &p.last.to_be_bytes());
            }
            _ if ports.iter().all(|p| p.first == p.last) => {
                let values = ports
                    .iter()
                    .map(|p| p.first.to_be_bytes().to_vec())
                    .collect();
                let id = self.anonymous_set(key, Elements::Values(values), what);
                e.lookup(ANONYMOUS_SET, id);
            }
            _ => {
                let ranges = ports
                    .iter()
                    .map(|p| (u128::from(p.first), u128::from(p.last)))
                    .collect();
                let id = self.anonymous_set(key, Elements::Intervals(ranges), what);
                e.lookup(ANONYMOUS_SET, id);
            }
        }
    }

    /// In one of `nets`, loading the address as `load` says.
    fn nets(&mut self, e: &mut Exprs, load: Load, nets: &Nets, of: Vec<u8>, what: &str) {
        let len = addr_len(nets);
        let bits = 8 * len as u32;
        // Each net as its network address (a number), prefix length and bytes.
        let items: Vec<(u128, u32)> = match nets {
            Nets::V4(ns) => ns
                .iter()
                .map(|n| (u128::from(u32::from(n.network())), u32::from(n.prefix())))
                .collect(),
            Nets::V6(ns) => ns
                .iter()
                .map(|n| (u128::from(n.network()), u32::from(n.prefix())))
                .collect(),
        };
        let bytes = |v: u128| v.to_be_bytes()[16 - len..].to_vec();
        match items.as_slice() {
            [(addr, prefix)] if *prefix == bits => {
                load.emit(e, len);
                e.cmp(NFT_CMP_EQ, &bytes(*addr));
            }
            [(addr, prefix)] if prefix % 8 == 0 && *prefix > 0 => {
                // Only the prefix's bytes are compared; a packet field is loaded only that far.
                let n = (*prefix / 8) as usize;
                match load {
                    Load::Payload { .. } => load.emit(e, n),
                    Load::Ct { .. } => load.emit(e, len),
                }
                e.cmp(NFT_CMP_EQ, &bytes(*addr)[..n]);
            }
            [(addr, prefix)] => {
                load.emit(e, len);
                e.bitwise(&bytes(mask(*prefix, bits)), &vec![0; len]);
                e.cmp(NFT_CMP_EQ, &bytes(*addr));
            }
            _ => {
                load.emit(e, len);
                let key = SetKey {
                    kind: match nets {
                        Nets::V4(_) => TYPE_IPADDR,
                        Nets::V6(_) => TYPE_IP6ADDR,
                    },
                    len,
                    byteorder: BYTEORDER_BIG_ENDIAN,
                    of,
                };
                let elements = if items.iter().all(|(_, prefix)| *prefix == bits) {
                    Elements::Values(items.iter().map(|(a, _)| bytes(*a)).collect())
                } else {
                    Elements::Intervals(
                        items
                            .iter()
                            .map(|(a, prefix)| (*a, *a | !mask(*prefix, bits) & max(bits)))
                            .collect(),
                    )
                };
                let id = self.anonymous_set(key, elements, what);
                e.lookup(ANONYMOUS_SET, id);
            }
        }
    }

    /// An anonymous constant set and its elements, for the rule `what`; returns its id.
    fn anonymous_set(&mut self, key: SetKey, elements: Elements, what: &str) -> u32 {
        let id = self.next_set_id();
        let bits = 8 * key.len as u32;
        let value = |v: u128| v.to_be_bytes()[16 - key.len..].to_vec();
        let interval = matches!(elements, Elements::Intervals(_));
        let mut items: Vec<Element> = Vec::new();
        let size = match elements {
            Elements::Values(values) => {
                items.extend(values.into_iter().map(|key| Element {
                    key,
                    end: false,
                    open: false,
                }));
                items.len()
            }
            Elements::Intervals(ranges) => {
                let ranges = merge_ranges(ranges);
                let leading = ranges.first().is_some_and(|(low, _)| *low != 0);
                if leading {
                    items.push(Element {
                        key: value(0),
                        end: true,
                        open: false,
                    });
                }
                for (low, high) in &ranges {
                    let open = *high == max(bits);
                    items.push(Element {
                        key: value(*low),
                        end: false,
                        open,
                    });
                    if !open {
                        items.push(Element {
                            key: value(high + 1),
                            end: true,
                            open: false,
                        });
                    }
                }
                2 * ranges.len() + usize::from(leading)
            }
        };
        let mut flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT;
        if interval {
            flags |= NFT_SET_INTERVAL;
        }
        let mut udata = udata_u32(NFTNL_UDATA_SET_KEYBYTEORDER, key.byteorder);
        if interval {
            udata.extend(udata_u32(NFTNL_UDATA_SET_MERGE_ELEMENTS, 1));
        }
        udata.extend(udata_tlv(NFTNL_UDATA_SET_KEY_TYPEOF, &key.of));
        let mut set = Attrs::new();
        set.str(NFTA_SET_TABLE, self.table)
            .str(NFTA_SET_NAME, ANONYMOUS_SET)
            .u32(NFTA_SET_FLAGS, flags)
            .u32(NFTA_SET_KEY_TYPE, key.kind)
            .u32(NFTA_SET_KEY_LEN, key.len as u32)
            .u32(NFTA_SET_ID, id)
            .nest(NFTA_SET_DESC, |d| {
                d.u32(NFTA_SET_DESC_SIZE, size as u32);
            })
            .bytes(NFTA_SET_USERDATA, &udata);
        let mut elems = Attrs::new();
        elems
            .str(NFTA_SET_ELEM_LIST_TABLE, self.table)
            .str(NFTA_SET_ELEM_LIST_SET, ANONYMOUS_SET)
            .u32(NFTA_SET_ELEM_LIST_SET_ID, id)
            .nest(NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
                for (i, Element { key, end, open }) in items.iter().enumerate() {
                    l.nest(i as u16 + 1, |el| {
                        if *end {
                            el.u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
                        }
                        el.nest(NFTA_SET_ELEM_KEY, |k| {
                            k.bytes(NFTA_DATA_VALUE, key);
                        });
                        if *open {
                            el.bytes(
                                NFTA_SET_ELEM_USERDATA,
                                &udata_u32(
                                    NFTNL_UDATA_SET_ELEM_FLAGS,
                                    NFTNL_SET_ELEM_F_INTERVAL_OPEN,
                                ),
                            );
                        }
                    });
                }
            });
        self.messages.push(Message {
            kind: NFT_MSG_NEWSET,
            flags: NLM_F_CREATE,
            attrs: set,
            what: format!("{what} (its anonymous set)"),
        });
        self.messages.push(Message {
            kind: NFT_MSG_NEWSETELEM,
            flags: NLM_F_CREATE,
            attrs: elems,
            what: format!("{what} (its anonymous set's elements)"),
        });
        id
    }
}

impl Context {
    /// `meta nfproto ipv4|ipv6`, unless the rule is there already.
    fn need_nfproto(&mut self, e: &mut Exprs, nfproto: u8) {
        if self.nfproto != Some(nfproto) {
            e.meta(NFT_META_NFPROTO);
            e.cmp(NFT_CMP_EQ, &[nfproto]);
            self.nfproto = Some(nfproto);
        }
    }

    /// `meta l4proto tcp|udp|icmpv6`, unless the rule is there already.
    fn need_l4proto(&mut self, e: &mut Exprs, proto: u8) {
        if self.l4proto != Some(proto) {
            e.meta(NFT_META_L4PROTO);
            e.cmp(NFT_CMP_EQ, &[proto]);
            self.l4proto = Some(proto);
        }
    }
}

/// An element as sent: its key, whether it ends an interval, whether its interval runs to the largest key.
struct Element {
    key: Vec<u8>,
    end: bool,
    open: bool,
}

enum Elements {
    Values(Vec<Vec<u8>>),
    /// Inclusive ranges of the key as a number.
    Intervals(Vec<(u128, u128)>),
}

/// Where an address comes from: a header field (which a prefix may shorten) or conntrack.
#[derive(Clone, Copy)]
enum Load {
    Payload { base: u32, offset: u32 },
    Ct { key: u32 },
}

impl Load {
    /// Loads `len` bytes (a payload's may be fewer than the field's; conntrack's are always all of it).
    fn emit(self, e: &mut Exprs, len: usize) {
        match self {
            Load::Payload { base, offset } => e.payload(base, offset, len as u32),
            Load::Ct { key } => e.ct(key, Some(CT_DIR_ORIGINAL)),
        }
    }
}

fn addr_len(nets: &Nets) -> usize {
    match nets {
        Nets::V4(_) => 4,
        Nets::V6(_) => 16,
    }
}

fn ipproto(p: L4) -> u8 {
    match p {
        L4::Tcp => IPPROTO_TCP,
        L4::Udp => IPPROTO_UDP,
    }
}

/// All ones in a key of `bits` bits.
fn max(bits: u32) -> u128 {
    u128::MAX >> (128 - bits)
}

/// The netmask of `prefix` in a key of `bits` bits.
fn mask(prefix: u32, bits: u32) -> u128 {
    match prefix {
        0 => 0,
        p if p >= bits => max(bits),
        p => max(bits) & !(max(bits) >> p),
    }
}

/// Sorted, with overlapping and adjacent ranges merged (nft's auto-merge of an anonymous set).
fn merge_ranges(mut ranges: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    ranges.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (low, high) in ranges {
        match out.last_mut() {
            Some(last) if low <= last.1.saturating_add(1) => last.1 = last.1.max(high),
            _ => out.push((low, high)),
        }
    }
    out
}

/// A libnftnl user-data TLV: type, length, value (one byte each for type and length).
fn udata_tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + value.len());
    out.push(kind);
    out.push(u8::try_from(value.len()).expect("user data below 256 bytes"));
    out.extend_from_slice(value);
    out
}

/// A u32 in user data, in host byte order as libnftnl writes it.
fn udata_u32(kind: u8, value: u32) -> Vec<u8> {
    udata_tlv(kind, &value.to_ne_bytes())
}

/// `typeof` of a header field: nft's payload expression, protocol and field.
fn typeof_payload(desc: u32, field: u32) -> Vec<u8> {
    let mut data = udata_u32(0, desc);
    data.extend(udata_u32(1, field));
    let mut out = udata_u32(NFTNL_UDATA_SET_TYPEOF_EXPR, EXPR_PAYLOAD);
    out.extend(udata_tlv(NFTNL_UDATA_SET_TYPEOF_DATA, &data));
    out
}

/// `typeof` of a conntrack key and direction.
fn typeof_ct(key: u32, dir: u8) -> Vec<u8> {
    let mut data = udata_u32(0, key);
    data.extend(udata_u32(1, u32::from(dir)));
    let mut out = udata_u32(NFTNL_UDATA_SET_TYPEOF_EXPR, EXPR_CT);
    out.extend(udata_tlv(NFTNL_UDATA_SET_TYPEOF_DATA, &data));
    out
}

/// `typeof` of a meta key.
fn typeof_meta(key: u32) -> Vec<u8> {
    let mut out = udata_u32(NFTNL_UDATA_SET_TYPEOF_EXPR, EXPR_META);
    out.extend(udata_tlv(NFTNL_UDATA_SET_TYPEOF_DATA, &udata_u32(0, key)));
    out
}

/// A rule's expressions, each `NFTA_LIST_ELEM { NAME, DATA }`; every one works on register 1.
#[derive(Default)]
struct Exprs(Attrs);

impl Exprs {
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Attrs)) {
        self.0.nest(NFTA_LIST_ELEM, |el| {
            el.str(NFTA_EXPR_NAME, name).nest(NFTA_EXPR_DATA, data);
        });
    }

    fn meta(&mut self, key: u32) {
        self.expr("meta", |a| {
            a.u32(NFTA_META_KEY, key).u32(NFTA_META_DREG, NFT_REG_1);
        });
    }

    fn cmp(&mut self, op: u32, value: &[u8]) {
        self.expr("cmp", |a| {
            a.u32(NFTA_CMP_SREG, NFT_REG_1)
                .u32(NFTA_CMP_OP, op)
                .nest(NFTA_CMP_DATA, |d| {
                    d.bytes(NFTA_DATA_VALUE, value);
                });
        });
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) {
        self.expr("payload", |a| {
            a.u32(NFTA_PAYLOAD_DREG, NFT_REG_1)
                .u32(NFTA_PAYLOAD_BASE, base)
                .u32(NFTA_PAYLOAD_OFFSET, offset)
                .u32(NFTA_PAYLOAD_LEN, len);
        });
    }

    fn bitwise(&mut self, mask: &[u8], xor: &[u8]) {
        self.expr("bitwise", |a| {
            a.u32(NFTA_BITWISE_SREG, NFT_REG_1)
                .u32(NFTA_BITWISE_DREG, NFT_REG_1)
                .u32(NFTA_BITWISE_LEN, mask.len() as u32)
                .nest(NFTA_BITWISE_MASK, |d| {
                    d.bytes(NFTA_DATA_VALUE, mask);
                })
                .nest(NFTA_BITWISE_XOR, |d| {
                    d.bytes(NFTA_DATA_VALUE, xor);
                });
        });
    }

    fn ct(&mut self, key: u32, dir: Option<u8>) {
        self.expr("ct", |a| {
            a.u32(NFTA_CT_KEY, key).u32(NFTA_CT_DREG, NFT_REG_1);
            if let Some(dir) = dir {
                a.u8(NFTA_CT_DIRECTION, dir);
            }
        });
    }

    fn lookup(&mut self, set: &str, id: u32) {
        self.expr("lookup", |a| {
            a.u32(NFTA_LOOKUP_SREG, NFT_REG_1)
                .str(NFTA_LOOKUP_SET, set)
                .u32(NFTA_LOOKUP_SET_ID, id);
        });
    }

    fn verdict(&mut self, code: u32) {
        self.expr("immediate", |a| {
            a.u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
                .nest(NFTA_IMMEDIATE_DATA, |d| {
                    d.nest(NFTA_DATA_VERDICT, |v| {
                        v.u32(NFTA_VERDICT_CODE, code);
                    });
                });
        });
    }
}
