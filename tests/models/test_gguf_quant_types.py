"""GGUF weight types F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K: tiny llama-architecture
files written here with gguf-py's GGUFWriter, loaded by tritium and checked against references
nobody here wrote:

1. transformers' own GGUF loader (AutoModelForCausalLM.from_pretrained(dir, gguf_file=...),
   float32): every parameter equal (q/k after un-permutation, fused qkv / gate_up split back)
   and the logits of one forward pass within 1e-4 relative. transformers loads llama GGUFs
   through its legacy path, which dequantizes with gguf-py like tritium does, so this checks the
   tensor naming, the q/k un-permutation, the config and the forward pass.
2. transformers' separate torch dequantizer (transformers.integrations.gguf.dequant, written
   after ComfyUI-GGUF; it shares no code with gguf-py) applied to the blocks in Hugging Face row
   order, before the test permuted them for the file. For F32/F16/BF16 the reference is the float
   cast itself. This checks the dequantized values and the un-permutation independently of gguf-py.

transformers reads all nine types, so none falls back to gguf-py as its only reference.

How each type is written: gguf.quants.quantize for F32, F16, BF16, Q8_0, Q4_0 and Q4_1 (random
normal weights). gguf-py cannot quantize the K-quants, so for Q4_K, Q5_K and Q6_K the blocks
are random bytes with fp16 scale fields set to small finite values (layouts below, from ggml's
block_q4_K / block_q5_K / block_q6_K). Norms stay F32, as llama.cpp writes them. One more file
mixes types (norms F32, embeddings Q8_0 tied to the output, attention Q4_K, MLP Q6_K).

Dims: hidden 256 and intermediate 512 (a K-quant row holds whole 256-weight super-blocks; the
32-weight types need multiples of 32), 2 layers, 4 heads, 2 KV heads, head_dim 64.
"""
from __future__ import annotations

import os
from typing import Callable

import gguf
import numpy as np
import pytest
import torch

from tests.utils.model_harness import forward_logits
from tritium.loader import load_model, load_tokenizer, model_config_from_source, resolve_model_source

QT = gguf.GGMLQuantizationType
QK_K = 256  # weights per K-quant super-block

HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 256, 512, 2, 4, 2
HEAD_DIM = HIDDEN // HEADS  # 64
ROPE_THETA, RMS_EPS, CONTEXT = 10000.0, 1e-5, 512
TOKEN_IDS = [1, 40, 200, 7, 99, 256, 261, 3, 120, 45, 260, 18, 77, 5, 210, 33]  # all < VOCAB (268)
LOGITS_REL_TOL = 1e-4

# ---- K-quant blocks -------------------------------------------------------------------------
# Each writer returns [n_blocks, type_size] uint8; one block covers QK_K consecutive weights of a row.


def _fp16_field(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """n fp16 scale fields (little-endian, 2 bytes each), uniform in [low, high): [n, 2] uint8."""
    return rng.uniform(low, high, n).astype("<f2").view(np.uint8).reshape(n, 2)


def _random_bytes(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, (n, width), dtype=np.uint8)


def q4_k_blocks(rng: np.random.Generator, n: int) -> np.ndarray:
    """block_q4_K, 144 bytes:
        d        fp16   scale of the 6-bit sub-block scales
        dmin     fp16   scale of the 6-bit sub-block mins
        scales   12 B   8 (scale, min) pairs of 6 bits, packed (ggml get_scale_min_k4)
        qs       128 B  256 4-bit quants, two per byte
    weight = d * scale[s] * q - dmin * min[s] for the 8 sub-blocks s of 32 weights. Every bit
    pattern of scales/qs is valid, so they are random bytes; d and dmin are chosen so that the
    weights have a std of a few hundredths and are roughly centred."""
    return np.concatenate([_fp16_field(rng, n, 6e-5, 1.2e-4), _fp16_field(rng, n, 4e-4, 8e-4),
                           _random_bytes(rng, n, 12 + QK_K // 2)], axis=1)


def q5_k_blocks(rng: np.random.Generator, n: int) -> np.ndarray:
    """block_q5_K, 176 bytes: d fp16, dmin fp16, scales 12 B (as Q4_K), qh 32 B (the 5th bit of
    each quant: bit s of qh[l] belongs to weight 32 * s + l), qs 128 B (the low 4 bits, as Q4_K).
    weight = d * scale[s] * q - dmin * min[s], q in 0..31."""
    return np.concatenate([_fp16_field(rng, n, 6e-5, 1.2e-4), _fp16_field(rng, n, 8e-4, 1.6e-3),
                           _random_bytes(rng, n, 12 + QK_K // 8 + QK_K // 2)], axis=1)


def q6_k_blocks(rng: np.random.Generator, n: int) -> np.ndarray:
    """block_q6_K, 210 bytes:
        ql       128 B  low 4 bits of the 256 6-bit quants
        qh       64 B   high 2 bits, four per byte
        scales   16 B   int8 scale per 16 weights
        d        fp16   super-block scale
    weight = d * scales[i // 16] * (q - 32). Scales are drawn in [-32, 32] (signed, so the sign
    handling is exercised), quants as random bytes."""
    scales = rng.integers(-32, 33, (n, QK_K // 16)).astype(np.int8).view(np.uint8)
    return np.concatenate([_random_bytes(rng, n, QK_K // 2 + QK_K // 4), scales,
                           _fp16_field(rng, n, 6e-5, 1.2e-4)], axis=1)


RANDOM_BLOCK_WRITERS: dict[QT, Callable[[np.random.Generator, int], np.ndarray]] = {
    QT.Q4_K: q4_k_blocks, QT.Q5_K: q5_k_blocks, QT.Q6_K: q6_k_blocks}


def encode(w: np.ndarray, qtype: QT, rng: np.random.Generator) -> np.ndarray:
    """An HF-layout weight [rows, cols] -> the array GGUFWriter stores for `qtype`, rows kept in
    order (float32/float16 values, or uint8 blocks [rows, cols // block * type_size]). For the
    K-quants only w's shape is used: the blocks are random."""
    if qtype in RANDOM_BLOCK_WRITERS:
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        rows, cols = w.shape
        return RANDOM_BLOCK_WRITERS[qtype](rng, rows * cols // block).reshape(rows, cols // block * type_size)
    return gguf.quants.quantize(w, qtype)


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: interleave each head's two row halves. llama.cpp
    applies it to the float rows before quantizing; rows quantize independently (a block never
    spans rows), so applying it to the encoded rows writes the same bytes."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---- the tiny model file --------------------------------------------------------------------

MERGES = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "e r", "o n", "r e", "a t", "e n"]
SPECIALS = ["<|endoftext|>", "<|im_end|>"]  # bos, eos


def byte_level_vocab() -> tuple[list[str], list[int]]:
    """tokenizer.ggml.tokens / token_type of a small GPT-2-style vocabulary: the 256 byte symbols,
    one token per merge, two control tokens. 268 tokens."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = list(bytes_to_unicode().values()) + [m.replace(" ", "") for m in MERGES] + SPECIALS
    types = [gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIALS)) + [gguf.TokenType.CONTROL] * len(SPECIALS)
    return tokens, [int(t) for t in types]


TOKENS, TOKEN_TYPES = byte_level_vocab()
VOCAB = len(TOKENS)
BOS_ID, EOS_ID = VOCAB - 2, VOCAB - 1


def hf_weights(rng: np.random.Generator, tied: bool) -> dict[str, np.ndarray]:
    """Random float32 weights under Hugging Face names and layout."""
    def normal(*shape: int, std: float = 0.05) -> np.ndarray:
        return rng.normal(0.0, std, shape).astype(np.float32)

    w = {"model.embed_tokens.weight": normal(VOCAB, HIDDEN, std=0.5),
         "model.norm.weight": 1.0 + normal(HIDDEN, std=0.1)}
    if not tied:
        w["lm_head.weight"] = normal(VOCAB, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w.update({
            p + "input_layernorm.weight": 1.0 + normal(HIDDEN, std=0.1),
            p + "post_attention_layernorm.weight": 1.0 + normal(HIDDEN, std=0.1),
            p + "self_attn.q_proj.weight": normal(HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.k_proj.weight": normal(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.v_proj.weight": normal(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.o_proj.weight": normal(HIDDEN, HEADS * HEAD_DIM),
            p + "mlp.gate_proj.weight": normal(INTERMEDIATE, HIDDEN),
            p + "mlp.up_proj.weight": normal(INTERMEDIATE, HIDDEN),
            p + "mlp.down_proj.weight": normal(HIDDEN, INTERMEDIATE),
        })
    return w


GGUF_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
              "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
              "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


def gguf_name(hf_name: str) -> str:
    """'model.layers.1.self_attn.q_proj.weight' -> 'blk.1.attn_q.weight' (llama.cpp's names)."""
    base = hf_name[: -len(".weight")]
    if base.startswith("model.layers."):
        _, _, layer, part = base.split(".", 3)
        return f"blk.{layer}.{GGUF_NAMES[part]}.weight"
    return f"{GGUF_NAMES[base]}.weight"


def write_llama_gguf(path: str, type_of: Callable[[str], QT], tied: bool = False, seed: int = 0,
                     arch: str = "llama") -> dict[str, tuple[QT, np.ndarray]]:
    """Write a llama.cpp-style GGUF; 2-D weights in type_of(gguf tensor name), 1-D norms in F32.
    Returns {HF name: (type, stored array in HF row order)}: what the file holds, before q/k were
    permuted for it."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, arch)  # writes general.architecture
    writer.add_name("tiny-test-model")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(ROPE_THETA)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_vocab_size(VOCAB)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(TOKENS)
    writer.add_token_types(TOKEN_TYPES)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)

    stored: dict[str, tuple[QT, np.ndarray]] = {}
    for hf_name, w in hf_weights(rng, tied).items():
        name = gguf_name(hf_name)
        qtype = type_of(name) if w.ndim == 2 else QT.F32
        data = encode(w, qtype, rng)
        stored[hf_name] = (qtype, data)
        if ".attn_q." in name:
            data = llama_cpp_permute(data, HEADS)
        elif ".attn_k." in name:
            data = llama_cpp_permute(data, KV_HEADS)
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored


def uniform(qtype: QT) -> Callable[[str], QT]:
    return lambda name: qtype


def mixed(name: str) -> QT:
    """A llama.cpp-like mixture: embeddings Q8_0, attention Q4_K, MLP Q6_K (norms are F32)."""
    if name.startswith("token_embd"):
        return QT.Q8_0
    return QT.Q4_K if ".attn_" in name else QT.Q6_K


TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"]
RECIPES = {t: (uniform(QT[t]), False) for t in TYPES} | {"mixed": (mixed, True)}  # name -> (type_of, tied)


# ---- reading it back ------------------------------------------------------------------------

def tritium_hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """tritium's parameters under HF names, fused qkv_proj / gate_up_proj split back."""
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    out = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if ".qkv_proj." in name:
            for part, t in zip("qkv", p.split([q, kv, kv])):
                out[name.replace(".qkv_proj.", f".{part}_proj.")] = t
        elif ".gate_up_proj." in name:
            for part, t in zip(("gate", "up"), p.split([INTERMEDIATE, INTERMEDIATE])):
                out[name.replace(".gate_up_proj.", f".{part}_proj.")] = t
        else:
            out[name] = p
    return out


def independent_dequant(qtype: QT, data: np.ndarray) -> torch.Tensor:
    """The stored array as float32 without tritium's code path: the float cast for F32/F16/BF16
    (BF16 bytes are the top halves of float32 bits), transformers' torch dequantizer for block
    types, or gguf-py's where the installed transformers lacks that type (5.17 has no Q4_0/Q4_1)."""
    if qtype in (QT.F32, QT.F16):
        return torch.from_numpy(data.astype(np.float32))
    if qtype == QT.BF16:
        return torch.from_numpy(data.copy()).view(torch.bfloat16).float()
    rows = data.shape[0]
    try:
        from transformers.integrations.gguf.dequant import dequantize

        return dequantize(torch.from_numpy(data.copy()).reshape(-1), int(qtype), torch.float32).reshape(rows, -1)
    except (ImportError, ValueError):
        from gguf.quants import dequantize as gguf_dequantize

        return torch.from_numpy(gguf_dequantize(data, qtype).astype(np.float32)).reshape(rows, -1)


@pytest.fixture(scope="module", params=list(RECIPES))
def loaded(request, tmp_path_factory):
    """One file per recipe, loaded by tritium (float32, CPU) and by transformers."""
    from transformers import AutoModelForCausalLM

    type_of, tied = RECIPES[request.param]
    folder = tmp_path_factory.mktemp(f"gguf_{request.param}")
    path = os.path.join(folder, f"tiny-{request.param}.gguf")
    stored = write_llama_gguf(path, type_of, tied=tied, seed=len(request.param))
    source = resolve_model_source(path)
    config = model_config_from_source(source, dtype="float32")  # never 'auto': CPU default may change
    model = load_model(source, config, "cpu")
    hf = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=os.path.basename(path),
                                              dtype=torch.float32).eval()
    return request.param, stored, source, config, model, hf


def test_file_holds_the_recipe_types(loaded):
    name, stored, source, config, _, _ = loaded
    reader = gguf.GGUFReader(source.path)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types == {gguf_name(n): q for n, (q, _) in stored.items()}
    if name in TYPES:
        assert {types[n] for n in types if "norm" not in n} == {QT[name]}
    assert config.tie_word_embeddings == (name == "mixed") == ("output.weight" not in types)


def test_config_matches_transformers(loaded):
    _, _, _, config, _, hf = loaded
    hc = hf.config
    assert config.architecture == "LlamaForCausalLM" and hc.model_type == "llama"
    ours = (config.vocab_size, config.hidden_size, config.intermediate_size, config.num_hidden_layers,
            config.num_attention_heads, config.num_key_value_heads, config.head_dim, config.rope_theta,
            config.rms_norm_eps, config.tie_word_embeddings)
    hf_theta = (getattr(hc, "rope_parameters", None) or {}).get("rope_theta", getattr(hc, "rope_theta", None))
    theirs = (hc.vocab_size, hc.hidden_size, hc.intermediate_size, hc.num_hidden_layers, hc.num_attention_heads,
              hc.num_key_value_heads, hc.head_dim, hf_theta, hc.rms_norm_eps, hc.tie_word_embeddings)
    assert ours == theirs
    assert ours[:-2] == (VOCAB, HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, HEAD_DIM, ROPE_THETA)
    assert config.rms_norm_eps == pytest.approx(RMS_EPS)
    assert config.eos_token_ids == (EOS_ID,) and config.dtype == torch.float32


def test_weights_equal_transformers(loaded):
    """Every HF parameter, tritium vs transformers' GGUF loader: the same float32 values."""
    _, _, _, _, model, hf = loaded
    ours, theirs = tritium_hf_state_dict(model), hf.state_dict()
    assert set(ours) == set(theirs)
    for name, ref in theirs.items():
        assert ref.dtype == torch.float32, f"{name}: transformers kept {ref.dtype}"
        assert ours[name].shape == ref.shape, name
        assert torch.equal(ours[name], ref), f"{name}: max |diff| {(ours[name] - ref).abs().max():.3g}"


def test_weights_equal_independent_dequant(loaded):
    """tritium's weights vs the stored blocks (HF row order) dequantized without gguf-py."""
    _, stored, _, _, model, _ = loaded
    ours = tritium_hf_state_dict(model)
    for name, (qtype, data) in stored.items():
        ref = independent_dequant(qtype, data)
        assert torch.isfinite(ref).all() and ref.abs().max() > 0, name
        # the same float32 products (equal today); allow float32 rounding
        torch.testing.assert_close(ours[name], ref, rtol=1e-6, atol=1e-8,
                                   msg=lambda m: f"{name} ({qtype.name}): {m}")
    assert 0.01 < ours["model.layers.0.mlp.down_proj.weight"].std() < 0.1  # weights of a sane size


def test_logits_match_transformers(loaded):
    _, _, _, config, model, hf = loaded
    ours = forward_logits(model, config, TOKEN_IDS)  # [T, vocab]
    with torch.no_grad():
        ref = hf(torch.tensor([TOKEN_IDS])).logits[0].float()
    assert ours.shape == ref.shape == (len(TOKEN_IDS), VOCAB)
    err, scale = (ours - ref).abs().max().item(), ref.abs().max().item()
    assert scale > 1e-3 and err <= LOGITS_REL_TOL * scale, f"max |diff| {err:.3g} vs scale {scale:.3g}"


# ---- one Q8_0 file: its tokenizer, and broken copies of it ---------------------------------

@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("gguf_errors") / "tiny.gguf")
    write_llama_gguf(path, uniform(QT.Q8_0))
    return path


def test_tokenizer_from_the_file(small_gguf):
    """The byte-level vocabulary written above is one transformers' GGUF tokenizer accepts."""
    tokenizer = load_tokenizer(resolve_model_source(small_gguf))
    ids = tokenizer.encode(" the cat ate", add_special_tokens=False)
    # transformers 5.17 drops the leading space when decoding, 5.24 keeps it.
    assert TOKENS.index("Ġthe") in ids and tokenizer.decode(ids).lstrip() == "the cat ate"
    assert tokenizer.convert_ids_to_tokens(EOS_ID) == "<|im_end|>"


# cut in the tensor data, just before its end, in the metadata, in the header (fractions or byte counts)
@pytest.mark.parametrize("keep", [0.5, 0.999, 2000, 12])
def test_truncated_gguf_names_the_file(small_gguf, tmp_path, keep):
    path = tmp_path / "truncated.gguf"
    data = open(small_gguf, "rb").read()
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(ValueError, match=r"truncated\.gguf is not a readable GGUF file \(truncated or corrupt\?"):
        resolve_model_source(str(path))


def test_unsupported_gguf_architecture(tmp_path):
    path = str(tmp_path / "gpt2-arch.gguf")
    write_llama_gguf(path, uniform(QT.F16), arch="gpt2")
    with pytest.raises(ValueError, match=r"gpt2-arch\.gguf: GGUF architecture 'gpt2' is not supported; "
                                         r"supported: llama, qwen2, qwen3"):
        resolve_model_source(path)
