"""Beam search against Hugging Face transformers' generate(num_beams=W, do_sample=False) on the
same weights: the same sequences, in the same order, with the same scores (sum of logprobs /
generated length ** length_penalty), for tiny random checkpoints of each family and the embedded
SmolLM2 model; also under preemption, chunked prefill, without prefix caching and through the
overlapped engine path; per-token logprobs and generation logits against HF's."""
from __future__ import annotations

import pytest
import torch

from tests.e2e.test_inflight_batching import make_prompts
from tests.utils.tiny_models import make_tiny_checkpoint
from tritium import BuildConfig, KvCacheConfig, SamplingParams
from tritium.llm.llm import LLM

MAX_TOKENS = 10
PAD = 3  # HF fills finished sequences with it; never in the prompts below


def hf_beams(hf_model, prompt: list[int], width: int, max_tokens: int = MAX_TOKENS, **kwargs):
    with torch.no_grad():
        return hf_model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 num_beams=width, num_return_sequences=width, do_sample=False,
                                 max_new_tokens=max_tokens, pad_token_id=PAD, output_scores=True,
                                 output_logits=True, return_dict_in_generate=True, **kwargs)


def assert_same_beams(out, ref, prompt: list[int], length_penalty: float) -> None:
    assert len(out.outputs) == ref.sequences.shape[0]
    for completion, seq, score in zip(out.outputs, ref.sequences, ref.sequences_scores):
        want = seq[len(prompt):].tolist()
        tokens = completion.token_ids
        assert tokens == want[:len(tokens)] and all(t == PAD for t in want[len(tokens):]), (tokens, want)
        got = completion.cumulative_logprob / len(tokens) ** length_penalty
        assert got == pytest.approx(score.item(), abs=1e-4)


def prompts_for(vocab: int) -> list[list[int]]:
    return [p for p in make_prompts(vocab, count=3, seed=21) if PAD not in p] or [[5, 6, 7]]


# (width, length_penalty, early_stopping, end token: None = the model's EOS, else a greedy token's rank)
CASES = [(2, 1.0, False, None), (3, 0.0, True, 2), (4, 1.3, "never", 4), (3, -0.5, False, 1)]


def end_token(llm: LLM, prompt: list[int], which) -> int:
    """A token the model often picks here (so that sequences end early), or the model's EOS."""
    if which is None:
        return llm.model_config.eos_token_ids[0]
    greedy = llm.generate(prompt, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    return greedy.outputs[0].token_ids[which]


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral", "smollm"])
def test_beams_equal_hugging_face_for_each_family(tmp_path_factory, family):
    from transformers import AutoModelForCausalLM

    path = str(make_tiny_checkpoint(family, tmp_path_factory.mktemp(family)))
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = prompts_for(hf.config.vocab_size)
    cases = CASES if family == "llama" else CASES[1:3]
    with LLM(path, dtype="float32", max_batch_size=4, max_seq_len=96, max_beam_width=4) as llm:
        for width, lp, es, which in cases:
            ends = [end_token(llm, p, which) for p in prompts]
            params = [SamplingParams(max_tokens=MAX_TOKENS, use_beam_search=True, n=width, length_penalty=lp,
                                     early_stopping=es, end_id=e) for e in ends]
            outs = llm.generate(prompts, params)  # the searches run together
            for prompt, out, end in zip(prompts, outs, ends):
                ref = hf_beams(hf, prompt, width, length_penalty=lp, early_stopping=es, eos_token_id=end)
                assert_same_beams(out, ref, prompt, lp)
        llm._engine.core.scheduler.kv_cache_manager.check_integrity()
        assert llm._engine.core.scheduler.kv_cache_manager.usage == 0.0


@pytest.fixture(scope="module")
def reference(tiny_llama, hf_tiny_llama):
    """Searches mixed with sampled requests, and HF's answers for the searches."""
    prompts = prompts_for(hf_tiny_llama.config.vocab_size) + make_prompts(256, count=3, seed=22)
    with LLM(tiny_llama, dtype="float32", max_batch_size=8, max_seq_len=96) as llm:
        ends = [end_token(llm, p, 3) for p in prompts]
    params = [SamplingParams(max_tokens=MAX_TOKENS, use_beam_search=True, n=w, length_penalty=1.0,
                             early_stopping=False, end_id=e) for w, e in zip((2, 3, 4), ends)]
    # Sampled requests outlive the searches, so that the overlapped engine overlaps their last steps.
    params += [SamplingParams(max_tokens=2 * MAX_TOKENS, temperature=0.0, ignore_eos=True),
               SamplingParams(max_tokens=2 * MAX_TOKENS, temperature=0.7, seed=3, ignore_eos=True),
               SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, repetition_penalty=1.2, ignore_eos=True)]
    refs = [hf_beams(hf_tiny_llama, p, sp.best_of, length_penalty=1.0, early_stopping=False, eos_token_id=sp.end_id)
            for p, sp in zip(prompts[:3], params[:3])]
    return prompts, params, refs


@pytest.mark.parametrize("case", ["roomy", "preempting", "chunked", "no_prefix_cache", "overlapped"])
def test_beams_under_memory_pressure_chunking_and_overlap(tiny_llama, reference, case):
    prompts, params, refs = reference
    longest = max(len(p) for p in prompts) + 2 * MAX_TOKENS
    build = BuildConfig(max_batch_size=8, max_seq_len=longest + 8, max_beam_width=4,
                        max_num_tokens=9 if case == "chunked" else 512)
    kv = KvCacheConfig(tokens_per_block=4, enable_block_reuse=case != "no_prefix_cache",
                       max_tokens=3 * longest if case == "preempting" else None)
    with LLM(tiny_llama, dtype="float32", build_config=build, kv_cache_config=kv) as llm:
        llm._engine.core.runner.supports_overlap = case == "overlapped"
        outs = llm.generate(prompts, params)
        scheduler = llm._engine.core.scheduler
        assert (scheduler.num_preemptions_total > 0) == (case == "preempting")
        if case == "overlapped":  # the sampled requests overlapped; the searches ran synchronously
            assert llm._engine.core.runner.num_placeholder_tokens > 0
        scheduler.kv_cache_manager.check_integrity()
        assert scheduler.kv_cache_manager.usage == 0.0
        alone = [llm.generate(p, sp).outputs[0].token_ids for p, sp in zip(prompts[3:], params[3:])]
    for prompt, out, ref in zip(prompts, outs, refs):
        assert_same_beams(out, ref, prompt, 1.0)
    assert [o.outputs[0].token_ids for o in outs[3:]] == alone  # sampled requests are undisturbed


def test_beam_logprobs_and_generation_logits_equal_hugging_face(tiny_llama, hf_tiny_llama):
    prompt = prompts_for(256)[0]
    with LLM(tiny_llama, dtype="float32", max_batch_size=2, max_seq_len=96, max_beam_width=3) as llm:
        end = end_token(llm, prompt, 2)
        out = llm.generate(prompt, SamplingParams(max_tokens=MAX_TOKENS, use_beam_search=True, n=3, logprobs=2,
                                                  return_generation_logits=True, end_id=end))
    ref = hf_beams(hf_tiny_llama, prompt, 3, length_penalty=0.0, eos_token_id=end)
    transition = hf_tiny_llama.compute_transition_scores(ref.sequences, ref.scores, ref.beam_indices,
                                                         normalize_logits=False)  # [W, steps]
    for i, completion in enumerate(out.outputs):
        n = len(completion.token_ids)
        chosen = [pos[t].logprob for pos, t in zip(completion.logprobs, completion.token_ids)]
        assert chosen == pytest.approx(transition[i, :n].tolist(), abs=1e-4)
        assert sum(chosen) == pytest.approx(completion.cumulative_logprob, abs=1e-4)
        assert all(len(pos) <= 3 for pos in completion.logprobs)  # the chosen token plus the top 2
        # The raw logits each token came from: HF's logits of the beam that token extended.
        want = torch.stack([ref.logits[t][ref.beam_indices[i, t]] for t in range(n)])
        torch.testing.assert_close(completion.generation_logits, want, atol=2e-4, rtol=1e-4)


def test_beam_width_array_widens_after_greedy_steps(tiny_llama, hf_tiny_llama):
    """Widths [1, 1, 3]: two greedy tokens, then beam search of width 3; with length_penalty 0 the
    ranking equals HF's beam search from the prompt plus those two tokens."""
    prompt = prompts_for(256)[1]
    with LLM(tiny_llama, dtype="float32", max_batch_size=2, max_seq_len=96, max_beam_width=3) as llm:
        greedy = llm.generate(prompt, SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)).outputs[0]
        six = llm.generate(prompt, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)).outputs[0].token_ids
        # An end token the greedy head does not hit (so that the head is not a finished sequence).
        end = next((t for t in six[3:] if t not in greedy.token_ids), llm.model_config.eos_token_ids[0])
        out = llm.generate(prompt, SamplingParams(max_tokens=MAX_TOKENS, use_beam_search=True, n=3,
                                                  beam_width_array=[1, 1, 3], end_id=end))
    ref = hf_beams(hf_tiny_llama, prompt + greedy.token_ids, 3, max_tokens=MAX_TOKENS - 2, eos_token_id=end,
                   length_penalty=0.0)
    for completion, seq in zip(out.outputs, ref.sequences):
        want = seq[len(prompt) + 2:].tolist()
        assert completion.token_ids[:2] == greedy.token_ids
        tail = completion.token_ids[2:]
        assert tail == want[:len(tail)] and all(t == PAD for t in want[len(tail):])


def test_diversity_rate_favours_later_beams_children(tiny_llama):
    """TensorRT-LLM ranks a candidate by its score + rate * its parent's beam index: a rate of
    zero changes nothing, a large one makes every beam after the first step a child of the
    previous step's last beam, so all results share everything but their last token."""
    prompt = prompts_for(256)[2]
    base = dict(max_tokens=6, use_beam_search=True, n=3, end_id=-1)
    with LLM(tiny_llama, dtype="float32", max_batch_size=2, max_seq_len=96, max_beam_width=3) as llm:
        plain = llm.generate(prompt, SamplingParams(**base))
        zero = llm.generate(prompt, SamplingParams(beam_search_diversity_rate=0.0, **base))
        diverse = llm.generate(prompt, SamplingParams(beam_search_diversity_rate=1000.0, **base))
    assert [o.token_ids for o in zero.outputs] == [o.token_ids for o in plain.outputs]
    heads = {tuple(o.token_ids[:-1]) for o in diverse.outputs}
    assert len(heads) == 1 and [o.token_ids for o in diverse.outputs] != [o.token_ids for o in plain.outputs]


def test_beams_equal_hugging_face_on_smollm2(smol_llm, hf_smol):
    prompt = "The capital of France is"
    ids = smol_llm.tokenizer.encode(prompt)
    for width, lp, es in [(2, 1.0, False), (3, 0.0, True)]:
        out = smol_llm.generate(prompt, SamplingParams(max_tokens=12, use_beam_search=True, n=width,
                                                       length_penalty=lp, early_stopping=es))
        ref = hf_beams(hf_smol, ids, width, max_tokens=12, length_penalty=lp, early_stopping=es)
        assert_same_beams(out, ref, ids, lp)
        assert out.outputs[0].text == smol_llm.tokenizer.decode(out.outputs[0].token_ids, skip_special_tokens=True)
    assert "Paris" in out.outputs[0].text


@pytest.mark.parametrize("kwargs,match", [
    (dict(use_beam_search=True, n=2, top_p=0.9), "top_p"),
    (dict(use_beam_search=True, n=2, top_k=5), "top_k"),
    (dict(use_beam_search=True, n=2, stop="x"), "stop"),
    (dict(length_penalty=1.0), "length_penalty"),
    (dict(early_stopping=True), "early_stopping"),
    (dict(beam_search_diversity_rate=0.5), "beam_search_diversity_rate"),
    (dict(use_beam_search=True, n=3, beam_width_array=[4, 2]), "beam_width_array"),
])
def test_fields_that_cannot_be_honoured_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_engine_limits_are_checked_before_submitting(tiny_llama):
    prompt = [5, 6, 7]
    with LLM(tiny_llama, dtype="float32", max_batch_size=2, max_seq_len=64, max_beam_width=2,
             kv_cache_config=KvCacheConfig(tokens_per_block=4, max_tokens=64)) as llm:
        with pytest.raises(ValueError, match="max_beam_width >= 3"):
            llm.generate(prompt, SamplingParams(use_beam_search=True, n=3))
        with pytest.raises(ValueError, match="cannot be streamed"):
            llm.generate_async(prompt, SamplingParams(use_beam_search=True, n=2, max_tokens=4), streaming=True)
        with pytest.raises(ValueError, match="KV cache"):  # 2 beams of 64 tokens need 32 blocks of 16
            llm.generate(prompt, SamplingParams(use_beam_search=True, n=2, max_tokens=None))
        out = llm.generate(prompt, SamplingParams(use_beam_search=True, n=2, max_tokens=4))
        assert len(out.outputs) == 2  # the engine still serves
    with pytest.raises(ValueError, match="max_num_tokens"):
        LLM(tiny_llama, max_beam_width=8, max_num_tokens=4)
