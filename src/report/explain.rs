//! What each outcome means to the person on call, and where to look next.

use std::time::Duration;

use crate::record::Outcome;
use crate::time::short;

pub struct Explanation {
    /// What the client application saw.
    pub client_sees: &'static str,
    pub meaning: String,
    pub next_steps: &'static str,
}

pub fn explain(outcome: Outcome, syn_timeout: Duration) -> Explanation {
    match outcome {
        Outcome::Established => Explanation {
            client_sees: "a connected socket",
            meaning: "The TCP handshake completed: the network path and the listener are fine. \
                      Whether PostgreSQL then accepted the login is decided after this point."
                .into(),
            next_steps: "If these clients still fail, read the server's log for their login \
                         (authentication, pg_hba.conf, max_connections).",
        },
        Outcome::Refused => Explanation {
            client_sees: "could not connect to server: Connection refused",
            meaning: "The SYN was answered by a RST or an ICMP port-unreachable: the attempt never \
                      reached PostgreSQL. Either nothing listens on that address and port, or a \
                      firewall rejects it."
                .into(),
            next_steps: "Check that the server runs and listens there (`ss -ltnp`, listen_addresses, \
                         port), then REJECT rules (`nft list ruleset`, `iptables -S`). An answer from \
                         another address, or with another TTL than the server's SYN-ACKs, comes from \
                         a device in the path (see --connections).",
        },
        Outcome::Unreachable => Explanation {
            client_sees: "could not connect to server: No route to host (Network is unreachable for \
                          ICMP net-unreachable; Permission denied for ICMPv6 admin-prohibited)",
            meaning: "An ICMP destination-unreachable answered the SYN: administratively prohibited \
                      (a firewall REJECT; firewalld's default), or host/net unreachable (a router \
                      without a route, or no neighbour answering for the server's address)."
                .into(),
            next_steps: "The answering address in --connections names the device. For admin-prohibited, \
                         look at its REJECT rules; for host/net unreachable, at routes and at whether \
                         the server's address is up.",
        },
        Outcome::Timeout => Explanation {
            client_sees: "timeout expired (with connect_timeout), or a hang of about two minutes while \
                          the kernel retries",
            meaning: "The SYN was never answered, not even by a refusal: a firewall DROP, a routing \
                      hole, a host that is down, or (seen on the server's side) a full listen queue."
                .into(),
            next_steps: "Find where the SYNs stop: capture on the server side too. Check DROP rules, \
                         routes and security groups between client and server, and the server's \
                         listen backlog (`ss -ltn`: Recv-Q against Send-Q).",
        },
        Outcome::HandshakeIncomplete => Explanation {
            client_sees: "usually a timeout",
            meaning: "The server answered with SYN-ACK, but the client's final ACK never came: the \
                      SYN-ACK was lost on its way back (asymmetric routing, a stateful firewall \
                      dropping the return path) or the client had already given up."
                .into(),
            next_steps: "Capture on the client side to see whether the SYN-ACKs arrive; check return \
                         routes and connection-tracking firewalls.",
        },
        Outcome::Midstream => Explanation {
            client_sees: "nothing pgreach can tell",
            meaning: "These connections were already open when the capture began; their start is \
                      not in it."
                .into(),
            next_steps: "Start the capture before the clients connect to see their whole attempts.",
        },
        Outcome::CaptureEnded => Explanation {
            client_sees: "not known",
            meaning: format!(
                "The capture ended less than {} after these SYNs: too soon to tell whether they \
                 would have been answered.",
                short(syn_timeout)
            ),
            next_steps: "Capture for longer, or lower --syn-timeout if answers are known to be fast.",
        },
    }
}
