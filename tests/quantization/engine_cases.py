"""Build a quantized engine from a tiny random checkpoint, save it, load it back: shared by the CPU
tests (tests/quantization/test_saved_engine.py) and tests/gpu/test_quantization_gpu.py.

    run = build_save_reload(tiny_llama, "cuda", quant, engine_dir)
    run.built / run.loaded: the RequestOutputs of the same prompts before saving and after loading
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from tritium import SamplingParams
from tritium.llm.llm import LLM
from tritium.quantization import CalibConfig, QuantConfig

# (quant_algo, kv_cache_quant_algo): every method, each KV cache, and the two together.
ENGINE_CASES = [("W8A16", None), ("W4A16", None), ("W4A16_AWQ", None), ("W4A16_GPTQ", None), ("FP8", None),
                ("FP8_PER_CHANNEL_PER_TOKEN", None), ("W8A8_SQ_PER_CHANNEL", None), (None, "FP8"), (None, "INT8"),
                ("FP8", "FP8")]
# The relative error of the context logits against the unquantized model (tiny random Llama of two
# layers, float32): measured on the CPU (W8A16 0.020, W4A16 0.30, AWQ 0.30, FP8 0.128, per-token FP8
# 0.117, W8A8 0.030, FP8 / INT8 KV cache 0.048 / 0.014, FP8 + FP8 KV 0.133) with ~50% margin.
FLOAT_LOGITS_TOL = {"W8A16": 0.03, "W4A16": 0.45, "W4A16_AWQ": 0.45, "W4A16_GPTQ": 0.45, "FP8": 0.2,
                    "FP8_PER_CHANNEL_PER_TOKEN": 0.2, "W8A8_SQ_PER_CHANNEL": 0.05, None: 0.08}
CALIB = CalibConfig(calib_batches=4, calib_max_seq_length=64)
PARAMS = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, return_context_logits=True)


def prompts(vocab_size: int = 256, count: int = 3, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab_size) for _ in range(rng.randint(5, 30))] for _ in range(count)]


@dataclass
class EngineRun:
    built: list  # RequestOutputs of the engine as built (quantized at load)
    loaded: list  # the same prompts through the saved engine loaded back


def quant_config(algo, kv) -> QuantConfig:
    return QuantConfig(quant_algo=algo, kv_cache_quant_algo=kv, group_size=64)


def generate(model: str, device: str, prompt_ids, **kw) -> list:
    with LLM(model, device=device, max_seq_len=64, max_batch_size=4, **kw) as llm:
        return llm.generate(prompt_ids, PARAMS)


def build_save_reload(model: str, device: str, quant: QuantConfig, engine_dir: str, prompt_ids=None) -> EngineRun:
    prompt_ids = prompt_ids or prompts()
    with LLM(model, device=device, dtype="float32", max_seq_len=64, max_batch_size=4, quant_config=quant,
             calib_config=CALIB) as llm:
        built = llm.generate(prompt_ids, PARAMS)
        llm.save(engine_dir)
    return EngineRun(built, generate(engine_dir, device, prompt_ids))


def tokens(outputs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outputs]


def logits_rel_error(a, b) -> float:
    """Largest relative error of the context logits over the prompts (float64)."""
    errs = []
    for x, y in zip(a, b):
        x, y = x.context_logits.double().cpu(), y.context_logits.double().cpu()
        errs.append(((x - y).norm() / y.norm()).item())
    return max(errs)
