//! Fuzzes the embedded DNS server's query handler (netctl/src/dns/records.rs, included by path:
//! netctl is a binary crate, and that module depends only on hickory-proto, rand and its view
//! types). Whatever the bytes, over UDP or TCP, the handler must not panic, and every reply must
//! be a parseable DNS response that fits the transport's limit.
#![no_main]

#[path = "../../netctl/src/dns/view.rs"]
#[allow(dead_code)]
mod view;

#[path = "../../netctl/src/dns/records.rs"]
#[allow(dead_code)]
mod records;

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use records::{Action, Records, Transport};
use view::{DnsContainer, DnsEndpoint, DnsView};

const NET: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn asker_id() -> String {
    "01".repeat(32)
}

/// A small world: the asker, a peer, and 40 containers sharing one alias (to exercise
/// truncation), all on one user-defined network.
fn records() -> &'static Records {
    static RECORDS: OnceLock<Records> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let endpoint = |ip: Ipv4Addr, aliases: Vec<String>| DnsEndpoint {
            network_id: NET.to_string(),
            network_name: "net".to_string(),
            user_defined: true,
            internal: false,
            ipv4: ip,
            aliases,
        };
        let mut containers = vec![
            DnsContainer {
                id: asker_id(),
                name: "asker".to_string(),
                endpoints: vec![endpoint(Ipv4Addr::new(10, 0, 0, 2), vec![])],
                ..DnsContainer::default()
            },
            DnsContainer {
                id: "02".repeat(32),
                name: "peer".to_string(),
                endpoints: vec![endpoint(Ipv4Addr::new(10, 0, 0, 3), vec!["db".to_string()])],
                ..DnsContainer::default()
            },
        ];
        for n in 0..40u8 {
            containers.push(DnsContainer {
                id: format!("{:02x}", n + 16).repeat(32),
                name: format!("m{n}"),
                endpoints: vec![endpoint(
                    Ipv4Addr::new(10, 0, 1, n),
                    vec!["many".to_string()],
                )],
                ..DnsContainer::default()
            });
        }
        let upstream = "192.0.2.53:53".parse().ok().into_iter().collect::<Vec<_>>();
        Records::build(&DnsView { containers }, &upstream)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, query)) = data.split_first() else {
        return;
    };
    let transport = if selector & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    match records().handle(&asker_id(), query, transport) {
        Action::Reply(reply) => {
            if transport == Transport::Udp {
                assert!(reply.len() <= records::MAX_UDP_LIMIT, "UDP reply too large");
            }
            let message =
                Message::from_vec(&reply).unwrap_or_else(|e| panic!("unparseable reply: {e}"));
            assert_eq!(message.metadata.message_type, MessageType::Response);
        }
        Action::Forward {
            upstreams,
            udp_limit,
        } => {
            assert!(!upstreams.is_empty());
            assert!((records::CLASSIC_UDP_LIMIT..=records::MAX_UDP_LIMIT).contains(&udp_limit));
        }
        Action::Drop => {}
    }
});
