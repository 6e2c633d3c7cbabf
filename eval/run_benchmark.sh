#!/usr/bin/env bash
# Regenerate the committed reports of the benchmarks on the embedded models.
#
#   eval/run_benchmark.sh            # the video model at 20 and 50 steps, 16 test captions x 2 seeds each
#   eval/run_benchmark.sh 20         # only the 20-step run
#   eval/run_benchmark.sh stacking   # TaoCache stacked on TeaCache and PAB vs each alone (50 steps)
#   eval/run_benchmark.sh image      # the image model, 50 DDIM steps
#   eval/run_benchmark.sh 50 --num-prompts 4 --seeds 0    # any further arguments go to `taocache bench`
#
# The 20- and 50-step runs read the settings eval/tune_peers.py chose on tune captions
# (eval/sweeps/tuned-STEPS.toml), the stacking run those it chose for the stacks and the caches they stack
# (eval/sweeps/tuned-stacking-50.toml); run it first if the file is missing. Raw records go to eval/runs/NAME/ (not
# committed; re-running resumes there); the report to commit (report.html, summary.md, summary.json and its
# clips) to eval/results/NAME/. Set PYTHON to choose the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
which_run=${1:-all}
if [[ $# -gt 0 ]]; then shift; fi
case "$which_run" in
  all) runs=(20 50) ;;
  20|50|stacking|image) runs=("$which_run") ;;
  *) echo "usage: $0 [all|20|50|stacking|image] [taocache bench arguments...]" >&2; exit 2 ;;
esac

for run in "${runs[@]}"; do
  case "$run" in
    image) name="tiny-t2i-50"; args=(--kind image --sweep eval/sweeps/t2i-50.toml) ;;
    *) if [[ "$run" == stacking ]]; then
         name="tiny-t2v-stacking"; sweep="eval/sweeps/tuned-stacking-50.toml"
         tune="--steps 50 --methods steps,taocache,teacache,pab,taocache+teacache,taocache+pab"
       else
         name="tiny-t2v-${run}"; sweep="eval/sweeps/tuned-${run}.toml"; tune="--steps ${run}"
       fi
       if [[ ! -f "$sweep" ]]; then
         echo "$sweep is missing: run  python eval/tune_peers.py ${tune} --per-method 6 --num-prompts 4 --out ${sweep}  first" >&2
         exit 2
       fi
       args=(--model tiny-t2v --sweep "$sweep" --num-prompts 16 --seeds 0 1) ;;
  esac
  "$PYTHON" -m taocache.cli bench "${args[@]}" --out "eval/runs/${name}" "$@"
  "$PYTHON" -m taocache.cli report "eval/runs/${name}/results.jsonl" --out "eval/results/${name}" \
    --force --copy-media
done
