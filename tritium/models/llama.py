"""One Llama-family definition for Llama 2/3/3.1, Mistral, Qwen2/2.5, Qwen3 and SmolLM2.

The families differ only by configuration (ModelConfig): GQA head counts, q/k/v bias (Qwen2),
per-head q/k RMSNorm before RoPE with an explicit head_dim (Qwen3), RoPE scaling, tied
embeddings. Parameter names mirror Hugging Face's, with q/k/v fused into `qkv_proj` and gate/up
into `gate_up_proj`; `load_weights` routes HF tensors onto them.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from tritium.attention.backend import get_forward_context
from tritium.config import ModelConfig
from tritium.distributed.parallel_state import get_tp_world_size
from tritium.layers.activation import SiluAndMul
from tritium.layers.attention import Attention
from tritium.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from tritium.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from tritium.layers.norm import RMSNorm
from tritium.layers.rotary import RopeTables, apply_rotary, get_rope
from tritium.models.weights import load_named_weights


def _linear_method(quant, prefix: str):
    """The quantization method of linear layer `prefix` (None: unquantized)."""
    return quant.linear_method(prefix) if quant is not None else None


class LlamaAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int, prefix: str, quant=None):
        super().__init__()
        self.qkv_proj = QKVParallelLinear(cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads,
                                          cfg.num_key_value_heads, bias=cfg.attention_bias, prefix=f"{prefix}.qkv_proj",
                                          linear_method=_linear_method(quant, f"{prefix}.qkv_proj"))
        self.o_proj = RowParallelLinear(cfg.q_size, cfg.hidden_size, bias=False, prefix=f"{prefix}.o_proj",
                                        linear_method=_linear_method(quant, f"{prefix}.o_proj"))
        nh, nkv, d = self.qkv_proj.num_heads, self.qkv_proj.num_kv_heads, cfg.head_dim
        self.q_size, self.kv_size, self.head_dim = nh * d, nkv * d, d
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm:
            self.q_norm = RMSNorm(d, cfg.rms_norm_eps, prefix=f"{prefix}.q_norm")
            self.k_norm = RMSNorm(d, cfg.rms_norm_eps, prefix=f"{prefix}.k_norm")
        self.num_heads = nh
        self.attn = Attention(nh, nkv, d, layer_idx, kv_cache_dtype=quant.kv_cache_dtype if quant else None)

    def forward(self, rope: RopeTables, hidden: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_proj(hidden)  # [T, (heads + 2 * kv_heads) * d]
        t, d = qkv.shape[0], self.head_dim
        if rope.cos_sin is not None:  # the attention backend rotates q and k as it writes the cache
            q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
            if self.qk_norm:
                q = self.q_norm(q.reshape(t, -1, d))  # [T, heads, d]
                k = self.k_norm(k.reshape(t, -1, d))  # [T, kv_heads, d]
            return self.o_proj(self.attn(q, k, v, rope.cos_sin))
        if self.qk_norm:  # Qwen3: RMSNorm over each head's vector, before RoPE
            q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
            q = apply_rotary(self.q_norm(q.reshape(t, -1, d)), rope.cos, rope.sin)  # [T, heads, d]
            k = apply_rotary(self.k_norm(k.reshape(t, -1, d)), rope.cos, rope.sin)  # [T, kv_heads, d]
        else:  # q and k heads are adjacent in qkv: rotate them in one go
            qk = apply_rotary(qkv[:, :self.q_size + self.kv_size].view(t, -1, d), rope.cos, rope.sin)  # [T, heads + kv_heads, d]
            q, k = qk[:, :self.num_heads], qk[:, self.num_heads:]
            v = qkv[:, self.q_size + self.kv_size:]  # [T, kv_heads * d]
        return self.o_proj(self.attn(q, k, v))  # [T, hidden]


class LlamaMLP(nn.Module):
    def __init__(self, cfg: ModelConfig, prefix: str, quant=None):
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(cfg.hidden_size, [cfg.intermediate_size] * 2, bias=False,
                                                       prefix=f"{prefix}.gate_up_proj",
                                                       linear_method=_linear_method(quant, f"{prefix}.gate_up_proj"))
        self.down_proj = RowParallelLinear(cfg.intermediate_size, cfg.hidden_size, bias=False,
                                           prefix=f"{prefix}.down_proj",
                                           linear_method=_linear_method(quant, f"{prefix}.down_proj"))
        self.act_fn = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_up_proj(x)))  # [T, 2I] -> [T, I] -> [T, H]


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int, prefix: str, quant=None):
        super().__init__()
        self.self_attn = LlamaAttention(cfg, layer_idx, f"{prefix}.self_attn", quant)
        self.mlp = LlamaMLP(cfg, f"{prefix}.mlp", quant)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, prefix=f"{prefix}.input_layernorm")
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps,
                                                prefix=f"{prefix}.post_attention_layernorm")

    def forward(self, rope: RopeTables, hidden: torch.Tensor, residual: Optional[torch.Tensor]):
        # The residual stream travels separately so each norm can fuse the add (same sums as HF).
        if residual is None:
            hidden, residual = self.input_layernorm(hidden), hidden
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(rope, hidden)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class LlamaModel(nn.Module):
    def __init__(self, cfg: ModelConfig, prefix: str = "model", quant=None):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size, prefix=f"{prefix}.embed_tokens")
        self.rotary_emb = get_rope(cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling)
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg, i, f"{prefix}.layers.{i}", quant)
                                    for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, prefix=f"{prefix}.norm")

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden, residual = self.embed_tokens(input_ids), None  # [T, H]
        fused = get_forward_context().backend.fuses_rope
        rope = self.rotary_emb.prepare(positions, hidden.dtype, fused)  # once per step, for every layer
        for layer in self.layers:
            hidden, residual = layer(rope, hidden, residual)
        hidden, _ = self.norm(hidden, residual)
        return hidden


class LlamaForCausalLM(nn.Module):
    # HF checkpoint name fragment -> (our fused parameter fragment, shard id)
    stacked_params = {
        ".q_proj.": (".qkv_proj.", "q"), ".k_proj.": (".qkv_proj.", "k"), ".v_proj.": (".qkv_proj.", "v"),
        ".gate_proj.": (".gate_up_proj.", 0), ".up_proj.": (".gate_up_proj.", 1),
    }

    def __init__(self, config: ModelConfig, quant=None):
        """quant: a quantization.ModelQuantization (linear methods by layer name, KV cache dtype) or None."""
        super().__init__()
        self.config = config
        self.tp_size = get_tp_world_size()
        self.model = LlamaModel(config, quant=quant)
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size)
        if config.tie_word_embeddings:
            self.lm_head.tie_to(self.model.embed_tokens)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """input_ids, positions: [T] -> hidden states [T, hidden_size]. Runs inside forward_context."""
        return self.model(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """hidden [N, H] -> logits [N, vocab] float32 (written into `out` when given)."""
        logits = self.lm_head(hidden)
        return logits.float() if out is None else out.copy_(logits)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load HF-named tensors; raises ValueError on unknown names, wrong shapes or missing
        tensors. Returns the names of the parameters loaded."""
        ignore = ("rotary_emb.inv_freq",) + (("lm_head.weight",) if self.config.tie_word_embeddings else ())
        return load_named_weights(self, weights, self.stacked_params, ignore=ignore)
