#!/bin/sh
# Writes ./secrets/ for compose.yaml: a development CA and one server certificate for the
# TLS listeners (loom-db, loom-connectors, nats), random passwords (NATS users, PostgreSQL,
# Grafana), the database and connectors service tokens, the connectors' encryption key, PgBouncer's
# user list, the database URLs, and the task key pair (`loom certs dev`). The directory is 0700;
# the files in it are world-readable so the containers' users can read their bind mounts, and
# only the owner of the directory can reach them.
#
#   ./make-secrets.sh [path/to/loom]     (default: loom on PATH, else the loom:0.1.0 image)
#
# The agents' API key exists only once the control plane has started: write an operator key to
# secrets/agent-api-key then (see deploy/README.md); until then it is empty and the agents wait.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/secrets"
[ ! -e "$out" ] || { echo "make-secrets.sh: $out exists; remove it to make new secrets" >&2; exit 1; }
command -v openssl >/dev/null || { echo "make-secrets.sh: needs openssl" >&2; exit 1; }
# A letter first: nats-server reads an unquoted `$VAR` value that starts with a digit as a number
# (and refuses the configuration), so every password starts with one.
random() { printf 'k%s' "$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')"; }
mkdir -p "$out"
chmod 700 "$out"
keys="$out/.keys"
mkdir -p "$keys"
if [ $# -gt 0 ]; then
  "$1" certs dev --out "$keys" >/dev/null
elif command -v loom >/dev/null; then
  loom certs dev --out "$keys" >/dev/null
else
  docker run --rm --user "$(id -u):$(id -g)" -v "$keys:/keys" "${LOOM_IMAGE:-loom:0.1.0}" certs dev --out /keys --force >/dev/null
fi
cp "$keys/task-signing.pem" "$keys/task-verify.pem" "$keys/db.token" "$out/"
rm -rf "$keys"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 -subj "/CN=Loom compose CA" \
  -keyout "$out/ca-key.pem" -out "$out/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=loom-compose" \
  -keyout "$out/server-key.pem" -out "$out/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:loom-db,DNS:loom-connectors,DNS:nats,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' \
  > "$out/server.ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" -CAcreateserial -days 825 \
  -extfile "$out/server.ext" -out "$out/server.pem" 2>/dev/null
# rustls wants PKCS#8.
openssl pkcs8 -topk8 -nocrypt -in "$out/server-key.pem" -out "$out/server-key.pk8"
mv "$out/server-key.pk8" "$out/server-key.pem"
rm -f "$out/server.csr" "$out/server.ext" "$out/ca.srl" "$out/ca-key.pem"

for user in control-plane events agent-demo; do random > "$out/nats-$user"; done
pg=$(random)
printf '%s' "$pg" > "$out/postgres-password"
printf '"loom" "%s"\n' "$pg" > "$out/pgbouncer-userlist"
printf 'postgres://loom:%s@pgbouncer:6432/loom' "$pg" > "$out/database-url"
printf 'postgres://loom:%s@postgres:5432/loom' "$pg" > "$out/database-url-direct"
random > "$out/connectors.token"
head -c 32 /dev/urandom | base64 > "$out/connectors.key"
random > "$out/grafana-admin-password"
: > "$out/agent-api-key"
chmod 644 "$out"/*
echo "make-secrets.sh: wrote $out (Grafana: admin / $(cat "$out/grafana-admin-password"))"
