//! Secrets: write-only in every answer, sealed in the table, kept across a restart of the
//! service, re-sealed by a key rotation; concurrent writers are safe.

use std::sync::Arc;

use loom_connectors::{Connectors, Error, Keyring, Kind, Spec};
use loom_store::Store;
use sqlx::Row;

use crate::support::{Fixture, key};

const SECRET: &str = "sk-very-secret-0123456789";

fn llm(id: &str) -> Spec {
    let mut s = Spec::new(id, Kind::LlmProvider, "http://127.0.0.1:9/v1");
    s.secrets.insert("api_key".into(), SECRET.into());
    s.settings.insert("default_model".into(), "gpt-test".into());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_write_only_and_sealed_in_the_table() {
    let f = Fixture::start().await;
    let c = &f.connectors;
    let created = c.register(llm("llm")).await.unwrap();
    let mut changed = llm("llm");
    changed.secrets.clear();
    changed.description = "kept key".into();
    let updated = c.update(created.version, changed, &[]).await.unwrap();
    let answers = [
        format!("{created:?}"),
        format!("{updated:?}"),
        format!("{:?}", c.get("llm").await.unwrap()),
        format!("{:?}", c.list().await.unwrap()),
        format!("{:?}", c.check("llm").await.unwrap()),
        format!("{:?}", llm("llm")),
        serde_json::to_string(&c.get("llm").await.unwrap()).unwrap(),
    ];
    for answer in &answers {
        assert!(!answer.contains(SECRET), "a secret leaked: {answer}");
    }
    assert_eq!(updated.secret_names, ["api_key"], "an update without secrets keeps them");
    assert_eq!(c.resolve_llm("llm").await.unwrap().api_key.as_deref(), Some(SECRET), "only agents resolve it");
    assert!(!format!("{:?}", c.resolve_llm("llm").await.unwrap()).contains(SECRET));

    // The table holds sealed bytes, not the secret, and nothing secret in the config either.
    let pool = sqlx::PgPool::connect(f.db.url()).await.unwrap();
    let row =
        sqlx::query("SELECT config, sealed_secrets FROM connectors WHERE id = 'llm'").fetch_one(&pool).await.unwrap();
    let config: String = row.get("config");
    let sealed: Vec<u8> = row.get("sealed_secrets");
    assert!(!config.contains(SECRET), "{config}");
    assert!(sealed.len() > SECRET.len() + 16, "a nonce, a tag and the ciphertext");
    assert!(!sealed.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "the secret is not in clear");

    // Removing a secret removes it.
    let at = c.get("llm").await.unwrap().version;
    let gone = c.update(at, llm_without_secret(), &["api_key".into()]).await.unwrap();
    assert!(gone.secret_names.is_empty());
    assert_eq!(c.resolve_llm("llm").await.unwrap().api_key, None);
}

fn llm_without_secret() -> Spec {
    let mut s = llm("llm");
    s.secrets.clear();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_survive_a_restart_and_a_key_rotation() {
    let f = Fixture::start().await;
    f.connectors.register(llm("keep")).await.unwrap();
    f.stop.cancel();

    // A new service process: a new store connection, the same key.
    let store: Arc<dyn Store> = Arc::new(f.db.store().await);
    let again = Connectors::new(store.clone(), Keyring::new(key(1), vec![]));
    assert_eq!(again.resolve_llm("keep").await.unwrap().api_key.as_deref(), Some(SECRET));
    assert_eq!(again.rotate_keys().await.unwrap(), 0, "nothing to rotate under the same key");

    // A new key without the old one cannot open it, and says which key it needs.
    let lost = Connectors::new(store.clone(), Keyring::new(key(2), vec![]));
    let err = lost.resolve_llm("keep").await.unwrap_err();
    assert!(matches!(&err, Error::Sealed(m) if m.contains("not configured")), "{err:?}");

    // Rotation: the new key with the old one retired re-seals, after which the old one is not needed.
    let rotating = Connectors::new(store.clone(), Keyring::new(key(2), vec![key(1)]));
    assert_eq!(rotating.rotate_keys().await.unwrap(), 1);
    let rotated = Connectors::new(store.clone(), Keyring::new(key(2), vec![]));
    assert_eq!(rotated.resolve_llm("keep").await.unwrap().api_key.as_deref(), Some(SECRET));
    assert_eq!(rotated.get("keep").await.unwrap().version, 2, "a rotation is a new version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_register_update_remove_are_safe() {
    let f = Fixture::start().await;
    let c = &f.connectors;
    let registers = (0..8).map(|_| c.register(llm("race")));
    let outcomes = futures::future::join_all(registers).await;
    assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "{outcomes:?}");
    assert!(outcomes.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, Error::AlreadyExists(_))));

    let updates = (0..8).map(|i| {
        let mut s = llm("race");
        s.description = format!("writer {i}");
        s.secrets.insert("api_key".into(), format!("sk-writer-{i}"));
        c.update(1, s, &[])
    });
    let outcomes = futures::future::join_all(updates).await;
    let winners: Vec<_> = outcomes.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "one update wins at version 1: {outcomes:?}");
    assert!(outcomes.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, Error::Conflict(_))));
    let stored = c.get("race").await.unwrap();
    assert_eq!((stored.version, &stored.description), (2, &winners[0].description));
    let writer = stored.description.trim_start_matches("writer ");
    assert_eq!(c.resolve_llm("race").await.unwrap().api_key, Some(format!("sk-writer-{writer}")), "its secret too");

    let removes = (0..4).map(|_| c.remove("race"));
    let outcomes = futures::future::join_all(removes).await;
    assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "{outcomes:?}");
    assert!(matches!(c.get("race").await, Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_refused_naming_the_field() {
    let f = Fixture::start().await;
    let c = &f.connectors;
    let cases: Vec<(Spec, &str)> = vec![
        (Spec::new("Bad Id", Kind::Http, "http://x"), "id"),
        (Spec::new("ok", Kind::Http, "ftp://x"), "url"),
        (Spec::new("ok", Kind::Http, "http://user:pw@x"), "url"),
        (Spec { check_timeout: std::time::Duration::ZERO, ..Spec::new("ok", Kind::Http, "http://x") }, "check_timeout"),
        (Spec { event_types: vec!["bead.closed".into()], ..Spec::new("ok", Kind::Http, "http://x") }, "event_types"),
        (Spec::new("hook", Kind::Webhook, "http://x"), "secrets"),
    ];
    for (spec, field) in cases {
        match c.register(spec.clone()).await {
            Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field, "{spec:?}"),
            other => panic!("{spec:?} was not refused on {field}: {other:?}"),
        }
    }
    assert!(c.list().await.unwrap().is_empty(), "nothing was stored");
}
