"""Vocabulary-parallel token embedding and LM head.

The vocabulary is split into contiguous per-rank ranges of ceil(vocab / tp) rows; the last
rank's range is padded with zero rows. Embedding: each rank looks up the ids it owns, zeros the
rest, and the ranks' outputs are summed. LM head: each rank computes its slice of the logits and
the slices are gathered (then the padding is cut off).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from tritium.distributed.parallel_state import get_tp_rank, get_tp_world_size, tp_all_gather_last_dim, tp_all_reduce
from tritium.kernels import gpu_linear
from tritium.layers import cpu_linear
from tritium.layers.linear import check_shape, new_param


class VocabParallelEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, prefix: str = "embed_tokens",
                 params_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.tp_rank, self.tp_size = get_tp_rank(), get_tp_world_size()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.num_embeddings_per_partition = -(-num_embeddings // self.tp_size)
        self.vocab_start = self.tp_rank * self.num_embeddings_per_partition
        self.vocab_end = min(self.vocab_start + self.num_embeddings_per_partition, num_embeddings)
        self.weight = new_param((self.num_embeddings_per_partition, embedding_dim), params_dtype,
                                self.weight_loader, f"{prefix}.weight")

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id=None) -> None:
        check_shape(param.tritium_name, (self.num_embeddings, self.embedding_dim), loaded_weight)
        n = self.vocab_end - self.vocab_start
        param.data[:n].copy_(loaded_weight.narrow(0, self.vocab_start, n))
        param.data[n:].zero_()  # padding rows of the last rank

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: [T] -> [T, embedding_dim]
        if self.tp_size == 1:
            return F.embedding(input_ids, self.weight)
        owned = (input_ids >= self.vocab_start) & (input_ids < self.vocab_end)
        local = torch.where(owned, input_ids - self.vocab_start, 0)
        out = F.embedding(local, self.weight) * owned.unsqueeze(-1).to(self.weight.dtype)
        return tp_all_reduce(out)


class ParallelLMHead(VocabParallelEmbedding):
    """Projects hidden states to vocabulary logits. With tied embeddings the model points
    `weight` at the embedding's parameter instead of loading its own. On CPU the logits matmul
    also gets a oneDNN-packed copy of the weight (layers/cpu_linear.py)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, prefix: str = "lm_head",
                 params_dtype: Optional[torch.dtype] = None):
        super().__init__(num_embeddings, embedding_dim, prefix, params_dtype)
        self.weight_packed: Optional[cpu_linear.PackedWeight] = None

    def tie_to(self, embedding: VocabParallelEmbedding) -> None:
        self.weight = embedding.weight

    def process_weights_after_loading(self) -> None:
        if cpu_linear.can_pack(self.weight):
            self.weight_packed = cpu_linear.pack_weight(self.weight)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [N, H] -> logits [N, vocab]
        if hidden.is_cuda:
            logits = gpu_linear(hidden, self.weight, None)  # [N, vocab_per_partition]
        else:
            logits = cpu_linear.linear(hidden, self.weight, self.weight_packed, None)
        if self.tp_size > 1:
            logits = tp_all_gather_last_dim(logits)
        return logits[:, : self.num_embeddings]
