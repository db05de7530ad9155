#!/usr/bin/env bash
# GPU check, one script for a lent machine with one NVIDIA GPU (not part of CI; nothing in CI
# depends on it). Under 8 minutes in all: every part runs under `timeout`, with a limit that
# is also cut to what is left of the overall deadline.
#
#   0. environment  pick a Python whose torch sees CUDA (RGDIST_GPU_PYTHON, python3,
#                   /opt/torch/.venv/bin/python3, .venv/bin/python, in that order; else the
#                   first one with torch at all, and the GPU parts report "no CUDA"); rgdist
#                   runs from this checkout through PYTHONPATH, nothing is installed. Wheels
#                   in .whl/ (or RGDIST_WHEELHOUSE) are installed offline into a temporary
#                   --target first, for a machine that lacks a package. scripts/setup.sh is
#                   NOT run: it installs torch==2.13.0 (CPU) and the rest from PyPI/apt,
#                   which a machine with no network cannot reach (RGDIST_GPU_SETUP=1 tries it
#                   anyway when no Python with torch exists).    probes <= 45 s, all <= 2 min
#   a. tests        pytest -m cuda tests/unit (tests/unit/test_cuda.py: CUDA vs CPU for
#                   models, training determinism, bf16/TF32 training, samplers)      <= 90 s
#   b. campaign     benchmarks/gpu_campaign.yaml (N = 8, 2 points, resources.device: cuda)
#                   on 2 ranks with mpirun; without a working MPI, as 2 serial processes
#                   taking half the points each (--points i/2) and aggregated        <= 140 s
#   c. throughput   benchmarks/gpu_throughput.py --device cuda: sampler and training
#                   throughput fp64/fp32/TF32/bf16, eager and torch.compile          <= 180 s
#   d. summary      a table on stdout and gpu_check_summary.json                     <= 15 s
#
# Output: JSON per part (gpu_check_{env,tests,campaign,throughput,summary}.json) and the whole
# log (gpu_check.log) in $OUT when set (the lent machine collects it), else in
# benchmarks/results/. Without CUDA every GPU part writes a JSON note and is skipped.
# Exit code: 0 when no part failed (skipped parts do not fail), 1 otherwise.
#
#   bash benchmarks/gpu_check.sh
#   GPU_CHECK_DEADLINE_S=300 bash benchmarks/gpu_check.sh     # a shorter overall limit
#   GPU_CHECK_CPU_DRY_RUN=1 bash benchmarks/gpu_check.sh      # no GPU: run parts b and c on
#       the CPU anyway (RGDIST_DEVICE=cpu; throughput --device cpu --quick --no-compile) to
#       try the script's plumbing; GPU_CHECK_FORCE_SERIAL=1 tries the no-MPI fallback of b
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${OUT:-$here/benchmarks/results}"
mkdir -p "$out_dir"
log="$out_dir/gpu_check.log"
: >"$log"

DEADLINE_S="${GPU_CHECK_DEADLINE_S:-470}"   # whole script, kill grace included
T_ENV="${GPU_CHECK_T_ENV:-45}"
T_TESTS="${GPU_CHECK_T_TESTS:-90}"
T_CAMPAIGN="${GPU_CHECK_T_CAMPAIGN:-140}"
T_THROUGHPUT="${GPU_CHECK_T_THROUGHPUT:-180}"
T_SUMMARY="${GPU_CHECK_T_SUMMARY:-15}"
GRACE=5                                      # timeout -k: SIGKILL this long after SIGTERM
DRY_CPU="${GPU_CHECK_CPU_DRY_RUN:-0}"
FORCE_SERIAL="${GPU_CHECK_FORCE_SERIAL:-0}"

t_start="${EPOCHREALTIME:-$(date +%s)}"
now() { echo "${EPOCHREALTIME:-$(date +%s)}"; }
elapsed() { awk -v a="$t_start" -v b="$(now)" 'BEGIN{printf "%.1f", b - a}'; }
# limit <part limit>: the part's limit cut to what is left before the deadline (>= 1)
limit() {
  awk -v want="$1" -v a="$t_start" -v b="$(now)" -v d="$DEADLINE_S" -v g="$GRACE" \
    'BEGIN{left = d - (b - a) - g; t = (want < left) ? want : left; if (t < 1) t = 1; printf "%d", t}'
}
# part_left <t0> <part limit> [cap]: seconds left of a part begun at t0 (>= 1), at most cap
part_left() {
  awk -v t0="$1" -v want="$2" -v cap="${3:-1e9}" -v b="$(now)" \
    'BEGIN{t = want - (b - t0); if (t > cap) t = cap; if (t < 1) t = 1; printf "%d", t}'
}
log() { printf '[gpu_check %6ss] %s\n' "$(elapsed)" "$*"; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/rgdist-gpu-check.XXXXXX")"
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT

jpy="python3"          # any Python for writing JSON; replaced by the chosen one below
command -v python3 >/dev/null 2>&1 || jpy=""

# note <file> <part> <status> <note> [limit_s]: a one-part JSON note
note() {
  local f="$out_dir/$1"
  if [ -n "$jpy" ]; then
    "$jpy" -c 'import json,sys; a=sys.argv; d={"part":a[2],"status":a[3],"note":a[4]}
if len(a)>5: d["limit_s"]=float(a[5])
open(a[1],"w").write(json.dumps(d,indent=1)+"\n")' "$f" "$2" "$3" "$4" "${5:-}" 2>/dev/null && return
  fi
  printf '{"part": "%s", "status": "%s", "note": "%s"}\n' "$2" "$3" "${4//\"/\'}" >"$f"
}

main() {
  log "repo $here, output $out_dir, deadline ${DEADLINE_S}s"
  # ------------------------------------------------------------------ 0. environment
  local part_t0 env_limit py="" py_cpu="" cuda=0 probes="$tmp/probes.txt"
  part_t0="$(now)"; env_limit="$(limit "$T_ENV")"
  : >"$probes"
  local cands=()
  [ -n "${RGDIST_GPU_PYTHON:-}" ] && cands+=("$RGDIST_GPU_PYTHON")
  cands+=(python3 /opt/torch/.venv/bin/python3 "$here/.venv/bin/python")
  local c exe res
  for c in "${cands[@]}"; do
    if [ "$(part_left "$part_t0" "$T_ENV")" -le 10 ]; then
      printf '%s\t-\tnot probed: environment part out of time\n' "$c" >>"$probes"; continue
    fi
    exe="$(command -v "$c" 2>/dev/null || true)"
    [ -n "$exe" ] && [ -x "$exe" ] || { printf '%s\t-\tnot found\n' "$c" >>"$probes"; continue; }
    res="$(timeout -k 2 "$(part_left "$part_t0" "$T_ENV" 20)" "$exe" -c 'import torch; print(torch.__version__, int(torch.cuda.is_available()), torch.cuda.device_count())' 2>/dev/null | tail -1)"
    if [ -z "$res" ]; then printf '%s\t%s\tno torch\n' "$c" "$exe" >>"$probes"; continue; fi
    printf '%s\t%s\t%s\n' "$c" "$exe" "$res" >>"$probes"
    [ -z "$py_cpu" ] && py_cpu="$exe"
    if [ "$(echo "$res" | awk '{print $2}')" = 1 ]; then py="$exe"; cuda=1; break; fi
  done
  local setup_note="scripts/setup.sh not run: it installs torch (RGDIST_TORCH_SPEC, default torch==2.13.0 CPU), mpi4py, parallel h5py from PyPI/apt, which need a network; an existing CUDA torch is used instead, rgdist through PYTHONPATH"
  if [ -z "$py" ] && [ -z "$py_cpu" ] && [ "${RGDIST_GPU_SETUP:-0}" = 1 ]; then
    log "no Python with torch: trying scripts/setup.sh (RGDIST_GPU_SETUP=1)"
    if timeout -k "$GRACE" "$(limit 200)" bash "$here/scripts/setup.sh"; then
      py_cpu="$here/.venv/bin/python"; setup_note="scripts/setup.sh ran (RGDIST_GPU_SETUP=1)"
    else
      setup_note="scripts/setup.sh failed (RGDIST_GPU_SETUP=1)"
    fi
  fi
  [ -z "$py" ] && py="$py_cpu"
  if [ -z "$py" ]; then
    log "no Python with torch found; every part is skipped"
    note gpu_check_env.json env failed "no Python with torch among: ${cands[*]}; $setup_note"
    local f
    for f in tests campaign throughput; do
      note "gpu_check_$f.json" "$f" skipped "no Python with torch"
    done
    summary "" ; return 1
  fi
  jpy="$py"
  export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
  local wheels="${RGDIST_WHEELHOUSE:-$here/.whl}" wheel_note="none"
  if compgen -G "$wheels/*.whl" >/dev/null; then
    if timeout -k 2 60 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$tmp/site" "$wheels"/*.whl >"$tmp/pip.log" 2>&1; then
      export PYTHONPATH="$PYTHONPATH:$tmp/site"; wheel_note="installed from $wheels into a temporary --target"
    else
      wheel_note="pip install from $wheels failed: $(tail -1 "$tmp/pip.log")"
    fi
  fi
  export RGDIST_PROGRESS=off
  timeout -k 2 "$(part_left "$part_t0" "$T_ENV" 10)" nvidia-smi -L >"$tmp/smi.txt" 2>&1 || true
  timeout -k 2 "$(limit 30)" "$py" -m rgdist check-env --json >"$tmp/checkenv.json" 2>"$tmp/checkenv.err" || true
  # (under timeout: importing mpi4py initializes MPI, which can hang on a broken MPI install)
  timeout -k 2 "$(limit 40)" \
  "$py" - "$out_dir/gpu_check_env.json" "$probes" "$tmp/smi.txt" "$tmp/checkenv.json" \
      "$py" "$cuda" "$setup_note" "$wheel_note" "$env_limit" "$part_t0" "$here" <<'PY'
import importlib, json, os, platform, subprocess, sys, time
out, probes, smi, checkenv, py, cuda, setup_note, wheel_note, lim, t0, repo = sys.argv[1:12]
mods = {}
for m in ("torch", "numpy", "yaml", "pytest", "h5py", "mpi4py", "matplotlib", "triton"):
    try:
        mods[m] = getattr(importlib.import_module(m), "__version__", "present")
    except Exception as exc:
        mods[m] = None
try:
    from mpi4py import MPI  # noqa: F401
    mpi = MPI.Get_library_version().splitlines()[0].strip(" \x00")
except Exception as exc:
    mpi = f"unavailable: {type(exc).__name__}: {exc}"
try:
    ce = json.load(open(checkenv))
except Exception:
    ce = None
d = {"part": "env", "status": "ok" if cuda == "1" else "no CUDA",
     "python": py, "python_version": platform.python_version(), "cuda": cuda == "1",
     "candidates": [dict(zip(("name", "path", "torch version / cuda / devices"), l.rstrip("\n").split("\t")))
                    for l in open(probes) if l.strip()],
     "modules": mods, "mpi_library": mpi, "nvidia_smi": open(smi).read().strip()[:2000],
     "rgdist_check_env": ce, "setup": setup_note, "wheels": wheel_note,
     "pythonpath": os.environ.get("PYTHONPATH"), "limit_s": float(lim),
     "wall_s": time.time() - float(t0)}
try:
    d["git_head"] = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                                   text=True, timeout=10).stdout.strip() or None
except Exception:
    d["git_head"] = None
if cuda == "1":
    import torch
    p = torch.cuda.get_device_properties(0)
    d["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}",
                "memory_gib": round(p.total_memory / 2**30, 1), "count": torch.cuda.device_count(),
                "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
open(out, "w").write(json.dumps(d, indent=1) + "\n")
print(f"python {py} (torch {mods['torch']}), CUDA {'yes: ' + d['gpu']['name'] if cuda == '1' else 'no'}; "
      f"numpy {mods['numpy']}, yaml {mods['yaml']}, pytest {mods['pytest']}, h5py {mods['h5py']}, "
      f"mpi4py {mods['mpi4py']} ({mpi[:60]})")
PY
  [ "$cuda" = 1 ] || log "no CUDA: torch.cuda.is_available() is False for every candidate; GPU parts are skipped"
  # what each part needs: tests pytest + numpy; campaign numpy, yaml, h5py; throughput numpy
  local have_tests have_base have_numpy
  have_tests="$("$py" -c 'import pytest, numpy' >/dev/null 2>&1 && echo 1 || echo 0)"
  have_base="$("$py" -c 'import numpy, yaml, h5py' >/dev/null 2>&1 && echo 1 || echo 0)"
  have_numpy="$("$py" -c 'import numpy' >/dev/null 2>&1 && echo 1 || echo 0)"

  # ------------------------------------------------------------------ a. tests
  local t rc
  t="$(limit "$T_TESTS")"; part_t0="$(now)"
  if [ "$have_tests" != 1 ]; then
    note gpu_check_tests.json tests skipped "missing pytest or numpy for $py" "$t"
  else
    log "a. pytest -m cuda tests/unit (limit ${t}s)"
    CUBLAS_WORKSPACE_CONFIG=:4096:8 timeout -k "$GRACE" "$t" "$py" -m pytest -q -p no:cacheprovider \
      -m cuda tests/unit --continue-on-collection-errors --junitxml="$tmp/junit.xml" \
      -o junit_family=xunit2 >"$tmp/pytest.txt" 2>&1
    rc=$?
    cat "$tmp/pytest.txt" | tail -40
    "$py" - "$out_dir/gpu_check_tests.json" "$tmp/junit.xml" "$tmp/pytest.txt" "$rc" "$t" "$part_t0" "$cuda" <<'PY'
import json, sys, time
import xml.etree.ElementTree as ET
out, junit, text, rc, lim, t0, cuda = sys.argv[1:8]
rc = int(rc)
cases, counts = [], {"passed": 0, "failed": 0, "skipped": 0, "error": 0, "collection_error": 0}
try:
    for tc in ET.parse(junit).getroot().iter("testcase"):
        outcome, msg = "passed", None
        for child in tc:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                if outcome == "error" and not tc.get("classname"):
                    outcome = "collection_error"  # another module failed to import
                msg = (child.get("message") or "").splitlines()[0][:300] if child.get("message") else None
        counts[outcome] += 1
        cases.append({"test": f"{tc.get('classname')}::{tc.get('name')}", "outcome": outcome,
                      "time_s": float(tc.get("time") or 0), "message": msg})
except Exception as exc:
    cases = None
    counts["parse_error"] = f"{type(exc).__name__}: {exc}"
if rc in (124, 137):
    status = "timeout"
elif rc in (0, 1) and counts["passed"] and not counts["failed"] and not counts["error"]:
    status = "ok"
elif rc == 0 and cuda != "1":
    status = "skipped"
elif rc == 5:
    status = "no tests"
else:
    status = "failed"
note = None if cuda == "1" else "no CUDA: the cuda tests skip themselves"
if counts["collection_error"]:
    note = ((note + "; ") if note else "") + (f"{counts['collection_error']} other test module(s) "
            "failed to import (missing optional packages?); the cuda tests are unaffected")
tail = open(text, errors="replace").read().splitlines()[-15:]
d = {"part": "tests", "status": status, "note": note, "exit_code": rc, "counts": counts,
     "cases": cases, "output_tail": tail, "limit_s": float(lim), "wall_s": time.time() - float(t0)}
open(out, "w").write(json.dumps(d, indent=1) + "\n")
PY
  fi

  # ------------------------------------------------------------------ b. campaign
  t="$(limit "$T_CAMPAIGN")"; part_t0="$(now)"
  local campaign="$here/benchmarks/gpu_campaign.yaml" work="$tmp/campaign" mode="" mode_note=""
  mkdir -p "$work"
  if [ "$have_base" != 1 ]; then
    note gpu_check_campaign.json campaign skipped "missing numpy/yaml/h5py for $py" "$t"
  else
    timeout -k 2 30 "$py" -m rgdist validate "$campaign" >"$work/validate.txt" 2>&1
    local vrc=$?
    if [ "$vrc" != 0 ]; then
      note gpu_check_campaign.json campaign failed "rgdist validate failed (exit $vrc): $(tail -3 "$work/validate.txt" | tr '\n' ' ')" "$t"
    elif [ "$cuda" != 1 ] && [ "$DRY_CPU" != 1 ]; then
      log "b. campaign skipped: no CUDA"
      note gpu_check_campaign.json campaign skipped "no CUDA (the campaign asks for resources.device: cuda); rgdist validate passed" "$t"
    else
      local dry_note=""
      if [ "$cuda" != 1 ]; then
        export RGDIST_DEVICE=cpu; dry_note="CPU dry run (GPU_CHECK_CPU_DRY_RUN=1, RGDIST_DEVICE=cpu)"
      fi
      local omp_saved="${OMP_NUM_THREADS-__unset__}"
      # shellcheck source=/dev/null
      source "$here/scripts/mpienv.sh"
      export OMP_NUM_THREADS=1   # torch's threads come from the campaign (threads: auto)
      local mpirun_exe="" xflags=()
      mpirun_exe="$(command -v mpirun || command -v mpiexec || true)"
      if [ "$FORCE_SERIAL" = 1 ]; then
        mode=serial; mode_note="GPU_CHECK_FORCE_SERIAL=1"
      elif [ -z "$mpirun_exe" ]; then
        mode=serial; mode_note="no mpirun/mpiexec on PATH"
      elif ! timeout -k 2 30 "$py" -c 'from mpi4py import MPI' >"$work/mpi4py.txt" 2>&1; then
        mode=serial; mode_note="mpi4py cannot load an MPI library: $(tail -1 "$work/mpi4py.txt")"
      else
        if "$mpirun_exe" --version 2>&1 | grep -qi "open mpi\|openrte"; then
          xflags=(-x PYTHONPATH -x OMP_NUM_THREADS -x RGDIST_PROGRESS)
          [ -n "${RGDIST_DEVICE:-}" ] && xflags+=(-x RGDIST_DEVICE)
        fi
        local n
        n="$(cd "$work" && timeout -k 2 40 "$mpirun_exe" -n 2 "${xflags[@]}" "$py" -c \
          'from mpi4py import MPI; print("size", MPI.COMM_WORLD.Get_size())' 2>"$work/mpitest.err" | grep -c '^size 2$')"
        if [ "$n" = 2 ]; then mode=mpirun; else
          mode=serial; mode_note="mpirun -n 2 with mpi4py did not give 2 ranks of one world: $(tail -2 "$work/mpitest.err" | tr '\n' ' ')"
        fi
      fi
      t="$(limit "$T_CAMPAIGN")"
      log "b. campaign on 2 ranks, mode $mode${mode_note:+ ($mode_note)} (limit ${t}s)"
      local c0 crc
      c0="$(now)"
      if [ "$mode" = mpirun ]; then
        (cd "$work" && timeout -k "$GRACE" "$t" "$mpirun_exe" -n 2 "${xflags[@]}" "$py" -m mpi4py \
          -m rgdist run "$campaign" --run-dir "$work/run") >"$work/run.txt" 2>&1
        crc=$?
      else
        # two processes that each think they are alone: split the cores between them
        local half=$(( $(nproc 2>/dev/null || echo 2) / 2 ))
        (cd "$work" && export RGDIST_NO_MPI=1 RGDIST_NUM_THREADS=$(( half > 0 ? half : 1 )) &&
          { timeout -k "$GRACE" "$t" "$py" -m rgdist run "$campaign" --run-dir "$work/run0" --points 0/2 >"$work/run0.txt" 2>&1 & p0=$!
            timeout -k "$GRACE" "$t" "$py" -m rgdist run "$campaign" --run-dir "$work/run1" --points 1/2 >"$work/run1.txt" 2>&1 & p1=$!
            wait $p0; r0=$?; wait $p1; r1=$?
            [ $r0 = 0 ] && [ $r1 = 0 ] && timeout -k 2 "$(limit 60)" "$py" -m rgdist aggregate "$work/run0" "$work/run1" -o "$work/run" >"$work/aggregate.txt" 2>&1
            rc_all=$?; [ $r0 != 0 ] && rc_all=$r0; [ $r1 != 0 ] && rc_all=$r1; exit $rc_all; })
        crc=$?
        cat "$work"/run0.txt "$work"/run1.txt "$work"/aggregate.txt >"$work/run.txt" 2>/dev/null
      fi
      tail -25 "$work/run.txt"
      "$py" - "$out_dir/gpu_check_campaign.json" "$work" "$mode" "$mode_note" "$crc" "$t" "$part_t0" "$c0" "$dry_note" <<'PY'
import glob, json, os, re, sys, time
out, work, mode, mode_note, rc, lim, t0, c0, dry = sys.argv[1:10]
rc = int(rc)
devices, timings, logs = {}, {}, {}
for f in sorted(glob.glob(os.path.join(work, "run*", "logs", "rank-*.log"))):
    key = os.path.relpath(f, work)
    text = open(f, errors="replace").read()
    logs[key] = text.splitlines()[-4:]
    m = re.search(r"device (\S+?),", text)
    devices[key] = m.group(1) if m else None
for f in sorted(glob.glob(os.path.join(work, "run*", "logs", "timings-rank*.json"))):
    try:
        timings[os.path.relpath(f, work)] = json.load(open(f))
    except Exception as exc:
        timings[os.path.relpath(f, work)] = f"unreadable: {exc}"
results = sorted(os.path.relpath(p, work) for p in glob.glob(os.path.join(work, "run*", "results.h5")))
want = "cpu" if dry else "cuda"
on_cuda = bool(devices) and all(str(v).startswith(want) for v in devices.values())
if rc in (124, 137):
    status = "timeout"
elif rc == 75:
    status = "preempted (timeout sent SIGTERM: checkpoint written, exit 75)"
elif rc == 0 and on_cuda and results:
    status = "ok (CPU dry run)" if dry else "ok"
elif rc == 0 and not on_cuda:
    status = f"failed: a rank did not run on {want}"
else:
    status = "failed"
d = {"part": "campaign", "status": status, "note": dry or None, "mode": mode, "mode_note": mode_note or None,
     "ranks": 2, "exit_code": rc, "campaign_wall_s": time.time() - float(c0),
     "rank_devices": devices, "results_h5": results, "timings": timings, "rank_log_tails": logs,
     "output_tail": open(os.path.join(work, "run.txt"), errors="replace").read().splitlines()[-40:],
     "limit_s": float(lim), "wall_s": time.time() - float(t0)}
open(out, "w").write(json.dumps(d, indent=1) + "\n")
PY
      if [ "$omp_saved" = __unset__ ]; then unset OMP_NUM_THREADS; else export OMP_NUM_THREADS="$omp_saved"; fi
      [ -n "$dry_note" ] && unset RGDIST_DEVICE
    fi
  fi

  # ------------------------------------------------------------------ c. throughput
  t="$(limit "$T_THROUGHPUT")"; part_t0="$(now)"
  local tp="$out_dir/gpu_check_throughput.json"
  if [ "$have_numpy" != 1 ]; then
    note gpu_check_throughput.json throughput skipped "missing numpy for $py" "$t"
  else
    # no new variant after limit - 60 s: a started torch.compile variant needs up to ~a minute
    local budget=$(( t > 90 ? t - 60 : t / 2 ))
    local targs=(--device cuda)
    [ "$cuda" != 1 ] && [ "$DRY_CPU" = 1 ] && targs=(--device cpu --quick --no-compile --threads 1)
    log "c. benchmarks/gpu_throughput.py ${targs[*]} (limit ${t}s, budget ${budget}s)"
    timeout -k "$GRACE" "$t" "$py" benchmarks/gpu_throughput.py "${targs[@]}" --budget-s "$budget" \
      --out "$tp" >"$tmp/throughput.stdout" 2>"$tmp/throughput.stderr"
    rc=$?
    grep -v '^W[0-9]' "$tmp/throughput.stderr" | tail -40
    "$py" - "$tp" "$rc" "$t" "$part_t0" "$tmp/throughput.stderr" <<'PY'
import json, os, sys, time
path, rc, lim, t0, err = sys.argv[1:6]
rc = int(rc)
try:
    d = json.load(open(path))
except Exception as exc:
    d = {"status": "failed", "note": f"no JSON written ({type(exc).__name__})",
         "stderr_tail": open(err, errors="replace").read().splitlines()[-20:]}
d["part"] = "throughput"
d["exit_code"] = rc
if d.get("status") == "done":
    dev = str(d.get("environment", {}).get("device", ""))
    d["status"] = "ok" if dev.startswith("cuda") else f"ok ({dev} dry run)"
if rc in (124, 137):
    d["status"] = "timeout (rows so far kept)"
elif rc != 0 and d.get("status") != "skipped":
    d["status"] = "failed"
    d["stderr_tail"] = open(err, errors="replace").read().splitlines()[-20:]
d["limit_s"] = float(lim)
d["part_wall_s"] = time.time() - float(t0)
open(path, "w").write(json.dumps(d, indent=1) + "\n")
PY
  fi

  summary "$py"
}

# ------------------------------------------------------------------ d. summary
summary() {
  local py="${1:-}" t
  t="$(limit "$T_SUMMARY")"
  [ -n "$py" ] || py="${jpy:-python3}"
  timeout -k 2 "$t" "$py" - "$out_dir" "$(elapsed)" "$DEADLINE_S" <<'PY'
import json, os, sys
out_dir, wall, deadline = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
parts, rows = {}, []
for p in ("env", "tests", "campaign", "throughput"):
    try:
        parts[p] = json.load(open(os.path.join(out_dir, f"gpu_check_{p}.json")))
    except Exception as exc:
        parts[p] = {"status": "missing", "note": f"{type(exc).__name__}"}
print("\n== GPU check summary ==")
print(f"{'part':<11} {'status':<34} {'wall s':>7} {'limit s':>8}  note")
for p, d in parts.items():
    wall_p = d.get("wall_s", d.get("part_wall_s"))
    note = d.get("note") or d.get("mode_note") or ""
    if p == "tests" and isinstance(d.get("counts"), dict):
        c = d["counts"]
        note = f"{c.get('passed', 0)} passed, {c.get('failed', 0)} failed, {c.get('skipped', 0)} skipped, {c.get('error', 0)} errors" + (f"; {note}" if note else "")
    if p == "campaign" and d.get("mode"):
        note = f"mode {d['mode']}, devices {sorted(set(map(str, d.get('rank_devices', {}).values())))}, campaign {d.get('campaign_wall_s', 0):.1f} s" + (f"; {note}" if note else "")
    if p == "env" and d.get("gpu"):
        note = f"{d['gpu']['name']}, torch {d['modules'].get('torch')}, CUDA {d['gpu']['cuda_runtime']}"
    ws = f"{wall_p:7.1f}" if isinstance(wall_p, (int, float)) else f"{'-':>7}"
    ls = f"{d['limit_s']:8.0f}" if isinstance(d.get("limit_s"), (int, float)) else f"{'-':>8}"
    print(f"{p:<11} {str(d.get('status')):<34} {ws} {ls}  {note[:110]}")
tp = parts["throughput"]
if tp.get("rows"):
    base = {(r["N"], r["task"]): r["configs_per_s"] for r in tp["rows"]
            if r["mode"] == "fp32" and not r["compile"] and "configs_per_s" in r}
    sp = {(r["N"], r["task"], r["mode"], r["compile"]): r["configs_per_s"] / base[(r["N"], r["task"])]
          for r in tp["rows"] if "configs_per_s" in r and (r["N"], r["task"]) in base}
    print(f"\n{'N':>4} {'task':>6} {'mode':>5} {'compile':>7} {'configs/s':>11} {'x fp32 eager':>12} {'warm-up s':>9}")
    for r in tp["rows"]:
        key = (r["N"], r["task"], r["mode"], r["compile"])
        if "configs_per_s" in r:
            s = sp.get(key)
            print(f"{r['N']:>4} {r['task']:>6} {r['mode']:>5} {str(r['compile']):>7} {r['configs_per_s']:11.4g} "
                  f"{(f'{s:.2f}' if s else '-'):>12} {r['warmup_s']:9.2f}")
        else:
            print(f"{r['N']:>4} {r['task']:>6} {r['mode']:>5} {str(r['compile']):>7}  {(r.get('error') or r.get('skipped') or '')[:60]}")
    for a in tp.get("accuracy", []):
        print(f"score rel. error vs fp64, N = {a.get('N')}: {a.get('score_rel_err_vs_fp64', a.get('error'))}")
failed = [p for p, d in parts.items() if str(d.get("status")).startswith(("failed", "timeout", "missing"))
          or (p == "campaign" and str(d.get("status")).startswith("preempted"))]
summary = {"part": "summary", "wall_s": wall, "deadline_s": deadline,
           "status": {p: d.get("status") for p, d in parts.items()}, "failed_parts": failed,
           "cuda": bool(parts["env"].get("cuda"))}
open(os.path.join(out_dir, "gpu_check_summary.json"), "w").write(json.dumps(summary, indent=1) + "\n")
print(f"\ntotal {wall:.1f} s of {deadline:.0f} s; JSON in {out_dir}; "
      + ("all parts passed or were skipped" if not failed else f"FAILED: {', '.join(failed)}"))
sys.exit(1 if failed else 0)
PY
}

cd "$here" || exit 1
main 2>&1 | tee -a "$log"
exit "${PIPESTATUS[0]}"
