//! Keyed hashing of issued credentials, AEAD sealing of stored secrets, and the master key.
//!
//! Issued passwords and API tokens are high-entropy random strings, so a fast keyed hash
//! (HMAC-SHA-256) is the right storage: it cannot be brute-forced, and the gateway can check
//! it in microseconds. The HMAC key is itself random, kept in the database sealed under the
//! operator's master key, so rotating the master key never invalidates issued credentials.

use std::fs;
use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const SEALED_VERSION: u8 = 1;

/// A random string of ASCII letters and digits drawn from the operating system's CSPRNG.
pub fn random_alphanumeric(len: usize) -> String {
    OsRng
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn random_key() -> Zeroizing<[u8; KEY_LEN]> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    OsRng.fill_bytes(key.as_mut());
    key
}

/// Derives an independent key for one purpose, so that no key is ever used for two things.
fn derive(ikm: &[u8], purpose: &str) -> Zeroizing<[u8; KEY_LEN]> {
    let hk = Hkdf::<Sha256>::new(Some(b"switchboard"), ikm);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    hk.expand(purpose.as_bytes(), out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    out
}

/// The operator's master key: 32 bytes, written as base64 (or 64 hex digits) in a file.
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint())
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        Self { bytes }
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = Zeroizing::new(text.trim().to_owned());
        let decoded = Zeroizing::new(if text.len() == 2 * KEY_LEN {
            hex::decode(text.as_bytes()).context("the master key looks like hex but is not")?
        } else {
            BASE64.decode(text.as_bytes()).context(
                "the master key must be 32 bytes as base64 (44 characters) or hex (64 characters)",
            )?
        });
        if decoded.len() != KEY_LEN {
            bail!(
                "the master key must be exactly 32 bytes, found {}; generate one with `openssl rand -base64 32`",
                decoded.len()
            );
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&decoded);
        Ok(Self { bytes })
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = Zeroizing::new(
            fs::read_to_string(path)
                .with_context(|| format!("cannot read the master key file {}", path.display()))?,
        );
        Self::parse(&text).with_context(|| format!("in the master key file {}", path.display()))
    }

    /// Generates a key into a new file readable only by its owner; never overwrites one.
    pub fn generate_into(path: &Path) -> anyhow::Result<Self> {
        let key = Self::from_bytes(random_key());
        let encoded = Zeroizing::new(BASE64.encode(key.bytes.as_ref()));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .with_context(|| format!("cannot create the master key file {}", path.display()))?;
        file.write_all(encoded.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        Ok(key)
    }

    /// A public, stable identifier of the key: lets start-up detect a wrong key without
    /// storing anything that helps recover it.
    pub fn fingerprint(&self) -> String {
        let sub = derive(self.bytes.as_ref(), "switchboard/master-key-fingerprint/v1");
        hex::encode(&sub[..16])
    }

    pub fn sealer(&self) -> Sealer {
        let key = derive(self.bytes.as_ref(), "switchboard/aead/v1");
        Sealer {
            key_id: self.fingerprint(),
            cipher: Aes256Gcm::new_from_slice(key.as_ref()).expect("32-byte AES key"),
            others: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value was made with key {0}, which is not loaded")]
    UnknownKey(String),
    #[error("sealed value failed authentication (wrong key or tampered data)")]
    Authentication,
}

/// AES-256-GCM under a key derived from the master key. Every ciphertext carries the id
/// of the key that made it, so keys can be rotated.
pub struct Sealer {
    key_id: String,
    cipher: Aes256Gcm,
    /// Keys that may still open older ciphertexts (during a rotation), never used to seal.
    others: Vec<(String, Aes256Gcm)>,
}

impl Sealer {
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Also opens what these keys sealed.
    pub fn with_others(mut self, others: &[MasterKey]) -> Self {
        for key in others {
            let s = key.sealer();
            if s.key_id != self.key_id {
                self.others.push((s.key_id, s.cipher));
            }
        }
        self
    }

    /// The id of the key that sealed `sealed`, if it is well-formed.
    pub fn key_id_of(sealed: &[u8]) -> Option<&str> {
        let (&id_len, rest) = sealed.get(1..)?.split_first()?;
        std::str::from_utf8(rest.get(..id_len as usize)?).ok()
    }

    /// Layout: version (1) | key id length (1) | key id | nonce (12) | ciphertext and tag.
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: associated_data,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(2 + self.key_id.len() + NONCE_LEN + ciphertext.len());
        out.push(SEALED_VERSION);
        out.push(self.key_id.len() as u8);
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    pub fn open(
        &self,
        sealed: &[u8],
        associated_data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (&version, rest) = sealed.split_first().ok_or(CryptoError::Malformed)?;
        let (&id_len, rest) = rest.split_first().ok_or(CryptoError::Malformed)?;
        if version != SEALED_VERSION || rest.len() < id_len as usize + NONCE_LEN {
            return Err(CryptoError::Malformed);
        }
        let (key_id, rest) = rest.split_at(id_len as usize);
        let cipher = if key_id == self.key_id.as_bytes() {
            &self.cipher
        } else {
            self.others
                .iter()
                .find(|(id, _)| id.as_bytes() == key_id)
                .map(|(_, c)| c)
                .ok_or_else(|| {
                    CryptoError::UnknownKey(String::from_utf8_lossy(key_id).into_owned())
                })?
        };
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: associated_data,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Authentication)
    }
}

/// HMAC-SHA-256 of a high-entropy credential under a purpose-specific key.
#[derive(Clone)]
pub struct CredentialHasher {
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for CredentialHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialHasher(..)")
    }
}

pub type CredentialHash = [u8; 32];

impl CredentialHasher {
    /// `root` is the random credential-hash key; `purpose` separates passwords from tokens.
    pub fn new(root: &[u8], purpose: &str) -> Self {
        Self {
            key: derive(root, purpose),
        }
    }

    pub fn hash(&self, secret: &str) -> CredentialHash {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(self.key.as_ref()).expect("any key length");
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Constant-time comparison of a presented secret against a stored hash.
    pub fn verify(&self, secret: &str, expected: &[u8]) -> bool {
        bool::from(self.hash(secret).as_slice().ct_eq(expected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_alphanumeric_has_requested_length_and_alphabet() {
        let s = random_alphanumeric(64);
        assert_eq!(s.len(), 64);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(s, random_alphanumeric(64));
    }

    #[test]
    fn seal_round_trips_and_binds_associated_data() {
        let key = MasterKey::from_bytes(random_key());
        let sealer = key.sealer();
        let sealed = sealer.seal(b"secret", b"conn-1|test");
        assert_eq!(&*sealer.open(&sealed, b"conn-1|test").unwrap(), b"secret");
        assert!(matches!(
            sealer.open(&sealed, b"conn-2|test"),
            Err(CryptoError::Authentication)
        ));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(sealer.open(&tampered, b"conn-1|test").is_err());
        let next = MasterKey::from_bytes(random_key());
        assert!(matches!(
            next.sealer().open(&sealed, b"conn-1|test"),
            Err(CryptoError::UnknownKey(_))
        ));
        // During a rotation the new key opens what the old one sealed.
        let ring = next.sealer().with_others(&[key]);
        assert_eq!(&*ring.open(&sealed, b"conn-1|test").unwrap(), b"secret");
        assert_eq!(Sealer::key_id_of(&sealed), Some(sealer.key_id()));
        assert_eq!(
            Sealer::key_id_of(&ring.seal(b"x", b"")),
            Some(ring.key_id())
        );
        assert!(matches!(
            sealer.open(&sealed[..5], b""),
            Err(CryptoError::Malformed)
        ));
    }

    #[test]
    fn master_key_parses_base64_and_hex_and_rejects_other_lengths() {
        let hex_key = "00".repeat(32);
        let a = MasterKey::parse(&hex_key).unwrap();
        let b = MasterKey::parse(&BASE64.encode([0u8; 32])).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(MasterKey::parse(&BASE64.encode([0u8; 16])).is_err());
        assert!(MasterKey::parse("not a key").is_err());
    }

    #[test]
    fn hasher_purposes_are_independent_and_verify_is_exact() {
        let root = random_key();
        let passwords = CredentialHasher::new(root.as_ref(), "password");
        let tokens = CredentialHasher::new(root.as_ref(), "token");
        let h = passwords.hash("abc");
        assert_ne!(h, tokens.hash("abc"));
        assert!(passwords.verify("abc", &h));
        assert!(!passwords.verify("abd", &h));
        assert!(!passwords.verify("abc", &h[..31]));
    }

    #[test]
    fn generated_key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::generate_into(&path).unwrap();
        assert_eq!(
            MasterKey::load(&path).unwrap().fingerprint(),
            key.fingerprint()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(MasterKey::generate_into(&path).is_err(), "never overwrites");
    }
}
