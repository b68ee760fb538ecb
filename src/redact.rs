//! Stable pseudonyms for reports shared outside the team: addresses, user,
//! database and application names are replaced, the same original by the
//! same pseudonym within one run, in the fields that carry them and in the
//! server's own messages that quote them.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::pg::message::ErrorFields;
use crate::record::AttemptRecord;

/// Pseudonyms remembered per kind; beyond this, a keyed hash gives them, so
/// a flood of distinct addresses cannot grow memory without bound.
const MAX_REMEMBERED: usize = 1 << 20;
/// 198.18.0.0/15 (RFC 2544, benchmarking): never a real client's address.
const V4_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
const V4_SIZE: u32 = 1 << 17;
/// 2001:db8:ffff::/48, inside the documentation prefix.
const V6_BASE: u128 = 0x2001_0db8_ffff_u128 << 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NameKind {
    User,
    Database,
    Application,
}

impl NameKind {
    fn prefix(self) -> &'static str {
        match self {
            NameKind::User => "user",
            NameKind::Database => "db",
            NameKind::Application => "app",
        }
    }
}

pub struct Redactor {
    addresses: HashMap<IpAddr, IpAddr>,
    names: HashMap<(NameKind, String), String>,
    next_v4: u32,
    next_v6: u128,
    next_name: HashMap<NameKind, u64>,
    /// Keys the hash used once the maps are full; random per run.
    overflow_key: RandomState,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor {
            addresses: HashMap::new(),
            names: HashMap::new(),
            next_v4: 1,
            next_v6: 1,
            next_name: HashMap::new(),
            overflow_key: RandomState::new(),
        }
    }
}

/// What replaces a TLS host name under --redact.
const REDACTED: &str = "redacted";

impl Redactor {
    /// Replaces every identifying value of one attempt.
    pub fn redact(&mut self, a: &mut AttemptRecord) {
        // (original, pseudonym) pairs, to scrub from the server's messages.
        let mut seen: Vec<(String, String)> = Vec::new();
        for socket in [&mut a.client, &mut a.server] {
            let original = socket.ip();
            let pseudonym = self.address(original);
            *socket = SocketAddr::new(pseudonym, socket.port());
            seen.push((original.to_string(), pseudonym.to_string()));
        }
        if let Some(answer) = &mut a.answer {
            let original = answer.from;
            answer.from = self.address(original);
            seen.push((original.to_string(), answer.from.to_string()));
        }
        if let Some(leg) = &mut a.server_leg {
            let original = leg.server.ip();
            leg.server = SocketAddr::new(self.address(original), leg.server.port());
            seen.push((original.to_string(), leg.server.ip().to_string()));
        }
        // The pairs other capture points (or NAT) saw name hosts too.
        if let Some(path) = a.path.as_deref_mut() {
            let sightings = path.seen_at.iter_mut().map(|s| (&mut s.client, &mut s.server));
            let pairs = path.nat.iter_mut().flat_map(|n| n.pairs.iter_mut()).map(|p| (&mut p.client, &mut p.server));
            for socket in sightings.chain(pairs).flat_map(|(c, s)| [c, s]) {
                let original = socket.ip();
                let pseudonym = self.address(original);
                *socket = SocketAddr::new(pseudonym, socket.port());
                seen.push((original.to_string(), pseudonym.to_string()));
            }
        }
        let Some(pg) = &mut a.pg else { return };
        let startup = &mut pg.startup;
        for (kind, slot) in [
            (NameKind::User, &mut startup.user),
            (NameKind::Database, &mut startup.database),
            (NameKind::Application, &mut startup.application_name),
        ] {
            if let Some(original) = slot.take() {
                let pseudonym = self.name(kind, &original);
                seen.push((original, pseudonym.clone()));
                *slot = Some(pseudonym);
            }
        }
        for fields in pg.error.as_deref_mut().into_iter().chain(pg.first_notices.iter_mut()) {
            scrub_error(fields, &mut seen);
        }
        // Host names from the TLS handshake (SNI, the certificate's subject) name the server.
        if let Some(tls) = pg.tls.as_deref_mut() {
            if tls.hello.server_name.is_some() {
                tls.hello.server_name = Some(REDACTED.to_owned());
            }
            if let Some(cert) = &mut tls.hello.certificate {
                cert.subject = REDACTED.to_owned();
            }
        }
    }

    fn address(&mut self, original: IpAddr) -> IpAddr {
        if let Some(&p) = self.addresses.get(&original) {
            return p;
        }
        let pseudonym = match original {
            IpAddr::V4(_) if self.next_v4 < V4_SIZE - 1 && self.addresses.len() < MAX_REMEMBERED => {
                self.next_v4 += 1;
                IpAddr::V4(Ipv4Addr::from(V4_BASE + self.next_v4 - 1))
            }
            IpAddr::V6(_) if self.addresses.len() < MAX_REMEMBERED => {
                self.next_v6 += 1;
                IpAddr::V6(Ipv6Addr::from(V6_BASE + self.next_v6 - 1))
            }
            // Hashed: stable within the run; in the IPv4 block two originals
            // may then share a pseudonym, which only hides more.
            IpAddr::V4(_) => {
                let h = self.overflow_key.hash_one(original) as u32;
                return IpAddr::V4(Ipv4Addr::from(V4_BASE + 1 + h % (V4_SIZE - 2)));
            }
            IpAddr::V6(_) => {
                let h = u128::from(self.overflow_key.hash_one(original)) | 1 << 64;
                return IpAddr::V6(Ipv6Addr::from(V6_BASE + h));
            }
        };
        self.addresses.insert(original, pseudonym);
        pseudonym
    }

    fn name(&mut self, kind: NameKind, original: &str) -> String {
        if let Some(p) = self.names.get(&(kind, original.to_owned())) {
            return p.clone();
        }
        if self.names.len() >= MAX_REMEMBERED {
            return format!("{}-h{:x}", kind.prefix(), self.overflow_key.hash_one((kind, original)));
        }
        let n = self.next_name.entry(kind).or_default();
        *n += 1;
        let pseudonym = format!("{}-{n}", kind.prefix());
        self.names.insert((kind, original.to_owned()), pseudonym.clone());
        pseudonym
    }
}

/// The server quotes names and addresses in its messages ("no pg_hba.conf
/// entry for host \"192.0.2.7\", user \"app\"…", in any language): replace
/// every whole-word occurrence of the attempt's originals.
fn scrub_error(error: &mut ErrorFields, seen: &mut [(String, String)]) {
    // Longest first, so that one original inside another is not half-replaced.
    seen.sort_by_key(|(original, _)| std::cmp::Reverse(original.len()));
    for field in [
        &mut error.message,
        &mut error.detail,
        &mut error.hint,
        &mut error.context,
        &mut error.internal_query,
        &mut error.schema,
        &mut error.table,
        &mut error.column,
        &mut error.constraint,
    ]
    .into_iter()
    .flatten()
    {
        for (original, pseudonym) in seen.iter() {
            *field = replace_words(field, original, pseudonym);
        }
    }
}

/// Replaces `word` where it is not part of a longer name or number.
fn replace_words(text: &str, word: &str, with: &str) -> String {
    if word.is_empty() {
        return text.to_owned();
    }
    let part_of_name = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = if at > 0 { rest[..at].chars().next_back() } else { out.chars().next_back() };
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        if part_of_name(before) || part_of_name(after) {
            out.push_str(word);
        } else {
            out.push_str(with);
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::replace_words;

    #[test]
    fn replaces_whole_words_only() {
        assert_eq!(replace_words("host \"192.0.2.1\", 192.0.2.10", "192.0.2.1", "X"), "host \"X\", 192.0.2.10");
        assert_eq!(replace_words("user app, app_x, «app»", "app", "user-1"), "user user-1, app_x, «user-1»");
        assert_eq!(replace_words("appapp", "app", "X"), "appapp");
    }
}
