"""The baseline: Hugging Face transformers `generate` on the same model, dtype and requests.

Static batching, as transformers does it: requests go in dataset order, `batch_size` at a time,
left-padded; each batch generates greedily exactly its longest request's output length
(min_new_tokens = max_new_tokens, so EOS cannot end it early) and each request is credited only
its own output_tokens. All requests arrive at the start, like the offline tritium run, so a later
batch's TTFT includes its wait. Token times come from a streamer that generate calls once per step
with the step's tokens already copied to the host (a device sync generate does anyway).
"""
from __future__ import annotations

import os
import time
from typing import Any, Optional

import torch

from tritium.bench.report import RequestRecord
from tritium.bench.spec import EngineSpec


class _StepClock:
    """A transformers streamer that only stamps when each step's tokens come out."""

    def __init__(self):
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate's first call hands over the prompt
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _load_model(source, dtype: torch.dtype, device: torch.device):
    from transformers import AutoConfig, AutoModelForCausalLM

    is_gguf = os.path.isfile(source.path) and source.path.endswith(".gguf")
    folder = os.path.dirname(source.path) if is_gguf else source.path
    gguf = {"gguf_file": os.path.basename(source.path)} if is_gguf else {}
    if source.format == "dummy":  # random weights of the same shapes, made on the device
        config = AutoConfig.from_pretrained(folder, **gguf)
        with device:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        if is_gguf:
            gguf.update(_dense_gguf())
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **gguf).to(device)
    return model.eval()


def _dense_gguf() -> dict[str, Any]:
    """Dense (dequantized) weights, as tritium runs a GGUF file: newer transformers otherwise keep
    the GGUF blocks packed and unpack them in every matmul."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantize
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


class TransformersBackend:
    name = "transformers"

    def __init__(self, spec: EngineSpec):
        from tritium.config import resolve_dtype
        from tritium.engine.factory import resolve_device
        from tritium.loader import load_tokenizer, resolve_model_source

        self.spec = spec
        self.source = resolve_model_source(spec.model_path, spec.load_format)
        self.device = resolve_device(spec.device)
        config_dtype = self.source.hf_config.get("torch_dtype") or self.source.hf_config.get("dtype")
        self.dtype = resolve_dtype(spec.dtype, config_dtype, self.device)
        self.model = _load_model(self.source, self.dtype, self.device)
        self.tokenizer = load_tokenizer(self.source, spec.tokenizer)
        self.vocab_size = self.model.config.vocab_size
        self.max_seq_len = spec.max_seq_len or self.model.config.max_position_embeddings
        self.batch_size = spec.max_batch_size
        eos = self.source.generation_eos_ids or self.source.hf_config.get("eos_token_id")
        eos = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        self.eos_token_ids = eos
        self.pad_token_id = eos[0] if eos else 0

    kv_cache_capacity = None  # transformers grows its cache per batch
    startup_phases: dict = {}  # no phase log

    def engine_info(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.spec.model_name, "model_path": self.source.path,
                "load_format": self.spec.load_format, "architecture": type(self.model).__name__,
                "dtype": str(self.dtype).replace("torch.", ""), "batch_size": self.batch_size,
                "attention": getattr(self.model.config, "_attn_implementation", None)}

    def take_engine_stats(self) -> list:
        return []

    def run(self, prompts: list[list[int]], output_lens: list[int], concurrency: Optional[int],
            streaming: bool, progress) -> list[RequestRecord]:
        batch = min(self.batch_size, concurrency or self.batch_size)
        start = time.perf_counter()  # every request arrives now
        records: list[RequestRecord] = []
        for i in range(0, len(prompts), batch):
            records += self._generate(prompts[i:i + batch], output_lens[i:i + batch], start)
            progress.update(len(prompts[i:i + batch]))
        return records

    @torch.inference_mode()
    def _generate(self, prompts: list[list[int]], output_lens: list[int], start: float) -> list[RequestRecord]:
        from transformers import GenerationConfig

        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_token_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        steps = max(output_lens)
        config = GenerationConfig(max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                                  pad_token_id=self.pad_token_id, eos_token_id=self.eos_token_ids or None)
        clock = _StepClock()
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config, streamer=clock)
        if out.shape[1] - width != steps or len(clock.times) != steps:
            raise RuntimeError(f"transformers generated {out.shape[1] - width} tokens, not {steps}")
        return [RequestRecord(num_input_tokens=len(p), start_time=start, token_times=clock.times[:n])
                for p, n in zip(prompts, output_lens)]

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
