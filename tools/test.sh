#!/usr/bin/env bash
# make test: every stage of the suite in order, a timing line per stage and one summary
# line at the end. A failed stage is reported and the run goes on to the next stage, so
# one run shows every problem; the exit status is non-zero if any stage failed.
#   STAGES="lint unit" make test   runs a subset
#   KEEP_LOCAL=1 make test          leaves the local environment running afterwards
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

all_stages="lint sanity unit package local-up ee integration faults molecule"
stages=${STAGES:-$all_stages}
passed=0
failed=0
failed_names=()
timings=()  # "name": seconds, for .local/artifacts/test-stages.json
t_start=$(date +%s)

run_stage() {
  local name=$1
  shift
  local t0 t1
  t0=$(date +%s)
  echo "==> [$name] $(date -u +%H:%M:%S) started"
  if "$@"; then
    t1=$(date +%s)
    echo "<== [$name] ok in $((t1 - t0))s"
    passed=$((passed + 1))
  else
    t1=$(date +%s)
    echo "<== [$name] FAILED in $((t1 - t0))s"
    failed=$((failed + 1))
    failed_names+=("$name")
  fi
  timings+=("\"$name\": $((t1 - t0))")
}

for stage in $stages; do
  case $stage in
    lint) run_stage lint make --no-print-directory lint ;;
    sanity) run_stage sanity make --no-print-directory sanity ;;
    unit) run_stage unit make --no-print-directory unit ;;
    package) run_stage package make --no-print-directory package ;;
    local-up)
      session=.local/test-session
      mkdir -p .local
      rm -f "$session"
      started_env=1
      run_stage local-up .venv/bin/python -m tools.localenv up --session "$session"
      ;;
    ee) run_stage ee .venv/bin/python -m tools.ee build ;;
    integration) run_stage integration make --no-print-directory integration ;;
    faults) run_stage faults make --no-print-directory faults ;;
    molecule)
      if compgen -G "molecule/*/molecule.yml" >/dev/null; then
        run_stage molecule make --no-print-directory molecule
      else
        echo "==> [molecule] no scenarios yet"
      fi
      ;;
    *) echo "unknown stage: $stage (known: $all_stages)" >&2; exit 2 ;;
  esac
done

if [ -n "${started_env:-}" ] && [ -z "${KEEP_LOCAL:-}" ]; then
  echo "==> stopping what this run started in the local environment (KEEP_LOCAL=1 keeps it)"
  .venv/bin/python -m tools.localenv down --session .local/test-session || true
fi

total=$(($(date +%s) - t_start))
echo "make test finished in ${total}s${failed_names[*]:+; failed: ${failed_names[*]}}"
# Stage times for the README's measured numbers (python -m tools.measurements record).
mkdir -p .local/artifacts
{
  printf '{"stages": {'
  (IFS=,; printf '%s' "${timings[*]}")
  printf '}, "total": %d, "failed": %d}\n' "$total" "$failed"
} > .local/artifacts/test-stages.json
echo "stages: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
