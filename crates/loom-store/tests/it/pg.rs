//! The conformance suite against PostgreSQL, plus PostgreSQL-specific behaviour.

use std::sync::Arc;

use loom_store::Store;
use loom_store::testing::TestDatabase;

async fn make() -> (Arc<dyn Store>, TestDatabase) {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    (Arc::new(store), db)
}

loom_store::conformance_tests!(make);

#[tokio::test]
async fn migrate_is_idempotent() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    assert_eq!(store.migrate().await.unwrap(), 0, "a second run applies nothing");
}

#[tokio::test]
async fn unreachable_database_is_a_clear_transient_error() {
    let opts = loom_store::PgOptions { acquire_timeout: std::time::Duration::from_millis(500), ..Default::default() };
    let err = loom_store::PgStore::connect("postgres://postgres@127.0.0.1:1/none", &opts).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().starts_with("database unavailable"), "{err}");
}
