//! Poolers on the wire, driven with built conversations: PgBouncer's and
//! Pgpool-II's own errors (written as each writes them), and a pooler that
//! logs a client in before it has a server for it.

use pgreach::outcome::Outcome;

use crate::postgres::{error, logged_in, ssl_request, startup, typed, Conv};

/// An ErrorResponse as PgBouncer writes it: severity, SQLSTATE, message only.
fn pgbouncer_error(severity: &str, message: &str) -> Vec<u8> {
    typed(b'E', format!("S{severity}\0C08P01\0M{message}\0\0").as_bytes())
}

/// PgBouncer's own errors carry 08P01 and no source fields: its text decides.
#[test]
fn pgbouncer_answers_by_its_text() {
    let refused = |message: &str| {
        Conv::new()
            .client(&startup(196_608, "app", "appdb2"))
            .server(&pgbouncer_error("FATAL", message))
            .close_by_server()
            .finish()
    };
    let a = refused("no such database: appdb2");
    assert_eq!(a.outcome, Outcome::DatabaseMissing);
    let pooler = a.pg.unwrap().pooler.unwrap();
    assert_eq!((pooler.name.to_string(), pooler.setting), ("PgBouncer".to_owned(), "[databases]"));
    assert_eq!(refused("no more connections allowed (max_client_conn)").outcome, Outcome::TooManyClients);
    let a = refused("an 08P01 text nobody knows");
    assert_eq!(a.outcome, Outcome::ProtocolError);
    let pg = a.pg.unwrap();
    assert_eq!(pg.pooler, None);
    assert!(pg.ambiguity.unwrap().contains("pooler or proxy"));
    // The same words with PostgreSQL's own fields (V) are not PgBouncer's.
    let a = Conv::new()
        .client(&startup(196_608, "app", "appdb2"))
        .server(&error("FATAL", "08P01", "no such database: appdb2"))
        .close_by_server()
        .finish();
    assert_eq!((a.outcome, a.pg.unwrap().pooler), (Outcome::ProtocolError, None));
}

/// A client that logged in to PgBouncer and never got a server connection
/// did not get a working session; one that ran queries first was terminated.
#[test]
fn query_wait_timeout_before_any_query_is_a_failure() {
    let a = Conv::new()
        .client(&startup(196_608, "app", "shop"))
        .server(&logged_in())
        .client(&typed(b'Q', b"select 1\0"))
        .server(&pgbouncer_error("ERROR", "query_wait_timeout"))
        .close_by_server()
        .finish();
    assert_eq!(a.outcome, Outcome::TooManyClients);
    assert!(a.pg.unwrap().pooler.unwrap().setting.contains("query_wait_timeout"));
    let a = Conv::new()
        .client(&startup(196_608, "app", "shop"))
        .server(&logged_in())
        .client(&typed(b'Q', b"select 1\0"))
        .server(&[typed(b'C', b"SELECT 1\0"), typed(b'Z', b"I")].concat())
        .client(&typed(b'Q', b"select 1\0"))
        .server(&pgbouncer_error("FATAL", "query_wait_timeout"))
        .close_by_server()
        .finish();
    assert_eq!(a.outcome, Outcome::Terminated);
}

/// Pgpool-II turns a client away as it accepts the connection, before the
/// client's SSLRequest is read: an error first is a refusal, not another
/// protocol; the SSLRequest that crosses it changes nothing.
#[test]
fn pgpool_refuses_before_the_client_speaks() {
    let refusal = typed(b'E', b"SFATAL\0C53300\0MSorry, too many clients already\0Fprotocol/child.c\0L367\0\0");
    let a = Conv::new().server(&refusal).client(&ssl_request()).close_by_server().finish();
    assert_eq!(a.outcome, Outcome::TooManyClients);
    let pooler = a.pg.unwrap().pooler.unwrap();
    assert_eq!(
        (pooler.name.to_string(), pooler.setting),
        ("Pgpool-II".to_owned(), "num_init_children, reserved_connections")
    );
    // Bytes that do not frame as a message are still another protocol's.
    let a = Conv::new().server(b"E\xff\xff\xff\xffnot postgres").close_by_client().finish();
    assert_eq!(a.outcome, Outcome::NotPostgres);
}
