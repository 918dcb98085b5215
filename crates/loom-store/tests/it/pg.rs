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

/// A caller cancelled while `BEGIN` is on the wire (a client gone, a deadline) leaves no open
/// transaction on the pooled connection: the next single statement on it commits and is seen by
/// everyone. sqlx alone leaves the session in the transaction (launchbadge/sqlx#4393), and the
/// statement is reported done but stays invisible until some later commit on that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cancelled_during_begin_leaves_no_open_transaction_on_the_pool() {
    use loom_faults::{Mode, Proxy};
    use std::time::Duration;

    let db = TestDatabase::create().await;
    let direct = db.store().await;
    // The test database's URL names 127.0.0.1:5432 (or LOOM_TEST_DATABASE_URL's host): the same
    // database, reached through the fault proxy.
    let (host, port) = host_port(db.url());
    let upstream = tokio::net::lookup_host((host.as_str(), port)).await.unwrap().next().unwrap();
    let proxy = Proxy::start(upstream).await.unwrap();
    let via = db.url().replacen(&format!("{host}:{port}"), &proxy.addr().to_string(), 1);
    let opts = loom_store::PgOptions { max_connections: 1, ..Default::default() };
    let store = loom_store::PgStore::connect(&via, &opts).await.unwrap();
    store.save_position("warm", 1).await.unwrap();
    // Its connection back in the pool (sqlx pings it on release, in the background).
    tokio::time::sleep(Duration::from_millis(200)).await;
    // BEGIN's reply now takes 400 ms; the caller gives up after 100 ms, while it is on the wire.
    proxy.set(Mode::Delay(Duration::from_millis(400)));
    let project = loom_domain::NewProject::new(loom_domain::ProjectId::parse("cancelled").unwrap(), "/tmp/r.git");
    let cancelled = tokio::time::timeout(Duration::from_millis(100), store.create_project(project)).await;
    assert!(cancelled.is_err(), "the write was meant to be cancelled in flight: {cancelled:?}");
    proxy.set(Mode::Pass);
    // The one connection of the pool, reused: a single statement on it.
    store.save_position("after", 7).await.unwrap();
    assert_eq!(direct.position("after").await.unwrap(), 7, "a statement on the reused connection is not committed");
    assert_eq!(direct.position("warm").await.unwrap(), 1);
}

/// `host` and `port` of a `postgres://user@host:port/db` URL.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("@").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "5432"));
    (host.to_owned(), port.parse().unwrap())
}
