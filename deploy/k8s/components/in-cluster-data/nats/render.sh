#!/bin/sh
# Renders nats-server.conf with one agent user per `project:password` argument (the password may
# be a bcrypt hash from `nats server passwd`). Prints the configuration on stdout.
set -eu
here=$(dirname "$0")
agents=$(mktemp)
trap 'rm -f "$agents"' EXIT
for arg in "$@"; do
  project=${arg%%:*}
  password=${arg#*:}
  case $project in
    ''|*[!a-z0-9_-]*) echo "render.sh: bad project id: $project" >&2; exit 2 ;;
  esac
  case $password in
    *'"'*|*'\'*|'') echo "render.sh: the password of $project must be non-empty without quotes or backslashes" >&2; exit 2 ;;
  esac
  sed -e "s|{{project}}|$project|g" -e "s|{{password}}|$password|g" "$here/agent.conf" >> "$agents"
done
while IFS= read -r line; do
  if [ "$line" = "{{agents}}" ]; then cat "$agents"; else printf '%s\n' "$line"; fi
done < "$here/nats-server.conf"
