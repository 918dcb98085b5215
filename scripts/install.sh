#!/usr/bin/env bash
# Installs Loom on this machine: what `loom up` needs besides itself — git (projects are git
# repositories) and bubblewrap (`bwrap`, the sandbox bead commands run in) — with apt-get where
# they are missing (Debian/Ubuntu; as root, else through sudo), then the `loom` binary into
# ~/.cargo/bin with `cargo install --locked --path crates/loom`. Extra arguments go to
# `cargo install`. Safe to run again: what is there is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1minstall.sh:\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
need() {
  local program=$1 package=$2
  command -v "$program" >/dev/null && return
  command -v apt-get >/dev/null \
    || die "$program is missing and this is not a Debian-like system: install $package by hand, then run this again"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  say "installing $package"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$package" >/dev/null
}

command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain named in rust-toolchain.toml (rustup)"
need git git
need bwrap bubblewrap
# bubblewrap needs user namespaces; say so now rather than when the first bead runs.
if ! bwrap --ro-bind / / --unshare-user --unshare-pid --dev /dev --proc /proc true 2>/dev/null; then
  say "warning: bwrap cannot create a sandbox here (user namespaces off?): loom up will refuse to start;"
  say "         enable them (sysctl kernel.unprivileged_userns_clone=1) or set [agent] sandbox = \"none\""
fi
say "installing loom into ~/.cargo/bin"
cargo install --locked --path crates/loom "$@"
command -v loom >/dev/null || say "note: ~/.cargo/bin is not on PATH; add it (rustup's env file does) to run loom"
