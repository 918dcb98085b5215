//! The deployment manifests (`deploy/`) validated offline against the built binary: lint, compose
//! parsing, kustomize and Helm rendering, Kubernetes and Linkerd schemas, and the cross-check
//! that every flag, config key, variable and port they name is the binary's, and that Helm and
//! kustomize agree. The checks are `deploy/validate.py`; its tools come from `scripts/test.sh`
//! (`ensure_deploy_tools`, a virtual environment at `$DEPLOY_TOOLS`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{Group, LOOM, free_port, fresh};

fn tools() -> PathBuf {
    match std::env::var_os("DEPLOY_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/loom-deploy-tools"),
    }
}

#[test]
fn deploy_manifests_validate_offline_and_match_the_binary() {
    let tools = tools();
    let python = tools.join("bin/python");
    assert!(
        python.exists(),
        "the deployment validation tools are missing at {}: run scripts/test.sh (it installs them with \
         ensure_deploy_tools) or point DEPLOY_TOOLS at them",
        tools.display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(&python)
        .arg(root.join("deploy/validate.py"))
        .args(["--loom", LOOM, "--tools"])
        .arg(&tools)
        .current_dir(&root)
        .output()
        .expect("run deploy/validate.py");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "deploy/validate.py failed:\n{text}");
    // It did check what it says: the rendering, the schemas and the binary's side.
    for line in [
        "docker-compose config -q parses deploy/compose/compose.yaml",
        "kubectl kustomize deploy/k8s/overlays/dev",
        "kubectl kustomize deploy/k8s/overlays/prod",
        "helm template deploy/helm/loom",
        "k8s dev: every object validates",
        "Deployment/loom-db/db: `loom config show` accepts its loom.toml",
        "dev (overlays/dev vs values.yaml): Helm and kustomize render the same",
        "prod (overlays/prod vs values-prod.yaml): Helm and kustomize render the same",
        "a manifest for every service of the design",
    ] {
        assert!(text.contains(line), "validate.py did not report {line:?}:\n{text}");
    }
}

/// The checks can fail: on a copy of `deploy/` with planted faults (a flag the binary lacks, an
/// unknown config key, a container port nothing listens on, Helm and kustomize apart, a port
/// published beyond loopback, a retried write route, a bad sandbox value, an unknown variable, a
/// Linkerd Server left unauthorized), `validate.py --self-test` sees every one reported.
#[test]
fn deploy_validation_reports_planted_faults() {
    let tools = tools();
    let python = tools.join("bin/python");
    assert!(python.exists(), "the deployment validation tools are missing at {}: run scripts/test.sh", tools.display());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(&python)
        .arg(root.join("deploy/validate.py"))
        .args(["--self-test", "--loom", LOOM, "--tools"])
        .arg(&tools)
        .output()
        .expect("run deploy/validate.py --self-test");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("planted faults were reported"), "{text}");
}

/// `deploy/compose`'s own configuration files and the secrets its `make-secrets.sh` makes, run as
/// processes (no Docker here): NATS with the users of `deploy/nats/` and TLS, the database
/// service with TLS and its token (after `loom db migrate`, as `[database] pgbouncer = true`
/// asks), a control plane, and an agent of project `demo` that runs a bead — so the TLS
/// certificates, NATS users, task keys, tokens and every file path the configuration names work
/// together. Only the host names and ports differ from the containers'; the connectors service
/// (issue 15) is not started, so the control plane runs without its `[connectors]` section.
#[test]
fn the_compose_configuration_runs_a_bead_as_processes() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(loom_store::testing::TestDatabase::create());
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let compose = dir.path().join("compose");
    std::fs::create_dir_all(&compose).unwrap();
    std::fs::copy(root.join("compose/make-secrets.sh"), compose.join("make-secrets.sh")).unwrap();
    let made = Command::new("sh").arg(compose.join("make-secrets.sh")).arg(LOOM).output().unwrap();
    assert!(made.status.success(), "make-secrets.sh: {}", String::from_utf8_lossy(&made.stderr));
    let secrets = compose.join("secrets");
    let secret = |name: &str| std::fs::read_to_string(secrets.join(name)).unwrap().trim().to_owned();
    let data = dir.path().join("data");
    let (nats_port, db_port, db_metrics, http, agent_metrics) =
        (free_port(), free_port(), free_port(), free_port(), free_port());
    // Each service's loom.toml as compose mounts it, with this machine's paths and addresses.
    let config = |name: &str, replace: &[(&str, String)]| -> String {
        let mut text = std::fs::read_to_string(root.join(format!("compose/loom/{name}.toml"))).unwrap();
        text = text.replace("/run/secrets", secrets.to_str().unwrap()).replace("/var/lib/loom", data.to_str().unwrap());
        for (from, to) in replace {
            assert!(text.contains(from), "{from} is not in compose/loom/{name}.toml");
            text = text.replace(from, to);
        }
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let nats_url = format!("tls://localhost:{nats_port}");

    // NATS: deploy/nats rendered for project demo, with compose's TLS block.
    let render = Command::new("sh")
        .arg(root.join("nats/render.sh"))
        .arg(format!("demo:{}", secret("nats-agent-demo")))
        .output()
        .unwrap();
    assert!(render.status.success(), "{}", String::from_utf8_lossy(&render.stderr));
    let mut nats_conf = String::from_utf8(render.stdout).unwrap();
    nats_conf.push_str(&format!(
        "tls {{\n  cert_file: \"{0}/server.pem\"\n  key_file: \"{0}/server-key.pem\"\n}}\n",
        secrets.display()
    ));
    std::fs::write(dir.path().join("nats.conf"), nats_conf).unwrap();
    let server = std::env::var("LOOM_NATS_SERVER").ok().unwrap_or_else(|| {
        ["/usr/sbin/nats-server", "/usr/local/bin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server")
            .to_owned()
    });
    let mut nats = Command::new(server);
    nats.current_dir(dir.path())
        .args(["-c", "nats.conf", "-a", "127.0.0.1", "-p", &nats_port.to_string(), "-sd", "js"])
        .env("NATS_CONTROL_PLANE_PASSWORD", secret("nats-control-plane"))
        .env("NATS_EVENTS_PASSWORD", secret("nats-events"));
    let (_nats, nats_out) = Group::spawn(nats);
    nats_out.wait_for("NATS ready", Duration::from_secs(20), |l| l.contains("Server is ready"));

    // The database service, as compose runs it (TLS, token), after the migration it asks for.
    let db_env = [("LOOM_DATABASE_URL", db.url()), ("LOOM_CONFIG", &config("db", &[]) as &str)];
    let migrate = fresh(LOOM, dir.path(), &db_env).args(["db", "migrate"]).output().unwrap();
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    let mut serve_db = fresh(LOOM, dir.path(), &db_env);
    serve_db.args(["serve", "db", "--listen", &format!("127.0.0.1:{db_port}")]);
    serve_db.args(["--tls-cert", secrets.join("server.pem").to_str().unwrap()]);
    serve_db.args(["--tls-key", secrets.join("server-key.pem").to_str().unwrap()]);
    serve_db.args(["--metrics-addr", &format!("127.0.0.1:{db_metrics}")]);
    let (_db_service, db_out) = Group::spawn(serve_db);
    wait_ready(&format!("127.0.0.1:{db_metrics}"), &db_out);

    // A control plane with compose's control-plane.toml.
    let mut cp_toml = std::fs::read_to_string(config(
        "control-plane",
        &[
            ("tls://nats:4222", nats_url.clone()),
            ("https://loom-db:50051", format!("https://localhost:{db_port}")),
            ("0.0.0.0:8080", format!("127.0.0.1:{http}")),
        ],
    ))
    .unwrap();
    cp_toml.truncate(cp_toml.find("[connectors]").expect("a [connectors] section"));
    std::fs::write(dir.path().join("control-plane.toml"), cp_toml).unwrap();
    let cp_config = dir.path().join("control-plane.toml");
    let mut cp = fresh(LOOM, dir.path(), &[("LOOM_CONFIG", cp_config.to_str().unwrap())]);
    cp.args(["serve", "control-plane", "--listen", &format!("127.0.0.1:{http}")]);
    let (_cp, cp_out) = Group::spawn(cp);
    wait_ready(&format!("127.0.0.1:{http}"), &cp_out);
    let admin = cp_out.wait_for("the admin key", Duration::from_secs(5), |l| l.contains("export LOOM_API_KEY="));
    let admin = admin.trim().strip_prefix("export LOOM_API_KEY=").unwrap().to_owned();

    // An operator key for the agents (as deploy/README.md says), and the project.
    let (status, body) =
        post(&format!("127.0.0.1:{http}"), "/api/v1/keys", &admin, r#"{"name":"agents","role":"operator"}"#);
    assert_eq!(status, 201, "{body}");
    let operator = serde_json::from_str::<serde_json::Value>(&body).unwrap()["secret"].as_str().unwrap().to_owned();
    std::fs::write(secrets.join("agent-api-key"), &operator).unwrap();
    let origin = crate::support::bare_repo(dir.path());
    let api = [("LOOM_API_URL", format!("http://127.0.0.1:{http}")), ("LOOM_API_KEY", admin.clone())];
    let api: Vec<(&str, &str)> = api.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cli = |args: &[&str]| {
        let out = fresh(LOOM, dir.path(), &api).args(args).output().unwrap();
        assert!(out.status.success(), "loom {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    cli(&["project", "add", "demo", "--repo", origin.to_str().unwrap()]);

    // Two agents of project demo with compose's agent.toml (replicas compete for the tasks).
    let agent_config = config(
        "agent",
        &[
            ("tls://nats:4222", nats_url.clone()),
            ("http://loom-control-plane:8080", format!("http://127.0.0.1:{http}")),
        ],
    );
    let mut agents = Vec::new();
    for port in [agent_metrics, free_port()] {
        let env = [("LOOM_CONFIG", agent_config.as_str()), ("LOOM_API_KEY", operator.as_str())];
        let mut agent = fresh(LOOM, dir.path(), &env);
        agent.args(["serve", "agent", "--project", "demo", "--concurrency", "2"]);
        agent.args(["--work-dir", dir.path().join(format!("work-{port}")).to_str().unwrap()]);
        agent.args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
        let (group, out) = Group::spawn(agent);
        wait_ready(&format!("127.0.0.1:{port}"), &out);
        agents.push((group, out));
    }

    let bead = cli(&["bead", "create", "--project", "demo", "--title", "t", "--context", "command=echo compose-ok"]);
    let bead = bead.trim().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let shown: serde_json::Value = serde_json::from_str(&cli(&["bead", "show", &bead, "--json"])).unwrap();
        if shown["status"] == "closed" {
            assert!(shown.to_string().contains("compose-ok"), "the command's output is the result's: {shown}");
            break;
        }
        let logs: Vec<String> = agents.iter().map(|(_, o)| o.text()).collect();
        assert!(std::time::Instant::now() < deadline, "bead not closed: {shown}\nagents:\n{}", logs.join("\n---\n"));
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(agents);
    drop(db);
}

/// Polls `/readyz` on `addr` until it answers 200 (30 s at most).
fn wait_ready(addr: &str, output: &crate::support::Lines) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() && crate::serve::get(addr, "/readyz").0 == 200 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{addr} not ready:\n{}", output.text());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `POST path` with a bearer key and a JSON body: (status, body).
fn post(addr: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}
