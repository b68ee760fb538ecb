//! What each outcome means to the person on call, what the client
//! application saw, and where to look next.

use std::time::Duration;

use crate::outcome::Outcome;
use crate::time::short;

pub struct Explanation {
    /// What the client application saw (libpq's words where it has them).
    pub client_sees: &'static str,
    pub meaning: String,
    pub next_steps: &'static str,
}

pub fn explain(outcome: Outcome, syn_timeout: Duration) -> Explanation {
    let e =
        |client_sees, meaning: &str, next_steps| Explanation { client_sees, meaning: meaning.to_owned(), next_steps };
    match outcome {
        Outcome::Success => e(
            "a working session",
            "AuthenticationOk, then ReadyForQuery: the login worked.",
            "Nothing to fix for these; compare their login time with the failures'.",
        ),
        Outcome::DnsFailed => e(
            "could not translate host name \"…\" to address: Name or service not known (NXDOMAIN), or \
             Temporary failure in name resolution (SERVFAIL, REFUSED, no answer)",
            "The client looked up the database server's name and the resolver said it does not exist (NXDOMAIN), \
             could not answer (SERVFAIL, REFUSED) or said nothing before the client gave up: no connection was \
             even tried.",
            "Check the name in the client's configuration (a typo, a decommissioned alias, a search domain), the \
             record in its zone (`dig NAME @RESOLVER`), and the resolver the client uses (/etc/resolv.conf, a \
             container's DNS).",
        ),
        Outcome::Refused => e(
            "connection to server at \"…\", port … failed: Connection refused",
            "The SYN was answered by a RST or an ICMP port-unreachable: the attempt never reached PostgreSQL. \
             Either nothing listens on that address and port, or a firewall rejects it.",
            "Check that the server runs and listens there (`ss -ltnp`, listen_addresses, port), then REJECT rules \
             (`nft list ruleset`, `iptables -S`). An answer from another address, or with another TTL than the \
             server's SYN-ACKs, comes from a device in the path (see --connections).",
        ),
        Outcome::Unreachable => e(
            "No route to host (Network is unreachable for ICMP net-unreachable; Permission denied for ICMPv6 \
             admin-prohibited on Linux)",
            "An ICMP destination-unreachable answered the SYN: administratively prohibited (a firewall REJECT; \
             firewalld's default), or host/net unreachable (a router without a route, or no neighbour answering \
             for the server's address).",
            "The answering address in --connections names the device. For admin-prohibited, look at its REJECT \
             rules; for host/net unreachable, at routes and at whether the server's address is up.",
        ),
        Outcome::Timeout => e(
            "timeout expired (with connect_timeout), or a hang of about two minutes while the kernel retries",
            "The SYN was never answered, not even by a refusal: a firewall DROP, a routing hole, a host that is \
             down, or (seen on the server's side) a full listen queue.",
            "Find where the SYNs stop: capture on the server side too. Check DROP rules, routes and security \
             groups between client and server, and the server's listen backlog (`ss -ltn`: Recv-Q against Send-Q).",
        ),
        Outcome::HandshakeIncomplete => e(
            "usually a timeout",
            "The server answered with SYN-ACK, but the client's final ACK never came: the SYN-ACK was lost on its \
             way back (asymmetric routing, a stateful firewall dropping the return path) or the client had already \
             given up.",
            "Capture on the client side to see whether the SYN-ACKs arrive; check return routes and \
             connection-tracking firewalls.",
        ),
        Outcome::AuthFailed => e(
            "FATAL:  password authentication failed for user \"…\"",
            "The server asked for credentials and rejected them (28P01; or 28000 when ident, LDAP, RADIUS, PAM or \
             GSS authentication failed). With password authentication PostgreSQL answers a role that does not \
             exist the same way, on purpose.",
            "Check the password the application uses (a rotated secret?), whether the role exists, and the \
             server log line for this attempt, which says which it was.",
        ),
        Outcome::HbaRejected => e(
            "FATAL:  no pg_hba.conf entry for host \"…\", user \"…\", database \"…\", no encryption",
            "PostgreSQL refused before asking for any credentials (28000): no pg_hba.conf line matches this \
             client address, user, database and SSL state, or a `reject` line does.",
            "Add or fix the pg_hba.conf line for this host/user/database/SSL combination (the message names it), \
             then `SELECT pg_reload_conf()`; check `pg_hba_file_rules` for lines that did not load.",
        ),
        Outcome::RoleMissing => e(
            "FATAL:  role \"…\" does not exist",
            "Authentication passed, then the role check failed (28000): the role does not exist, or it may not log \
             in (NOLOGIN).",
            "Check the user name the application sends (see the users column), `\\du` on the server, and \
             rolcanlogin.",
        ),
        Outcome::DatabaseMissing => e(
            "FATAL:  database \"…\" does not exist",
            "The login worked but the database named in the startup message does not exist (3D000), or a pooler \
             has no entry for it.",
            "Check the database name the application sends (see the databases column; libpq defaults it to the \
             user name), and whether it was dropped or renamed.",
        ),
        Outcome::TooManyClients => e(
            "FATAL:  sorry, too many clients already",
            "All max_connections slots were taken (53300): the server turned clients away at the door, or only \
             reserved superuser slots were left. Through a pooler: its client limit, or a pool with no free \
             server connection (the evidence names the pooler's setting).",
            "Look at `pg_stat_activity` for who holds the connections (idle ones above all), put a pooler \
             (PgBouncer) in front of many short-lived clients, and size max_connections for the real peak.",
        ),
        Outcome::ServerUnavailable => e(
            "FATAL:  the database system is starting up / shutting down / in recovery mode (through a pooler: its \
             message, or a time-out)",
            "The server was not accepting connections (57P03), or shut down during the login (57P01/57P02), or a \
             pooler in front of it could not reach it or log in to it.",
            "Check the server's state and log around these times: a restart, a crash recovery, a failover, a \
             standby without hot_standby. Behind a pooler, also its log and its [databases] entry.",
        ),
        Outcome::ProtocolError => e(
            "FATAL:  unsupported frontend protocol / invalid startup packet layout",
            "The server rejected the client's messages (SQLSTATE class 08, or 0A000): a client or pooler that \
             speaks another protocol version, or a broken driver.",
            "Check the client library and any pooler or proxy between it and the server.",
        ),
        Outcome::OtherError => e(
            "FATAL with the message shown in --connections",
            "The server ended the login with an error not in the classes above; its SQLSTATE and message are \
             kept as evidence.",
            "Read the message, detail and hint in --connections or the JSON report.",
        ),
        Outcome::SslRefused => e(
            "server does not support SSL, but SSL was required",
            "The client asked for TLS (SSLRequest) and the server answered `N`; the client then closed, as \
             sslmode=require (or stricter) makes it do.",
            "Enable ssl on the server (ssl = on, with a certificate), or stop requiring it on the client.",
        ),
        Outcome::ServerSilent => e(
            "timeout expired (libpq's connect_timeout), or a hang with no message",
            "TCP connected and the client sent its startup packet (or its credentials), but the server never \
             answered it: the kernel accepted the connection for a postmaster that did not act on it, an \
             authentication server hung, or a pooler waited for a server connection. The client gave up (or was \
             still waiting when the capture ended).",
            "Look at the server host: a stopped or hung postmaster (`ps -o stat,pid,cmd -C postgres`: T or D \
             states), fork failures or memory pressure in the server log and `dmesg`, a proxy holding clients \
             in a full max_connections queue, a pooler's server connections (capture its host with -i any to see \
             both legs). A capture on the server side shows whether the startup packet arrived.",
        ),
        Outcome::AuthTimeout => e(
            "server closed the connection unexpectedly",
            "The server asked for credentials, the client sent none, and the server closed the connection: \
             PostgreSQL gives up at authentication_timeout (60 s by default) without sending the client its \
             error.",
            "Find why the client could not answer in time: a slow password callback or secret store, an \
             interactive prompt nobody answered, a network delaying the client's packets. The server log has \
             \"canceling authentication due to timeout\" for each.",
        ),
        Outcome::Terminated => e(
            "FATAL:  terminating connection due to administrator command (or an idle/transaction timeout)",
            "The login worked, then the server ended the session with a FATAL: pg_terminate_backend or a shutdown \
             (57P01), idle_session_timeout (57P05), idle_in_transaction_session_timeout (25P03), a crash of \
             another backend (57P02).",
            "Check who ran pg_terminate_backend, the server's shutdown and crash log lines, and the timeout \
             settings.",
        ),
        Outcome::AuthAbandoned => e(
            "a password prompt (psql), then a new connection with the password",
            "The server asked for a password and the client closed without sending one. psql does this every time \
             it needs to prompt: it is not a failure unless no successful retry follows.",
            "Nothing, if the same client logs in right after; otherwise the application has no password configured.",
        ),
        Outcome::CancelRequest => e(
            "nothing: a query was cancelled",
            "A connection that only carried a CancelRequest for another session's running query.",
            "Nothing to fix; many of them point at statement timeouts or impatient users.",
        ),
        Outcome::Tls => e(
            "not visible (a working session, where the records show one)",
            "The connection was encrypted (SSLRequest answered `S`, GSS encryption, or a direct TLS ClientHello) \
             and no key log decrypted it. Where the TLS records show a login-sized answer followed by more \
             traffic, the session likely logged in; where the client closed on the server's first small answer, \
             it was likely asked for a password it did not have (psql prompts, then reconnects).",
            "Read the server log for these attempts, or give pgreach the clients' TLS key log (--keylog) to see \
             the login itself.",
        ),
        Outcome::TlsRejected => e(
            "FATAL before any password prompt: no pg_hba.conf entry / pg_hba.conf rejects connection / too many \
             clients already / the database system is starting up or shutting down",
            "Encrypted, so inferred from the TLS records: the connection ended on the server's answer to the \
             client's first application record (its startup message), an answer too long for an authentication \
             request and too short for a login: no authentication round trip. PostgreSQL does that when it refuses before authentication: a \
             pg_hba.conf `reject` line or no matching `hostssl` line, all connection slots taken, a server \
             starting up or shutting down; or, under trust authentication, a missing role or database.",
            "Read the server log at these times for the FATAL; check pg_hba.conf's hostssl lines for these \
             clients and the number of connections (`pg_stat_activity`). A --keylog from the client names the \
             exact error.",
        ),
        Outcome::TlsLoginFailed => e(
            "FATAL:  password authentication failed for user \"…\" (or: database \"…\" does not exist)",
            "Encrypted, so inferred from the TLS records: the client answered one or more authentication \
             requests and the connection then ended on the server's answer, without the burst of messages a \
             successful login sends. That is a wrong password, a role that does not exist (PostgreSQL answers it like a \
             wrong password), or a missing database or role checked after authentication.",
            "Check the password the application uses and the server log line for this attempt, which says \
             which it was. A --keylog from the client names the exact error.",
        ),
        Outcome::NotPostgres => e(
            "not a PostgreSQL conversation",
            "The bytes on this port are not the PostgreSQL protocol (another service, a scanner, TLS to the wrong \
             port); the reason is in --connections.",
            "Check what listens on the port (`ss -ltnp`) and what the client thinks it connects to.",
        ),
        Outcome::Gap => e(
            "not known",
            "The capture lost bytes of this connection before PostgreSQL's answer could be read.",
            "Capture with a larger buffer (-B), no snap length (-s 0), and on a less loaded host.",
        ),
        Outcome::Probe => e(
            "nothing: a port check",
            "The client connected and closed without sending a startup message: a load balancer or monitoring \
             health check, or a port scan.",
            "Nothing to fix; useful to know which clients are only probing.",
        ),
        Outcome::Incomplete => e(
            "usually \"server closed the connection unexpectedly\"",
            "The connection closed during the login with no error message from the server: the server process \
             died or was killed, a proxy cut the connection, or the client gave up mid-login.",
            "Check the server log for crashes or OOM kills at these times, and any proxy or pooler in between.",
        ),
        Outcome::Midstream => e(
            "nothing pgreach can tell",
            "These connections were already open when the capture began; their login is not in it. What they \
             exchanged afterwards is read from the first segment that starts with whole messages (see --connections); \
             one that a server FATAL ended is reported as terminated instead.",
            "Start the capture before the clients connect to see their whole attempts.",
        ),
        Outcome::CaptureEnded => Explanation {
            client_sees: "not known",
            meaning: format!(
                "The capture ended before the outcome was known: less than {} after the SYN, or during the login.",
                short(syn_timeout)
            ),
            next_steps: "Capture for longer.",
        },
    }
}
