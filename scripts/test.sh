#!/usr/bin/env bash
# The project's test command (`make test`, called by .ci/run):
#   1. bootstrap: apt packages and the pinned .venv (installs only what is missing)
#   2. test image: build or reuse localhost/smeeton-debian12
#   3. lint: yamllint, ansible-lint (production profile), ruff
#   4. unit and integration tests (pytest tests/)
#   5. every molecule scenario under molecule/
# Each phase prints its name; a failure says which phase or scenario and why.
#
# Usage: scripts/test.sh [all|lint|pytest|molecule]   (default: all)
# SMEETON_SCENARIOS="common tls" runs only those molecule scenarios;
# SMEETON_MOLECULE_JOBS=N runs N scenarios at a time (default 2).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
started=$SECONDS
what="${1:-all}"
case "$what" in all | lint | pytest | molecule) ;; *) die "unknown part '${what}' (all, lint, pytest, molecule)" ;; esac
want() { [[ "$what" == all || "$what" == "$1" ]]; }

phase "1/5 bootstrap"
bash scripts/bootstrap.sh
export PATH="${VENV}/bin:${PATH}"
# Keep Ansible's and the linters' caches inside the clone.
export ANSIBLE_HOME="${REPO_ROOT}/.cache/ansible-home"
export XDG_CACHE_HOME="${REPO_ROOT}/.cache/xdg"

phase "2/5 test image"
bash scripts/build-test-image.sh

if want lint; then
  phase "3/5 lint"
  info "yamllint"
  yamllint --strict . || die "yamllint found problems (above)"
  info "ansible-lint (production profile)"
  ansible-lint -q || die "ansible-lint found problems (above)"
  info "ruff"
  ruff check . || die "ruff check found problems (above)"
  ruff format --check . >/dev/null || { ruff format --check .; die "ruff format: files need formatting (above)"; }
fi

if want pytest; then
  phase "4/5 pytest (unit and integration)"
  python -m pytest tests -q || die "pytest failed (above)"
fi
want molecule || { phase "Done (${what}) in $((SECONDS - started))s"; exit 0; }

phase "5/5 molecule scenarios"
# A scenario that needs a real server names the variable in a line
# "# smeeton: requires-env VAR" in its molecule.yml and is skipped without it.
scenarios=()
if [[ -n "${SMEETON_SCENARIOS:-}" ]]; then
  read -r -a scenarios <<<"$SMEETON_SCENARIOS"
else
  for f in molecule/*/molecule.yml; do scenarios+=("$(basename "$(dirname "$f")")"); done
fi
# Scenarios run SMEETON_MOLECULE_JOBS at a time (default 2): their container
# names, networks and published ports are distinct, and most of their time is
# spent waiting on Ansible round trips and apt, not on the CPU.
max_jobs="${SMEETON_MOLECULE_JOBS:-2}"
mkdir -p artifacts/molecule
total=${#scenarios[@]}
run_one() {
  local i=$1 s=$2 log="artifacts/molecule/${2}.log" t0=$SECONDS
  if molecule test -s "$s" >"$log" 2>&1; then
    info "[${i}/${total}] ${s}: passed in $((SECONDS - t0))s"
  else
    info "[${i}/${total}] ${s}: FAILED after $((SECONDS - t0))s; last lines of ${log}:"
    sed 's/\x1b\[[0-9;]*m//g' "$log" | tail -40 | sed 's/^/      /'
    touch "artifacts/molecule/${s}.failed"
  fi
}
rm -f artifacts/molecule/*.failed
i=0
for s in "${scenarios[@]}"; do
  i=$((i + 1))
  need="$(sed -n 's/^# smeeton: requires-env \([A-Z_][A-Z0-9_]*\).*/\1/p' "molecule/${s}/molecule.yml")"
  if [[ -n "$need" && -z "${!need:-}" ]]; then
    info "[${i}/${total}] ${s}: SKIPPED (needs a real host: set ${need}, see molecule/${s}/README.md)"
    continue
  fi
  while (($(jobs -rp | wc -l) >= max_jobs)); do wait -n || true; done
  info "[${i}/${total}] ${s}: started (log: artifacts/molecule/${s}.log)"
  run_one "$i" "$s" &
done
wait
failed=()
for f in artifacts/molecule/*.failed; do [[ -e "$f" ]] && failed+=("$(basename "$f" .failed)"); done
((${#failed[@]} == 0)) || die "molecule scenarios failed: ${failed[*]} (logs in artifacts/molecule/)"
phase "Done (${what}): all passed in $((SECONDS - started))s"
