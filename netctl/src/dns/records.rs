//! The embedded DNS server's name resolution, with no sockets: a query from a given container
//! goes in, and out comes the answer to send, "forward this upstream", or "drop it".
//!
//! Rules (issue 4, following Docker's embedded DNS):
//! - Only user-defined networks resolve names. A container finds the containers that share one of
//!   its user-defined networks by name, by network alias, by 12-character ID prefix, and by
//!   Docker's `name.network` form; the address returned is the target's address on the shared
//!   network. Names are case-insensitive; a trailing dot does not matter.
//! - Several containers with one name (an alias): every address, shuffled on every answer.
//! - PTR (`d.c.b.a.in-addr.arpa`) for those addresses answers `name.network.`.
//! - A known name asked for another type (AAAA for these IPv4-only containers, MX, ...): an
//!   empty NOERROR answer, so resolvers do not go on searching.
//! - A single-label name that is no container: NXDOMAIN at once, without forwarding. Containers
//!   get no search domains, so such a name can only have meant a container, and answering here
//!   makes a removed container stop resolving at once instead of after an upstream round trip.
//! - Everything else is forwarded: to the container's `--dns` servers, else the host's. A
//!   container whose networks are all `--internal` gets no forwarding: SERVFAIL, as Docker
//!   answers there (a resolver then gives up at once, it does not hang).
//! - Garbage: FORMERR when a header can be read, else dropped; responses (QR set) are dropped,
//!   so two servers can never loop answering each other; other opcodes get NOTIMP.
//!
//! This file uses only `std`, `rand`, `hickory-proto` and `super::view`, so the fuzz target can
//! include it by path.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use rand::seq::SliceRandom;

use super::view::DnsView;

/// TTL of local answers; Docker uses 600 s too. Nothing in a container caches by default.
pub const LOCAL_TTL: u32 = 600;
/// The most a UDP answer may be without EDNS (RFC 1035).
pub const CLASSIC_UDP_LIMIT: usize = 512;
/// The largest UDP answer we send, whatever the client's EDNS says (the 2020 DNS flag day size
/// is 1232; 4096 keeps room for big forwarded answers without IP fragmentation concerns on lo).
pub const MAX_UDP_LIMIT: usize = 4096;
/// The EDNS payload size we advertise in our own answers.
const OUR_EDNS_PAYLOAD: u16 = 1232;

/// How a query reached the server: UDP answers must fit the client's buffer, TCP ones need not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram on 127.0.0.11:53/udp.
    Udp,
    /// A length-prefixed message on 127.0.0.11:53/tcp.
    Tcp,
}

/// What to do with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes back to the client.
    Reply(Vec<u8>),
    /// Send the query, unchanged, to these servers in order (failover), and pass the answer on.
    /// A UDP answer must not exceed `udp_limit` bytes (the client's buffer).
    Forward {
        /// Upstream servers, first choice first (never empty).
        upstreams: Vec<SocketAddr>,
        /// The client's UDP buffer size.
        udp_limit: usize,
    },
    /// Send nothing (unparseable bytes, or a response instead of a query).
    Drop,
}

/// The names one network resolves: built once per view, read by every query.
#[derive(Debug, Default)]
struct NetworkNames {
    /// The network's name, lowercase (for `name.network` and PTR targets).
    name: String,
    /// Lowercase name, alias or ID prefix → addresses of the containers that carry it.
    by_name: HashMap<String, Vec<Ipv4Addr>>,
    /// Address → the name of the container that has it on this network.
    by_addr: HashMap<Ipv4Addr, String>,
}

/// One container that may ask questions.
#[derive(Debug, Default)]
struct Asker {
    /// Its user-defined networks (IDs): where its names come from.
    networks: Vec<String>,
    /// Where its other queries go; empty when it may not forward (all networks internal) or no
    /// upstream is known.
    upstreams: Vec<SocketAddr>,
}

/// Everything the resolver knows, rebuilt from a [`DnsView`] after every change and swapped in
/// whole, so a query always sees one consistent state.
#[derive(Debug, Default)]
pub struct Records {
    askers: HashMap<String, Asker>,
    networks: HashMap<String, NetworkNames>,
}

impl Records {
    /// Builds the records of `view`; `host_upstreams` serve containers without `--dns` servers.
    pub fn build(view: &DnsView, host_upstreams: &[SocketAddr]) -> Records {
        let mut records = Records::default();
        for c in &view.containers {
            if !c.served() {
                continue;
            }
            // A container on the default bridge as well as an internal network can still reach
            // the outside through the bridge, so it may forward.
            let may_forward = c.endpoints.iter().any(|e| !e.internal);
            let upstreams = match (may_forward, c.upstreams.is_empty()) {
                (false, _) => Vec::new(),
                (true, true) => host_upstreams.to_vec(),
                (true, false) => c.upstreams.clone(),
            };
            let mut asker = Asker {
                networks: Vec::new(),
                upstreams,
            };
            let name = c.name.to_ascii_lowercase();
            let id = c.id.to_ascii_lowercase();
            for e in c.endpoints.iter().filter(|e| e.user_defined) {
                if !asker.networks.contains(&e.network_id) {
                    asker.networks.push(e.network_id.clone());
                }
                let net = records
                    .networks
                    .entry(e.network_id.clone())
                    .or_insert_with(|| NetworkNames {
                        name: e.network_name.to_ascii_lowercase(),
                        ..NetworkNames::default()
                    });
                // The full 64-character ID is no valid DNS label (63 at most): only the prefix.
                let mut keys = vec![name.clone()];
                if let Some(short) = id.get(..12) {
                    keys.push(short.to_string());
                }
                keys.extend(e.aliases.iter().map(|a| a.to_ascii_lowercase()));
                for key in keys {
                    let key = key.trim_end_matches('.').to_string();
                    if key.is_empty() {
                        continue;
                    }
                    let addrs = net.by_name.entry(key).or_default();
                    if !addrs.contains(&e.ipv4) {
                        addrs.push(e.ipv4);
                    }
                }
                net.by_addr.insert(e.ipv4, name.clone());
            }
            records.askers.insert(c.id.clone(), asker);
        }
        records
    }

    /// Whether the container with this ID is served (has a user-defined network).
    #[cfg(test)]
    pub fn serves(&self, container_id: &str) -> bool {
        self.askers.contains_key(container_id)
    }

    /// Decides what to do with `query` (raw bytes) from the container `asker` (its ID).
    pub fn handle(&self, asker: &str, query: &[u8], transport: Transport) -> Action {
        let message = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => return format_error(query),
        };
        if message.metadata.message_type != MessageType::Query {
            return Action::Drop;
        }
        let udp_limit = udp_limit(&message);
        if message.metadata.op_code != OpCode::Query {
            return reply(
                error_response(&message, ResponseCode::NotImp),
                transport,
                udp_limit,
            );
        }
        let [question] = message.queries.as_slice() else {
            return reply(
                error_response(&message, ResponseCode::FormErr),
                transport,
                udp_limit,
            );
        };
        let Some(asker) = self.askers.get(asker) else {
            // A listener outlived its container by a moment: say no rather than guess.
            return reply(
                error_response(&message, ResponseCode::Refused),
                transport,
                udp_limit,
            );
        };

        if matches!(question.query_class(), DNSClass::IN | DNSClass::ANY)
            && let Some(answer) = self.local_answer(asker, &message, question)
        {
            return reply(answer, transport, udp_limit);
        }
        if asker.upstreams.is_empty() {
            return reply(
                error_response(&message, ResponseCode::ServFail),
                transport,
                udp_limit,
            );
        }
        Action::Forward {
            upstreams: asker.upstreams.clone(),
            udp_limit,
        }
    }

    /// The answer from our own records, or `None` when the name is not ours (forward it).
    fn local_answer(&self, asker: &Asker, message: &Message, question: &Query) -> Option<Message> {
        let qname = normalize(question.name());
        let qtype = question.query_type();

        if let Some(addr) = parse_in_addr_arpa(&qname) {
            let target = self.ptr_target(asker, addr)?;
            let mut answer = response(message, ResponseCode::NoError);
            if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                answer.add_answer(Record::from_rdata(
                    question.name().clone(),
                    LOCAL_TTL,
                    RData::PTR(PTR(target)),
                ));
            }
            return Some(answer);
        }

        match self.lookup(asker, &qname) {
            Some(mut addrs) => {
                let mut answer = response(message, ResponseCode::NoError);
                if matches!(qtype, RecordType::A | RecordType::ANY) {
                    addrs.shuffle(&mut rand::rng());
                    for addr in addrs {
                        answer.add_answer(Record::from_rdata(
                            question.name().clone(),
                            LOCAL_TTL,
                            RData::A(A(addr)),
                        ));
                    }
                }
                Some(answer)
            }
            None if !qname.is_empty() && !qname.contains('.') => {
                Some(response(message, ResponseCode::NXDomain))
            }
            None => None,
        }
    }

    /// Addresses for `name` (normalized) on the asker's networks, without duplicates.
    fn lookup(&self, asker: &Asker, name: &str) -> Option<Vec<Ipv4Addr>> {
        let mut found: Vec<Ipv4Addr> = Vec::new();
        let mut known = false;
        for net in asker.networks.iter().filter_map(|id| self.networks.get(id)) {
            let addrs = net.by_name.get(name).or_else(|| {
                // Docker's `name.network`: the name on that one network.
                let prefix = name.strip_suffix(net.name.as_str())?.strip_suffix('.')?;
                (!net.name.is_empty()).then_some(())?;
                net.by_name.get(prefix)
            });
            if let Some(addrs) = addrs {
                known = true;
                for a in addrs {
                    if !found.contains(a) {
                        found.push(*a);
                    }
                }
            }
        }
        known.then_some(found)
    }

    /// `name.network.` for an address on one of the asker's networks.
    fn ptr_target(&self, asker: &Asker, addr: Ipv4Addr) -> Option<Name> {
        asker
            .networks
            .iter()
            .filter_map(|id| self.networks.get(id))
            .find_map(|net| {
                let name = net.by_addr.get(&addr)?;
                let text = if net.name.is_empty() {
                    format!("{name}.")
                } else {
                    format!("{name}.{}.", net.name)
                };
                Name::from_ascii(text).ok()
            })
    }
}

/// The SERVFAIL answer for a query whose forwarding failed; `None` if it cannot be parsed.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let message = Message::from_vec(query).ok()?;
    error_response(&message, ResponseCode::ServFail)
        .to_vec()
        .ok()
}

/// The largest UDP answer the client accepts: 512 without EDNS, else its advertised size
/// (capped at [`MAX_UDP_LIMIT`]).
pub fn udp_limit(message: &Message) -> usize {
    message.edns.as_ref().map_or(CLASSIC_UDP_LIMIT, |e| {
        usize::from(e.max_payload()).clamp(CLASSIC_UDP_LIMIT, MAX_UDP_LIMIT)
    })
}

/// Whether a (forwarded) answer in `bytes` has the TC bit set; `None` if it is no DNS message.
#[cfg(test)]
pub fn is_truncated(bytes: &[u8]) -> Option<bool> {
    read_header(bytes).map(|h| h.metadata.truncation)
}

/// The header of `bytes`, if at least that much parses.
fn read_header(bytes: &[u8]) -> Option<Header> {
    Header::read(&mut BinDecoder::new(bytes)).ok()
}

/// FORMERR for bytes that do not parse as a message, when at least the header does and it is a
/// query; otherwise nothing is sent.
fn format_error(bytes: &[u8]) -> Action {
    let Some(header) = read_header(bytes) else {
        return Action::Drop;
    };
    if header.metadata.message_type != MessageType::Query {
        return Action::Drop;
    }
    let answer = Message::error_msg(
        header.metadata.id,
        header.metadata.op_code,
        ResponseCode::FormErr,
    );
    match answer.to_vec() {
        Ok(bytes) => Action::Reply(bytes),
        Err(_) => Action::Drop,
    }
}

/// An answer skeleton for `query`: same ID, the question echoed (only when there is exactly one:
/// echoing many, compressed, questions could make an answer far bigger than its query), RD
/// copied, RA set, and an OPT record when the query had one.
fn response(query: &Message, code: ResponseCode) -> Message {
    let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
    answer.metadata.recursion_desired = query.metadata.recursion_desired;
    answer.metadata.checking_disabled = query.metadata.checking_disabled;
    answer.metadata.recursion_available = true;
    answer.metadata.authoritative = true;
    answer.metadata.response_code = code;
    if let [question] = query.queries.as_slice() {
        answer.add_query(question.clone());
    }
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(OUR_EDNS_PAYLOAD);
        answer.set_edns(edns);
    }
    answer
}

/// An error answer: like [`response`], but not authoritative.
fn error_response(query: &Message, code: ResponseCode) -> Message {
    let mut answer = response(query, code);
    answer.metadata.authoritative = false;
    answer
}

/// Encodes `answer`; over UDP an answer larger than the client's buffer goes out empty with TC
/// set, so the client asks again over TCP.
fn reply(answer: Message, transport: Transport, udp_limit: usize) -> Action {
    let Ok(bytes) = answer.to_vec() else {
        return Action::Drop;
    };
    if transport == Transport::Udp && bytes.len() > udp_limit {
        // Without answers first; if even that is too big (a huge question), the bare header.
        let bare = {
            let mut m = Message::error_msg(
                answer.metadata.id,
                answer.metadata.op_code,
                answer.metadata.response_code,
            );
            m.metadata = answer.metadata;
            m.metadata.truncation = true;
            m
        };
        return match answer.truncate().to_vec() {
            Ok(bytes) if bytes.len() <= udp_limit => Action::Reply(bytes),
            _ => bare.to_vec().map_or(Action::Drop, Action::Reply),
        };
    }
    Action::Reply(bytes)
}

/// The query name as we compare it: lowercase labels joined by dots, no trailing dot. Labels
/// that are not ASCII stay as lossy UTF-8 and simply match nothing of ours.
fn normalize(name: &Name) -> String {
    let labels: Vec<String> = name
        .iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect();
    labels.join(".")
}

/// `d.c.b.a.in-addr.arpa` (normalized) → `a.b.c.d`; `None` for anything else.
fn parse_in_addr_arpa(name: &str) -> Option<Ipv4Addr> {
    let reversed = name.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut parts = reversed.split('.');
    for slot in octets.iter_mut().rev() {
        let part = parts.next()?;
        // Only canonical decimal octets: "01" or "+1" are not the address's name.
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::super::view::{DnsContainer, DnsEndpoint};
    use super::*;
    use std::collections::HashSet;
    use std::path::PathBuf;

    const NET1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const NET2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const BRIDGE: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const INTERNAL: &str = "9999999999999999999999999999999999999999999999999999999999999999";

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn ep(net: &str, net_name: &str, ip: [u8; 4], aliases: &[&str]) -> DnsEndpoint {
        DnsEndpoint {
            network_id: net.to_string(),
            network_name: net_name.to_string(),
            user_defined: net != BRIDGE,
            internal: net == INTERNAL,
            ipv4: Ipv4Addr::from(ip),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn ctr(n: u8, name: &str, endpoints: Vec<DnsEndpoint>) -> DnsContainer {
        DnsContainer {
            id: id(n),
            name: name.to_string(),
            netns: PathBuf::from(format!("/run/test/{name}")),
            upstreams: Vec::new(),
            endpoints,
        }
    }

    fn host_upstreams() -> Vec<SocketAddr> {
        vec!["192.0.2.53:53".parse().unwrap_or_else(|e| panic!("{e}"))]
    }

    /// a, b, web1, web2 on net1 (web1/web2 share the alias "web"); c on net2; d on net1 and
    /// net2; e and f on the default bridge only; g only on an internal network.
    fn world() -> Records {
        let view = DnsView {
            containers: vec![
                ctr(
                    1,
                    "containerA",
                    vec![ep(NET1, "second-bridge", [10, 0, 0, 2], &[])],
                ),
                ctr(
                    2,
                    "containerB",
                    vec![ep(NET1, "second-bridge", [10, 0, 0, 3], &["db"])],
                ),
                ctr(
                    3,
                    "web1",
                    vec![ep(NET1, "second-bridge", [10, 0, 0, 4], &["web"])],
                ),
                ctr(
                    4,
                    "web2",
                    vec![ep(NET1, "second-bridge", [10, 0, 0, 5], &["Web"])],
                ),
                ctr(5, "other", vec![ep(NET2, "net2", [10, 1, 0, 2], &[])]),
                ctr(
                    6,
                    "both",
                    vec![
                        ep(NET1, "second-bridge", [10, 0, 0, 6], &[]),
                        ep(NET2, "net2", [10, 1, 0, 3], &[]),
                    ],
                ),
                ctr(
                    7,
                    "ubuntuA",
                    vec![ep(BRIDGE, "bridge", [172, 17, 0, 2], &[])],
                ),
                ctr(
                    8,
                    "ubuntuB",
                    vec![ep(BRIDGE, "bridge", [172, 17, 0, 3], &[])],
                ),
                ctr(9, "locked", vec![ep(INTERNAL, "inner", [10, 9, 0, 2], &[])]),
            ],
        };
        Records::build(&view, &host_upstreams())
    }

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(
            Name::from_ascii(name).unwrap_or_else(|e| panic!("{name}: {e}")),
            qtype,
        ));
        m.to_vec().unwrap_or_else(|e| panic!("{e}"))
    }

    fn answer(records: &Records, asker: u8, name: &str, qtype: RecordType) -> Message {
        let q = query(name, qtype);
        match records.handle(&id(asker), &q, Transport::Udp) {
            Action::Reply(bytes) => {
                let m = Message::from_vec(&bytes).unwrap_or_else(|e| panic!("bad reply: {e}"));
                assert_eq!(
                    m.metadata.id,
                    Message::from_vec(&q).map(|q| q.metadata.id).unwrap_or(0)
                );
                assert_eq!(m.metadata.message_type, MessageType::Response);
                m
            }
            other => panic!("{name} {qtype}: expected a reply, got {other:?}"),
        }
    }

    fn addrs(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .filter_map(|r| match r.data {
                RData::A(A(a)) => Some(a),
                _ => None,
            })
            .collect()
    }

    fn a(ip: [u8; 4]) -> Ipv4Addr {
        Ipv4Addr::from(ip)
    }

    #[test]
    fn name_on_shared_network_resolves_to_its_address() {
        let r = world();
        let m = answer(&r, 1, "containerB", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert!(m.metadata.recursion_available);
        assert_eq!(addrs(&m), [a([10, 0, 0, 3])]);
        assert_eq!(m.answers[0].ttl, LOCAL_TTL);
        // The question is echoed as asked.
        assert_eq!(m.queries[0].name().to_ascii(), "containerB.");
        // Its own name, too.
        assert_eq!(
            addrs(&answer(&r, 1, "containerA", RecordType::A)),
            [a([10, 0, 0, 2])]
        );
    }

    #[test]
    fn names_are_case_insensitive_and_trailing_dot_is_ignored() {
        let r = world();
        for name in ["CONTAINERB", "containerb.", "ContainerB.", "DB"] {
            assert_eq!(
                addrs(&answer(&r, 1, name, RecordType::A)),
                [a([10, 0, 0, 3])],
                "{name}"
            );
        }
    }

    #[test]
    fn docker_name_dot_network_form() {
        let r = world();
        let m = answer(&r, 1, "containerB.second-bridge", RecordType::A);
        assert_eq!(addrs(&m), [a([10, 0, 0, 3])]);
        // A network the asker is not on does not help: not ours, so it goes upstream.
        let q = query("containerB.second-bridge", RecordType::A);
        assert!(matches!(
            r.handle(&id(5), &q, Transport::Udp),
            Action::Forward { .. }
        ));
    }

    #[test]
    fn other_network_cannot_resolve() {
        let r = world();
        let m = answer(&r, 5, "containerB", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.answers.is_empty());
        // A dotted name that is not ours goes upstream instead.
        let q = query("containerB.example.com", RecordType::A);
        assert!(matches!(
            r.handle(&id(5), &q, Transport::Udp),
            Action::Forward { .. }
        ));
    }

    #[test]
    fn address_is_the_one_on_the_shared_network() {
        let r = world();
        assert_eq!(
            addrs(&answer(&r, 1, "both", RecordType::A)),
            [a([10, 0, 0, 6])]
        );
        assert_eq!(
            addrs(&answer(&r, 5, "both", RecordType::A)),
            [a([10, 1, 0, 3])]
        );
        // Asked from a container on both networks, every address of `both` is returned.
        let mut got = addrs(&answer(&r, 6, "both", RecordType::A));
        got.sort();
        assert_eq!(got, [a([10, 0, 0, 6]), a([10, 1, 0, 3])]);
    }

    #[test]
    fn alias_returns_all_addresses_in_varying_order() {
        let r = world();
        let mut orders = HashSet::new();
        for _ in 0..200 {
            let got = addrs(&answer(&r, 1, "web", RecordType::A));
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(sorted, [a([10, 0, 0, 4]), a([10, 0, 0, 5])]);
            orders.insert(got);
        }
        assert_eq!(
            orders.len(),
            2,
            "both orders should appear over 200 answers"
        );
    }

    #[test]
    fn id_prefix_resolves() {
        let r = world();
        let short = &id(2)[..12];
        assert_eq!(
            addrs(&answer(&r, 1, short, RecordType::A)),
            [a([10, 0, 0, 3])]
        );
        // Not from another network.
        assert!(addrs(&answer(&r, 5, short, RecordType::A)).is_empty());
    }

    #[test]
    fn ptr_for_container_addresses() {
        let r = world();
        let m = answer(&r, 1, "3.0.0.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let targets: Vec<String> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(PTR(n)) => Some(n.to_ascii()),
                _ => None,
            })
            .collect();
        assert_eq!(targets, ["containerb.second-bridge."]);
        // From another network: not ours to answer, forwarded.
        let q = query("3.0.0.10.in-addr.arpa.", RecordType::PTR);
        assert!(matches!(
            r.handle(&id(5), &q, Transport::Udp),
            Action::Forward { .. }
        ));
    }

    #[test]
    fn in_addr_arpa_parsing() {
        assert_eq!(
            parse_in_addr_arpa("4.3.2.1.in-addr.arpa"),
            Some(a([1, 2, 3, 4]))
        );
        for bad in [
            "3.2.1.in-addr.arpa",
            "5.4.3.2.1.in-addr.arpa",
            "x.3.2.1.in-addr.arpa",
            "256.0.0.1.in-addr.arpa",
            "1.2.3.4",
            ".1.2.3.in-addr.arpa",
        ] {
            assert_eq!(parse_in_addr_arpa(bad), None, "{bad}");
        }
    }

    #[test]
    fn aaaa_for_known_name_is_empty_noerror() {
        let r = world();
        for qtype in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
            let m = answer(&r, 1, "containerB", qtype);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{qtype}");
            assert!(m.answers.is_empty(), "{qtype}");
        }
    }

    #[test]
    fn default_bridge_is_not_served() {
        let r = world();
        assert!(!r.serves(&id(7)));
        assert!(r.serves(&id(1)));
        // Even a served asker never finds default-bridge containers.
        let m = answer(&r, 1, "ubuntuA", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn unknown_asker_is_refused() {
        let r = world();
        let m = answer(&r, 7, "containerB", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn forwarding_uses_own_servers_else_the_hosts() {
        let mut view = DnsView {
            containers: vec![ctr(1, "a", vec![ep(NET1, "n", [10, 0, 0, 2], &[])])],
        };
        let q = query("example.com", RecordType::A);
        let r = Records::build(&view, &host_upstreams());
        assert_eq!(
            r.handle(&id(1), &q, Transport::Udp),
            Action::Forward {
                upstreams: host_upstreams(),
                udp_limit: CLASSIC_UDP_LIMIT
            }
        );
        let own: Vec<SocketAddr> = vec!["192.0.2.7:53".parse().unwrap_or_else(|e| panic!("{e}"))];
        view.containers[0].upstreams = own.clone();
        let r = Records::build(&view, &host_upstreams());
        assert_eq!(
            r.handle(&id(1), &q, Transport::Tcp),
            Action::Forward {
                upstreams: own,
                udp_limit: CLASSIC_UDP_LIMIT
            }
        );
        // No upstream at all: SERVFAIL, not a hang.
        view.containers[0].upstreams.clear();
        let r = Records::build(&view, &[]);
        let Action::Reply(bytes) = r.handle(&id(1), &q, Transport::Udp) else {
            panic!("expected SERVFAIL");
        };
        let m = Message::from_vec(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }

    #[test]
    fn internal_only_container_does_not_forward() {
        let r = world();
        let m = answer(&r, 9, "example.com", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        // But local names still resolve there.
        assert_eq!(
            addrs(&answer(&r, 9, "locked", RecordType::A)),
            [a([10, 9, 0, 2])]
        );
    }

    #[test]
    fn edns_limit_is_respected_and_echoed() {
        let r = world();
        let with_edns = |name: &str| {
            let mut m = Message::query();
            m.add_query(Query::query(
                Name::from_ascii(name).unwrap_or_else(|e| panic!("{e}")),
                RecordType::A,
            ));
            let mut edns = Edns::new();
            edns.set_max_payload(4096);
            m.set_edns(edns);
            m.to_vec().unwrap_or_else(|e| panic!("{e}"))
        };
        let Action::Reply(reply) = r.handle(&id(1), &with_edns("web"), Transport::Udp) else {
            panic!("expected a reply");
        };
        let reply = Message::from_vec(&reply).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            reply.edns.is_some(),
            "an EDNS query gets an OPT record back"
        );
        let Action::Forward { udp_limit, .. } =
            r.handle(&id(1), &with_edns("example.org"), Transport::Udp)
        else {
            panic!("expected forward");
        };
        assert_eq!(udp_limit, 4096);
    }

    #[test]
    fn too_many_addresses_over_udp_truncates() {
        let containers = (0..60u8)
            .map(|n| {
                ctr(
                    n + 10,
                    &format!("m{n}"),
                    vec![ep(NET1, "n", [10, 0, 1, n + 2], &["many"])],
                )
            })
            .collect();
        let r = Records::build(&DnsView { containers }, &[]);
        let q = query("many", RecordType::A);
        let Action::Reply(udp) = r.handle(&id(10), &q, Transport::Udp) else {
            panic!("expected a reply");
        };
        assert!(udp.len() <= CLASSIC_UDP_LIMIT);
        let m = Message::from_vec(&udp).unwrap_or_else(|e| panic!("{e}"));
        assert!(m.metadata.truncation);
        assert_eq!(is_truncated(&udp), Some(true));
        let Action::Reply(tcp) = r.handle(&id(10), &q, Transport::Tcp) else {
            panic!("expected a reply");
        };
        let m = Message::from_vec(&tcp).unwrap_or_else(|e| panic!("{e}"));
        assert!(!m.metadata.truncation);
        assert_eq!(addrs(&m).len(), 60);
    }

    #[test]
    fn removed_container_stops_resolving() {
        let mut view = DnsView {
            containers: vec![
                ctr(1, "a", vec![ep(NET1, "n", [10, 0, 0, 2], &[])]),
                ctr(2, "b", vec![ep(NET1, "n", [10, 0, 0, 3], &[])]),
            ],
        };
        let r = Records::build(&view, &[]);
        assert_eq!(
            addrs(&answer(&r, 1, "b", RecordType::A)),
            [a([10, 0, 0, 3])]
        );
        view.containers.pop();
        let r = Records::build(&view, &[]);
        let m = answer(&r, 1, "b", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn malformed_input_gets_formerr_or_is_dropped() {
        let r = world();
        // Too short for a header: dropped.
        assert_eq!(r.handle(&id(1), &[], Transport::Udp), Action::Drop);
        assert_eq!(r.handle(&id(1), &[1, 2, 3], Transport::Udp), Action::Drop);
        // A header claiming one question, then nothing: FORMERR with the same ID.
        let bytes = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        let Action::Reply(reply) = r.handle(&id(1), &bytes, Transport::Udp) else {
            panic!("expected FORMERR");
        };
        let m = Message::from_vec(&reply).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.metadata.id, 0xabcd);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // Two questions: FORMERR.
        let mut two = Message::query();
        for n in ["a", "b"] {
            two.add_query(Query::query(
                Name::from_ascii(n).unwrap_or_else(|e| panic!("{e}")),
                RecordType::A,
            ));
        }
        let Action::Reply(reply) = r.handle(
            &id(1),
            &two.to_vec().unwrap_or_else(|e| panic!("{e}")),
            Transport::Udp,
        ) else {
            panic!("expected FORMERR");
        };
        let m = Message::from_vec(&reply).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // A response is never answered (no loops between servers).
        let mut resp = Message::response(7, OpCode::Query);
        resp.add_query(Query::query(
            Name::from_ascii("a").unwrap_or_else(|e| panic!("{e}")),
            RecordType::A,
        ));
        let bytes = resp.to_vec().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.handle(&id(1), &bytes, Transport::Udp), Action::Drop);
        // Another opcode: NOTIMP.
        let mut update = Message::new(9, MessageType::Query, OpCode::Update);
        update.add_query(Query::query(
            Name::from_ascii("a").unwrap_or_else(|e| panic!("{e}")),
            RecordType::SOA,
        ));
        let Action::Reply(reply) = r.handle(
            &id(1),
            &update.to_vec().unwrap_or_else(|e| panic!("{e}")),
            Transport::Udp,
        ) else {
            panic!("expected NOTIMP");
        };
        let m = Message::from_vec(&reply).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    }

    /// Found by the fuzz target: an unsupported opcode with 33 compressed questions. Echoing them
    /// all made the NOTIMP answer larger than any UDP limit.
    #[test]
    fn error_answers_stay_small() {
        let r = world();
        let query = include_bytes!("testdata/many-questions-notimp.bin");
        let Action::Reply(reply) = r.handle(&id(1), query, Transport::Udp) else {
            panic!("expected NOTIMP or FORMERR");
        };
        assert!(reply.len() <= CLASSIC_UDP_LIMIT, "{} bytes", reply.len());
        let m = Message::from_vec(&reply).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.metadata.message_type, MessageType::Response);
    }

    /// Random bytes, and random mutations of a valid query, never panic, and every reply is a
    /// parseable response within the UDP limit. (The fuzz target in fuzz/ goes further.)
    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let r = world();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let valid = query("containerB", RecordType::A);
        for i in 0..50_000 {
            let bytes: Vec<u8> = if i % 2 == 0 {
                let len = rng.random_range(0..600);
                (0..len).map(|_| rng.random()).collect()
            } else {
                let mut b = valid.clone();
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..b.len());
                    b[at] = rng.random();
                }
                if rng.random_bool(0.2) {
                    b.truncate(rng.random_range(0..b.len()));
                }
                b
            };
            let transport = if i % 3 == 0 {
                Transport::Tcp
            } else {
                Transport::Udp
            };
            if let Action::Reply(reply) = r.handle(&id(1), &bytes, transport) {
                let hdr = read_header(&reply)
                    .unwrap_or_else(|| panic!("reply without header for {bytes:?}"));
                assert_eq!(hdr.metadata.message_type, MessageType::Response);
                if transport == Transport::Udp {
                    assert!(reply.len() <= MAX_UDP_LIMIT);
                }
            }
        }
    }
}
