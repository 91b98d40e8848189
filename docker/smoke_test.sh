#!/usr/bin/env bash
# Builds the RunPod images and proves them on tiny models (not part of CI: it builds llama.cpp).
#
#   docker/smoke_test.sh [cpu|gpu|all]        (default: all; run from anywhere)
#
# CPU image: built on whatever image carries the base tag (BASE_IMAGE, default the Dockerfile's
# runpod/worker-comfyui:5.4.1-base) with BAKE_MODELS=false; started under --cpus 1 and --cpus 2
# with the tiny models (built here with devtools/synthetic) mounted as the network volume and the
# worker's own local API (SERVE_API_LOCALLY=true: handler.py --rp_serve_api); each CPU API
# workflow is posted to /runsync and the returned PNG's report read back; the threads each runtime
# chose are read from the worker's log; the image's packages are compared with its lock. GPU
# image: built as far as it goes without nvcc or a GPU — its runtime stage on a stand-in
# llama-cpp-python wheel (the CPU builder's), then its packages, files and node import checked.
# Containers are removed at the end, also on failure.
#
# Environment: DOCKER (default docker; e.g. /usr/bin/docker), PYTHON (a Python with the pack and
# its test extras, default python3), BASE_IMAGE. The images stay tagged cutout-guard-smoke:cpu|gpu
# (a second run reuses their layers).
# The functions are called by name (smoke_$flavour) or from those.
# shellcheck disable=SC2329
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
DOCKER=${DOCKER:-docker}
PYTHON=${PYTHON:-python3}
export DOCKER_BUILDKIT=1
flavours=${1:-all}
[[ $flavours == all ]] && flavours="cpu gpu"
base_args=()
[[ -n ${BASE_IMAGE:-} ]] && base_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
work=$(mktemp -d)
containers=()
status=0

cleanup() {
  for c in "${containers[@]}"; do "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAILED: $*"; status=1; }

build() {  # build TAG DOCKERFILE [ARGS...]: prints the build time; the log goes to $work
  local tag=$1 file=$2 started
  shift 2
  started=$(date +%s)
  if ! "$DOCKER" build --progress=plain -f "$file" "${base_args[@]}" --build-arg BAKE_MODELS=false "$@" -t "$tag" . \
      > "$work/build-${tag//[:\/]/_}.log" 2>&1; then
    tail -n 40 "$work/build-${tag//[:\/]/_}.log"
    echo "FAILED: docker build of $tag"
    exit 1
  fi
  echo "built $tag in $(( $(date +%s) - started )) s; image size $(( $("$DOCKER" image inspect -f '{{.Size}}' "$tag") / 1000000 )) MB"
  grep -c ' CACHED$' "$work/build-${tag//[:\/]/_}.log" | xargs -I{} echo "  {} steps came from the build cache"
}

in_image() {  # in_image TAG COMMAND...: runs a command in a fresh container of TAG
  local tag=$1
  shift
  "$DOCKER" run --rm --entrypoint "" "$tag" "$@"
}

static_checks() {  # static_checks TAG FLAVOUR
  local tag=$1 flavour=$2
  echo "packages against docker/$flavour/constraints.txt:"
  in_image "$tag" python -m pip list --format=freeze 2>/dev/null | "$PYTHON" docker/smoke.py freeze "$flavour" || fail "$tag: packages differ from the lock"
  in_image "$tag" python -m pip check || fail "$tag: pip check"
  echo "llama.cpp libraries (regular files, then links):"
  in_image "$tag" sh -c 'find / -xdev -name "libllama*.so*" -type f; find / -xdev -name "libllama*.so*" -type l | wc -l | xargs echo "  links:"'
  local copies
  copies=$(in_image "$tag" sh -c 'find / -xdev -name "libllama.so*" -type f | wc -l')
  [[ $copies == 1 ]] || fail "$tag: libllama stored $copies times"
  in_image "$tag" sh -c 'ls -d /comfyui/custom_nodes/cutout-guard/web/cutout_guard.js /comfyui/custom_nodes/cutout-guard/example_workflows/*.json \
      /comfyui/models/ben2 /comfyui/models/florence2 /comfyui/models/LLM /comfyui/models/image_guard' >/dev/null \
    || fail "$tag: the canvas extension, templates or model folders are missing"
  echo "layers holding a wheel (none expected):"
  if "$DOCKER" history --no-trunc --format '{{.CreatedBy}}' "$tag" | grep -E 'COPY .*wheels|/tmp/wheels/\*\.whl.*rm -rf'; then
    fail "$tag: a layer copies a wheel in"
  else
    echo "  none"
  fi
}

start_worker() {  # start_worker NAME TAG CPUS: starts the worker with the tiny models, waits for it
  local name=$1 tag=$2 cpus=$3 port deadline
  "$DOCKER" rm -f "$name" >/dev/null 2>&1 || true
  "$DOCKER" run -d --name "$name" --cpus "$cpus" -e SERVE_API_LOCALLY=true -p 127.0.0.1::8000 \
    -v "$work/models:/runpod-volume/models:ro" "$tag" >/dev/null
  containers+=("$name")
  port=$("$DOCKER" port "$name" 8000/tcp | head -n 1 | sed 's/.*://')
  deadline=$(( $(date +%s) + 300 ))
  until "$DOCKER" exec "$name" python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8188/object_info/CutoutGuardSaveReport', timeout=5)" 2>/dev/null \
      && "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/', timeout=5)" 2>/dev/null; do
    if (( $(date +%s) > deadline )) || [[ $("$DOCKER" inspect -f '{{.State.Running}}' "$name") != true ]]; then
      "$DOCKER" logs --tail 60 "$name" 2>&1
      echo "FAILED: the worker in $name did not come up"
      return 1
    fi
    sleep 2
  done
  echo "http://127.0.0.1:$port"
}

smoke_cpu() {
  local tag=cutout-guard-smoke:cpu
  step "CPU image: build on $("$DOCKER" image inspect -f '{{.Id}}' "${BASE_IMAGE:-runpod/worker-comfyui:5.4.1-base}" | cut -c1-19)"
  build "$tag" docker/cpu/Dockerfile
  static_checks "$tag" cpu
  step "tiny models (devtools/synthetic)"
  "$PYTHON" docker/smoke.py models "$work/models"
  for cpus in 1 2; do
    local name=cutout-guard-smoke-cpu-$cpus url started
    step "CPU worker under --cpus $cpus"
    started=$(date +%s)
    url=$(start_worker "$name" "$tag" "$cpus") || { fail "worker under --cpus $cpus"; continue; }
    echo "worker up in $(( $(date +%s) - started )) s at $url; posting each CPU API workflow to /runsync:"
    "$PYTHON" docker/smoke.py post "$url" cpu || fail "a workflow under --cpus $cpus"
    echo "RunPod's local test mode with /test_input.tiny.json:"
    # shellcheck disable=SC2016  # expanded inside the container
    if "$DOCKER" exec "$name" sh -c 'cd / && python -u /handler.py --test_input "$(cat /test_input.tiny.json)"' > "$work/testmode.log" 2>&1 \
        && grep -q "completed successfully" "$work/testmode.log" && grep -q "'images': \[{" "$work/testmode.log"; then
      grep -o "Job [^ ]* completed successfully" "$work/testmode.log" | sed 's/^/  /'
    else
      tail -n 20 "$work/testmode.log"
      fail "local test mode under --cpus $cpus"
    fi
    echo "threads the runtimes chose (the worker's log):"
    "$DOCKER" logs "$name" > "$work/worker-$cpus.log" 2>&1
    "$DOCKER" exec "$name" python -c "
import os
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\0')
    except OSError:
        continue
    if b'/comfyui/main.py' in cmd:
        print(open(f'/proc/{pid}/environ', 'rb').read().replace(b'\0', b'\n').decode(errors='replace'))
        break" > "$work/environ-$cpus.txt"
    "$PYTHON" docker/smoke.py threads "$work/worker-$cpus.log" "$work/environ-$cpus.txt" "$cpus" || fail "threads under --cpus $cpus"
    "$DOCKER" rm -f "$name" >/dev/null
  done
}

smoke_gpu() {
  local tag=cutout-guard-smoke:gpu wheels=cutout-guard-smoke/llama-wheels:cpu
  step "GPU image: runtime stage on a stand-in llama-cpp-python wheel (no nvcc here)"
  build "$wheels" docker/cpu/Dockerfile --target llama-build
  build "$tag" docker/gpu/Dockerfile --build-arg "LLAMA_WHEELS=$wheels" --build-arg LLAMA_STAND_IN=true
  static_checks "$tag" gpu
  in_image "$tag" python -c "import importlib.metadata as m; names = {d.metadata['Name'].lower() for d in m.distributions()}
assert 'onnxruntime-gpu' in names and 'onnxruntime' not in names, sorted(n for n in names if 'onnx' in n)" \
    || fail "$tag: onnxruntime-gpu alone expected"
  echo "the pack's nodes load in the image's ComfyUI (--cpu: no GPU here):"
  in_image "$tag" python /comfyui/main.py --cpu --quick-test-for-ci > "$work/gpu-quick-test.log" 2>&1 || true
  if grep -q "cutout-guard" "$work/gpu-quick-test.log" && ! grep -q "IMPORT FAILED.*cutout-guard\|Cannot import.*cutout-guard" "$work/gpu-quick-test.log"; then
    grep "cutout-guard" "$work/gpu-quick-test.log" | head -n 3
  else
    tail -n 30 "$work/gpu-quick-test.log"
    fail "$tag: the pack did not load"
  fi
}

for flavour in $flavours; do
  "smoke_$flavour"
done
step "$([[ $status == 0 ]] && echo "smoke test passed" || echo "smoke test FAILED")"
exit "$status"
