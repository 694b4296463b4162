# shellcheck shell=bash
# Shared helpers for the scripts in this folder: progress lines and clear failures.
# Sourced, never executed.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
export CONTAINERS_CONF="${REPO_ROOT}/scripts/containers.conf"
VENV="${REPO_ROOT}/.venv"
export VENV

# Image used by every molecule scenario and by the lab.
TEST_IMAGE="${SMEETON_TEST_IMAGE:-localhost/smeeton-debian12:latest}"
export TEST_IMAGE

phase() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() {
  printf '\n\033[31mERROR: %s\033[0m\n' "$*" >&2
  exit 1
}
