#!/usr/bin/env bash
# Installs the system packages Cascade needs to build and test (Debian/Ubuntu), if they are missing.
set -euo pipefail

need=()
# RocksDB's bindings are generated with bindgen, which needs libclang.
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v git >/dev/null 2>&1 || need+=(git)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
# Workers run every build in a bubblewrap sandbox (worker/src/sandbox.rs).
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
if [ "${CASCADE_WITH_ETCD:-0}" = 1 ]; then
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
  command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
fi
# The console's browser test drives Debian's headless Chromium through chromedriver.
if [ "${CASCADE_WITH_BROWSER:-0}" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust from https://rustup.rs and re-run" >&2
  exit 1
fi
