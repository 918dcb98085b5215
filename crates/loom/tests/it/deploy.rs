//! The deployment manifests (`deploy/`) validated offline against the built binary: lint, compose
//! parsing, kustomize and Helm rendering, Kubernetes and Linkerd schemas, and the cross-check
//! that every flag, config key, variable and port they name is the binary's, and that Helm and
//! kustomize agree. The checks are `deploy/validate.py`; its tools come from `scripts/test.sh`
//! (`ensure_deploy_tools`, a virtual environment at `$DEPLOY_TOOLS`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::LOOM;

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
