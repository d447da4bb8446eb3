"""faster-whisper anchor for the speech bench: the same CTranslate2 model
directories, the same clips, cpu_threads = the given thread count. Prints one
JSON object on stdout; progress goes to stderr.

Usage: faster_whisper_anchor.py SPEC.json

SPEC.json:
  {"threads": 2,
   "runs": [{"model_dir": "/abs/models/cache/whisper-tiny-en",
             "compute_type": "int8" | "float32",
             "beam_size": 1 | 5,
             "concurrency": 1 | 8,
             "clips": [{"id": "mel", "path": "/abs/clip.wav"}, ...],
             "repeats": 3}]}

Per run: WhisperModel(model_dir, device="cpu", compute_type, cpu_threads=threads,
num_workers=concurrency), timed (load_s); one untimed warm-up transcription of
the first clip; then `repeats` rounds over every clip. With concurrency 1 the
clips of a round run one after another; above 1 they are all submitted to a
ThreadPoolExecutor(max_workers=concurrency), so up to `concurrency` run at
once (each on its own CTranslate2 worker). A clip's wall time covers
transcribe() from the file path (audio decode with PyAV, log-mel, language
detection where it applies, decoding) through the last segment: faster-whisper
is lazy, so the segment generator is consumed inside the timed region.
Options: beam_size, language="en" for English-only (.en) models, else None
(detected), vad_filter=False, condition_on_previous_text=True; everything else
at faster-whisper's defaults. A run that fails is reported as {"error": ...}
with its input fields, and the next run goes on.
"""
import json
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import ctranslate2
import faster_whisper
from faster_whisper import WhisperModel


def log(msg: str) -> None:
    print(f"faster-whisper anchor: {msg}", file=sys.stderr, flush=True)


def transcribe(model: WhisperModel, path: str, beam_size: int, language):
    """One clip, end to end; returns (wall_s, info, text)."""
    t = time.perf_counter()
    segments, info = model.transcribe(
        path,
        beam_size=beam_size,
        language=language,
        vad_filter=False,
        condition_on_previous_text=True,
    )
    text = "".join(s.text for s in segments)  # the decoding happens here
    return time.perf_counter() - t, info, text


def run_one(run: dict, threads: int) -> dict:
    out = {k: v for k, v in run.items() if k != "clips"}
    beam_size = int(run["beam_size"])
    concurrency = int(run.get("concurrency", 1))
    repeats = int(run.get("repeats", 1))
    clips = run["clips"]
    if not clips:
        raise ValueError("run has no clips")

    # A local CTranslate2 directory only: a name that is not one would make
    # faster-whisper look for it on the model hub instead.
    if not os.path.isfile(os.path.join(run["model_dir"], "model.bin")):
        raise FileNotFoundError(f"no model.bin in {run['model_dir']}")

    t = time.perf_counter()
    model = WhisperModel(
        run["model_dir"],
        device="cpu",
        compute_type=run["compute_type"],
        cpu_threads=threads,
        num_workers=concurrency,
        local_files_only=True,
    )
    out["load_s"] = time.perf_counter() - t
    # English-only checkpoints (tiny.en, base.en, ...) are told "en"; multilingual
    # ones detect the language, as a caller that does not know it would.
    language = None if model.model.is_multilingual else "en"
    out["language_option"] = language

    transcribe(model, clips[0]["path"], beam_size, language)  # warm-up

    results = [{"id": c["id"], "wall_s": []} for c in clips]
    round_wall = []
    pool = ThreadPoolExecutor(max_workers=concurrency) if concurrency > 1 else None
    try:
        for r in range(repeats):
            t = time.perf_counter()
            if pool is None:
                done = [transcribe(model, c["path"], beam_size, language) for c in clips]
            else:
                futures = [pool.submit(transcribe, model, c["path"], beam_size, language)
                           for c in clips]
                done = [f.result() for f in futures]
            round_wall.append(time.perf_counter() - t)
            for res, (wall, info, text) in zip(results, done):
                res["wall_s"].append(wall)
                # The same on every repeat (greedy/beam at temperature 0 are
                # deterministic unless the fallback samples); the last one is kept.
                res["duration"] = info.duration
                res["text"] = text
                res["language"] = info.language
            log(f"{run['model_dir']} {run['compute_type']} beam {beam_size} "
                f"x{concurrency}: round {r + 1}/{repeats} {round_wall[-1]:.2f} s")
    finally:
        if pool is not None:
            pool.shutdown()
    del model

    out["round_wall_s"] = round_wall
    out["clips"] = [{"id": res["id"], "duration": res.get("duration"), "wall_s": res["wall_s"],
                     "text": res.get("text"), "language": res.get("language")}
                    for res in results]
    return out


def main() -> None:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    spec = json.load(open(sys.argv[1]))
    threads = int(spec.get("threads", 0))
    out = {
        "faster_whisper": faster_whisper.__version__,
        "ctranslate2": ctranslate2.__version__,
        "threads": threads,
        "runs": [],
    }
    for run in spec.get("runs", []):
        try:
            out["runs"].append(run_one(run, threads))
        except Exception as e:  # one bad run must not lose the others
            log(f"run failed: {e!r}")
            traceback.print_exc(file=sys.stderr)
            failed = {k: v for k, v in run.items() if k != "clips"} if isinstance(run, dict) else {}
            failed["error"] = f"{type(e).__name__}: {e}"
            out["runs"].append(failed)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
