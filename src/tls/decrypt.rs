//! Record decryption with a key log's secrets: TLS 1.3 (traffic secrets,
//! RFC 8446 §7) and TLS 1.2 (master secret, RFC 5246 §6.3) with AES-GCM
//! (RFC 5288) or ChaCha20-Poly1305 (RFC 7905). The ciphers, HKDF and HMAC
//! are RustCrypto's; this module only lays out labels, nonces and
//! additional data as the RFCs say.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384};

use super::keylog::SessionSecrets;

/// Why a session's records cannot be decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoKeys {
    /// The key log has no secret for this session (or not the one its version needs).
    Missing,
    /// The cipher suite is not one pgreach decrypts.
    Unsupported,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Suite {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20,
}

impl Suite {
    /// The suite and whether its hash is SHA-384, for TLS 1.3 and 1.2 AEAD suites.
    fn of(id: u16) -> Option<(Suite, bool)> {
        Some(match id {
            0x1301 | 0xc02b | 0xc02f | 0x009c | 0x009e | 0x00a8 | 0x00aa | 0x00ac => (Suite::Aes128Gcm, false),
            0x1302 | 0xc02c | 0xc030 | 0x009d | 0x009f | 0x00a9 | 0x00ab | 0x00ad => (Suite::Aes256Gcm, true),
            0x1303 | 0xcca8 | 0xcca9 | 0xccaa | 0xccab | 0xccac | 0xccad | 0xccae => (Suite::ChaCha20, false),
            _ => return None,
        })
    }

    fn key_len(self) -> usize {
        match self {
            Suite::Aes128Gcm => 16,
            Suite::Aes256Gcm | Suite::ChaCha20 => 32,
        }
    }
}

enum Cipher {
    Aes128(Box<Aes128Gcm>),
    Aes256(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
}

impl Cipher {
    fn new(suite: Suite, key: &[u8]) -> Option<Cipher> {
        Some(match suite {
            Suite::Aes128Gcm => Cipher::Aes128(Box::new(Aes128Gcm::new_from_slice(key).ok()?)),
            Suite::Aes256Gcm => Cipher::Aes256(Box::new(Aes256Gcm::new_from_slice(key).ok()?)),
            Suite::ChaCha20 => Cipher::ChaCha(Box::new(ChaCha20Poly1305::new_from_slice(key).ok()?)),
        })
    }

    fn open(&self, nonce: &[u8; 12], msg: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let payload = Payload { msg, aad };
        match self {
            Cipher::Aes128(c) => c.decrypt(nonce.into(), payload).ok(),
            Cipher::Aes256(c) => c.decrypt(nonce.into(), payload).ok(),
            Cipher::ChaCha(c) => c.decrypt(nonce.into(), payload).ok(),
        }
    }
}

/// One direction's key, IV and record sequence number.
pub struct DirectionKeys {
    cipher: Cipher,
    /// TLS 1.3 and ChaCha20: the 12-byte IV; TLS 1.2 AES-GCM: the 4-byte salt, then zeros.
    iv: [u8; 12],
    seq: u64,
    tls12: bool,
    explicit_nonce: bool,
}

impl fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DirectionKeys {{ seq: {} }}", self.seq)
    }
}

/// A decrypted record: its real content type and plaintext.
pub struct Opened {
    pub content_type: u8,
    pub plaintext: Vec<u8>,
}

impl DirectionKeys {
    /// Decrypts the next record of this direction (`header`: its five
    /// bytes); the sequence number advances only when it authenticates.
    pub fn open(&mut self, header: &[u8; 5], body: &[u8]) -> Option<Opened> {
        let seq = self.seq.to_be_bytes();
        let mut nonce = self.iv;
        let (ciphertext, aad) = if self.tls12 {
            let (explicit, ciphertext) =
                if self.explicit_nonce { (body.get(..8)?, body.get(8..)?) } else { (&[][..], body) };
            if self.explicit_nonce {
                nonce[4..].copy_from_slice(explicit);
            } else {
                xor_seq(&mut nonce, &seq);
            }
            // seq_num + type + version + the plaintext's length.
            let plain_len = ciphertext.len().checked_sub(16)? as u16;
            let mut aad = seq.to_vec();
            aad.extend_from_slice(&header[..3]);
            aad.extend_from_slice(&plain_len.to_be_bytes());
            (ciphertext, aad)
        } else {
            xor_seq(&mut nonce, &seq);
            (body, header.to_vec())
        };
        let mut plaintext = self.cipher.open(&nonce, ciphertext, &aad)?;
        self.seq += 1;
        let content_type = if self.tls12 {
            header[0]
        } else {
            // TLSInnerPlaintext: content, the real type, then zero padding.
            let at = plaintext.iter().rposition(|&b| b != 0)?;
            let t = plaintext[at];
            plaintext.truncate(at);
            t
        };
        Some(Opened { content_type, plaintext })
    }
}

fn xor_seq(nonce: &mut [u8; 12], seq: &[u8; 8]) {
    for (n, s) in nonce[4..].iter_mut().zip(seq) {
        *n ^= s;
    }
}

/// Both directions' keys.
#[derive(Debug)]
pub struct SessionKeys {
    pub client: DirectionKeys,
    pub server: DirectionKeys,
}

/// The keys of a TLS 1.3 session from its application traffic secrets.
pub fn tls13_keys(cipher_id: u16, secrets: &SessionSecrets) -> Result<SessionKeys, NoKeys> {
    let (suite, sha384) = Suite::of(cipher_id).ok_or(NoKeys::Unsupported)?;
    let (Some(client), Some(server)) = (&secrets.client_traffic, &secrets.server_traffic) else {
        return Err(NoKeys::Missing);
    };
    let direction = |secret: &[u8]| -> Option<DirectionKeys> {
        let key = expand_label(secret, sha384, b"key", suite.key_len())?;
        let iv: [u8; 12] = expand_label(secret, sha384, b"iv", 12)?.try_into().ok()?;
        Some(DirectionKeys { cipher: Cipher::new(suite, &key)?, iv, seq: 0, tls12: false, explicit_nonce: false })
    };
    Ok(SessionKeys {
        client: direction(client).ok_or(NoKeys::Missing)?,
        server: direction(server).ok_or(NoKeys::Missing)?,
    })
}

/// HKDF-Expand-Label(secret, label, "", len) (RFC 8446 §7.1).
fn expand_label(secret: &[u8], sha384: bool, label: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut info = (len as u16).to_be_bytes().to_vec();
    info.push((6 + label.len()) as u8);
    info.extend_from_slice(b"tls13 ");
    info.extend_from_slice(label);
    info.push(0);
    let mut out = vec![0; len];
    if sha384 {
        Hkdf::<Sha384>::from_prk(secret).ok()?.expand(&info, &mut out).ok()?;
    } else {
        Hkdf::<Sha256>::from_prk(secret).ok()?.expand(&info, &mut out).ok()?;
    }
    Some(out)
}

/// The keys of a TLS 1.2 session from its master secret and both randoms.
pub fn tls12_keys(
    cipher_id: u16,
    secrets: &SessionSecrets,
    client_random: &[u8; 32],
    server_random: &[u8; 32],
) -> Result<SessionKeys, NoKeys> {
    let (suite, sha384) = Suite::of(cipher_id).filter(|_| cipher_id >> 8 != 0x13).ok_or(NoKeys::Unsupported)?;
    let master = secrets.master.as_deref().ok_or(NoKeys::Missing)?;
    let explicit_nonce = suite != Suite::ChaCha20;
    let (key_len, iv_len) = (suite.key_len(), if explicit_nonce { 4 } else { 12 });
    // key_block = PRF(master, "key expansion", server_random + client_random):
    // client key, server key, client IV, server IV (AEAD suites have no MAC keys).
    let mut seed = server_random.to_vec();
    seed.extend_from_slice(client_random);
    let block = prf(master, sha384, b"key expansion", &seed, 2 * (key_len + iv_len)).ok_or(NoKeys::Missing)?;
    let (keys, ivs) = block.split_at(2 * key_len);
    let direction = |key: &[u8], iv: &[u8]| -> Option<DirectionKeys> {
        let mut full = [0u8; 12];
        full[..iv.len()].copy_from_slice(iv);
        Some(DirectionKeys { cipher: Cipher::new(suite, key)?, iv: full, seq: 0, tls12: true, explicit_nonce })
    };
    Ok(SessionKeys {
        client: direction(&keys[..key_len], &ivs[..iv_len]).ok_or(NoKeys::Missing)?,
        server: direction(&keys[key_len..], &ivs[iv_len..]).ok_or(NoKeys::Missing)?,
    })
}

/// The TLS 1.2 PRF: P_hash(secret, label + seed) over HMAC (RFC 5246 §5).
fn prf(secret: &[u8], sha384: bool, label: &[u8], seed: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut label_seed = label.to_vec();
    label_seed.extend_from_slice(seed);
    if sha384 {
        p_hash::<Hmac<Sha384>>(secret, &label_seed, len)
    } else {
        p_hash::<Hmac<Sha256>>(secret, &label_seed, len)
    }
}

fn p_hash<M: Mac + KeyInit + Clone>(secret: &[u8], seed: &[u8], len: usize) -> Option<Vec<u8>> {
    let keyed = <M as KeyInit>::new_from_slice(secret).ok()?;
    let mut out = Vec::with_capacity(len);
    // A(1) = HMAC(secret, seed); A(i) = HMAC(secret, A(i-1)).
    let mut a = keyed.clone().chain_update(seed).finalize().into_bytes().to_vec();
    while out.len() < len {
        out.extend_from_slice(&keyed.clone().chain_update(&a).chain_update(seed).finalize().into_bytes());
        a = keyed.clone().chain_update(&a).finalize().into_bytes().to_vec();
    }
    out.truncate(len);
    Some(out)
}
