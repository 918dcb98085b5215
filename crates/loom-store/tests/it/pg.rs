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

#[tokio::test]
async fn the_sql_bead_id_function_matches_the_domain() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let prefix = loom_domain::BeadPrefix::parse("webapp2").unwrap();
    for seq in [0_i64, 1, 9, 10, 35, 36, 1295, 1296, 46_655, 46_656, 1 << 40, i64::MAX] {
        let sql: String = sqlx::query_scalar("SELECT loom_bead_id($1, $2)")
            .bind(prefix.as_str())
            .bind(seq)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(sql, loom_domain::BeadId::new(&prefix, seq as u64).as_str(), "seq {seq}");
    }
}
