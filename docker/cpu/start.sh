#!/usr/bin/env bash
# Cutout Guard CPU worker: start ComfyUI on the CPU, then the RunPod handler.
#
# Replaces the base image's /start.sh, whose ComfyUI command line lacks --cpu: without it
# ComfyUI looks for a CUDA device at start and fails on a CPU-only worker.
set -uo pipefail

# The CPUs this container may use: its cgroup quota when one is set, else nproc. Libraries
# that size their thread pools from the host's core count would oversubscribe a 2-vCPU worker.
cpu_count() {
  local n quota period limit
  n="$(nproc 2>/dev/null || echo 1)"
  limit=""
  if [ -r "${CUTOUT_GUARD_CPU_MAX:-/sys/fs/cgroup/cpu.max}" ]; then
    read -r quota period < "${CUTOUT_GUARD_CPU_MAX:-/sys/fs/cgroup/cpu.max}" || true
    if [ "${quota:-max}" != "max" ] && [ "${period:-0}" -gt 0 ]; then
      limit=$(( (quota + period - 1) / period ))
    fi
  elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ] && [ -r /sys/fs/cgroup/cpu/cpu.cfs_period_us ]; then
    quota="$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)"
    period="$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
    if [ "$quota" -gt 0 ] && [ "$period" -gt 0 ]; then
      limit=$(( (quota + period - 1) / period ))
    fi
  fi
  if [ -n "$limit" ] && [ "$limit" -lt "$n" ]; then n="$limit"; fi
  if [ "$n" -lt 1 ]; then n=1; fi
  echo "$n"
}

# tcmalloc, as the base image uses it, when the library is there.
tcmalloc="$(ldconfig -p 2>/dev/null | grep -Po 'libtcmalloc\.so\.\d' | head -n 1 || true)"
if [ -n "$tcmalloc" ]; then
  export LD_PRELOAD="$tcmalloc"
fi

# Thread pools, sized from the CPU quota: OpenMP (torch, llama.cpp's GNU OpenMP), MKL and
# OpenBLAS (llama.cpp's prompt processing) read these when they load. Unset or 0 (meant as "all
# threads": libgomp rejects 0 as invalid and OpenBLAS takes every host core) becomes this
# container's CPU count; a positive value set on the endpoint is kept.
threads="$(cpu_count)"
for var in OMP_NUM_THREADS MKL_NUM_THREADS OPENBLAS_NUM_THREADS; do
  if [ -z "${!var:-}" ] || [ "${!var}" = "0" ]; then
    export "$var=$threads"
  fi
done

comfy-manager-set-mode offline || echo "cutout-guard: could not set ComfyUI-Manager's network mode" >&2

: "${COMFY_LOG_LEVEL:=INFO}"
comfy_args=(--cpu --disable-auto-launch --disable-metadata --verbose "$COMFY_LOG_LEVEL" --log-stdout)
handler_args=()
if [ "${SERVE_API_LOCALLY:-}" = "true" ]; then
  comfy_args+=(--listen)
  handler_args+=(--rp_serve_api --rp_api_host=0.0.0.0)
fi

echo "cutout-guard: starting ComfyUI on the CPU (threads: OMP ${OMP_NUM_THREADS}, MKL ${MKL_NUM_THREADS}, OpenBLAS ${OPENBLAS_NUM_THREADS}): main.py ${comfy_args[*]}"
python -u /comfyui/main.py "${comfy_args[@]}" &

echo "cutout-guard: starting the RunPod handler"
exec python -u /handler.py "${handler_args[@]}"
