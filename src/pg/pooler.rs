//! Connection poolers that answer in PostgreSQL's place (PgBouncer,
//! Pgpool-II): who sent an error, their own texts, what each means, and the
//! pooler setting to look at. PgBouncer sends SQLSTATE 08P01 with all of its
//! own errors in every release (1.7 to 1.25); from 1.20 on, a PostgreSQL
//! error it relays keeps PostgreSQL's SQLSTATE. Pgpool-II's are XX000 unless
//! it names one. So a SQLSTATE decides where it says something, and the
//! pooler's text only where it does not.

use std::fmt;

use serde::Serialize;

use super::message::ErrorFields;
use crate::outcome::Outcome;

/// A pooler recognised by its error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooler {
    Pgbouncer,
    Pgpool,
}

impl fmt::Display for Pooler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooler::Pgbouncer => "PgBouncer",
            Pooler::Pgpool => "Pgpool-II",
        })
    }
}

/// Which pooler answered a connection, and the setting its message points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PoolerAnswer {
    pub name: Pooler,
    /// The pooler's setting (or section, or command) to look at first.
    pub setting: &'static str,
}

/// One known pooler message: how it reads and what it means.
struct Known {
    pooler: Pooler,
    /// The start of the message, exactly (PostgreSQL's "sorry, too many
    /// clients already" differs from Pgpool-II's only in its first letter).
    begins: &'static str,
    /// Text the message must also contain further on ("" for none).
    contains: &'static str,
    /// PostgreSQL's own words, passed on by PgBouncer when PostgreSQL
    /// refused the pooler's login: the text says more than the SQLSTATE
    /// (a 28000 means nothing about the client's own login stage).
    relayed: bool,
    outcome: Outcome,
    setting: &'static str,
}

const fn pgbouncer(begins: &'static str, outcome: Outcome, setting: &'static str) -> Known {
    Known { pooler: Pooler::Pgbouncer, begins, contains: "", relayed: false, outcome, setting }
}

const fn relayed(begins: &'static str, contains: &'static str, outcome: Outcome, setting: &'static str) -> Known {
    Known { pooler: Pooler::Pgbouncer, begins, contains, relayed: true, outcome, setting }
}

const fn pgpool(begins: &'static str, outcome: Outcome, setting: &'static str) -> Known {
    Known { pooler: Pooler::Pgpool, begins, contains: "", relayed: false, outcome, setting }
}

const AUTH_FILE: &str = "auth_file / auth_query";
const POOL_SIZE: &str = "query_wait_timeout, default_pool_size, max_db_connections (or a PAUSE)";
const SERVER_LOGIN: &str = "the pooler's own login to PostgreSQL ([databases] user/password, auth_file)";
const PGPOOL_BACKENDS: &str = "backend_hostname / backend_port and the nodes' status (pcp_node_info)";

/// The texts, first match wins (longer forms before their prefixes).
/// PgBouncer's are those of 1.7 to 1.25 (Debian bookworm has 1.18),
/// Pgpool-II's of 3.7 to 4.7 (bookworm: 4.3). `terminated` entries end
/// sessions that had logged in and run queries.
const KNOWN: &[Known] = &[
    pgbouncer("no more connections allowed (max_client_conn)", Outcome::TooManyClients, "max_client_conn"),
    pgbouncer(
        "client connections exceeded (max_db_client_connections)",
        Outcome::TooManyClients,
        "max_db_client_connections",
    ),
    pgbouncer(
        "client connections exceeded (max_user_client_connections)",
        Outcome::TooManyClients,
        "max_user_client_connections",
    ),
    // No server connection became free in time: the pool is exhausted, or
    // PostgreSQL behind it is down (the server leg tells which).
    pgbouncer("query_wait_timeout", Outcome::TooManyClients, POOL_SIZE),
    pgbouncer("no such database", Outcome::DatabaseMissing, "[databases]"),
    pgbouncer("No such database", Outcome::DatabaseMissing, "[databases]"),
    // PostgreSQL's refusals of the pooler's own login, passed on with the
    // pooler's fields only (and 08P01 before 1.20).
    relayed("password authentication failed for user", "", Outcome::ServerUnavailable, SERVER_LOGIN),
    relayed("database \"", "does not exist", Outcome::DatabaseMissing, "[databases] dbname="),
    relayed("role \"", "does not exist", Outcome::RoleMissing, "[databases] user= (the role PostgreSQL is asked for)"),
    relayed("no pg_hba.conf entry", "", Outcome::HbaRejected, "PostgreSQL's pg_hba.conf, for the pooler's address"),
    relayed(
        "sorry, too many clients already",
        "",
        Outcome::TooManyClients,
        "PostgreSQL's max_connections against the pools (default_pool_size, max_db_connections)",
    ),
    relayed("too many connections for", "", Outcome::TooManyClients, "the role's or database's CONNECTION LIMIT"),
    pgbouncer("no such user", Outcome::AuthFailed, AUTH_FILE),
    pgbouncer("No such user", Outcome::AuthFailed, AUTH_FILE),
    pgbouncer("password authentication failed", Outcome::AuthFailed, AUTH_FILE),
    pgbouncer("SASL authentication failed", Outcome::AuthFailed, AUTH_FILE),
    pgbouncer("\"trust\" authentication failed", Outcome::AuthFailed, AUTH_FILE),
    pgbouncer("auth failed", Outcome::AuthFailed, AUTH_FILE),
    pgbouncer("Auth failed", Outcome::AuthFailed, AUTH_FILE),
    pgbouncer("certificate authentication failed", Outcome::AuthFailed, "client_tls_* and the client's certificate"),
    pgbouncer("login rejected", Outcome::HbaRejected, "auth_type / auth_hba_file"),
    pgbouncer("no authentication method is found", Outcome::HbaRejected, "auth_hba_file"),
    pgbouncer("SSL required", Outcome::HbaRejected, "client_tls_sslmode"),
    pgbouncer("pgbouncer cannot connect to server", Outcome::ServerUnavailable, "[databases] host and port"),
    pgbouncer("server login has been failing", Outcome::ServerUnavailable, "server_login_retry"),
    pgbouncer("server login failed", Outcome::ServerUnavailable, SERVER_LOGIN),
    pgbouncer("client_login_timeout (server down)", Outcome::ServerUnavailable, "[databases] host and port"),
    // The client itself did not finish its login in time.
    pgbouncer("client_login_timeout", Outcome::AuthTimeout, "client_login_timeout"),
    pgbouncer("database does not allow connections", Outcome::ServerUnavailable, "ENABLE on the admin console"),
    relayed("database \"", "is disabled", Outcome::ServerUnavailable, "ENABLE on the admin console"),
    pgbouncer("authentication database", Outcome::ServerUnavailable, "auth_dbname (ENABLE on the admin console)"),
    pgbouncer("pooler is shutting down", Outcome::ServerUnavailable, "the pooler's restart"),
    pgbouncer("server shutting down", Outcome::ServerUnavailable, "the pooler's SHUTDOWN"),
    pgbouncer("database removed", Outcome::ServerUnavailable, "[databases] (a RELOAD or KILL)"),
    pgbouncer("unsupported startup parameter", Outcome::ProtocolError, "ignore_startup_parameters"),
    pgbouncer("Unsupported startup parameter", Outcome::ProtocolError, "ignore_startup_parameters"),
    pgbouncer("unsupported options startup parameter", Outcome::ProtocolError, "ignore_startup_parameters"),
    pgbouncer("bouncer config error", Outcome::OtherError, "the PgBouncer log"),
    pgbouncer("server conn crashed?", Outcome::Terminated, "the server log"),
    pgbouncer("query_timeout", Outcome::Terminated, "query_timeout"),
    pgbouncer("query timeout", Outcome::Terminated, "query_timeout"),
    pgbouncer("transaction timeout", Outcome::Terminated, "transaction_timeout"),
    pgbouncer("client_idle_timeout", Outcome::Terminated, "client_idle_timeout"),
    pgbouncer("idle transaction timeout", Outcome::Terminated, "idle_transaction_timeout"),
    pgbouncer("suspend_timeout", Outcome::Terminated, "suspend_timeout"),
    pgbouncer("admin forced disconnect", Outcome::Terminated, "KILL_CLIENT on the admin console"),
    pgpool("Sorry, too many clients already", Outcome::TooManyClients, "num_init_children, reserved_connections"),
    pgpool("connection cache is full", Outcome::TooManyClients, "max_pool"),
    pgpool("pgpool is not accepting any new connections", Outcome::ServerUnavailable, PGPOOL_BACKENDS),
    pgpool("all backend nodes are down", Outcome::ServerUnavailable, PGPOOL_BACKENDS),
    pgpool("failed to create a backend", Outcome::ServerUnavailable, PGPOOL_BACKENDS),
    pgpool("unable to connect to backend", Outcome::ServerUnavailable, PGPOOL_BACKENDS),
    pgpool("failed to authenticate with backend", Outcome::ServerUnavailable, "pool_passwd"),
    // The backend refused the password pgpool forwarded from pool_passwd.
    pgpool("password authentication failed for user", Outcome::ServerUnavailable, "pool_passwd"),
    // PostgreSQL refused before any authentication; pgpool loses its words.
    pgpool(
        "backend authentication failed",
        Outcome::ServerUnavailable,
        "the PostgreSQL log (pgpool drops its message)",
    ),
    pgpool(
        "authentication failed, backend node replied",
        Outcome::ServerUnavailable,
        "the DETAIL (the backend's error)",
    ),
    pgpool("client authentication failed", Outcome::AuthFailed, "pool_hba.conf / pool_passwd (the DETAIL says which)"),
    pgpool("md5 authentication failed", Outcome::AuthFailed, "pool_passwd"),
    pgpool("SCRAM authentication failed", Outcome::AuthFailed, "pool_passwd"),
    pgpool("clear text authentication failed", Outcome::AuthFailed, "pool_passwd"),
    pgpool("authentication failed", Outcome::AuthFailed, "pool_passwd"),
];

/// Who wrote an error, from its fields: PostgreSQL sends the routine (R)
/// and, since 9.6, the non-localized severity (V) with every error;
/// Pgpool-II sends its own source file (F) but neither; PgBouncer writes
/// only severity, SQLSTATE and message.
fn written_by(error: &ErrorFields) -> Option<Pooler> {
    if !not_from_postgres(error) {
        return None;
    }
    Some(if error.file.is_some() { Pooler::Pgpool } else { Pooler::Pgbouncer })
}

fn known(error: &ErrorFields) -> Option<&'static Known> {
    let message = error.message.as_deref()?;
    let writer = written_by(error)?;
    KNOWN
        .iter()
        .filter(|k| k.pooler == writer)
        .find(|k| message.strip_prefix(k.begins).is_some_and(|rest| k.contains.is_empty() || rest.contains(k.contains)))
}

/// SQLSTATEs that say no more than "something went wrong": the pooler's
/// text decides. PgBouncer's is 08P01, Pgpool-II's XX000 (08S01 when all
/// backends are down).
fn says_nothing_more(code: &str) -> bool {
    matches!(code, "" | "08P01" | "08S01" | "XX000")
}

/// What a pooler's error means: the pooler that answered and, where the
/// SQLSTATE (`by_sqlstate`, already classified) says nothing more, the
/// outcome its text gives. `None` when no known pooler text matches.
pub fn classify(error: &ErrorFields, by_sqlstate: Outcome) -> Option<(PoolerAnswer, Outcome)> {
    let k = known(error)?;
    let outcome = if says_nothing_more(error.code()) || k.relayed { k.outcome } else { by_sqlstate };
    Some((PoolerAnswer { name: k.pooler, setting: k.setting }, outcome))
}

/// PostgreSQL sends the routine and V with every error; poolers and
/// proxies that write their own do not.
pub fn not_from_postgres(error: &ErrorFields) -> bool {
    error.routine.is_none() && error.severity_nonlocalized.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error as PgBouncer writes it: severity, SQLSTATE, message.
    fn error(code: &str, message: &str) -> ErrorFields {
        ErrorFields { code: Some(code.to_owned()), message: Some(message.to_owned()), ..ErrorFields::default() }
    }

    /// As Pgpool-II writes it: with its source file and line, no routine.
    fn pgpool_error(code: &str, message: &str) -> ErrorFields {
        ErrorFields { file: Some("pool_auth.c".into()), line: Some("550".into()), ..error(code, message) }
    }

    /// As PostgreSQL writes it: with the routine.
    fn postgres_error(code: &str, message: &str) -> ErrorFields {
        ErrorFields { file: Some("auth.c".into()), routine: Some("auth_failed".into()), ..error(code, message) }
    }

    /// Each text as PgBouncer sends it (SQLSTATE 08P01 in every release;
    /// relayed PostgreSQL texts too before 1.20), and what it stands for.
    #[test]
    fn pgbouncer_texts_under_08p01() {
        let cases = [
            ("no more connections allowed (max_client_conn)", Outcome::TooManyClients, "max_client_conn"),
            (
                "client connections exceeded (max_db_client_connections)",
                Outcome::TooManyClients,
                "max_db_client_connections",
            ),
            (
                "client connections exceeded (max_user_client_connections)",
                Outcome::TooManyClients,
                "max_user_client_connections",
            ),
            ("query_wait_timeout", Outcome::TooManyClients, POOL_SIZE),
            ("no such database: appdb2", Outcome::DatabaseMissing, "[databases]"),
            ("No such database: appdb2", Outcome::DatabaseMissing, "[databases]"),
            ("no such user: ghost", Outcome::AuthFailed, AUTH_FILE),
            ("password authentication failed", Outcome::AuthFailed, AUTH_FILE),
            ("SASL authentication failed", Outcome::AuthFailed, AUTH_FILE),
            ("\"trust\" authentication failed", Outcome::AuthFailed, AUTH_FILE),
            ("login rejected", Outcome::HbaRejected, "auth_type / auth_hba_file"),
            ("pgbouncer cannot connect to server", Outcome::ServerUnavailable, "[databases] host and port"),
            (
                "server login has been failing, try again later (server_login_retry)",
                Outcome::ServerUnavailable,
                "server_login_retry",
            ),
            (
                "server login has been failing, cached error: connect failed (server_login_retry)",
                Outcome::ServerUnavailable,
                "server_login_retry",
            ),
            ("server login failed: wrong password type", Outcome::ServerUnavailable, SERVER_LOGIN),
            ("client_login_timeout (server down)", Outcome::ServerUnavailable, "[databases] host and port"),
            ("client_login_timeout", Outcome::AuthTimeout, "client_login_timeout"),
            ("database does not allow connections: appdb", Outcome::ServerUnavailable, "ENABLE on the admin console"),
            ("database \"appdb\" is disabled", Outcome::ServerUnavailable, "ENABLE on the admin console"),
            ("pooler is shutting down", Outcome::ServerUnavailable, "the pooler's restart"),
            ("unsupported startup parameter: options", Outcome::ProtocolError, "ignore_startup_parameters"),
            ("server conn crashed?", Outcome::Terminated, "the server log"),
            ("client_idle_timeout", Outcome::Terminated, "client_idle_timeout"),
            // PostgreSQL refusing PgBouncer's own login, relayed.
            ("password authentication failed for user \"alice\"", Outcome::ServerUnavailable, SERVER_LOGIN),
            ("database \"realdb\" does not exist", Outcome::DatabaseMissing, "[databases] dbname="),
            (
                "sorry, too many clients already",
                Outcome::TooManyClients,
                "PostgreSQL's max_connections against the pools (default_pool_size, max_db_connections)",
            ),
        ];
        for (text, outcome, setting) in cases {
            let got = classify(&error("08P01", text), Outcome::ProtocolError);
            let want = (PoolerAnswer { name: Pooler::Pgbouncer, setting }, outcome);
            assert_eq!(got, Some(want), "{text}");
        }
    }

    /// Observed on Pgpool-II 4.3.5 (and its sources): XX000 unless named.
    #[test]
    fn pgpool_texts() {
        let cases = [
            ("53300", "Sorry, too many clients already", Outcome::TooManyClients, Outcome::TooManyClients),
            (
                "XX000",
                "all backend nodes are down, pgpool requires at least one valid node",
                Outcome::OtherError,
                Outcome::ServerUnavailable,
            ),
            (
                "08S01",
                "pgpool is not accepting any new connections",
                Outcome::ProtocolError,
                Outcome::ServerUnavailable,
            ),
            ("XX000", "failed to create a backend connection", Outcome::OtherError, Outcome::ServerUnavailable),
            (
                "XX000",
                "failed to authenticate with backend using SCRAM",
                Outcome::OtherError,
                Outcome::ServerUnavailable,
            ),
            ("XX000", "backend authentication failed", Outcome::OtherError, Outcome::ServerUnavailable),
            ("XX000", "client authentication failed", Outcome::OtherError, Outcome::AuthFailed),
            ("XX000", "SCRAM authentication failed", Outcome::OtherError, Outcome::AuthFailed),
            ("XX000", "authentication failed", Outcome::OtherError, Outcome::AuthFailed),
            (
                "XX000",
                "password authentication failed for user \"alice\"",
                Outcome::OtherError,
                Outcome::ServerUnavailable,
            ),
        ];
        for (code, text, by_sqlstate, want) in cases {
            let (answer, outcome) = classify(&pgpool_error(code, text), by_sqlstate).expect(text);
            assert_eq!((answer.name, outcome), (Pooler::Pgpool, want), "{code} {text}");
        }
    }

    /// A SQLSTATE that says something decides over a pooler's own text;
    /// a relayed PostgreSQL text (1.20 keeps its SQLSTATE) says more than a
    /// 28000 that PgBouncer sent at a stage of the client's login.
    #[test]
    fn a_meaningful_sqlstate_decides() {
        let (answer, outcome) =
            classify(&error("28P01", "password authentication failed"), Outcome::AuthFailed).unwrap();
        assert_eq!((answer.name, outcome), (Pooler::Pgbouncer, Outcome::AuthFailed));
        let (_, outcome) =
            classify(&error("53300", "no more connections allowed (max_client_conn)"), Outcome::TooManyClients)
                .unwrap();
        assert_eq!(outcome, Outcome::TooManyClients);
        let relayed = error(
            "28000",
            "no pg_hba.conf entry for host \"192.0.2.1\", user \"app\", database \"app\", no encryption",
        );
        let (answer, outcome) = classify(&relayed, Outcome::RoleMissing).unwrap();
        assert_eq!(
            (answer.setting, outcome),
            ("PostgreSQL's pg_hba.conf, for the pooler's address", Outcome::HbaRejected)
        );
    }

    /// Unknown texts are no pooler's: the SQLSTATE's outcome stands (08P01
    /// stays protocol_error).
    #[test]
    fn unknown_texts_match_nothing() {
        for text in
            ["invalid startup packet layout: expected terminator as last byte", "no such thing", "", "query_wai"]
        {
            assert_eq!(classify(&error("08P01", text), Outcome::ProtocolError), None, "{text}");
        }
        assert_eq!(classify(&ErrorFields::default(), Outcome::OtherError), None);
        assert_eq!(classify(&error("08P01", "nö"), Outcome::ProtocolError), None);
    }

    /// PostgreSQL's own messages, with the routine it always sends, are not
    /// taken for a pooler's, even where the words are the same; and one
    /// pooler's words are not taken for the other's.
    #[test]
    fn postgres_own_messages_are_not_a_poolers() {
        for (code, text) in [
            ("28P01", "password authentication failed for user \"app\""),
            ("53300", "sorry, too many clients already"),
            ("3D000", "database \"shop\" does not exist"),
        ] {
            assert_eq!(classify(&postgres_error(code, text), Outcome::OtherError), None, "{text}");
        }
        assert_eq!(classify(&pgpool_error("08P01", "query_wait_timeout"), Outcome::ProtocolError), None);
        assert_eq!(classify(&error("XX000", "all backend nodes are down"), Outcome::OtherError), None);
    }

    #[test]
    fn postgres_errors_carry_the_routine_and_v() {
        assert!(not_from_postgres(&error("08P01", "invalid startup packet layout")));
        assert!(not_from_postgres(&pgpool_error("XX000", "unable to read message kind")));
        assert!(!not_from_postgres(&postgres_error("08P01", "invalid startup packet layout")));
        let with_v = ErrorFields {
            severity_nonlocalized: Some("FATAL".into()),
            ..error("28P01", "password authentication failed for user \"app\"")
        };
        assert!(!not_from_postgres(&with_v));
        assert_eq!(classify(&with_v, Outcome::AuthFailed), None);
    }
}
