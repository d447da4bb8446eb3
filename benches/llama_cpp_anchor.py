"""llama.cpp anchor for the engine bench: the same GGUF, the same prompt ids,
n_threads = cores, greedy. Prints one JSON object with medians.

Usage: llama_cpp_anchor.py PROMPTS.json   (written by `cargo bench -p starling-benches`)
"""
import json
import os
import statistics
import sys
import time

import numpy as np
from llama_cpp import Llama


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    threads = os.cpu_count() or 1
    loads = []
    for _ in range(3):
        t = time.perf_counter()
        llm = Llama(model_path=spec["model"], n_ctx=2048, n_batch=512, n_threads=threads,
                    n_threads_batch=threads, verbose=False)
        loads.append(time.perf_counter() - t)

    def prefill(ids):
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        return len(ids) / (time.perf_counter() - t)

    out = {"threads": threads, "load_s": statistics.median(loads)}
    for key in ("p40", "p400"):
        ids = spec[key]
        prefill(ids)  # warm-up
        out[f"prefill_{key}_tok_s"] = statistics.median(prefill(ids) for _ in range(5))
        out[f"{key}_tokens"] = len(ids)

    def decode(n):
        llm.reset()
        llm.eval(spec["p40"])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t = time.perf_counter()
        for _ in range(n):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        return n / (time.perf_counter() - t)

    decode(8)  # warm-up
    out["decode_tok_s"] = statistics.median(decode(spec["decode_tokens"]) for _ in range(3))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
