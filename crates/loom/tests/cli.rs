//! System test: the `loom` binary. `loom up` on the embedded default (SQLite + in-process bus),
//! then the CLI registers a local git repository and runs a two-bead shell chain to completion.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOOM: &str = env!("CARGO_BIN_EXE_loom");

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn loom(api: &str, key: &str, args: &[&str]) -> String {
    let out = Command::new(LOOM).args(args).env("LOOM_API_URL", api).env("LOOM_API_KEY", key).output().unwrap();
    assert!(out.status.success(), "loom {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn loom_up_runs_a_shell_bead_chain_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin.git");
    let seed = tmp.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(tmp.path(), &["init", "-q", "--bare", "-b", "main", origin.to_str().unwrap()]);
    git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("README"), "demo\n").unwrap();
    git(&seed, &["add", "README"]);
    git(&seed, &["commit", "-qm", "init"]);
    git(&seed, &["push", "-q", origin.to_str().unwrap(), "main"]);

    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(LOOM)
        .args(["up", "--data-dir", tmp.path().join("data").to_str().unwrap()])
        .env("LOOM_HTTP_ADDR", &addr)
        .env_remove("LOOM_DATABASE_URL")
        .env_remove("LOOM_NATS_URL")
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _up = Up(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut key = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(k) = line.trim().strip_prefix("export LOOM_API_KEY=") {
            key = Some(k.to_owned());
        }
        if line.contains("control plane at") {
            break;
        }
    }
    let key = key.expect("the first start prints an admin key");
    // Keep reading, so the server never writes into a full or closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let api = format!("http://{addr}");
    loom(&api, &key, &["project", "add", "demo", "--repo", origin.to_str().unwrap()]);
    let first = loom(
        &api,
        &key,
        &["bead", "create", "--project", "demo", "--title", "write", "--context", "command=echo built > out.txt"],
    );
    let first = first.trim();
    let second = loom(
        &api,
        &key,
        &[
            "bead",
            "create",
            "--project",
            "demo",
            "--title",
            "check",
            "--blocked-by",
            first,
            "--context",
            "command=grep -q built out.txt && echo checked >> out.txt",
        ],
    );
    let second = second.trim();
    let deadline = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let shown: serde_json::Value =
            serde_json::from_str(&loom(&api, &key, &["bead", "show", second, "--json"])).unwrap();
        if shown["status"] == "closed" || Instant::now() > deadline {
            break shown;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(shown["status"], "closed", "{shown}");
    assert_eq!(shown["close_reason"], "completed");
    let log = Command::new("git")
        .args(["--git-dir", origin.to_str().unwrap(), "log", "--format=%s", "main"])
        .output()
        .unwrap();
    let log = String::from_utf8(log.stdout).unwrap();
    assert_eq!(log.lines().collect::<Vec<_>>(), [format!("{second}: check"), format!("{first}: write"), "init".into()]);
    let listed = loom(&api, &key, &["bead", "list", "--project", "demo"]);
    assert_eq!(listed.matches("closed").count(), 2, "{listed}");
}
