//! Secrets at rest: AES-256-GCM (`ring`) under the service's key, bound to the connector's id
//! (the additional data), so a sealed blob copied to another row does not open there.
//!
//! A sealed blob is `1 | key id (8) | nonce (12) | ciphertext + tag`. The key id is the first 8
//! bytes of the key's SHA-256, so a blob names the key that opens it; [`Keyring`] holds the
//! current key (which seals) and retired ones (which only open), and
//! [`crate::Connectors::rotate_keys`] re-seals what an old key sealed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::Error;

const FORMAT: u8 = 1;
const KEY_ID_LEN: usize = 8;

/// One 256-bit key. `Debug` shows only its id.
pub struct Key {
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id_hex())
    }
}

impl Key {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Key, Error> {
        if bytes.len() != 32 {
            return Err(Error::Config(format!("an encryption key is 32 bytes, this one is {}", bytes.len())));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| Error::Config("unusable encryption key".into()))?;
        Ok(Key { id, key: LessSafeKey::new(key) })
    }

    /// A key file: 32 raw bytes, or their base64 (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Key, Error> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read the encryption key file {}: {e}", path.display())))?;
        Key::parse(&bytes).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// 32 raw bytes, or their base64.
    pub fn parse(bytes: &[u8]) -> Result<Key, Error> {
        if bytes.len() == 32 {
            return Key::from_bytes(bytes);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| Error::Config("a key is 32 bytes or their base64".into()))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| Error::Config(format!("a key is 32 bytes or their base64: {e}")))?;
        Key::from_bytes(&decoded)
    }

    /// A fresh random key's base64, for a new key file.
    pub fn generate_base64() -> String {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).expect("the system random generator works");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn id_hex(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The key that seals and the retired keys that still open.
#[derive(Debug)]
pub struct Keyring {
    current: Key,
    retired: Vec<Key>,
}

impl Keyring {
    pub fn new(current: Key, retired: Vec<Key>) -> Keyring {
        Keyring { current, retired }
    }

    /// Seals `secrets` for connector `id` under the current key.
    pub fn seal(&self, id: &str, secrets: &BTreeMap<String, String>) -> Vec<u8> {
        let mut plain = serde_json::to_vec(secrets).expect("a map of strings serializes");
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).expect("the system random generator works");
        self.current
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(id)), &mut plain)
            .expect("AES-GCM seals any length we store");
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + plain.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plain);
        out
    }

    /// Opens what `seal` sealed for `id`, under whichever known key sealed it. An empty blob is
    /// no secrets.
    pub fn open(&self, id: &str, sealed: &[u8]) -> Result<BTreeMap<String, String>, Error> {
        if sealed.is_empty() {
            return Ok(BTreeMap::new());
        }
        let head = 1 + KEY_ID_LEN + NONCE_LEN;
        if sealed.len() < head || sealed[0] != FORMAT {
            return Err(Error::Sealed(format!("the secrets of connector {id} are not in a known format")));
        }
        let key_id = &sealed[1..1 + KEY_ID_LEN];
        let key = std::iter::once(&self.current).chain(&self.retired).find(|k| k.id == key_id).ok_or_else(|| {
            let hex: String = key_id.iter().map(|b| format!("{b:02x}")).collect();
            Error::Sealed(format!(
                "the secrets of connector {id} were sealed with key {hex}, which is not configured \
                 ([connectors] encryption_key_file, or previous_encryption_key_files while rotating)"
            ))
        })?;
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1 + KEY_ID_LEN..head]).expect("the nonce has its length");
        let mut buf = sealed[head..].to_vec();
        let plain = key.key.open_in_place(nonce, Aad::from(aad(id)), &mut buf).map_err(|_| {
            Error::Sealed(format!("the secrets of connector {id} do not open (altered, or another row's)"))
        })?;
        serde_json::from_slice(plain).map_err(|e| Error::Sealed(format!("the secrets of connector {id}: {e}")))
    }

    /// Whether `sealed` is sealed under the current key (nothing to rotate).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.is_empty() || sealed.get(1..1 + KEY_ID_LEN) == Some(&self.current.id[..])
    }
}

fn aad(id: &str) -> Vec<u8> {
    format!("loom-connector:{id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key::from_bytes(&[b; 32]).unwrap()
    }

    #[test]
    fn sealed_secrets_open_only_for_their_connector_and_keys() {
        let ring = Keyring::new(key(1), vec![]);
        let secrets = BTreeMap::from([("api_key".to_owned(), "sk-secret-value".to_owned())]);
        let sealed = ring.seal("llm", &secrets);
        assert!(!sealed.windows(15).any(|w| w == b"sk-secret-value"), "the value is not in clear");
        assert_eq!(ring.open("llm", &sealed).unwrap(), secrets);
        assert_ne!(ring.seal("llm", &secrets), sealed, "a fresh nonce each time");
        assert!(ring.open("other", &sealed).is_err(), "bound to the connector id");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(ring.open("llm", &altered).is_err());
        assert!(Keyring::new(key(2), vec![]).open("llm", &sealed).is_err(), "another key does not open it");
        let rotated = Keyring::new(key(2), vec![key(1)]);
        assert_eq!(rotated.open("llm", &sealed).unwrap(), secrets, "a retired key still opens");
        assert!(!rotated.is_current(&sealed));
        assert!(rotated.is_current(&rotated.seal("llm", &secrets)));
        assert_eq!(format!("{:?}", key(1)).len(), "Key()".len() + 16);
    }

    #[test]
    fn keys_load_raw_or_base64() {
        let b64 = Key::generate_base64();
        assert!(Key::parse(b64.as_bytes()).is_ok());
        assert!(Key::parse(format!("{b64}\n").as_bytes()).is_ok());
        assert!(Key::parse(&[7u8; 32]).is_ok());
        assert!(Key::parse(b"too short").is_err());
    }
}
