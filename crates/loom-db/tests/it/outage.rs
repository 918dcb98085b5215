//! PostgreSQL going away under the service. The machine's PostgreSQL is shared, so outages are
//! made for the test's database only: (1) its backends are terminated with `pg_terminate_backend`
//! (what a PostgreSQL restart does to every open connection); (2) the service reaches PostgreSQL
//! through a TCP proxy that the test takes down (connections reset, new ones refused) and brings
//! back on the same port — a PostgreSQL restart as the service sees it.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loom_db::ServerConfig;
use loom_domain::{NewBead, NewProject, ProjectId};
use loom_store::conformance::claim_req;
use loom_store::testing::TestDatabase;
use loom_store::{BeadFilter, Error, PageRequest, PgOptions, PgStore, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::{PgProxy, Service, fast_client, service};

/// Ends every connection to the database of `url`; returns how many there were.
async fn terminate_backends(url: &str) -> usize {
    let name = PgConnectOptions::from_str(url).unwrap().get_database().unwrap().to_owned();
    let mut conn = sqlx::PgConnection::connect(&loom_store::testing::admin_url()).await.expect("admin connection");
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(&mut conn)
    .await
    .expect("terminate backends");
    let _ = conn.close().await;
    ended.into_iter().filter(|ok| *ok).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_are_replaced_without_the_client_noticing() {
    let (guard, _) = service().await;
    let client = fast_client(&guard.service.url());
    let project = ProjectId::parse("outage").unwrap();
    client.create_project(NewProject::new(project.clone(), "/tmp/repo")).await.unwrap();
    let bead = client.create_beads(vec![NewBead::new(project.clone(), "before")]).await.unwrap().remove(0);
    // More recently used connections than the client makes attempts: each dead one it drew
    // would cost an attempt, unless the service stops handing them out after the first.
    let reads = (0..8).map(|_| client.get_bead(&bead.id));
    futures::future::try_join_all(reads).await.unwrap();

    assert!(terminate_backends(guard.db.url()).await > 0, "the service had open connections to end");
    assert_eq!(client.get_bead(&bead.id).await.unwrap(), bead, "reads go on");
    client.create_beads(vec![NewBead::new(project.clone(), "after")]).await.expect("writes go on");
    assert_eq!(client.claim_ready(&claim_req(&project, 5)).await.expect("claims go on").len(), 2);
}

async fn health(url: &str) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(url.to_owned()).unwrap().connect().await.expect("connect");
    let mut health = HealthClient::new(channel);
    let request = HealthCheckRequest { service: loom_proto::SERVICE_NAME.into() };
    health.check(request).await.expect("health check").into_inner().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_is_a_clear_error_then_the_service_recovers_by_itself() {
    let db = TestDatabase::create().await;
    db.store().await; // migrates
    let direct = PgConnectOptions::from_str(db.url()).unwrap();
    let target = format!("{}:{}", direct.get_host(), direct.get_port()).parse().unwrap();
    let mut proxy = PgProxy::start(target).await;
    let via_proxy = direct.host("127.0.0.1").port(proxy.addr.port()).to_url_lossy().to_string();
    let options = PgOptions { max_connections: 4, acquire_timeout: Duration::from_millis(500), ..PgOptions::default() };
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&via_proxy, &options).await.unwrap());
    let config = ServerConfig { health_interval: Duration::from_millis(100), ..ServerConfig::default() };
    let service = Service::start(store, config).await;
    let client = fast_client(&service.url());
    let project = ProjectId::parse("restart").unwrap();
    client.create_project(NewProject::new(project.clone(), "/tmp/repo")).await.unwrap();

    proxy.down();
    let err = client.create_beads(vec![NewBead::new(project.clone(), "refused")]).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(err.to_string().starts_with("database unavailable"), "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(health(&service.url()).await, ServingStatus::NotServing, "health follows the database");

    proxy.up().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let created = loop {
        match client.create_beads(vec![NewBead::new(project.clone(), "after")]).await {
            Ok(b) => break b,
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no recovery within 10 s: {e}"),
        }
    };
    let filter = BeadFilter { project: Some(project), ..BeadFilter::default() };
    let beads = client.list_beads(&filter, &PageRequest::first(10)).await.unwrap().beads;
    assert_eq!(beads, created, "the create refused during the outage left nothing behind");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(health(&service.url()).await, ServingStatus::Serving);
    service.stop().await;
    drop(proxy);
}
