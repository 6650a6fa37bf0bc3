"""Why a tiny FP8 engine's context logits on the GPU differ from the CPU path's (the GPU test
test_quantized_engine_on_gpu_saves_loads_and_matches_the_cpu_path): the same saved engine run on
the CPU, on the GPU as is, and on the GPU with parts of the FP8 linear swapped for the CPU's
arithmetic, each against the CPU (relative error of the context logits, and the first linear
call's output against the CPU's for the same input).

    python3 scripts/diag_fp8_engine.py
"""
from __future__ import annotations

import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.quantization.engine_cases import build_save_reload, generate, logits_rel_error, prompts, quant_config  # noqa: E402
from tests.utils.tiny_models import make_tiny_checkpoint  # noqa: E402
from tritium.quantization import fp8 as fp8_mod  # noqa: E402

Method = fp8_mod.Fp8LinearMethod


def variant(name: str):
    """Context managers of sorts: patch Fp8LinearMethod for one GPU run, return an undo."""
    saved = {k: getattr(Method, k) for k in ("_apply_cuda", "_quantize_input")}
    saved_rows = fp8_mod.GEMV_MAX_ROWS
    if name == "emulated GEMM, Triton activation quantization":
        Method._apply_cuda = Method._apply_emulated
    elif name == "emulated GEMM, torch activation quantization":
        Method._apply_cuda = Method._apply_emulated

        def torch_quant(self, layer, x2):
            if self.dynamic:
                scale = fp8_mod.fp8_scale(x2.abs().amax(dim=1, keepdim=True))
            else:
                scale = layer.input_scale
            return fp8_mod.quantize_fp8(x2, scale), scale
        Method._quantize_input = torch_quant
    elif name == "no streaming GEMM (scaled_mm for every row count)":
        fp8_mod.GEMV_MAX_ROWS = 0

    def undo():
        for k, v in saved.items():
            setattr(Method, k, v)
        fp8_mod.GEMV_MAX_ROWS = saved_rows
    return undo


def main() -> None:
    folder = make_tiny_checkpoint("llama", tempfile.mkdtemp())
    ids = prompts()
    for algo, kv in (("FP8_PER_CHANNEL_PER_TOKEN", None), ("FP8", None)):
        engine = os.path.join(tempfile.mkdtemp(), "engine")
        run = build_save_reload(folder, "cuda", quant_config(algo, kv), engine)
        cpu = generate(engine, "cpu", ids)
        print(f"[diag {algo}] built on cuda vs cpu: {logits_rel_error(run.built, cpu):.4f}; "
              f"loaded on cuda vs cpu: {logits_rel_error(run.loaded, cpu):.4f}", flush=True)
        for name in ("emulated GEMM, Triton activation quantization", "emulated GEMM, torch activation quantization",
                     "no streaming GEMM (scaled_mm for every row count)"):
            undo = variant(name)
            try:
                gpu = generate(engine, "cuda", ids)
                print(f"[diag {algo}] {name}: cuda vs cpu {logits_rel_error(gpu, cpu):.4f}", flush=True)
            except Exception as e:  # noqa: BLE001
                print(f"[diag {algo}] {name}: {type(e).__name__}: {e}", flush=True)
            finally:
                undo()
        # the first FP8 linear's input on the CPU, through both arithmetics on the GPU
        from tritium.llm.llm import LLM
        with LLM(engine, device="cpu", max_seq_len=64, max_batch_size=4) as llm:
            captured = {}
            layer = next(m for m in llm._parts.core.runner.model.modules()
                         if isinstance(getattr(m, "linear_method", None), Method))
            orig = layer.forward

            def spy(x, *a, **k):
                captured.setdefault("x", x.detach().clone())
                y = orig(x, *a, **k)
                captured.setdefault("y", y.detach().clone())
                return y
            layer.forward = spy
            llm.generate(ids[:1], None)
        x, y_cpu = captured["x"], captured["y"]
        layer_gpu = layer.to("cuda")
        for rows in (1, 16, x.shape[0]):
            try:
                y = layer.linear_method.apply(layer_gpu, x[:rows].cuda(), None).cpu().double()
            except Exception as e:  # noqa: BLE001
                print(f"[diag {algo}] first linear, {rows} rows: {type(e).__name__}: {e}", flush=True)
                continue
            ref = y_cpu[:rows].double()
            print(f"[diag {algo}] first linear, {rows} rows: gpu vs cpu {((y - ref).norm() / ref.norm()).item():.2e}",
                  flush=True)


if __name__ == "__main__":
    main()
