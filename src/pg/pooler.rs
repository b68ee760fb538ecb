//! Connection poolers that answer in PostgreSQL's place (PgBouncer,
//! Pgpool-II): their own error texts, what each means, and the pooler
//! setting to look at. PgBouncer sends SQLSTATE 08P01 for nearly all of its
//! errors (newer releases give some their own code), so a SQLSTATE decides
//! when it says something; the pooler's text only where it does not.

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

/// One known pooler message: how it begins and what it means.
struct Known {
    pooler: Pooler,
    /// The start of the message, exactly (PostgreSQL's "sorry, too many
    /// clients already" differs from Pgpool-II's only in its first letter).
    begins: &'static str,
    outcome: Outcome,
    setting: &'static str,
}

const fn pgbouncer(begins: &'static str, outcome: Outcome, setting: &'static str) -> Known {
    Known { pooler: Pooler::Pgbouncer, begins, outcome, setting }
}

const fn pgpool(begins: &'static str, outcome: Outcome, setting: &'static str) -> Known {
    Known { pooler: Pooler::Pgpool, begins, outcome, setting }
}

/// PgBouncer's texts are those of 1.18 (Debian bookworm) and later releases;
/// `terminated` entries end sessions that had logged in and run queries.
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
    pgbouncer(
        "query_wait_timeout",
        Outcome::TooManyClients,
        "query_wait_timeout, default_pool_size, max_db_connections",
    ),
    pgbouncer("no such database", Outcome::DatabaseMissing, "[databases]"),
    pgbouncer("no such user", Outcome::AuthFailed, "auth_file / auth_query"),
    pgbouncer("password authentication failed", Outcome::AuthFailed, "auth_file / auth_query"),
    pgbouncer("SASL authentication failed", Outcome::AuthFailed, "auth_file / auth_query"),
    pgbouncer("pgbouncer cannot connect to server", Outcome::ServerUnavailable, "[databases] host and port"),
    pgbouncer("server login has been failing", Outcome::ServerUnavailable, "server_login_retry"),
    pgbouncer("client_login_timeout (server down)", Outcome::ServerUnavailable, "[databases] host and port"),
    // The client itself did not finish its login in time.
    pgbouncer("client_login_timeout", Outcome::AuthTimeout, "client_login_timeout"),
    pgbouncer(
        "database does not allow connections",
        Outcome::ServerUnavailable,
        "ENABLE / RESUME on the admin console",
    ),
    pgbouncer("pooler is shutting down", Outcome::ServerUnavailable, "the pooler's restart"),
    pgbouncer("unsupported startup parameter", Outcome::ProtocolError, "ignore_startup_parameters"),
    pgbouncer("server conn crashed?", Outcome::Terminated, "the server log"),
    pgbouncer("query_timeout", Outcome::Terminated, "query_timeout"),
    pgbouncer("query timeout", Outcome::Terminated, "query_timeout"),
    pgbouncer("client_idle_timeout", Outcome::Terminated, "client_idle_timeout"),
    pgbouncer("idle transaction timeout", Outcome::Terminated, "idle_transaction_timeout"),
    pgpool("Sorry, too many clients already", Outcome::TooManyClients, "num_init_children, reserved_connections"),
    pgpool("all backend nodes are down", Outcome::ServerUnavailable, "backend_hostname / health_check_*"),
    pgpool("failed to authenticate with backend", Outcome::ServerUnavailable, "pool_passwd"),
    pgpool("pool_passwd file does not contain an entry", Outcome::AuthFailed, "pool_passwd"),
    pgpool("client authentication failed", Outcome::AuthFailed, "pool_hba.conf / pool_passwd"),
];

fn known(error: &ErrorFields) -> Option<&'static Known> {
    let message = error.message.as_deref()?;
    // PgBouncer writes only severity, SQLSTATE and message; an error with
    // PostgreSQL's other fields is PostgreSQL's, even when PgBouncer passes
    // it on ("password authentication failed for user …" is both's).
    let pgbouncer_may_have_sent = not_from_postgres(error);
    KNOWN
        .iter()
        .filter(|k| k.pooler != Pooler::Pgbouncer || pgbouncer_may_have_sent)
        .find(|k| message.starts_with(k.begins))
}

/// SQLSTATEs that say no more than "something went wrong": the pooler's
/// text decides. PgBouncer's default is 08P01; Pgpool-II's XX000.
fn says_nothing_more(code: &str) -> bool {
    matches!(code, "" | "08P01" | "XX000")
}

/// What a pooler's error means: the pooler that answered and, where the
/// SQLSTATE (`by_sqlstate`, already classified) says nothing more, the
/// outcome its text gives. `None` when no known pooler text matches.
pub fn classify(error: &ErrorFields, by_sqlstate: Outcome) -> Option<(PoolerAnswer, Outcome)> {
    let k = known(error)?;
    let outcome = if says_nothing_more(error.code()) { k.outcome } else { by_sqlstate };
    Some((PoolerAnswer { name: k.pooler, setting: k.setting }, outcome))
}

/// PostgreSQL sends the source file, line and routine with every error;
/// poolers and proxies that write their own do not.
pub fn not_from_postgres(error: &ErrorFields) -> bool {
    error.file.is_none() && error.line.is_none() && error.routine.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, message: &str) -> ErrorFields {
        ErrorFields { code: Some(code.to_owned()), message: Some(message.to_owned()), ..ErrorFields::default() }
    }

    /// Each text, as PgBouncer 1.18 sends it (SQLSTATE 08P01), and the
    /// outcome and setting it stands for.
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
            (
                "query_wait_timeout",
                Outcome::TooManyClients,
                "query_wait_timeout, default_pool_size, max_db_connections",
            ),
            ("no such database: appdb2", Outcome::DatabaseMissing, "[databases]"),
            ("no such user: ghost", Outcome::AuthFailed, "auth_file / auth_query"),
            ("password authentication failed", Outcome::AuthFailed, "auth_file / auth_query"),
            ("SASL authentication failed", Outcome::AuthFailed, "auth_file / auth_query"),
            ("pgbouncer cannot connect to server", Outcome::ServerUnavailable, "[databases] host and port"),
            (
                "server login has been failing, try again later (server_login_retry)",
                Outcome::ServerUnavailable,
                "server_login_retry",
            ),
            ("client_login_timeout (server down)", Outcome::ServerUnavailable, "[databases] host and port"),
            ("client_login_timeout", Outcome::AuthTimeout, "client_login_timeout"),
            (
                "database does not allow connections: appdb",
                Outcome::ServerUnavailable,
                "ENABLE / RESUME on the admin console",
            ),
            ("pooler is shutting down", Outcome::ServerUnavailable, "the pooler's restart"),
            ("unsupported startup parameter: extra_float_digits", Outcome::ProtocolError, "ignore_startup_parameters"),
            ("server conn crashed?", Outcome::Terminated, "the server log"),
            ("client_idle_timeout", Outcome::Terminated, "client_idle_timeout"),
        ];
        for (text, outcome, setting) in cases {
            let got = classify(&error("08P01", text), Outcome::ProtocolError);
            let want = (PoolerAnswer { name: Pooler::Pgbouncer, setting }, outcome);
            assert_eq!(got, Some(want), "{text}");
        }
    }

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
                "XX000",
                "failed to authenticate with backend using SCRAM",
                Outcome::OtherError,
                Outcome::ServerUnavailable,
            ),
            ("28000", "client authentication failed", Outcome::HbaRejected, Outcome::HbaRejected),
        ];
        for (code, text, by_sqlstate, want) in cases {
            let (answer, outcome) = classify(&error(code, text), by_sqlstate).expect(text);
            assert_eq!((answer.name, outcome), (Pooler::Pgpool, want), "{code} {text}");
        }
    }

    /// A SQLSTATE that says something decides, even over a pooler's text
    /// (newer PgBouncer releases send 28P01, 3D000, 53300 for some errors).
    #[test]
    fn a_meaningful_sqlstate_decides() {
        let (answer, outcome) =
            classify(&error("28P01", "password authentication failed"), Outcome::AuthFailed).unwrap();
        assert_eq!((answer.name, outcome), (Pooler::Pgbouncer, Outcome::AuthFailed));
        let (_, outcome) =
            classify(&error("53300", "no more connections allowed (max_client_conn)"), Outcome::TooManyClients)
                .unwrap();
        assert_eq!(outcome, Outcome::TooManyClients);
        let (_, outcome) = classify(&error("3D000", "no such database: x"), Outcome::DatabaseMissing).unwrap();
        assert_eq!(outcome, Outcome::DatabaseMissing);
    }

    /// Unknown texts are no pooler's: the SQLSTATE's outcome stands (08P01
    /// stays protocol_error), and PostgreSQL's own 08P01 texts match nothing.
    #[test]
    fn unknown_texts_match_nothing() {
        for text in
            ["invalid startup packet layout: expected terminator as last byte", "no such thing", "", "query_wai"]
        {
            assert_eq!(classify(&error("08P01", text), Outcome::ProtocolError), None, "{text}");
        }
        assert_eq!(classify(&ErrorFields::default(), Outcome::OtherError), None);
    }

    /// PostgreSQL's own messages, with the fields it always sends, are not
    /// taken for a pooler's, even where the words are the same.
    #[test]
    fn postgres_own_messages_are_not_a_poolers() {
        let mut e = error("28P01", "password authentication failed for user \"app\"");
        assert!(classify(&e, Outcome::AuthFailed).is_some(), "as PgBouncer would send it");
        e.file = Some("auth.c".into());
        e.routine = Some("auth_failed".into());
        assert_eq!(classify(&e, Outcome::AuthFailed), None);
        let e = error("53300", "sorry, too many clients already");
        assert_eq!(classify(&e, Outcome::TooManyClients), None, "PostgreSQL's spelling, not Pgpool-II's");
        assert_eq!(classify(&error("08P01", "nö"), Outcome::ProtocolError), None);
    }

    #[test]
    fn postgres_errors_carry_file_line_routine() {
        let mut e = error("08P01", "invalid startup packet layout");
        assert!(not_from_postgres(&e));
        e.routine = Some("ProcessStartupPacket".into());
        assert!(!not_from_postgres(&e));
    }
}
