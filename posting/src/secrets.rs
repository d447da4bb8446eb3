//! Credentials at rest: sealed with XChaCha20-Poly1305 (RustCrypto's
//! `chacha20poly1305`) under the service's secret key, bound to the
//! account they belong to (its id is the associated data, so a sealed
//! value copied onto another account does not open).
//!
//! The key is 32 random bytes, base64, from `STARLING_SECRET_KEY` (or
//! `[posting] secret_key`). A sealed value names the key that sealed it by
//! the first 8 hex digits of its SHA-256, so keys can rotate: put the new
//! key in `STARLING_SECRET_KEY`, the old one in
//! `STARLING_SECRET_KEY_PREVIOUS` (comma-separated for several), run
//! `starling accounts reseal`, then drop the old key. Without a key the
//! service runs (dry-run accounts need none) but refuses to store or open
//! credentials, saying what to set.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A secret value that is never shown (its `Debug` is `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Hidden(pub String);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// What went wrong with a secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No key configured.
    #[error("no secret key: set STARLING_SECRET_KEY to 32 random bytes in base64 (e.g. `openssl rand -base64 32`) to store account credentials")]
    NoKey,
    /// A key that is not 32 bytes of base64.
    #[error("{name} is not 32 bytes of base64")]
    BadKey {
        /// Where it came from.
        name: String,
    },
    /// Sealed under a key we do not hold.
    #[error("credentials were sealed with key {0}, which is neither STARLING_SECRET_KEY nor in STARLING_SECRET_KEY_PREVIOUS")]
    UnknownKey(String),
    /// Tampered with, or sealed for another account.
    #[error("credentials do not open (damaged, or sealed for another account)")]
    Damaged,
}

/// One key and its id.
#[derive(Clone)]
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn parse(name: &str, b64: &str) -> Result<Self, SecretError> {
        let bytes = B64.decode(b64.trim()).map_err(|_| SecretError::BadKey { name: name.into() })?;
        if bytes.len() != 32 {
            return Err(SecretError::BadKey { name: name.into() });
        }
        let id = Sha256::digest(&bytes).iter().take(4).map(|b| format!("{b:02x}")).collect();
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SecretError::BadKey { name: name.into() })?;
        Ok(Self { id, cipher })
    }
}

/// The service's keys: the current one seals, any opens.
#[derive(Clone, Default)]
pub struct Sealer {
    current: Option<Key>,
    previous: Vec<Key>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Sealer")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field("previous", &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

impl Sealer {
    /// Keys from their base64 (the current one, then older ones).
    pub fn new(current: Option<&str>, previous: &[String]) -> Result<Self, SecretError> {
        Ok(Self {
            current: current.filter(|k| !k.trim().is_empty()).map(|k| Key::parse("STARLING_SECRET_KEY", k)).transpose()?,
            previous: previous
                .iter()
                .filter(|k| !k.trim().is_empty())
                .map(|k| Key::parse("STARLING_SECRET_KEY_PREVIOUS", k))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether credentials can be stored.
    pub fn has_key(&self) -> bool {
        self.current.is_some()
    }

    /// Seal `plain` for `account`.
    pub fn seal(&self, account: &str, plain: &[u8]) -> Result<String, SecretError> {
        let key = self.current.as_ref().ok_or(SecretError::NoKey)?;
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = key
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad: account.as_bytes() })
            .map_err(|_| SecretError::Damaged)?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(format!("v1:{}:{}", key.id, B64.encode(blob)))
    }

    /// Open what [`Sealer::seal`] sealed for `account`.
    pub fn open(&self, account: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let mut fields = sealed.splitn(3, ':');
        let (Some("v1"), Some(id), Some(body)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(SecretError::Damaged);
        };
        let key = self
            .current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| if self.current.is_none() { SecretError::NoKey } else { SecretError::UnknownKey(id.to_owned()) })?;
        let blob = B64.decode(body).map_err(|_| SecretError::Damaged)?;
        if blob.len() < 24 {
            return Err(SecretError::Damaged);
        }
        let (nonce, ciphertext) = blob.split_at(24);
        key.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: account.as_bytes() })
            .map_err(|_| SecretError::Damaged)
    }

    /// Whether `sealed` is under the current key (else `reseal` has work).
    pub fn is_current(&self, sealed: &str) -> bool {
        self.current.as_ref().is_some_and(|k| sealed.split(':').nth(1) == Some(k.id.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        B64.encode([byte; 32])
    }

    #[test]
    fn sealed_values_open_only_for_their_account_and_survive_rotation() {
        let old = Sealer::new(Some(&key(1)), &[]).expect("key");
        let sealed = old.seal("acc_a", b"token").expect("seal");
        assert!(!sealed.contains("token"));
        assert_eq!(old.open("acc_a", &sealed).expect("open"), b"token");
        assert!(matches!(old.open("acc_b", &sealed), Err(SecretError::Damaged)));

        let rotated = Sealer::new(Some(&key(2)), &[key(1)]).expect("keys");
        assert_eq!(rotated.open("acc_a", &sealed).expect("old key opens"), b"token");
        assert!(!rotated.is_current(&sealed));
        let resealed = rotated.seal("acc_a", b"token").expect("seal");
        assert!(rotated.is_current(&resealed));

        let new_only = Sealer::new(Some(&key(2)), &[]).expect("key");
        assert!(matches!(new_only.open("acc_a", &sealed), Err(SecretError::UnknownKey(_))));
        assert!(matches!(Sealer::default().seal("acc_a", b"x"), Err(SecretError::NoKey)));
        assert!(matches!(Sealer::new(Some("c2hvcnQ="), &[]), Err(SecretError::BadKey { .. })));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(old.open("acc_a", &tampered), Err(SecretError::Damaged)));
    }
}
