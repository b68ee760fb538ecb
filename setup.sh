#!/usr/bin/env bash
# Set-up for a fresh Debian machine with the Rust toolchain, as root.
#   ./setup.sh demo   analyze a capture from captures/ and print the report
#   ./setup.sh test   run the whole test suite
# Installs libpcap-dev if it is missing, and for the tests Chromium (the HTML
# report is rendered in it), tmux (the live view is driven in it), nftables
# and iproute2 (the live tests stage a DROP in network namespaces), tshark
# (Community IDs are checked against its own), libcap2-bin (setcap: the
# capability drop is tested on a copy); or
# prints the command to run. `test` ends with a 30 s fuzz run of each target.
set -euo pipefail
cd "$(dirname "$0")"

need_pkg() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup.sh: missing ${missing[*]}; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
}

need_pkg libpcap-dev

# Each fuzz target for 30 s: a decoder that panics on a new input fails the
# run. It needs the nightly toolchain, which cannot be fetched everywhere;
# without it the smoke run is skipped, and said.
fuzz_smoke() {
  if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "setup.sh: no nightly toolchain: fuzz smoke run skipped (rustup toolchain install nightly)" >&2
    return 0
  fi
  cargo fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz
  cargo xtask fuzz 30
}

case "${1:-}" in
  demo) cargo run --quiet --release -- analyze captures/incident.pcap ;;
  test)
    need_pkg chromium tmux nftables iproute2 tshark python3 openssl libcap2-bin time
    cargo test --workspace --release
    fuzz_smoke ;;
  *) echo "usage: ./setup.sh demo|test" >&2; exit 2 ;;
esac
