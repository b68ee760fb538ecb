//! What a login error means: by SQLSTATE and by where in the login it came,
//! never by the English message text (a server answering in another
//! language classifies the same; the message is kept as evidence).

use super::message::ErrorFields;
use crate::outcome::Outcome;

/// How far the login had come when the server sent its error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStage {
    /// No authentication request yet: pg_hba.conf matching, connection limits, start-up checks.
    BeforeAuthentication,
    /// The server had asked for credentials.
    DuringAuthentication,
    /// AuthenticationOk had been sent: role and database checks come here.
    AfterAuthenticationOk,
}

pub fn classify_login_error(error: &ErrorFields, stage: LoginStage) -> (Outcome, Option<&'static str>) {
    let code = error.code();
    match (code, stage) {
        ("28P01", LoginStage::DuringAuthentication) => (
            Outcome::AuthFailed,
            Some(
                "under password authentication PostgreSQL answers a role that does not exist exactly like a \
                 wrong password (28P01, after a real or mock challenge); only the server log tells them apart",
            ),
        ),
        ("28P01", _) => (Outcome::AuthFailed, None),
        ("28000", LoginStage::BeforeAuthentication) => (
            Outcome::HbaRejected,
            Some(
                "28000 before any authentication request: no pg_hba.conf line matched this host, user, database \
                 and SSL state, or a `reject` line did; an ident failure looks the same on the wire",
            ),
        ),
        ("28000", LoginStage::DuringAuthentication) => (
            Outcome::AuthFailed,
            Some("28000 after credentials were asked for: the authentication method (ident, LDAP, RADIUS, PAM, GSS) failed"),
        ),
        ("28000", LoginStage::AfterAuthenticationOk) => (
            Outcome::RoleMissing,
            Some(
                "28000 after authentication succeeded: the role does not exist, or it may not log in \
                 (NOLOGIN); the message says which",
            ),
        ),
        ("3D000", _) => (Outcome::DatabaseMissing, None),
        ("53300", _) => (Outcome::TooManyClients, None),
        ("57P03" | "57P01" | "57P02", _) => (Outcome::ServerUnavailable, None),
        ("0A000", _) => (Outcome::ProtocolError, None),
        (c, _) if c.starts_with("08") => (Outcome::ProtocolError, None),
        _ => (Outcome::OtherError, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str) -> ErrorFields {
        ErrorFields { code: Some(code.to_owned()), ..ErrorFields::default() }
    }

    #[test]
    fn by_sqlstate_and_stage() {
        use LoginStage::*;
        let cases = [
            ("28P01", DuringAuthentication, Outcome::AuthFailed),
            ("28000", BeforeAuthentication, Outcome::HbaRejected),
            ("28000", DuringAuthentication, Outcome::AuthFailed),
            ("28000", AfterAuthenticationOk, Outcome::RoleMissing),
            ("3D000", AfterAuthenticationOk, Outcome::DatabaseMissing),
            ("53300", BeforeAuthentication, Outcome::TooManyClients),
            ("57P03", BeforeAuthentication, Outcome::ServerUnavailable),
            ("08P01", BeforeAuthentication, Outcome::ProtocolError),
            ("0A000", BeforeAuthentication, Outcome::ProtocolError),
            ("XX000", AfterAuthenticationOk, Outcome::OtherError),
            ("", BeforeAuthentication, Outcome::OtherError),
        ];
        for (code, stage, want) in cases {
            assert_eq!(classify_login_error(&error(code), stage).0, want, "{code} {stage:?}");
        }
    }

    /// The message text plays no part: a French server classifies the same.
    #[test]
    fn message_language_does_not_matter() {
        let mut fr = error("28P01");
        fr.message = Some("authentification par mot de passe échouée pour l'utilisateur « app »".into());
        assert_eq!(classify_login_error(&fr, LoginStage::DuringAuthentication).0, Outcome::AuthFailed);
    }
}
