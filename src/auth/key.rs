//! The API key format: `agk_<public id>_<secret><checksum>`, generated, parsed and hashed.
//!
//! The checksum is the CRC32 of everything before it, in 6 base62 digits (GitHub's token
//! style), so a mistyped or made-up key is refused without a store lookup. The secret holds
//! 22 base62 digits (≥ 130 random bits). The store keeps only the SHA-256 of the full key.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};

/// Every key starts with this.
pub const PREFIX: &str = "agk_";
/// Length of the public id, in base62 digits.
pub const PUBLIC_ID_LEN: usize = 12;
/// Length of the secret, in base62 digits.
pub const SECRET_LEN: usize = 22;
/// Length of the checksum, in base62 digits.
pub const CHECKSUM_LEN: usize = 6;
/// Length of a whole key.
pub const KEY_LEN: usize = PREFIX.len() + PUBLIC_ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a well-formed key. Never carries the string itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("key does not start with `agk_`")]
    Prefix,
    #[error("key has the wrong length or layout")]
    Layout,
    #[error("key has a character outside base62")]
    Charset,
    #[error("key checksum does not match")]
    Checksum,
}

fn base62_fixed(mut n: u64, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out.into_iter().map(char::from).collect()
}

pub(crate) fn random_base62(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn checksum(body: &str) -> String {
    base62_fixed(u64::from(crc32fast::hash(body.as_bytes())), CHECKSUM_LEN)
}

/// A well-formed key whose checksum matched. Borrowed from the header; its `Debug` shows only
/// the public id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    public_id: &'a str,
    full: &'a str,
}

impl<'a> ParsedKey<'a> {
    pub fn public_id(&self) -> &'a str {
        self.public_id
    }

    /// The SHA-256 of the full key, as stored.
    pub fn hash(&self) -> [u8; 32] {
        hash_key(self.full)
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParsedKey({})", self.public_id)
    }
}

/// Checks the layout and checksum of a key. Does no I/O.
pub fn parse_key(s: &str) -> Result<ParsedKey<'_>, KeyFormatError> {
    let rest = s.strip_prefix(PREFIX).ok_or(KeyFormatError::Prefix)?;
    if s.len() != KEY_LEN || rest.as_bytes().get(PUBLIC_ID_LEN) != Some(&b'_') {
        return Err(KeyFormatError::Layout);
    }
    let public_id = &rest[..PUBLIC_ID_LEN];
    let tail = &rest[PUBLIC_ID_LEN + 1..];
    if !public_id
        .bytes()
        .chain(tail.bytes())
        .all(|b| b.is_ascii_alphanumeric())
    {
        return Err(KeyFormatError::Charset);
    }
    let (body, sum) = s.split_at(KEY_LEN - CHECKSUM_LEN);
    if checksum(body) != sum {
        return Err(KeyFormatError::Checksum);
    }
    Ok(ParsedKey { public_id, full: s })
}

/// SHA-256 of a full key.
pub fn hash_key(full: &str) -> [u8; 32] {
    Sha256::digest(full.as_bytes()).into()
}

/// Lower-case hex, the stored form of a hash.
pub fn to_hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Parses 64 hex digits into a hash.
pub fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A freshly generated key. The full key is shown once (at creation) and then only its hash is
/// kept; `Debug` and `Display` never show the secret.
pub struct SecretKey {
    full: String,
    public_id: String,
}

impl SecretKey {
    /// Generates a new random key.
    pub fn generate() -> SecretKey {
        let public_id = random_base62(PUBLIC_ID_LEN);
        let body = format!("{PREFIX}{public_id}_{}", random_base62(SECRET_LEN));
        let full = format!("{body}{}", checksum(&body));
        SecretKey { full, public_id }
    }

    pub fn public_id(&self) -> &str {
        &self.public_id
    }

    /// The full key, to be shown to its owner exactly once.
    pub fn expose(&self) -> &str {
        &self.full
    }

    pub fn hash(&self) -> [u8; 32] {
        hash_key(&self.full)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public_id)
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}_…", self.public_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse() {
        for _ in 0..200 {
            let k = SecretKey::generate();
            let p = parse_key(k.expose()).expect("generated key parses");
            assert_eq!(p.public_id(), k.public_id());
            assert_eq!(p.hash(), k.hash());
            assert_eq!(k.expose().len(), KEY_LEN);
        }
    }

    #[test]
    fn every_single_character_change_is_caught() {
        let k = SecretKey::generate();
        let full = k.expose();
        for i in PREFIX.len()..full.len() {
            if full.as_bytes()[i] == b'_' {
                continue;
            }
            let mut b = full.as_bytes().to_vec();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let s = String::from_utf8(b).expect("ascii");
            assert!(parse_key(&s).is_err(), "mutation at {i} accepted");
        }
    }

    #[test]
    fn malformed() {
        let k = SecretKey::generate();
        let full = k.expose();
        assert_eq!(parse_key(""), Err(KeyFormatError::Prefix));
        assert_eq!(parse_key("sk_live"), Err(KeyFormatError::Prefix));
        assert_eq!(
            parse_key(&full[..full.len() - 1]),
            Err(KeyFormatError::Layout)
        );
        assert_eq!(parse_key(&format!("{full}x")), Err(KeyFormatError::Layout));
        let bad = full.replacen('_', "-", 2);
        assert!(parse_key(&bad).is_err());
        let utf8 = format!("{}é{}", &full[..20], &full[22..]);
        assert!(parse_key(&utf8).is_err());
    }

    #[test]
    fn secrets_never_shown() {
        let k = SecretKey::generate();
        let secret = &k.expose()[PREFIX.len() + PUBLIC_ID_LEN + 1..];
        assert!(!format!("{k:?}").contains(secret));
        assert!(!format!("{k}").contains(secret));
        let p = parse_key(k.expose()).expect("parses");
        assert!(!format!("{p:?}").contains(secret));
    }

    #[test]
    fn hex_round_trip() {
        let h = hash_key("x");
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_hex("zz"), None);
    }
}
