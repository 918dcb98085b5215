//! Task signatures: the control plane signs every task it publishes with an Ed25519 key and
//! agents verify it before a task reaches them, so a publisher on `loom.tasks.>` that is not the
//! control plane (a misconfigured bus, a leaked credential) cannot make an agent run anything.
//!
//! What is signed is `loom-task-v1 NUL subject NUL body`: the exact bytes the agent decodes (dispatch
//! id, bead, project, context and commands, timestamp) bound to the subject they were published
//! on, so a task cannot be replayed on another project's subject. The signature and the key's id
//! travel in the `Loom-Task-Signature` and `Loom-Task-Key` headers. There is no freshness bound: a
//! task may legitimately wait in the queue for hours; a replayed old dispatch is stopped by the
//! fence (its dispatch id is no longer current).
//!
//! Tasks published together are signed together (`batch`): one signature over the root of a
//! Merkle tree of the tasks, each task carrying its path to the root in `Loom-Task-Proof`.
//! Agents verify a root's signature once, however many of its tasks they receive. A task without
//! a proof (or with an empty one) carries a signature of its own.
//!
//! Keys are PEM files, compatible with OpenSSL (`openssl genpkey -algorithm ed25519` makes a
//! signing key, `openssl pkey -pubout` its verify key): the signing key as PKCS#8 `PRIVATE KEY`,
//! the verify key as `PUBLIC KEY` (or the signing key file itself, whose public half is used).

mod batch;

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};

use crate::Error;
use crate::envelope::header;

const CONTEXT: &[u8] = b"loom-task-v1";
/// The DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410); the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The control plane's private task-signing key. `Debug` shows only its key id.
#[derive(Clone)]
pub struct SigningKey {
    pair: Arc<Ed25519KeyPair>,
    id: String,
}

/// A public key agents accept task signatures from. `Debug` shows its key id. Clones share the
/// roots of the batches verified lately.
#[derive(Clone)]
pub struct VerifyKey {
    public: [u8; 32],
    id: String,
    verified: Arc<Mutex<VecDeque<(usize, batch::Hash)>>>,
}

/// Batch roots a verify key remembers as verified (the oldest is forgotten first).
const VERIFIED_ROOTS: usize = 256;

impl PartialEq for VerifyKey {
    fn eq(&self, other: &Self) -> bool {
        self.public == other.public && self.id == other.id
    }
}

impl Eq for VerifyKey {}

impl SigningKey {
    /// A fresh random key (only in memory; see [`SigningKey::generate_pem`] for a file).
    pub fn generate() -> SigningKey {
        let (_, key) = Self::generate_pem();
        key
    }

    /// This process's own key, made on first use and shared by every bus of the process: the
    /// default of [`crate::BusConfig`], so a control plane and agents in one process (`loom up`,
    /// tests, benchmarks) agree with no configuration, while another process's agents refuse it.
    pub fn process() -> SigningKey {
        static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
        KEY.get_or_init(SigningKey::generate).clone()
    }

    /// A fresh random key and its PKCS#8 PEM, to write to a file.
    pub fn generate_pem() -> (String, SigningKey) {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system random generator works");
        let key = SigningKey::from_pkcs8(doc.as_ref()).expect("ring reads the key it made");
        (pem("PRIVATE KEY", doc.as_ref()), key)
    }

    fn from_pkcs8(der: &[u8]) -> Result<SigningKey, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| format!("not an Ed25519 key: {e}"))?;
        let id = key_id(pair.public_key().as_ref());
        Ok(SigningKey { pair: Arc::new(pair), id })
    }

    /// Reads a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) Ed25519 key.
    pub fn from_pem(text: &str) -> Result<SigningKey, Error> {
        let der = unpem(text, "PRIVATE KEY").map_err(|e| Error::invalid("task_signing_key", e))?;
        SigningKey::from_pkcs8(&der).map_err(|e| Error::invalid("task_signing_key", e))
    }

    /// Reads the key from a file (see [`SigningKey::from_pem`]).
    pub fn from_file(path: &Path) -> Result<SigningKey, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid("task_signing_key", format!("cannot read {}: {e}", path.display())))?;
        SigningKey::from_pem(&text).map_err(|e| in_file(e, path))
    }

    /// The key agents need to accept this key's signatures.
    pub fn verify_key(&self) -> VerifyKey {
        let mut public = [0; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        VerifyKey::new(public)
    }

    /// The key's id: the first 8 bytes of the SHA-256 of its public key, in hex.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Signs a task message ready to publish (its subject and body), replacing any signature it
    /// had. [`crate::Bus::task`] does this with the configured key; tools and tests that build
    /// messages by hand use it directly.
    pub fn sign(&self, msg: &mut crate::Outgoing) {
        self.sign_parts(&msg.subject, &msg.payload, &mut msg.headers);
    }

    pub(crate) fn sign_parts(&self, subject: &str, body: &[u8], headers: &mut async_nats::HeaderMap) {
        let sig = self.pair.sign(&signed_bytes(subject, body));
        headers.insert(header::TASK_KEY, self.id.as_str());
        headers.insert(header::TASK_SIGNATURE, URL_SAFE_NO_PAD.encode(sig.as_ref()).as_str());
        if headers.get(header::TASK_PROOF).is_some() {
            // A signature of this task alone (the header map cannot drop a header).
            headers.insert(header::TASK_PROOF, "");
        }
    }

    /// Signs task messages published together with one signature (see the module
    /// documentation), replacing any signatures they had; a lone task is signed on its own.
    pub fn sign_batch(&self, msgs: &mut [crate::Outgoing]) {
        for chunk in msgs.chunks_mut(batch::MAX_LEAVES) {
            if let [one] = chunk {
                self.sign(one);
                continue;
            }
            let leaves = chunk.iter().map(|m| batch::leaf(&signed_parts(&m.subject, &m.payload))).collect();
            let (root, proofs) = batch::tree(leaves);
            let n = chunk.len();
            let sig = URL_SAFE_NO_PAD.encode(self.pair.sign(&batch::signed_root(n, &root)).as_ref());
            for (i, (msg, proof)) in chunk.iter_mut().zip(proofs).enumerate() {
                msg.headers.insert(header::TASK_KEY, self.id.as_str());
                msg.headers.insert(header::TASK_SIGNATURE, sig.as_str());
                let path = URL_SAFE_NO_PAD.encode(proof.concat());
                msg.headers.insert(header::TASK_PROOF, format!("{i}.{n}.{path}").as_str());
            }
        }
    }
}

impl VerifyKey {
    /// Reads a `PUBLIC KEY` PEM, or the public half of a `PRIVATE KEY` PEM.
    pub fn from_pem(text: &str) -> Result<VerifyKey, Error> {
        if text.contains("PRIVATE KEY-----") {
            return Ok(SigningKey::from_pem(text).map_err(rename)?.verify_key());
        }
        let der = unpem(text, "PUBLIC KEY").map_err(|e| Error::invalid("task_verify_key", e))?;
        let raw = der
            .strip_prefix(&SPKI_PREFIX[..])
            .filter(|k| k.len() == 32)
            .ok_or_else(|| Error::invalid("task_verify_key", "not an Ed25519 public key"))?;
        let mut public = [0; 32];
        public.copy_from_slice(raw);
        Ok(VerifyKey::new(public))
    }

    /// Reads the key from a file (see [`VerifyKey::from_pem`]).
    pub fn from_file(path: &Path) -> Result<VerifyKey, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid("task_verify_key", format!("cannot read {}: {e}", path.display())))?;
        VerifyKey::from_pem(&text).map_err(|e| in_file(e, path))
    }

    /// The key as a `PUBLIC KEY` PEM.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.public);
        pem("PUBLIC KEY", &der)
    }

    /// The key's id (see [`SigningKey::id`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Checks a task's signature headers against this key; the error is the dead-letter reason.
    pub(crate) fn verify(&self, subject: &str, body: &[u8], headers: &async_nats::HeaderMap) -> Result<(), String> {
        let get = |name| headers.get_last(name).map(|v| v.as_str());
        let (Some(kid), Some(sig)) = (get(header::TASK_KEY), get(header::TASK_SIGNATURE)) else {
            return Err("task signature missing: the task is not signed by the control plane".into());
        };
        if kid != self.id {
            return Err(format!(
                "task signature by unknown key {kid:?}: this agent trusts only key {:?} ([bus] task_verify_key)",
                self.id
            ));
        }
        let forged = || "task signature does not match the task: it was forged or altered".to_owned();
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| "task signature is not valid base64url".to_owned())?;
        let Some(proof) = get(header::TASK_PROOF).filter(|p| !p.is_empty()) else {
            return self.check(&signed_bytes(subject, body), &sig).map_err(|()| forged());
        };
        let (index, len, siblings) = parse_proof(proof)?;
        let root = batch::root(batch::leaf(&signed_parts(subject, body)), index, len, &siblings).ok_or_else(forged)?;
        let verified = || self.verified.lock().expect("verified roots lock");
        if verified().contains(&(len, root)) {
            return Ok(());
        }
        // Checked without the lock: other subscriptions sharing this key go on meanwhile.
        self.check(&batch::signed_root(len, &root), &sig).map_err(|()| forged())?;
        let mut verified = verified();
        if !verified.contains(&(len, root)) {
            if verified.len() == VERIFIED_ROOTS {
                verified.pop_front();
            }
            verified.push_back((len, root));
        }
        Ok(())
    }

    fn new(public: [u8; 32]) -> VerifyKey {
        VerifyKey { public, id: key_id(&public), verified: Arc::default() }
    }

    fn check(&self, msg: &[u8], sig: &[u8]) -> Result<(), ()> {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.public).verify(msg, sig).map_err(|_| ())
    }
}

/// `{index}.{n}.{siblings}` (the siblings' hashes concatenated, base64url).
fn parse_proof(proof: &str) -> Result<(usize, usize, Vec<batch::Hash>), String> {
    let bad = || format!("task signature proof {proof:?} is malformed (expected index.size.siblings)");
    let mut parts = proof.splitn(3, '.');
    let (Some(index), Some(len), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let (index, len) = (index.parse().map_err(|_| bad())?, len.parse().map_err(|_| bad())?);
    let path = URL_SAFE_NO_PAD.decode(path).map_err(|_| bad())?;
    if path.len() % 32 != 0 || path.len() > 32 * 16 {
        return Err(bad());
    }
    let siblings = path.chunks(32).map(|c| c.try_into().expect("32-byte chunks")).collect();
    Ok((index, len, siblings))
}

/// What a task's signature covers, in parts: `loom-task-v1 NUL subject NUL body`.
fn signed_parts<'a>(subject: &'a str, body: &'a [u8]) -> [&'a [u8]; 5] {
    [CONTEXT, b"\0", subject.as_bytes(), b"\0", body]
}

fn signed_bytes(subject: &str, body: &[u8]) -> Vec<u8> {
    signed_parts(subject, body).concat()
}

fn key_id(public: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public);
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> =
        b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ascii")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

fn unpem(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let (begin, end) = (format!("-----BEGIN {label}-----"), format!("-----END {label}-----"));
    let body = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body)
        .ok_or_else(|| format!("not a PEM {label} (expected a {begin} block)"))?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).map_err(|e| format!("bad PEM {label}: {e}"))
}

fn in_file(err: Error, path: &Path) -> Error {
    match err {
        Error::Invalid { field, reason } => Error::Invalid { field, reason: format!("{}: {reason}", path.display()) },
        other => other,
    }
}

fn rename(err: Error) -> Error {
    match err {
        Error::Invalid { reason, .. } => Error::Invalid { field: "task_verify_key", reason },
        other => other,
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, ****)", self.id)
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyKey({})", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(key: &SigningKey, subject: &str, body: &[u8]) -> async_nats::HeaderMap {
        let mut h = async_nats::HeaderMap::new();
        key.sign_parts(subject, body, &mut h);
        h
    }

    #[test]
    fn a_signature_verifies_only_for_its_key_subject_and_body() {
        let key = SigningKey::generate();
        let verify = key.verify_key();
        let h = signed(&key, "loom.tasks.p", b"{\"a\":1}");
        assert_eq!(verify.verify("loom.tasks.p", b"{\"a\":1}", &h), Ok(()));
        let tampered = verify.verify("loom.tasks.p", b"{\"a\":2}", &h).unwrap_err();
        assert!(tampered.starts_with("task signature does not match"), "{tampered}");
        let moved = verify.verify("loom.tasks.q", b"{\"a\":1}", &h).unwrap_err();
        assert!(moved.starts_with("task signature does not match"), "{moved}");
        let other = SigningKey::generate().verify_key().verify("loom.tasks.p", b"{\"a\":1}", &h).unwrap_err();
        assert!(other.starts_with("task signature by unknown key"), "{other}");
        let missing = verify.verify("loom.tasks.p", b"{\"a\":1}", &async_nats::HeaderMap::new()).unwrap_err();
        assert!(missing.starts_with("task signature missing"), "{missing}");
        // The right key id with another key's signature: forged.
        let mut forged = signed(&SigningKey::generate(), "loom.tasks.p", b"{\"a\":1}");
        forged.insert(header::TASK_KEY, verify.id());
        let err = verify.verify("loom.tasks.p", b"{\"a\":1}", &forged).unwrap_err();
        assert!(err.starts_with("task signature does not match"), "{err}");
    }

    fn batch(key: &SigningKey, n: usize) -> Vec<crate::Outgoing> {
        batch_of(key, n, "task")
    }

    fn batch_of(key: &SigningKey, n: usize, field: &str) -> Vec<crate::Outgoing> {
        let mut msgs: Vec<crate::Outgoing> = (0..n)
            .map(|i| {
                let body = format!("{{\"{field}\":{i}}}");
                crate::Outgoing::raw(format!("loom.tasks.p{}", i % 2), format!("d{i}"), body.into_bytes())
            })
            .collect();
        key.sign_batch(&mut msgs);
        msgs
    }

    fn check(key: &VerifyKey, m: &crate::Outgoing) -> Result<(), String> {
        key.verify(&m.subject, &m.payload, &m.headers)
    }

    #[test]
    fn a_batch_signature_verifies_each_of_its_tasks_and_nothing_else() {
        let key = SigningKey::generate();
        for n in [1, 2, 3, 7, 64, 300] {
            let verify = key.verify_key();
            let msgs = batch(&key, n);
            let proof = |m: &crate::Outgoing| m.headers.get(header::TASK_PROOF).map(|v| v.as_str().to_owned());
            assert_eq!(proof(&msgs[0]).is_some(), n > 1, "a lone task is signed on its own");
            for m in &msgs {
                assert_eq!(check(&verify, m), Ok(()), "n={n} {}", m.msg_id());
                assert_eq!(check(&verify, m), Ok(()), "again, from the verified roots");
            }
            // A task's body or subject changed, or its proof moved to another task: forged.
            let first = &msgs[0];
            let err = verify.verify(first.subject(), b"{\"task\":\"evil\"}", &first.headers).unwrap_err();
            assert!(err.starts_with("task signature does not match"), "{err}");
            let err = verify.verify("loom.tasks.other", first.payload(), &first.headers).unwrap_err();
            assert!(err.starts_with("task signature does not match"), "{err}");
            if n > 1 {
                let err = verify.verify(first.subject(), msgs[1].payload(), &first.headers).unwrap_err();
                assert!(err.starts_with("task signature does not match"), "{err}");
            }
        }
    }

    #[test]
    fn a_proof_cannot_borrow_another_keys_root_or_a_malformed_one_pass() {
        let (key, other) = (SigningKey::generate(), SigningKey::generate());
        let verify = key.verify_key();
        let genuine = batch(&key, 4);
        assert_eq!(check(&verify, &genuine[0]), Ok(()));
        // Another key's batch of other tasks under the trusted key's id: its root was never
        // verified. (The same tasks would be the genuine ones, which verify whoever resends them.)
        let forged = batch_of(&other, 4, "evil").remove(1).with_header(header::TASK_KEY, verify.id());
        let err = check(&verify, &forged).unwrap_err();
        assert!(err.starts_with("task signature does not match"), "{err}");
        // The genuine root's signature, another size claimed for the same proof: not the root.
        let p = genuine[1].headers.get(header::TASK_PROOF).unwrap().as_str().replacen(".4.", ".5.", 1);
        let resized = genuine[1].clone().with_header(header::TASK_PROOF, &p);
        assert!(check(&verify, &resized).unwrap_err().starts_with("task signature does not match"));
        for bad in ["x", "1.4", "9.4.AAAA", "1.4.!!", "a.b.c"] {
            let m = genuine[1].clone().with_header(header::TASK_PROOF, bad);
            assert!(check(&verify, &m).is_err(), "{bad:?}");
        }
        // Re-signed alone, a batch-signed task drops its proof.
        let mut alone = genuine[2].clone();
        key.sign(&mut alone);
        assert_eq!(alone.headers.get(header::TASK_PROOF).map(|v| v.as_str()), Some(""));
        assert_eq!(check(&key.verify_key(), &alone), Ok(()));
    }

    #[test]
    fn keys_round_trip_through_pem_and_openssl_files_are_read() {
        let (pem_text, key) = SigningKey::generate_pem();
        let again = SigningKey::from_pem(&pem_text).unwrap();
        assert_eq!(again.id(), key.id());
        assert_eq!(VerifyKey::from_pem(&pem_text).unwrap(), key.verify_key(), "the public half of a private key");
        assert_eq!(VerifyKey::from_pem(&key.verify_key().to_pem()).unwrap(), key.verify_key());
        // `openssl genpkey -algorithm ed25519` (PKCS#8 v1) and `openssl pkey -pubout`.
        let openssl = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIFB0r1Q4uGm5rXWoYo3Yy0Yzv1B3w8pEs0gh8vX1J2bQ\n-----END PRIVATE KEY-----\n";
        let key = SigningKey::from_pem(openssl).unwrap();
        let public = key.verify_key().to_pem();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"), "{public}");
        for bad in ["", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "hello"] {
            assert!(VerifyKey::from_pem(bad).is_err(), "{bad:?}");
        }
        assert!(!format!("{key:?}").contains("MC4C"));
    }
}
