//! `PgCluster`: committed rows survive an immediate stop; drop stops the server and cleans up.

use std::process::Command;

use anyhow::{Context, ensure};
use loom_faults::PgCluster;

#[tokio::test]
async fn a_committed_row_survives_an_immediate_stop() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    assert_eq!(cluster.url(), format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port()));
    assert_eq!(psql(&cluster.url(), "select 1")?, "1");
    psql(&cluster.url(), "create table survivors (name text); insert into survivors values ('row-1')")?;

    cluster.stop_immediate().await?;
    assert!(!pg_isready(cluster.port())?, "the server still accepts connections");

    cluster.start_again().await?;
    assert!(pg_isready(cluster.port())?);
    assert_eq!(psql(&cluster.url(), "select name from survivors")?, "row-1");
    Ok(())
}

#[tokio::test]
async fn a_fast_restart_serves_again_on_the_same_port() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let port = cluster.port();
    psql(&cluster.url(), "create table kept (n int); insert into kept values (7)")?;
    cluster.restart().await?;
    assert_eq!(cluster.port(), port);
    assert_eq!(psql(&cluster.url(), "select n from kept")?, "7");
    assert!(matches!(cluster.start_again().await, Err(loom_faults::Error::AlreadyRunning { .. })));
    cluster.stop_fast().await?;
    assert!(!pg_isready(port)?);
    Ok(())
}

#[tokio::test]
async fn dropping_a_cluster_stops_it_and_removes_its_directory() -> anyhow::Result<()> {
    let cluster = PgCluster::start().await?;
    let (port, data) = (cluster.port(), cluster.data_dir());
    assert!(data.join("PG_VERSION").exists());
    drop(cluster);
    assert!(!pg_isready(port)?, "the server still accepts connections");
    assert!(!data.exists(), "{} is still there", data.display());
    Ok(())
}

/// Runs `sql` with `psql -tA` and returns its trimmed output.
fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let output = Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-tAc", sql]).output().context("run psql")?;
    ensure!(output.status.success(), "psql failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

fn pg_isready(port: u16) -> anyhow::Result<bool> {
    let status =
        Command::new("pg_isready").args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", "2"]).status()?;
    Ok(status.success())
}
