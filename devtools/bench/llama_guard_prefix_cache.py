"""Per-check time of Safety Check with the prompt-prefix KV cache against without it.

Builds (once, into ``--workdir``) a GGUF with the real Llama 3.2 1B shape and random weights,
quantized to Q4_K_M, whose vocabulary cuts the prompt where Llama 3's tokenizer does (145 tokens
before the caption) and keeps common caption words whole; or takes ``--model`` (e.g. a real Llama
Guard GGUF). Then, on one loaded model and a
30-word caption, times in alternation a check that evaluates the whole prompt and a check that
reuses the prefix state (the prefix is restored, untimed, after each uncached check), and compares
their p_unsafe.

    python -m devtools.bench.llama_guard_prefix_cache [--runs 7] [--threads 0] [--model PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

CAPTION = (
    "A woman in a red jacket is sitting on a wooden bench in a park next to a brown dog, "
    "with tall green trees and a blue sky behind them."
)
TARGET = 0.35


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="0 = the CPU quota")
    parser.add_argument("--model", type=Path, help="a GGUF to use instead of the generated 1B-shape model")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cutout-guard-bench")
    parser.add_argument("--caption", default=CAPTION)
    args = parser.parse_args(argv)

    import llama_cpp

    from cutout_guard.core.cpu import resolve_threads
    from cutout_guard.engines.llama_guard import LlamaGuard
    from cutout_guard.engines.llama_guard_prompt import tokenize_body
    from devtools.synthetic.llama_guard import build_llama_guard

    path = args.model
    if path is None:
        path = args.workdir / "llama-guard-1b-shape-random-Q4_K_M.gguf"
        if not path.is_file():
            print(f"building {path.name} (Llama 3.2 1B shape, random weights, Q4_K_M) ...", flush=True)
            start = time.perf_counter()
            build_llama_guard(path, shape="1b", quantize="Q4_K_M", threads=resolve_threads(args.threads))
            print(f"  built in {time.perf_counter() - start:.0f} s, {path.stat().st_size / 1e6:.0f} MB", flush=True)

    guard = LlamaGuard.load(path, threads=args.threads)
    caption = args.caption
    caption_tokens = len(guard.tokenize(" " + caption.strip(), False))
    body = tokenize_body(guard.tokenize, guard.template, caption)

    cached_times, uncached_times, cached_cpu, uncached_cpu, cached_p, uncached_p = [], [], [], [], [], []
    cached_verdict = uncached_verdict = None
    guard.check(caption)  # warm-up, both ways
    guard.check(caption, reuse_prefix=False)
    for _ in range(args.runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        uncached_verdict = guard.check(caption, reuse_prefix=False)
        uncached_times.append(time.perf_counter() - start)
        uncached_cpu.append(time.process_time() - start_cpu)
        uncached_p.append(uncached_verdict.p_unsafe)
        guard.evaluate_prefix()  # restore the prefix state, untimed, as a loaded model keeps it
        start, start_cpu = time.perf_counter(), time.process_time()
        cached_verdict = guard.check(caption)
        cached_times.append(time.perf_counter() - start)
        cached_cpu.append(time.process_time() - start_cpu)
        cached_p.append(cached_verdict.p_unsafe)
    full_logits, _ = guard.prompt_logits(caption, reuse_prefix=False)
    guard.evaluate_prefix()
    cached_logits, _ = guard.prompt_logits(caption)
    logit_gap = float(abs(full_logits - cached_logits).max())
    prefix_length = len(guard.prefix_tokens)
    guard.close()
    # Control: the whole prompt again without the cache, but in two batches split where the prefix
    # ends (what the cached path does). llama.cpp's results depend slightly on batch boundaries.
    split = LlamaGuard.load(path, threads=args.threads, n_batch=prefix_length)
    split_logits, _ = split.prompt_logits(caption, reuse_prefix=False)
    split.close()
    split_gap = float(abs(split_logits - cached_logits).max())

    cached, uncached = statistics.median(cached_times), statistics.median(uncached_times)
    ratio = cached / uncached
    worst = max(abs(a - b) for a, b in zip(cached_p, uncached_p))
    print(f"model {path.name}, llama-cpp-python {llama_cpp.__version__}, {resolve_threads(args.threads)} threads, "
          f"{args.runs} runs each (alternating)")
    print(f"caption: {len(caption.split())} words")
    print(f"tokens: {len(guard.prefix_tokens)} before the caption, {caption_tokens} caption, "
          f"{len(body) - caption_tokens} after it")
    print(f"  evaluated per check: uncached {uncached_verdict.prompt_tokens}, cached {cached_verdict.prompt_tokens}; "
          f"answer tokens fed {cached_verdict.generated_tokens}")
    cpu_cached, cpu_uncached = statistics.median(cached_cpu), statistics.median(uncached_cpu)
    print(f"  uncached check: median {uncached:.3f} s wall  {[round(t, 3) for t in uncached_times]}")
    print(f"  cached check  : median {cached:.3f} s wall  {[round(t, 3) for t in cached_times]}")
    print(f"  cached / uncached = {100 * ratio:.1f} % wall time  (target <= {100 * TARGET:.0f} %)")
    print(f"  CPU time of this process: uncached median {cpu_uncached:.3f} s, cached {cpu_cached:.3f} s, "
          f"ratio {100 * cpu_cached / cpu_uncached:.1f} % (less sensitive to other processes on the machine)")
    print(f"  p_unsafe cached {cached_p[-1]:.6f}, uncached {uncached_p[-1]:.6f}, max |difference| {worst:.2e}; "
          f"max |logit difference| {logit_gap:.2e}; verdicts "
          f"{'equal' if cached_verdict.safe == uncached_verdict.safe and cached_verdict.answer == uncached_verdict.answer else 'DIFFER'}")
    print(f"  control: uncached prompt in batches of {prefix_length} + rest vs cached: max |logit difference| "
          f"{split_gap:.2e} (so the gap above comes from batch boundaries, not from the reused state)"
          if split_gap == 0 else f"  control: uncached prompt split at the prefix vs cached: max |logit difference| {split_gap:.2e}")
    floor = cached_verdict.prompt_tokens / uncached_verdict.prompt_tokens
    print(f"  token floor: a cached check evaluates {100 * floor:.1f} % of the uncached check's prompt tokens")
    same = split_gap <= 1e-3 and worst <= 1e-3 and cached_verdict.answer == uncached_verdict.answer
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
