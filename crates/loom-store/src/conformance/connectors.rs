//! Conformance cases: connectors (create, versioned update, delete, concurrent writers).

use serde_json::json;

use crate::{Error, NewConnector, Store};

fn connector(id: &str, url: &str, sealed: &[u8]) -> NewConnector {
    NewConnector { id: id.into(), kind: "http".into(), config: json!({ "url": url }), sealed_secrets: sealed.to_vec() }
}

pub async fn connectors_are_kept_with_versions(store: &dyn Store) {
    assert!(store.list_connectors().await.unwrap().is_empty());
    let created = store.create_connector(connector("b-one", "http://b", &[0, 1, 2, 255])).await.unwrap();
    assert_eq!((created.version, created.sealed_secrets.as_slice()), (1, &[0u8, 1, 2, 255][..]));
    assert_eq!(created.config["url"], "http://b");
    store.create_connector(connector("a-two", "http://a", &[])).await.unwrap();
    let again = store.create_connector(connector("b-one", "http://other", &[])).await.unwrap_err();
    assert!(matches!(again, Error::AlreadyExists { .. }), "{again:?}");
    let ids: Vec<String> = store.list_connectors().await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["a-two", "b-one"]);
    assert_eq!(store.get_connector("b-one").await.unwrap(), created);

    let updated = store.update_connector(1, connector("b-one", "http://b2", &[9])).await.unwrap();
    assert_eq!((updated.version, updated.config["url"].as_str()), (2, Some("http://b2")));
    assert_eq!(updated.created_at, created.created_at);
    let stale = store.update_connector(1, connector("b-one", "http://b3", &[])).await.unwrap_err();
    assert!(matches!(&stale, Error::Conflict(m) if m.contains("expected version 1, it is at 2")), "{stale:?}");
    assert_eq!(store.get_connector("b-one").await.unwrap(), updated, "a refused update changes nothing");
    let missing = store.update_connector(1, connector("nope", "http://x", &[])).await.unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing:?}");

    store.delete_connector("b-one").await.unwrap();
    assert!(matches!(store.get_connector("b-one").await, Err(Error::NotFound { .. })));
    assert!(matches!(store.delete_connector("b-one").await, Err(Error::NotFound { .. })));
    assert!(store.create_connector(connector("", "http://x", &[])).await.is_err(), "an empty id is refused");
}

pub async fn concurrent_connector_updates_have_one_winner(store: &dyn Store) {
    store.create_connector(connector("race", "http://r", &[])).await.unwrap();
    let writers = (0..8u8).map(|i| store.update_connector(1, connector("race", &format!("http://r{i}"), &[i])));
    let outcomes = futures::future::join_all(writers).await;
    let won: Vec<_> = outcomes.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(won.len(), 1, "exactly one update at version 1 wins: {outcomes:?}");
    assert!(outcomes.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, Error::Conflict(_))));
    let stored = store.get_connector("race").await.unwrap();
    assert_eq!(&stored, won[0].as_ref().unwrap());
}
