//! `loom up`'s agents run bead commands in their sandbox: a command looking for Loom's secrets
//! (the process environment through `/proc`, the configuration file, the LLM key file, the
//! SQLite file) finds none, and it is recorded as an `agent.command` event. Without `bwrap`,
//! `loom up` refuses to start and says how to fix it; the opt-out starts with a warning.

use std::time::Duration;

use crate::support::{Group, LOOM, Up, bare_repo, free_port, fresh, show};

#[test]
fn a_bead_command_finds_none_of_loom_s_secrets() {
    // Not under /tmp, which the sandbox replaces anyway: the hiding itself is under test.
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let dir = tmp.path();
    let origin = bare_repo(dir);
    let (env_key, file_key, toml_secret) =
        ("sk-env-secret-7a1c", "sk-file-secret-93be", "postgres://loom:toml-secret-55d0@db.invalid/loom");
    std::fs::write(dir.join("llm.key"), file_key).unwrap();
    // A database URL that is never used (the flag wins), only there to be a secret in the file.
    let toml = format!("# {toml_secret}\n[llm]\napi_key_file = \"llm.key\"\n");
    std::fs::write(dir.join("loom.toml"), toml).unwrap();
    let up = Up::start(dir, &[("LOOM_LLM_API_KEY", env_key)]);
    let added = up.loom_in(dir, &["project", "add", "demo", "--repo", "origin.git"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let command = format!(
        "command=cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' > leak.txt; \
         cat {d}/loom.toml {d}/llm.key >> leak.txt 2>&1; \
         echo sqlite-bytes=$(cat {d}/.loom/loom.sqlite 2>/dev/null | wc -c) >> leak.txt; \
         ls -a {d}/.loom >> leak.txt; echo looked >> leak.txt",
        d = dir.display()
    );
    let bead = up.loom(&["bead", "create", "--project", "demo", "--title", "snoop", "--context", &command]);
    let bead = bead.trim();
    let shown = up.wait_status(bead, "closed");
    assert_eq!(shown["status"], "closed", "{shown}");
    let leak = show(&origin, "leak.txt");
    assert!(leak.contains("looked") && leak.contains("sqlite-bytes=0"), "{leak}");
    for secret in [env_key, file_key, "toml-secret-55d0"] {
        assert!(!leak.contains(secret), "{secret} reached a bead command: {leak}");
        assert!(!shown.to_string().contains(secret), "{secret} is in the bead's result");
    }
    let events = up.loom(&["events", "--after", "0", "--json"]);
    let ran: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["type"] == "agent.command" && e["entity_id"] == bead)
        .collect();
    assert_eq!(ran.len(), 1, "{events}");
    assert_eq!(
        (ran[0]["data"]["exit_code"].as_i64(), ran[0]["data"]["sandbox"].as_str()),
        (Some(0), Some("bubblewrap"))
    );
}

#[test]
fn without_bwrap_loom_up_refuses_to_start_and_the_opt_out_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("no-bwrap-here");
    std::fs::create_dir(&empty).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let env = [("LOOM_HTTP_ADDR", addr.as_str())];
    let out = fresh(LOOM, tmp.path(), &env).env("PATH", &empty).arg("up").output().unwrap();
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{error}");
    assert!(error.contains("apt-get install bubblewrap") && error.contains("sandbox = \"none\""), "{error}");
    assert!(!tmp.path().join(".loom").exists(), "nothing started");

    let mut opted_out = fresh(LOOM, tmp.path(), &env);
    opted_out.env("PATH", &empty).env("LOOM_AGENT__SANDBOX", "none").arg("up");
    let (_group, lines) = Group::spawn(opted_out);
    lines.wait_for("the warning", Duration::from_secs(60), |l| l.contains("commands run WITHOUT a sandbox"));
    lines.wait_for("the start", Duration::from_secs(60), |l| l.contains("control plane at"));
}
