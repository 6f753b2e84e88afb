#!/usr/bin/env bash
# Do two revisions write the same bytes? Runs a small CLI chain (demo data, coarse CNN training,
# predict, RNN fine-tune, refine with iterations, dense CRF, evaluate) in a worktree of REV and in
# this checkout, and compares the SHA-256 of every output (models, GeoTIFFs, the scores' JSON).
# Used to check refactors that must not change behaviour:  scripts/same_outputs.sh 9171a8c
set -euo pipefail
REV=${1:?usage: scripts/same_outputs.sh REV}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$HERE/.venv/bin/python}
WORK=$(mktemp -d)
trap 'git -C "$HERE" worktree remove --force "$WORK/old" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
git -C "$HERE" worktree add --detach "$WORK/old" "$REV" >/dev/null 2>&1

chain() {  # chain CHECKOUT OUT: run the chain with CHECKOUT's refiner, print the outputs' hashes
  local src=$1 out=$2
  mkdir -p "$out"
  (
    cd "$src"
    export OMP_NUM_THREADS=1 PYTHONHASHSEED=0
    run() { "$PY" -m refiner "$@" >/dev/null 2>&1 || { echo "failed in $src: refiner $*" >&2; exit 1; }; }
    run demo-data --out "$out/d"
    run train-coarse --images "$out/d/coarse.tif" --labels "$out/d/coarse_osm.tif" \
      --classes background,building,road --values 0,1,2 --steps 20 --out "$out/coarse"
    run predict --model "$out/coarse" --image "$out/d/enhance.tif" --out "$out/e_probs.tif"
    run predict --model "$out/coarse" --image "$out/d/test.tif" --out "$out/t_probs.tif"
    run finetune --image "$out/d/enhance.tif" --probs "$out/e_probs.tif" --labels "$out/d/enhance_truth.tif" \
      --classes background,building,road --values 0,1,2 --steps 15 --out "$out/rnn"
    run refine --model "$out/rnn" --image "$out/d/test.tif" --probs "$out/t_probs.tif" --out "$out/t_map.tif" \
      --probs-out "$out/t_refined.tif" --iterations-out "$out/t_iterations.tif"
    run crf --image "$out/d/test.tif" --probs "$out/t_probs.tif" --out "$out/t_crf.tif"
    "$PY" -m refiner evaluate --pred "$out/t_map.tif" --truth "$out/d/test_truth.tif" \
      --classes background,building,road --values 0,1,2 --json >"$out/scores.json" 2>/dev/null
  )
  (cd "$out" && find . -type f | sort | xargs sha256sum)
}

chain "$WORK/old" "$WORK/out" >"$WORK/old.sha"
chain "$HERE" "$WORK/out2" >"$WORK/new.sha"
if diff "$WORK/old.sha" "$WORK/new.sha"; then
  echo "same bytes: $(wc -l <"$WORK/new.sha") output files of $REV and this checkout are identical"
else
  echo "outputs differ between $REV and this checkout (lines above)" >&2
  exit 1
fi
