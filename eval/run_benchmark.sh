#!/usr/bin/env bash
# Regenerate the committed summary of the latest benchmark on the embedded text-to-video model.
#
#   eval/run_benchmark.sh            # both step counts: 20 and 50 steps, 16 prompts x 2 seeds each
#   eval/run_benchmark.sh 20         # only the 20-step sweep
#   eval/run_benchmark.sh quick      # the 20-step sweep on 4 prompts x 1 seed (tiny-t2v-20-quick)
#   eval/run_benchmark.sh stacking   # TaoCache stacked on TeaCache and PAB vs each alone (50 steps)
#   eval/run_benchmark.sh 50 --num-prompts 4 --seeds 0    # any further arguments go to `taocache bench`
#
# Raw records and the full HTML report go to eval/runs/tiny-t2v-STEPS/ (not committed; re-running resumes
# there). The summary to commit (summary.json, summary.md and a few small GIFs) is written to
# eval/results/tiny-t2v-STEPS/. On a 2-core CPU the two sweeps take a few hours; set PYTHON to choose the
# interpreter (default: python3) and OMP_NUM_THREADS as the machine allows.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
which_steps=${1:-all}
if [[ $# -gt 0 ]]; then shift; fi
suffix=""
case "$which_steps" in
  all) steps_list=(20 50) ;;
  20|50|stacking) steps_list=("$which_steps") ;;
  quick) steps_list=(20); suffix="-quick"; set -- --num-prompts 4 --seeds 0 "$@" ;;
  *) echo "usage: $0 [all|20|50|quick|stacking] [taocache bench arguments...]" >&2; exit 2 ;;
esac

for steps in "${steps_list[@]}"; do
  name="tiny-t2v-${steps}${suffix}"
  "$PYTHON" -m taocache.cli bench --model tiny-t2v --sweep "eval/sweeps/t2v-${steps}.toml" \
    --out "eval/runs/${name}" "$@"
  "$PYTHON" -m taocache.cli report "eval/runs/${name}/results.jsonl" --out "eval/results/${name}" \
    --force --no-html --copy-media
done
