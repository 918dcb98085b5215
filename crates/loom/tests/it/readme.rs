//! README.md, verbatim: its set-up runs `loom up` in a fresh directory with the defaults, its
//! quick start runs as written (a local bare repository stands in for `/path/to/repo`, the key
//! `loom up` printed for `loom_…`), and every `LOOM_*` variable it names is accepted by
//! `loom config show` with a visible effect.

use std::path::Path;
use std::time::Duration;

use crate::support::{Group, LOOM, Up, bare_repo, fresh, log, show};

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap()
}

/// The lines of the first `sh` code block after the heading `## {heading}`.
fn block_after(readme: &str, heading: &str) -> Vec<String> {
    fenced_after(readme, heading, "sh")
}

/// The lines of the first `{lang}` code block after the heading `## {heading}`.
fn fenced_after(readme: &str, heading: &str, lang: &str) -> Vec<String> {
    let start = readme.find(&format!("\n## {heading}\n")).unwrap_or_else(|| panic!("README has no ## {heading}"));
    let rest = &readme[start..];
    let fence = format!("```{lang}\n");
    let open = rest.find(&fence).unwrap_or_else(|| panic!("a {lang} block after ## {heading}")) + fence.len();
    let close = rest[open..].find("```").expect("the block ends");
    rest[open..open + close].lines().map(str::to_owned).collect()
}

/// The command of a line, without its trailing comment.
fn command(line: &str) -> &str {
    line.split("  #").next().unwrap().trim()
}

/// The set-up line that runs Loom: `./scripts/install.sh && loom up`. Returns the part that runs
/// it, after checking that the install script installs what `loom up` needs and this crate.
fn run_command(setup: &[String]) -> String {
    let line = setup.iter().find(|l| command(l).ends_with("loom up")).expect("a set-up line runs `loom up`");
    let (install, run) = command(line).split_once(" && ").expect("install && run");
    assert_eq!(install, "./scripts/install.sh");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = std::fs::read_to_string(root.join("scripts/install.sh")).unwrap();
    for step in ["need git git", "need bwrap bubblewrap", "cargo install --locked --path crates/loom"] {
        assert!(script.lines().any(|l| l.trim_start().starts_with(step)), "scripts/install.sh runs {step:?}");
    }
    assert!(Path::new(env!("CARGO_MANIFEST_DIR")).ends_with("crates/loom"), "`--path crates/loom` is this crate");
    assert_eq!(setup.len(), 2, "two set-up commands: run Loom, run the tests: {setup:?}");
    run.to_owned()
}

#[test]
fn the_quick_start_runs_as_written_in_a_fresh_directory() {
    let readme = readme();
    let run = run_command(&block_after(&readme, "Set up"));
    let remote = tempfile::tempdir().unwrap();
    let origin = bare_repo(remote.path());
    let home = tempfile::tempdir().unwrap();
    // The README's default port may be taken on a test machine: LOOM_HTTP_ADDR (documented) moves it.
    let up = Up::run(&run, home.path(), &[]);

    let script = block_after(&readme, "Quick start").join("\n");
    for placeholder in ["loom_…", "/path/to/repo"] {
        assert!(script.contains(placeholder), "the quick start uses {placeholder}");
    }
    let script = script.replace("loom_…", &up.key).replace("/path/to/repo", origin.to_str().unwrap());
    let mut sh = fresh("sh", home.path(), &[("LOOM_HTTP_ADDR", &up.addr)]);
    sh.args(["-c", &format!("set -e\n{script}")]);
    let (_script, out) = Group::spawn(sh);
    // The last command follows the event log until stopped; the chain closing shows on it.
    let closed = "bead demo-2 closed: completed";
    out.wait_for(closed, Duration::from_secs(90), |l| l.contains("bead.closed") && l.contains(closed));
    let printed = out.text();
    assert!(printed.contains("bead demo-1 closed: completed"), "{printed}");
    for want in ["project demo added (bead prefix demo)", "\ndemo-1\n", "\ndemo-2\n", "— test", "waits on: demo-1"] {
        assert!(printed.contains(want), "{want:?} in the quick start's output:\n{printed}");
    }
    let shown = up.wait_status("demo-2", "closed");
    assert_eq!((shown["status"].as_str(), shown["close_reason"].as_str()), (Some("closed"), Some("completed")));
    assert_eq!(log(&origin), ["demo-2: test", "demo-1: build", "init"]);
    assert_eq!(show(&origin, "BUILD.txt"), "built\ntested\n");
    let work = home.path().join(".loom/work/demo");
    assert!(home.path().join(".loom/loom.sqlite").exists(), "state in ./.loom");
    assert!(work.join("repo/.git").exists() && !work.join(".loom").exists(), "the workspace is where it says");
}

/// Each variable the README names, a value for it, and what `loom config show` prints then.
fn variables(dir: &Path) -> Vec<(&'static str, String, String)> {
    let file = dir.join("custom.toml");
    std::fs::write(&file, "log_level = \"trace\"\n").unwrap();
    let data = format!("data_dir = \"{}\"", dir.join("state").display());
    let signing = format!("task_signing_key = \"{}\"", dir.join("keys/signing.pem").display());
    let verify = format!("task_verify_key = \"{}\"", dir.join("keys/verify.pem").display());
    [
        ("LOOM_API_KEY", "loom_sekret", "api_key = \"****\""),
        ("LOOM_API_URL", "http://10.1.2.3:9999", "api_url = \"http://10.1.2.3:9999\""),
        ("LOOM_AGENT__SANDBOX", "none", "sandbox = \"none\""),
        ("LOOM_CONFIG", file.to_str().unwrap(), "log_level = \"trace\""),
        ("LOOM_DATA_DIR", "state", &data),
        ("LOOM_DATABASE_URL", "postgres://u:sekret@db:5432/loom", "database_url = \"postgres://u:****@db:5432/loom\""),
        ("LOOM_DATABASE__SERVICE_URL", "http://db-host:50051", "service_url = \"http://db-host:50051\""),
        ("LOOM_DATABASE__SERVICE_TOKEN", "db-token-0123456789abcdef", "service_token = \"****\""),
        ("LOOM_CONNECTORS__SERVICE_URL", "http://conn-host:50052", "service_url = \"http://conn-host:50052\""),
        ("LOOM_CONNECTORS__SERVICE_TOKEN", "conn-token-0123456789abcdef", "service_token = \"****\""),
        ("LOOM_DISPATCH__MAX_ATTEMPTS", "5", "max_attempts = 5"),
        ("LOOM_BUS__PASSWORD", "nats-sekret", "password = \"****\""),
        ("LOOM_BUS__TOKEN", "nats-token-sekret", "token = \"****\""),
        ("LOOM_BUS__TASK_SIGNING_KEY", "keys/signing.pem", &signing),
        ("LOOM_BUS__TASK_VERIFY_KEY", "keys/verify.pem", &verify),
        ("LOOM_HTTP_ADDR", "127.0.0.1:9090", "http_addr = \"127.0.0.1:9090\""),
        ("LOOM_LLM_API_KEY", "sk-sekret", "# API key: **** (from $LOOM_LLM_API_KEY)"),
        ("LOOM_LLM_MODEL", "qwen-coder", "model = \"qwen-coder\""),
        ("LOOM_LLM_URL", "https://llm.example/v1", "base_url = \"https://llm.example/v1\""),
        ("LOOM_LLM__BASE_URL", "https://llm2.example", "base_url = \"https://llm2.example\""),
        ("LOOM_LLM__MODEL", "llama", "model = \"llama\""),
        ("LOOM_LOG_FORMAT", "json", "log_format = \"json\""),
        ("LOOM_NATS_URL", "nats://nats.example:4222", "nats_url = \"nats://nats.example:4222\""),
        // What a shell bead's command is given; not configuration, so `loom` run from inside a
        // bead's command (with them set) still starts, configured as before.
        ("LOOM_PROJECT_ID", "demo", "http_addr = \"127.0.0.1:8080\""),
        ("LOOM_BEAD_ID", "demo-1", "http_addr = \"127.0.0.1:8080\""),
        ("LOOM_DISPATCH_ID", "0190a0f0-0000-7000-8000-000000000001", "http_addr = \"127.0.0.1:8080\""),
        ("LOOM_ATTEMPT", "2", "http_addr = \"127.0.0.1:8080\""),
        ("LOOM_BUILD", "make", "http_addr = \"127.0.0.1:8080\""),
        ("LOOM_TEST", "make test", "http_addr = \"127.0.0.1:8080\""),
        ("LOOM_LINT", "make lint", "http_addr = \"127.0.0.1:8080\""),
        // The opt-in smoke tier's switches (scripts/real-llm.sh).
        ("LOOM_TEST_REAL_LLM", "1", "http_addr = \"127.0.0.1:8080\""),
        ("LOOM_REAL_LLM_VENV", "/tmp/venv", "http_addr = \"127.0.0.1:8080\""),
    ]
    .into_iter()
    .map(|(name, value, shown)| (name, value.to_owned(), shown.to_owned()))
    .collect()
}

/// `LOOM_*` names in `text` (a bare `LOOM_` prefix and `LOOM_*` are not names).
fn names(text: &str) -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices("LOOM_") {
        let name: String =
            text[i..].chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        let name = name.trim_end_matches('_');
        if name.len() > "LOOM".len() {
            found.insert(name.to_owned());
        }
    }
    found
}

#[test]
fn every_environment_variable_the_readme_names_works() {
    let dir = tempfile::tempdir().unwrap();
    let vars = variables(dir.path());
    for name in names(&readme()) {
        assert!(vars.iter().any(|(n, ..)| *n == name), "README names {name}; add it to this test");
    }
    for (name, value, want) in &vars {
        let out = fresh(LOOM, dir.path(), &[(name, value)]).args(["config", "show"]).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{name}={value}: loom config show failed: {stderr}");
        assert!(stdout.contains(want.as_str()), "{name}={value}: want {want:?} in\n{stdout}");
        assert!(!stdout.contains("sekret"), "{name}: the secret is shown:\n{stdout}");
    }
}

#[test]
fn the_llm_example_reads_its_key_from_the_variable_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let example = fenced_after(&readme(), "Configuration", "toml").join("\n");
    std::fs::write(dir.path().join("loom.toml"), &example).unwrap();
    let name = example.lines().find_map(|l| l.strip_prefix("api_key_env = ")).expect("the example names a variable");
    let name = name.trim_matches('"');
    let out = fresh(LOOM, dir.path(), &[(name, "sk-sekret")]).args(["config", "show"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("# API key: **** (from ${name})")), "{stdout}");
    assert!(stdout.contains("base_url = \"https://api.openai.com/v1\"") && !stdout.contains("sekret"), "{stdout}");
}

#[test]
fn bad_environment_values_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value, want) in [
        ("LOOM_DISPATCH__MAX_ATTEMPTS", "many", "max_attempts"),
        ("LOOM_LLM_URL", "llm.example:8000", "llm.base_url must be an http:// or https:// URL"),
        ("LOOM_HTTP_ADDR", "localhost", "http_addr"),
        ("LOOM_DISPATCH_MAX_ATTEMPTS", "5", "dispatch_max_attempts"),
    ] {
        let out = fresh(LOOM, dir.path(), &[(name, value)]).args(["config", "show"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}={value} is refused");
        assert!(stderr.to_lowercase().contains(&want.to_lowercase()), "{name}={value}: want {want:?} in {stderr}");
    }
}
