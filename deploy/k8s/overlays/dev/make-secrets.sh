#!/bin/sh
# Writes the dev overlay's secrets under secrets/ (next to this script; git ignores it): random
# NATS and PostgreSQL passwords, the database and connectors service tokens, the connectors'
# encryption key, and the task key pair from `loom certs dev`. The agents' API key cannot exist
# before the control plane has started: pass it as LOOM_AGENT_API_KEY (an operator key:
# POST /api/v1/keys {"name":"agents","role":"operator"} with the admin key), or fill
# secrets/loom-agent-demo/api-key later and apply again. LOOM_LLM_API_KEY, when set, becomes the agents' LLM key.
#
#   ./make-secrets.sh [path/to/loom]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
loom=${1:-loom}
out="$here/secrets"
[ ! -e "$out" ] || { echo "make-secrets.sh: $out exists; remove it to make new secrets" >&2; exit 1; }
umask 077
# A letter first: nats-server reads an unquoted `$VAR` value that starts with a digit as a number
# (and refuses the configuration), so every password starts with one.
random() { printf 'k%s' "$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')"; }
mkdir -p "$out/nats" "$out/postgres" "$out/loom-control-plane" "$out/loom-db" "$out/loom-connectors" \
  "$out/loom-agent-demo"
keys=$(mktemp -d)
trap 'rm -rf "$keys"' EXIT
"$loom" certs dev --out "$keys" >/dev/null
pg=$(random)
printf '%s' "$pg" > "$out/postgres/password"
printf 'postgres://loom:%s@postgres:5432/loom' "$pg" > "$out/loom-db/database-url"
for user in control-plane events agent-demo; do random > "$out/nats/$user"; done
cp "$out/nats/control-plane" "$out/loom-control-plane/nats-password"
cp "$out/nats/agent-demo" "$out/loom-agent-demo/nats-password"
cp "$keys/task-signing.pem" "$out/loom-control-plane/task-signing.pem"
cp "$keys/task-verify.pem" "$out/loom-agent-demo/task-verify.pem"
for dir in loom-control-plane loom-db loom-connectors; do cp "$keys/db.token" "$out/$dir/db.token"; done
random > "$out/loom-control-plane/connectors.token"
cp "$out/loom-control-plane/connectors.token" "$out/loom-connectors/connectors.token"
head -c 32 /dev/urandom | base64 > "$out/loom-connectors/connectors.key"
printf '%s' "${LOOM_AGENT_API_KEY:-}" > "$out/loom-agent-demo/api-key"
printf '%s' "${LOOM_LLM_API_KEY:-}" > "$out/loom-agent-demo/llm-api-key"
echo "make-secrets.sh: wrote $out"
[ -n "${LOOM_AGENT_API_KEY:-}" ] || echo "make-secrets.sh: secrets/loom-agent-demo/api-key is empty: fill it once the control plane runs"
