#!/usr/bin/env bash
# GPU readiness check, sized for a 15-minute device lease including a cold start (~2-4 min):
#   1. build the CUDA plugins (bias_act, upfirdn2d, filtered_lrelu) in parallel      <= 240 s
#   2. bench/ops_check.py: each op's CUDA path vs its reference, fwd/1st/2nd grads    <= 150 s
#   3. one training step per phase at 256 px -> sec/kimg, peak GPU memory:
#      3DGP (preset_3dgp widths, 64x64 patches, batch 16) and EG3D (ffhq shape, batch 8)  <= 150 s each
# Prints everything; writes JSON + logs into $OUT when set (else bench/results/gpu/). Every part has its own
# timeout, so a hung part costs its budget only. Usage (repository root): bash bench/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
DEST=${OUT:-bench/results/gpu}
mkdir -p "$DEST"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-16}
T0=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - T0 ))s] $*"; }

stamp "device"
timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$DEST/nvidia_smi.txt"
timeout 60 "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tee "$DEST/torch.txt"

stamp "1. building CUDA plugins"
for op in bias_act upfirdn2d filtered_lrelu; do
  ( timeout 240 "$PY" -c "
import sys, time, torch
from torch_utils.ops import $op as m
t = time.time(); ok = m._plugin.ready(); print('$op', 'built' if ok else 'FAILED', f'{time.time() - t:.0f}s'); sys.exit(0 if ok else 1)
" > "$DEST/build_$op.log" 2>&1; echo "rc=$?" >> "$DEST/build_$op.log" ) &
done
wait
for op in bias_act upfirdn2d filtered_lrelu; do tail -n 3 "$DEST/build_$op.log"; done

stamp "2. ops_check (CUDA vs reference, fwd/bwd, tolerances, timings)"
timeout 150 "$PY" bench/ops_check.py --out "$DEST/ops_check.json" --iters 10 > "$DEST/ops_check.log" 2>&1
echo "ops_check rc=$?"; tail -n 60 "$DEST/ops_check.log"

step() { # cfg batch timeout
  stamp "3. training step $1 batch $2"
  timeout "$3" "$PY" bench/run.py --worker "$1" fast --device cuda --batch "$2" --iters 3 --warmup 1 \
    > "$DEST/step_$1.json.log" 2> "$DEST/step_$1.err"
  echo "$1 rc=$?"
  grep '^{' "$DEST/step_$1.json.log" | tail -n 1 > "$DEST/step_$1.json"
  "$PY" - "$DEST/step_$1.json" "$DEST/step_$1.err" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    print('  no result; stderr tail:'); print(''.join(open(sys.argv[2]).readlines()[-8:])); sys.exit(0)
ph = ' '.join(f"{k} {v['wall_s'] * 1e3:.0f}ms" for k, v in r['phases'].items())
print(f"  {r['cfg']} batch {r['batch']}: {r['sec_per_kimg']:.1f} sec/kimg | {ph} | peak {r.get('gpu_max_allocated_mb', 0) / 1024:.1f} GiB")
EOF
}
step 3dgp256 16 150
step eg3d256 8 150

stamp "summary"
"$PY" - "$DEST" <<'EOF'
import glob, json, os, sys
d = sys.argv[1]
summary = dict(builds={}, steps={})
for f in glob.glob(os.path.join(d, 'build_*.log')):
    summary['builds'][os.path.basename(f)[6:-4]] = 'built' in open(f).read()
for f in glob.glob(os.path.join(d, 'step_*.json')):
    try:
        r = json.load(open(f))
        summary['steps'][r['cfg']] = dict(sec_per_kimg=r['sec_per_kimg'], batch=r['batch'],
            gpu_max_allocated_gib=r.get('gpu_max_allocated_mb', 0) / 1024, phases_s={k: v['wall_s'] for k, v in r['phases'].items()})
    except Exception as e:
        summary['steps'][os.path.basename(f)] = f'no result ({e.__class__.__name__})'
try:
    ops = json.load(open(os.path.join(d, 'ops_check.json')))
    summary['ops_check'] = ops.get('summary', ops) if isinstance(ops, dict) else ops
except Exception as e:
    summary['ops_check'] = f'no result ({e.__class__.__name__})'
json.dump(summary, open(os.path.join(d, 'gpu_check.json'), 'w'), indent=2)
print(json.dumps(summary, indent=1)[:4000])
EOF
stamp "done"
