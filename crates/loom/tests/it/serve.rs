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
