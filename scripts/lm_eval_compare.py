"""lm-evaluation-harness on the same weights through two backends: its own `hf` (transformers,
float32, the GGUF loaded by transformers) and `local-completions` against `tritium serve
--dtype float32` (token-id prompts, echo + logprobs). Prints per-sample loglikelihood differences
and both accuracies.

    pip install "lm-eval[api]" && python scripts/lm_eval_compare.py [--task tritium_mc]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def write_task(tmp: str) -> str:
    """The task's YAML with the absolute path of its questions (lm-eval resolves data files from the cwd)."""
    src = os.path.join(HERE, "lm_eval_tasks", "tritium_mc")
    with open(os.path.join(src, "tritium_mc.yaml.in")) as f:
        text = f.read().replace("@DATA_FILE@", os.path.join(src, "questions.jsonl"))
    task_dir = os.path.join(tmp, "tasks")
    os.makedirs(task_dir)
    with open(os.path.join(task_dir, "tritium_mc.yaml"), "w") as f:
        f.write(text)
    return task_dir


def lm_eval(args: list[str], task_dir: str, out_dir: str) -> dict:
    cmd = [sys.executable, "-m", "lm_eval", *args, "--include_path", task_dir,
           "--log_samples", "--output_path", out_dir]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    samples = {}
    for path in glob.glob(os.path.join(out_dir, "**", "samples_*.jsonl"), recursive=True):
        with open(path) as f:
            for line in f:
                s = json.loads(line)
                samples[s["doc_id"]] = s
    return samples


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="tritium_mc")
    p.add_argument("--port", type=int, default=8911)
    args = p.parse_args()
    sys.path.insert(0, ROOT)
    from transformers import AutoTokenizer

    from tritium.bench.serve import wait_for_server
    from tritium.default_model import default_model_path

    gguf = default_model_path()
    tmp = tempfile.mkdtemp(prefix="lm_eval_cmp_")
    task_dir = write_task(tmp)
    tok_dir = os.path.join(tmp, "tokenizer")
    AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf)).save_pretrained(tok_dir)

    t0 = time.perf_counter()
    hf = lm_eval(["--model", "hf", "--model_args",
                  f"pretrained={os.path.dirname(gguf)},gguf_file={os.path.basename(gguf)},tokenizer={tok_dir},"
                  "dtype=float32", "--device", "cpu", "--batch_size", "8", "--tasks", args.task],
                 task_dir, os.path.join(tmp, "hf"))
    t_hf = time.perf_counter() - t0

    env = dict(os.environ, PYTHONPATH=ROOT)
    server = subprocess.Popen([sys.executable, "-m", "tritium.entrypoints.cli", "serve", "--port", str(args.port),
                               "--dtype", "float32", "--served-model-name", "smollm2", "--log-level", "warning"],
                              env=env)
    try:
        wait_for_server(f"http://127.0.0.1:{args.port}", 600, server)
        t0 = time.perf_counter()
        tr = lm_eval(["--model", "local-completions", "--model_args",
                      f"base_url=http://127.0.0.1:{args.port}/v1/completions,model=smollm2,"
                      f"tokenizer_backend=huggingface,tokenizer={tok_dir},tokenized_requests=True,"
                      "num_concurrent=4,max_retries=1", "--tasks", args.task],
                     task_dir, os.path.join(tmp, "tritium"))
        t_tr = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(60)

    diffs, acc = [], {"hf": [], "tritium": []}
    for doc_id, s_hf in sorted(hf.items()):
        s_tr = tr[doc_id]
        for (lp_hf, _), (lp_tr, _) in zip([r[0] for r in s_hf["resps"]], [r[0] for r in s_tr["resps"]]):
            diffs.append(abs(float(lp_hf) - float(lp_tr)))
        acc["hf"].append(s_hf["acc"])
        acc["tritium"].append(s_tr["acc"])
    print(json.dumps({
        "task": args.task, "docs": len(hf), "loglikelihoods": len(diffs),
        "max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs),
        "acc_hf": sum(acc["hf"]) / len(acc["hf"]), "acc_tritium": sum(acc["tritium"]) / len(acc["tritium"]),
        "same_choices": sum(a == b for a, b in zip(acc["hf"], acc["tritium"])),
        "seconds_hf": round(t_hf, 1), "seconds_tritium_server": round(t_tr, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
