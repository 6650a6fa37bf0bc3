"""TensorRT-LLM's documented LLM-API examples (examples/llm-api in its repository), each pattern
written again here in our own code against the embedded SmolLM2 model, so that a user's script
needs only its import changed: quickstart, generate_async, async streaming, customize (BuildConfig
fields set one by one, beam search at a temperature), runtime configuration (KV cache, CUDA
graphs, the capacity scheduler policy), the sampling showcase (greedy, temperature, top-k, top-p,
n, beam search, logprobs=True), logprobs with generation logits, logits processors (per request
and batched), guided decoding, and get_stats. Models are float32 (the session's cached copy, so that
each new LLM loads in a fraction of a second); outputs are checked against Hugging Face
transformers, the tokenizer, or what the example's own comments say it prints."""
from __future__ import annotations

import asyncio
import json

import pytest
import torch

from tritium.default_model import default_model_path

PROMPTS = ["Hello, my name is", "The capital of France is", "The future of AI is"]


def decoded(llm, completion) -> str:
    return llm.tokenizer.decode(completion.token_ids, skip_special_tokens=True)


def test_quickstart(smol_llm):
    from tritium import SamplingParams

    sampling_params = SamplingParams(temperature=0.8, top_p=0.95)
    outputs = smol_llm.generate(PROMPTS, sampling_params)
    for prompt, output in zip(PROMPTS, outputs):
        completion = output.outputs[0]
        assert output.prompt == prompt and output.finished
        assert 0 < len(completion.token_ids) <= 32 and completion.text == decoded(smol_llm, completion)


def test_generate_async_awaited(smol_llm):
    from tritium import SamplingParams

    sampling_params = SamplingParams(temperature=0.8, top_p=0.95, seed=4)

    async def task(prompt: str):
        return await smol_llm.generate_async(prompt, sampling_params)

    async def main():
        return await asyncio.gather(*[task(p) for p in PROMPTS])

    outputs = asyncio.run(main())
    # The same seeded requests through the blocking API give the same tokens.
    for output, ref in zip(outputs, smol_llm.generate(PROMPTS, sampling_params)):
        assert output.prompt == ref.prompt and output.outputs[0].token_ids == ref.outputs[0].token_ids


def test_generate_async_streaming(smol_llm):
    from tritium import SamplingParams

    sampling_params = SamplingParams(temperature=0.8, top_p=0.95, seed=7, max_tokens=12)
    seen: dict[int, list[str]] = {i: [] for i in range(len(PROMPTS))}

    async def task(i: int, prompt: str):
        async for output in smol_llm.generate_async(prompt, sampling_params, streaming=True):
            seen[i].append(output.outputs[0].text)

    async def main():
        await asyncio.gather(*[task(i, p) for i, p in enumerate(PROMPTS)])

    asyncio.run(main())
    final = smol_llm.generate(PROMPTS, sampling_params)
    for i, texts in seen.items():
        assert len(texts) > 1 and all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # growing text
        assert texts[-1] == final[i].outputs[0].text


class TemperedLogSoftmax:
    """For Hugging Face's beam search, which applies processors to log_softmax(logits): the beams'
    scores become log_softmax(logits / temperature), what tritium (and TensorRT-LLM) search on."""

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, input_ids, scores):
        return torch.log_softmax(scores / self.temperature, dim=-1)


def test_customize_build_config_field_by_field(hf_smol):
    from transformers import LogitsProcessorList

    from tritium.llmapi import LLM, BuildConfig, KvCacheConfig, SamplingParams

    build_config = BuildConfig()
    build_config.max_batch_size = 128
    build_config.max_num_tokens = 2048
    build_config.max_beam_width = 4
    with LLM(model=default_model_path(), dtype="float32", build_config=build_config,
             kv_cache_config=KvCacheConfig(free_gpu_memory_fraction=0.8)) as llm:
        assert (llm.scheduler_config.max_num_seqs, llm.scheduler_config.max_num_batched_tokens,
                llm.scheduler_config.max_beam_width) == (128, 2048, 4)
        outputs = llm.generate(PROMPTS, SamplingParams(temperature=0.8, top_p=0.95, max_tokens=8))
        assert [o.prompt for o in outputs] == PROMPTS and all(o.outputs[0].text for o in outputs)
        # The example's beam search (n=4) at temperature 0.8: the beams Hugging Face finds on
        # log_softmax(logits / 0.8), with TensorRT-LLM's defaults (length_penalty 0, early_stopping 1).
        beams = llm.generate(PROMPTS, SamplingParams(temperature=0.8, n=4, use_beam_search=True, max_tokens=8))
    for prompt, output in zip(PROMPTS, beams):
        ids = llm.tokenizer.encode(prompt)
        with torch.no_grad():
            ref = hf_smol.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=8, num_beams=4, num_return_sequences=4, do_sample=False,
                                   length_penalty=0.0, early_stopping=True,
                                   logits_processor=LogitsProcessorList([TemperedLogSoftmax(0.8)]))
        assert [c.token_ids for c in output.outputs] == [seq[len(ids):len(ids) + len(c.token_ids)].tolist()
                                                         for c, seq in zip(output.outputs, ref)]
    # Its top_p=0.95 has nothing to act on in a beam search: named, not ignored (docs/TRTLLM_API.md).
    with pytest.raises(ValueError, match="top_p cannot be honoured with use_beam_search"):
        SamplingParams(temperature=0.8, top_p=0.95, n=4, use_beam_search=True)
    build_config.max_num_tokens = 0  # checked again when an LLM is built from it
    with pytest.raises(ValueError, match="max_num_tokens"):
        LLM(model=default_model_path(), build_config=build_config)
    with pytest.raises(AttributeError, match="max_batch_sizes"):
        build_config.max_batch_sizes = 64  # a misspelt field fails at once


def test_runtime_configuration_kv_cache_and_scheduler_policy():
    """llm_runtime.py's KV cache example, with the capacity scheduler policy set the way the
    performance tuning guide shows (SchedulerConfig from tritium.llmapi)."""
    from tritium.llmapi import LLM, CapacitySchedulerPolicy, KvCacheConfig, SchedulerConfig

    scheduler_config = SchedulerConfig(capacity_scheduler_policy=CapacitySchedulerPolicy.MAX_UTILIZATION)
    with LLM(model=default_model_path(), dtype="float32", max_batch_size=8, max_seq_len=1024,
             kv_cache_config=KvCacheConfig(free_gpu_memory_fraction=0.5, enable_block_reuse=True),
             scheduler_config=scheduler_config) as llm:
        scheduler = llm._engine.core.scheduler  # what the engine was built with
        assert (scheduler.max_num_seqs, scheduler.max_model_len, scheduler.no_evict) == (8, 1024, False)
        assert scheduler.kv_cache_manager.enable_caching
        outputs = llm.generate(PROMPTS)
    for prompt, output in zip(PROMPTS, outputs):
        assert output.prompt == prompt and output.outputs[0].text == decoded(llm, output.outputs[0])


def test_runtime_configuration_cuda_graphs():
    """llm_runtime.py's CUDA graph example. Graphs exist on GPUs only (tests/gpu checks the sizes
    and padding there); on a CPU the same script runs eagerly."""
    from tritium import LLM, SamplingParams
    from tritium.llmapi import CudaGraphConfig, KvCacheConfig

    cuda_graph_config = CudaGraphConfig(batch_sizes=[1, 2, 4], enable_padding=True)
    with LLM(model=default_model_path(), dtype="float32", cuda_graph_config=cuda_graph_config, max_batch_size=4,
             max_seq_len=512, kv_cache_config=KvCacheConfig(free_gpu_memory_fraction=0.7)) as llm:
        assert llm._engine.core.runner.graphs is None and llm.device.type == "cpu"
        greedy = SamplingParams(max_tokens=8, temperature=0.0)
        outputs = llm.generate(PROMPTS, greedy)
        alone = [llm.generate(p, greedy).outputs[0].token_ids for p in PROMPTS]
    assert [o.outputs[0].token_ids for o in outputs] == alone
    with pytest.raises(ValueError, match="cuda_graph_config.batch_sizes"):
        CudaGraphConfig(batch_sizes=[])


def test_sampling_showcase(smol_llm, hf_smol):
    from tritium import SamplingParams

    prompt = "What is the future of artificial intelligence?"
    ids = smol_llm.tokenizer.encode(prompt)
    # Greedy decoding (temperature=0) and top_k=1 equal Hugging Face's greedy tokens.
    with torch.no_grad():
        hf = hf_smol.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=16, do_sample=False)[0, len(ids):].tolist()
    greedy, top1 = smol_llm.generate([prompt, prompt], [SamplingParams(max_tokens=16, temperature=0.0),
                                                        SamplingParams(max_tokens=16, temperature=0.8, top_k=1)])
    assert greedy.outputs[0].token_ids == hf[:len(greedy.outputs[0].token_ids)] == top1.outputs[0].token_ids
    # Temperature, top-k, top-p and both: one request each, as the example loops over them.
    variants = ([SamplingParams(max_tokens=16, temperature=t) for t in (0.3, 0.7, 1.0, 1.5)]
                + [SamplingParams(max_tokens=16, temperature=0.8, top_k=k) for k in (5, 20, 50)]
                + [SamplingParams(max_tokens=16, temperature=0.8, top_p=p) for p in (0.1, 0.5, 0.9, 0.95)]
                + [SamplingParams(max_tokens=16, temperature=0.8, top_k=40, top_p=0.9)])
    for output in smol_llm.generate([prompt] * len(variants), variants):
        assert output.outputs[0].text == decoded(smol_llm, output.outputs[0])
    # Several sequences for one prompt.
    multiple = smol_llm.generate(prompt, SamplingParams(max_tokens=16, temperature=0.8, top_k=50, top_p=0.95, n=3))
    assert len(multiple.outputs) == 3 and [c.index for c in multiple.outputs] == [0, 1, 2]
    # Beam search (LLM(max_beam_width=2) in the example: the shared engine allows 4): TensorRT-LLM's
    # defaults are length_penalty 0 and early_stopping 1, so HF with the same settings is the reference.
    beams = smol_llm.generate(prompt, SamplingParams(max_tokens=16, use_beam_search=True, n=2))
    with torch.no_grad():
        ref = hf_smol.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=16, num_beams=2, num_return_sequences=2, do_sample=False,
                               length_penalty=0.0, early_stopping=True)
    for completion, seq in zip(beams.outputs, ref):
        assert completion.token_ids == seq[len(ids):len(ids) + len(completion.token_ids)].tolist()
    # logprobs=True: one logprob (and the sampled token's) per generated token.
    output = smol_llm.generate(prompt, SamplingParams(max_tokens=8, temperature=0.7, top_k=50, logprobs=True))
    completion = output.outputs[0]
    assert len(completion.logprobs) == len(completion.token_ids)
    for token, position in zip(completion.token_ids, completion.logprobs):
        assert token in position and 1 <= len(position) <= 2 and position[token].logprob <= 0.0


def test_logprobs_with_generation_logits():
    from tritium import LLM, SamplingParams

    with LLM(model=default_model_path(), dtype="float32", gather_generation_logits=True) as llm:
        sampling_params = SamplingParams(max_tokens=10, temperature=0.7, top_p=0.95, logprobs=1,
                                         return_generation_logits=True)
        for output in llm.generate(PROMPTS, sampling_params):
            completion = output.outputs[0]
            logits = completion.generation_logits  # [generated tokens, vocab]
            assert logits.shape == (len(completion.token_ids), llm.model_config.vocab_size)
            logprobs = torch.log_softmax(logits, dim=-1)
            for i, (token, position) in enumerate(zip(completion.token_ids, completion.logprobs)):
                assert token in position
                assert position[token].logprob == pytest.approx(logprobs[i, token].item(), abs=1e-4)


def test_logits_processors_per_request_and_batched():
    from tritium import LLM
    from tritium.sampling_params import BatchedLogitsProcessor, LogitsProcessor, SamplingParams

    class MyLogitsProcessor(LogitsProcessor):
        def __init__(self, allowed_token_id: int):
            self.allowed_token_id = allowed_token_id

        def __call__(self, req_id, logits, token_ids, stream_ptr, client_id):
            mask = torch.full_like(logits, fill_value=float("-inf"), device="cpu")
            mask[:, :, self.allowed_token_id] = 0
            stream = None if stream_ptr is None else torch.cuda.ExternalStream(stream_ptr)
            with torch.cuda.stream(stream):
                logits += mask.to(logits.device, non_blocking=True)

    class MyBatchedLogitsProcessor(BatchedLogitsProcessor):
        def __init__(self, allowed_token_id: int):
            self.allowed_token_id = allowed_token_id

        def __call__(self, req_ids, logits, token_ids, stream_ptr, client_ids):
            for req_logits in logits:
                mask = torch.full_like(req_logits, fill_value=float("-inf"), device="cpu")
                mask[:, :, self.allowed_token_id] = 0
                req_logits += mask.to(req_logits.device, non_blocking=True)

    prompts = ["Hello, my name is", "The president of the United States is"]
    with LLM(model=default_model_path(), dtype="float32",
             batched_logits_processor=MyBatchedLogitsProcessor(allowed_token_id=42)) as llm:
        for prompt_id, prompt in enumerate(prompts):
            if prompt_id % 2 == 0:
                sampling_params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=8)
            else:
                sampling_params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=8,
                                                 logits_processor=MyLogitsProcessor(allowed_token_id=42))
            (output,) = llm.generate([prompt], sampling_params)
            forced = output.outputs[0].token_ids == [42] * 8
            assert forced == (prompt_id % 2 == 1)
        for output in llm.generate(prompts, SamplingParams(apply_batched_logits_processor=True, max_tokens=8)):
            assert output.outputs[0].token_ids == [42] * 8
            assert output.outputs[0].text == llm.tokenizer.decode([42] * 8)


def test_guided_decoding_json_schema():
    import jsonschema

    from tritium import LLM, SamplingParams
    from tritium.llmapi import GuidedDecodingParams

    schema = ('{"title": "WirelessAccessPoint", "type": "object", "properties": {"ssid": {"title": "SSID", "type": '
              '"string"}, "securityProtocol": {"title": "SecurityProtocol", "type": "string"}, "bandwidth": '
              '{"title": "Bandwidth", "type": "string"}}, "required": ["ssid", "securityProtocol", "bandwidth"]}')
    messages = [{"role": "system", "content": "You are a helpful assistant that answers in JSON. Here's the json "
                                              f"schema you must adhere to:\n<schema>\n{schema}\n</schema>\n"},
                {"role": "user", "content": "Give me a JSON object for a wireless access point: SSID "
                                            "'OfficeNetSecure', WPA2-Enterprise, 1300 Mbps."}]
    with LLM(model=default_model_path(), dtype="float32", guided_decoding_backend="xgrammar",
             disable_overlap_scheduler=True) as llm:
        prompt = llm.tokenizer.apply_chat_template(messages, tokenize=False)
        unguided = llm.generate(prompt, sampling_params=SamplingParams(max_tokens=50, temperature=0.0))
        guided = llm.generate(prompt, sampling_params=SamplingParams(
            max_tokens=120, temperature=0.0, guided_decoding=GuidedDecodingParams(json=schema)))
    assert unguided.outputs[0].text != guided.outputs[0].text
    jsonschema.validate(json.loads(guided.outputs[0].text), json.loads(schema))


def test_get_stats(smol_llm):
    from tritium import SamplingParams

    smol_llm.get_stats()  # drop what earlier tests left
    smol_llm.generate(PROMPTS, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
    stats = smol_llm.get_stats(timeout=2)
    assert stats and sum(s.num_generation_tokens for s in stats) == 4 * len(PROMPTS)
    assert all(s.num_scheduled_tokens > 0 and 0.0 <= s.kv_cache_usage <= 1.0 for s in stats)
