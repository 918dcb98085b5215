//! `loom serve db` serves its own `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`; behind
//! PgBouncer it leaves migrations to `loom db migrate`.

use std::io::{Read, Write};
use std::time::Duration;

use loom_store::testing::TestDatabase;

use crate::support::{Group, LOOM, free_port, fresh};

/// `GET path` on `addr`: (status, body).
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
    write!(conn, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

#[test]
fn serve_db_answers_metrics_and_probes_on_its_metrics_addr() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDatabase::create());
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut cmd = fresh(LOOM, dir.path(), &[("LOOM_DATABASE_URL", db.url())]);
    cmd.args(["serve", "db", "--listen", &listen, "--metrics-addr", &metrics]);
    let (group, output) = Group::spawn(cmd);
    let line = output.wait_for("the metrics line", Duration::from_secs(30), |l| l.contains("metrics and probes at"));
    assert!(line.contains(&format!("http://{metrics}/metrics")), "{line}");

    let (status, text) = get(&metrics, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert_eq!(get(&metrics, "/healthz"), (200, "ok\n".to_owned()));
    // Ready once the service's first store probe has answered, which may come just after start.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut ready = get(&metrics, "/readyz");
    while ready.0 != 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        ready = get(&metrics, "/readyz");
    }
    assert_eq!(ready, (200, "ready\n".to_owned()));
    // The earlier implementation's probe paths, which its manifests and monitors use.
    assert_eq!(get(&metrics, "/health/live"), (200, "ok\n".to_owned()));
    assert_eq!(get(&metrics, "/health/ready"), (200, "ready\n".to_owned()));
    assert_eq!(get(&metrics, "/health"), (200, "ready\n".to_owned()));
    assert_eq!(get(&metrics, "/nope").0, 404);
    drop(group);
    drop(db);
}

#[test]
fn serve_db_behind_pgbouncer_leaves_migrations_to_loom_db_migrate() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDatabase::create());
    let dir = tempfile::tempdir().unwrap();
    let env = [("LOOM_DATABASE_URL", db.url()), ("LOOM_DATABASE__PGBOUNCER", "true")];
    let serve = |listen: &str, metrics: &str| {
        let mut cmd = fresh(LOOM, dir.path(), &env);
        cmd.args(["serve", "db", "--listen", listen, "--metrics-addr", metrics]);
        cmd
    };
    let (listen, metrics) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));

    // A fresh database: refused, naming the command that migrates, and nothing was applied.
    let out = serve(&listen, &metrics).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("migration(s) not applied") && err.contains("loom db migrate"), "{err}");
    let applied: bool = runtime.block_on(async {
        let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&pool).await.unwrap()
    });
    assert!(!applied, "serve db behind PgBouncer must not migrate");

    let out = fresh(LOOM, dir.path(), &env).args(["db", "migrate"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Migrated: it serves.
    let (group, output) = Group::spawn(serve(&listen, &metrics));
    output.wait_for("the metrics line", Duration::from_secs(30), |l| l.contains("metrics and probes at"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&metrics, "/readyz").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "not ready: {:?}", get(&metrics, "/readyz"));
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(group);
    drop(db);
}

/// A control plane started while its NATS is down (restarting, not up yet) waits for it, says so,
/// and serves once NATS is back — it does not exit, as it once did (found by the fault suite:
/// an agent restarted during a NATS kill exited on its own).
#[test]
fn a_service_started_while_nats_is_down_waits_for_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut nats = runtime.block_on(loom_faults::NatsServer::start()).unwrap();
    runtime.block_on(nats.kill()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let key = dir.path().join("task-signing.pem");
    std::fs::write(&key, loom_bus::SigningKey::generate_pem().0).unwrap();
    let key = key.display().to_string();
    let env = [("LOOM_NATS_URL", nats.url()), ("RUST_LOG", "warn".into()), ("LOOM_BUS__TASK_SIGNING_KEY", key)];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut cmd = fresh(LOOM, dir.path(), &env);
    cmd.args(["serve", "control-plane", "--listen", &listen]);
    let (mut group, output) = Group::spawn(cmd);
    output.wait_for("a wait for NATS", Duration::from_secs(30), |l| l.contains("NATS is not reachable yet"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(group.0.try_wait().unwrap().is_none(), "it exited while NATS was down: {}", output.text());
    runtime.block_on(nats.start_again()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(&listen).is_ok() && get(&listen, "/readyz").0 == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not ready after NATS came back: {}", output.text());
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(group);
}
