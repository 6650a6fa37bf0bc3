"""Sampler: greedy, seeded reproducibility, filters vs transformers' warpers, penalties, min_tokens,
logprobs, and the sampled distribution."""
import pytest
import torch
from transformers.generation.logits_process import (MinPLogitsWarper,
                                                    RepetitionPenaltyLogitsProcessor,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from tritium.layers.sampler import (SAMPLE_BLOCK, Sampler, apply_min_p, apply_penalties, apply_top_k_top_p,
                                    compute_top_logprobs, sample_from_probs)
from tritium.layers.sampling_metadata import SamplingMetadata
from tritium.sampling_params import SamplingParams as SP

CPU = torch.device("cpu")


def build(params, logits, prompts=None, outputs=None, eos=None):
    n, v = logits.shape
    prompts = prompts if prompts is not None else [[1, 2]] * n
    outputs = outputs if outputs is not None else [[]] * n
    return SamplingMetadata.build(params, prompts, outputs, CPU, v, eos_token_ids=eos)


def sample(params, logits, sampler=None, **kw):
    return (sampler or Sampler(seed=0))(logits, build(params, logits, **kw))


def test_greedy_is_argmax_in_mixed_batch():
    torch.manual_seed(0)
    logits = torch.randn(6, 100)
    params = [SP(temperature=0), SP(top_k=1, temperature=0.7), SP(temperature=1.0),
              SP(temperature=0), SP(temperature=0.5, top_p=0.5), SP(temperature=0, top_k=10)]
    out = sample(params, logits)
    assert out.sampled_token_ids.shape == (6,) and out.sampled_token_ids.dtype == torch.long
    argmax = logits.argmax(-1)
    for i in (0, 1, 3, 5):
        assert out.sampled_token_ids[i] == argmax[i]
    assert out.logprobs is None
    # All greedy: the fast path skips every per-row tensor.
    meta = build([SP(temperature=0)] * 6, logits)
    assert meta.all_greedy and meta.temperature is None and meta.no_penalties and meta.no_top_k
    assert torch.equal(Sampler()(logits, meta).sampled_token_ids, argmax)


def test_sampler_leaves_caller_logits_untouched():
    torch.manual_seed(0)
    logits = torch.randn(2, 50)
    before = logits.clone()
    params = [SP(repetition_penalty=1.5, min_tokens=2, top_p=0.5), SP(temperature=0)]
    sample(params, logits, eos=[0])
    assert torch.equal(logits, before)


def _seeded_run(seed, companions, position, steps, vocab=200):
    """Sample `steps` tokens for one seeded row placed at `position` among companion rows."""
    gen = torch.Generator().manual_seed(123)
    target_logits = torch.randn(steps, vocab, generator=gen)
    sampler = Sampler(seed=len(companions))  # engine generator differs per run
    tokens, outputs = [], []
    for step in range(steps):
        params = list(companions)
        params.insert(position, SP(temperature=1.0, seed=seed))
        logits = torch.randn(len(params), vocab)  # companions' logits: fresh noise every step
        logits[position] = target_logits[step]
        outs = [[7] * (step + 3)] * len(params)
        outs[position] = list(outputs)
        tok = sample(params, logits, sampler, outputs=outs).sampled_token_ids[position].item()
        tokens.append(tok)
        outputs.append(tok)
    return tokens


def test_same_seed_same_tokens_whatever_the_batch():
    torch.manual_seed(1)
    alone = _seeded_run(42, [], 0, steps=12)
    crowded = _seeded_run(42, [SP(), SP(temperature=0), SP(seed=7, top_k=3), SP(top_p=0.3)], 2, 12)
    last = _seeded_run(42, [SP(seed=42 + 1), SP()], 2, steps=12)
    assert alone == crowded == last
    # Resumed after a preemption: step 5 recomputed on its own gives the same token.
    gen = torch.Generator().manual_seed(123)
    target_logits = torch.randn(12, 200, generator=gen)
    again = sample([SP(seed=42)], target_logits[5:6], Sampler(seed=99), outputs=[alone[:5]])
    assert again.sampled_token_ids.item() == alone[5]


def test_different_seeds_and_steps_differ():
    logits = torch.zeros(1, 1000)  # uniform: two independent draws collide with p = 1e-3
    toks = {s: [sample([SP(seed=s)], logits, outputs=[[0] * step]).sampled_token_ids.item()
                for step in range(20)] for s in (1, 2)}
    assert sum(a != b for a, b in zip(toks[1], toks[2])) >= 15
    assert len(set(toks[1])) >= 15  # the step changes the draw too


def test_unseeded_rows_follow_the_engine_generator():
    logits = torch.zeros(8, 1000)
    a = sample([SP()] * 8, logits, Sampler(seed=5)).sampled_token_ids
    b = sample([SP()] * 8, logits, Sampler(seed=5)).sampled_token_ids
    c = sample([SP()] * 8, logits, Sampler(seed=6)).sampled_token_ids
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_top_k_support_is_exactly_the_k_largest():
    torch.manual_seed(2)
    v, k = 40, 5
    row = torch.randn(v) * 0.3
    row[torch.randperm(v)[:k]] += 3.0  # the top k are clearly separated and each fairly likely
    logits = row.expand(4000, v).clone()
    out = sample([SP(temperature=1.0, top_k=k)] * 4000, logits).sampled_token_ids
    assert set(out.tolist()) == set(row.topk(k).indices.tolist())
    # Same mask as transformers' TopKLogitsWarper, with a row that has top_k off alongside.
    batch = torch.randn(3, v)
    top_k = torch.tensor([k, v, 1])
    ours = apply_top_k_top_p(batch, top_k, None, max_top_k=k)
    ours_sorted_path = apply_top_k_top_p(batch, top_k, None, max_top_k=None)
    for i, kk in enumerate([k, v, 1]):
        ref = TopKLogitsWarper(top_k=kk)(None, batch[i:i + 1].clone())[0]
        assert torch.equal(ours[i], ref) and torch.equal(ours_sorted_path[i], ref)


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([0.05, 0.5, 0.025, 0.25, 0.125, 0.05])
    logits = probs.log().view(1, -1)
    # top_p 0.8: 0.5 + 0.25 = 0.75 < 0.8, so 0.125 is needed too; 0.875 >= 0.8 is enough.
    kept = apply_top_k_top_p(logits, None, torch.tensor([0.8])).isfinite()[0]
    assert kept.tolist() == [False, True, False, True, True, False]
    kept = apply_top_k_top_p(logits, None, torch.tensor([0.3])).isfinite()[0]
    assert kept.tolist() == [False, True, False, False, False, False]
    out = sample([SP(top_p=0.8)] * 3000, logits.expand(3000, -1).clone()).sampled_token_ids
    assert set(out.tolist()) == {1, 3, 4}
    torch.manual_seed(3)
    batch = torch.randn(4, 64) * 2
    for p in (0.1, 0.5, 0.9, 0.99):
        ours = apply_top_k_top_p(batch, None, torch.full((4,), p))
        ref = TopPLogitsWarper(top_p=p)(None, batch.clone())
        assert torch.equal(ours.isfinite(), ref.isfinite()), p


def test_top_k_and_top_p_together():
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    logits = probs.log().view(1, -1)
    # top_k=3 renormalises to [4/9, 3/9, 2/9]; top_p 0.7 then needs 4/9 + 3/9 = 0.78.
    kept = apply_top_k_top_p(logits, torch.tensor([3]), torch.tensor([0.7])).isfinite()[0]
    assert kept.tolist() == [True, True, False, False]


def test_min_p_matches_transformers():
    probs = torch.tensor([0.5, 0.2, 0.05, 0.11, 0.14])
    logits = probs.log().view(1, -1)
    kept = apply_min_p(logits, torch.tensor([0.2])).isfinite()[0]  # threshold 0.1
    assert kept.tolist() == [True, True, False, True, True]
    torch.manual_seed(4)
    batch = torch.randn(3, 64) * 2
    for mp in (0.05, 0.3, 0.9):
        ours = apply_min_p(batch, torch.full((3,), mp))
        ref = MinPLogitsWarper(min_p=mp)(None, batch.clone())
        assert torch.equal(ours.isfinite(), ref.isfinite()), mp
    out = sample([SP(min_p=0.2)] * 3000, logits.expand(3000, -1).clone()).sampled_token_ids
    assert set(out.tolist()) == {0, 1, 3, 4}


def test_penalties_hand_computed():
    logits = torch.tensor([[2.0, -1.0, 0.5, -0.5, 1.5, 0.0],
                           [2.0, -1.0, 0.5, -0.5, 1.5, 0.0]])
    params = [SP(repetition_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25), SP()]
    meta = build(params, logits, prompts=[[0, 1], [0, 1]], outputs=[[2, 2, 3], [2, 2, 3]])
    got = apply_penalties(logits.clone(), meta)
    # Row 0: tokens 0-3 seen (prompt 0, 1; output 2, 2, 3): positives / 2, negatives * 2;
    # token 2 (count 2): -0.25 * 2 - 0.5; token 3 (count 1): -0.25 - 0.5. Row 1: no penalties.
    expected = torch.tensor([[1.0, -2.0, 0.25 - 0.5 - 0.5, -1.0 - 0.25 - 0.5, 1.5, 0.0],
                             [2.0, -1.0, 0.5, -0.5, 1.5, 0.0]])
    torch.testing.assert_close(got, expected)
    # Greedy picks the argmax of the penalised logits: token 4 now beats token 0.
    greedy = [SP(temperature=0, repetition_penalty=2.0, presence_penalty=0.5,
                 frequency_penalty=0.25)]
    out = sample(greedy, logits[:1], prompts=[[0, 1]], outputs=[[2, 2, 3]])
    assert out.sampled_token_ids.item() == 4


def test_repetition_penalty_matches_transformers():
    torch.manual_seed(5)
    logits = torch.randn(2, 30) * 3
    prompts, outputs = [[1, 5, 5, 9], [0, 29]], [[3, 9, 12], [7, 7]]
    for penalty in (0.7, 1.3, 2.5):
        meta = build([SP(repetition_penalty=penalty)] * 2, logits, prompts, outputs)
        got = apply_penalties(logits.clone(), meta)
        for i in range(2):
            ids = torch.tensor([prompts[i] + outputs[i]])
            ref = RepetitionPenaltyLogitsProcessor(penalty=penalty)(ids, logits[i:i + 1].clone())[0]
            torch.testing.assert_close(got[i], ref)


def test_min_tokens_blocks_eos_and_stop_tokens():
    logits = torch.zeros(4, 10)
    logits[:, 0] = 10.0  # EOS
    logits[:, 5] = 9.0  # a stop token id
    logits[:, 7] = 8.0
    params = [SP(temperature=0, min_tokens=3, stop_token_ids=[5])] * 2 + \
             [SP(temperature=0, min_tokens=3, ignore_eos=True), SP(temperature=0.5, min_tokens=2)]
    outs = [[1], [1, 2, 3], [1], [4]]
    out = sample(params, logits, outputs=outs, eos=[0]).sampled_token_ids.tolist()
    # Row 0: EOS and stop id blocked; row 1 reached min_tokens; row 2 ignores EOS, so EOS is
    # neither a stop nor blocked; row 3 (random): EOS blocked, and the 9.0 logit wins ~always.
    assert out[:3] == [7, 0, 0]
    assert out[3] != 0
    # Per-row EOS sets work too.
    out = sample(params[:2], logits[:2], outputs=[[1], [1]], eos=[[0], []]).sampled_token_ids
    assert out.tolist() == [7, 0]


def _reference_rank(logprobs_row, token):
    return int((logprobs_row > logprobs_row[token]).sum()) + 1


def test_logprobs_come_from_raw_logits_with_ranks():
    torch.manual_seed(6)
    logits = torch.randn(4, 50) * 2
    params = [SP(temperature=0.3, logprobs=3, repetition_penalty=1.5), SP(temperature=0),
              SP(temperature=0, logprobs=0), SP(temperature=1.5, logprobs=5, top_k=10)]
    out = sample(params, logits, outputs=[[3, 4], [], [1], []])
    raw_lp = torch.log_softmax(logits, dim=-1)
    assert out.logprobs[1] is None
    for i, k in ((0, 3), (2, 0), (3, 5)):
        tl = out.logprobs[i]
        tok = out.sampled_token_ids[i].item()
        assert len(tl.token_ids) == len(tl.logprobs) == len(tl.ranks) == k + 1
        assert tl.token_ids[0] == tok and tl.ranks[0] == _reference_rank(raw_lp[i], tok)
        assert tl.token_ids[1:] == raw_lp[i].topk(k).indices.tolist()
        assert tl.ranks[1:] == list(range(1, k + 1))
        torch.testing.assert_close(torch.tensor(tl.logprobs), raw_lp[i, tl.token_ids])
    assert out.logprobs[2].ranks == [1]  # greedy: the sampled token is the raw argmax


def test_compute_top_logprobs_for_prompt_tokens():
    torch.manual_seed(7)
    logits = torch.randn(5, 20).to(torch.bfloat16)
    targets = torch.tensor([3, 0, 19, 7, 7])
    res = compute_top_logprobs(logits, targets, 2)
    ref = torch.log_softmax(logits.float(), dim=-1)
    for i, tl in enumerate(res):
        assert tl.token_ids[0] == targets[i].item()
        assert tl.ranks[0] == _reference_rank(ref[i], targets[i].item())
        torch.testing.assert_close(torch.tensor(tl.logprobs), ref[i, tl.token_ids])
        assert tl.token_ids[1:] == ref[i].topk(2).indices.tolist()


@pytest.mark.parametrize("seeded", [False, True])
def test_sampled_distribution_matches_softmax(seeded):
    logits = torch.tensor([[1.0, 0.5, 0.0, -0.5, -1.0, 2.0, 0.2, -3.0]])
    temperature, n = 0.7, 20000 if not seeded else 4000
    params = [SP(temperature=temperature, seed=i if seeded else None) for i in range(n)]
    out = sample(params, logits.expand(n, -1).clone()).sampled_token_ids
    observed = torch.bincount(out, minlength=8).double()
    expected = torch.softmax(logits[0].double() / temperature, dim=-1) * n
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 40.0, (chi2, observed, expected)  # df = 7: p < 1e-6 under the null
    # Sanity of the test itself: the same counts are far from the untempered softmax.
    wrong = torch.softmax(logits[0].double(), dim=-1) * n
    assert float(((observed - wrong) ** 2 / wrong).sum()) > 100.0


def test_two_level_draw_matches_the_probabilities_across_blocks():
    """A vocabulary of several blocks plus a padded tail, with zero-probability tokens spread
    through it (a whole zero block included): counts follow probs, zeros are never drawn."""
    gen = torch.Generator().manual_seed(11)
    vocab = 2 * SAMPLE_BLOCK + 37
    probs = torch.rand(vocab, generator=gen) ** 4  # uneven masses
    probs[::3] = 0.0
    probs[SAMPLE_BLOCK:2 * SAMPLE_BLOCK] = 0.0  # a block with no mass
    probs[-5:] = 0.2  # heavy tokens in the padded last block
    n = 60000
    u = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    drawn = sample_from_probs(probs.expand(n, -1), u)  # unnormalised rows are fine
    counts = torch.bincount(drawn, minlength=vocab).double()
    assert counts.shape == (vocab,) and counts[probs == 0].sum() == 0
    expected = probs.double() / probs.double().sum() * n
    big = expected > 10  # chi-square over the cells with enough expected draws, the rest pooled
    chi2 = float(((counts[big] - expected[big]) ** 2 / expected[big]).sum())
    rest_obs, rest_exp = counts[~big].sum(), expected[~big].sum()
    chi2 += float((rest_obs - rest_exp) ** 2 / rest_exp)
    df = int(big.sum())
    assert chi2 < df + 6 * (2 * df) ** 0.5, (chi2, df)  # ~6 sigma of the chi-square's spread


def test_two_level_draw_at_the_edges_of_the_uniforms():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0] + [0.0] * (SAMPLE_BLOCK + 3)] * 3)  # 2 blocks, padded
    below_one = 1.0 - 2.0 ** -53
    u = torch.tensor([[0.0, 0.0], [below_one, below_one], [0.0, below_one]], dtype=torch.float64)
    assert sample_from_probs(probs, u).tolist() == [1, 3, 3]  # never a zero-probability token


def test_random_sampling_draws_two_uniforms_per_row_not_a_vocabulary_of_noise():
    """The cost that made random sampling dominate CPU steps: one random number per token."""
    sampler = Sampler(seed=0)
    meta = build([SP(temperature=1.0), SP(temperature=1.0, seed=3)], torch.zeros(2, 5000))
    assert sampler._uniforms(CPU, meta).shape == (2, 2)
