"""Tensor-parallel linear layers whose parameters load (and shard) themselves.

Every parameter carries `param.weight_loader(param, loaded_weight, shard_id=None)`: it takes the
full checkpoint tensor, narrows it to this TP rank's slice and copies it in place (casting to the
parameter's dtype and device), so a weight is never held whole on the device. Fused layers
(QKV, gate/up) take a `shard_id` naming which checkpoint tensor is arriving.

The math is delegated to a `LinearMethod`: the unquantized one holds a plain weight and calls
F.linear (on CPU it adds a oneDNN-packed copy once loaded: layers/cpu_linear.py);
quantization methods (FP8, INT8, INT4) implement the same hooks.

Shape convention (PyTorch's): weight [output_size_per_partition, input_size_per_partition].
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from tritium.distributed.parallel_state import get_tp_rank, get_tp_world_size, tp_all_gather_last_dim, tp_all_reduce
from tritium.kernels import gpu_linear
from tritium.layers import cpu_linear

WeightLoader = Callable[..., None]


def divide(numerator: int, denominator: int, what: str) -> int:
    if numerator % denominator:
        raise ValueError(f"{what}={numerator} is not divisible by the tensor-parallel size {denominator}")
    return numerator // denominator


def check_shape(name: str, expected: Sequence[int], loaded: torch.Tensor) -> None:
    if tuple(loaded.shape) != tuple(expected):
        raise ValueError(f"shape mismatch for {name}: checkpoint tensor has shape {tuple(loaded.shape)}, "
                         f"the model expects {tuple(expected)}")


def new_param(shape: Sequence[int], dtype: Optional[torch.dtype], loader: WeightLoader, name: str) -> nn.Parameter:
    """An uninitialised parameter that knows how to load itself; `tritium_name` is for error messages."""
    param = nn.Parameter(torch.empty(*shape, dtype=dtype or torch.get_default_dtype()), requires_grad=False)
    param.weight_loader = loader
    param.tritium_name = name
    return param


class LinearMethod:
    """How a linear layer stores its weight and computes y = x W^T (+ b). Quant methods subclass this."""

    def create_weights(self, layer: nn.Module, input_size: int, output_size: int,
                       params_dtype: Optional[torch.dtype]) -> None:
        """Register the layer's weight parameter(s) for one partition ([output_size, input_size])."""
        raise NotImplementedError

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        """Called once by the loader after every weight is in: convert to the kernels' layout."""

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class UnquantizedLinearMethod(LinearMethod):
    def create_weights(self, layer, input_size, output_size, params_dtype):
        layer.weight = new_param((output_size, input_size), params_dtype, layer.weight_loader, f"{layer.prefix}.weight")
        layer.weight_packed = None  # CPU: its oneDNN-packed copy (made on first use), set after loading

    def process_weights_after_loading(self, layer):
        if cpu_linear.can_pack(layer.weight):
            layer.weight_packed = cpu_linear.pack_weight(layer.weight)

    def apply(self, layer, x, bias):
        if x.is_cuda:
            return gpu_linear(x, layer.weight, bias)
        return cpu_linear.linear(x, layer.weight, layer.weight_packed, bias)


class LinearBase(nn.Module):
    """Common constructor: sizes per partition, the linear method, and an optional bias."""

    def __init__(self, input_size: int, output_size: int, bias: bool, prefix: str = "",
                 linear_method: Optional[LinearMethod] = None, params_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.prefix = prefix or type(self).__name__
        self.tp_rank, self.tp_size = get_tp_rank(), get_tp_world_size()
        self.input_size, self.output_size = input_size, output_size
        self.input_size_per_partition, self.output_size_per_partition = self.partition_sizes()
        self.linear_method = linear_method or UnquantizedLinearMethod()
        self.linear_method.create_weights(self, self.input_size_per_partition, self.output_size_per_partition,
                                          params_dtype)
        self.bias = (new_param((self.bias_size(),), params_dtype, self.weight_loader, f"{self.prefix}.bias")
                     if bias else None)

    def partition_sizes(self) -> tuple[int, int]:
        return self.input_size, self.output_size

    def bias_size(self) -> int:
        return self.output_size_per_partition

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id=None) -> None:
        raise NotImplementedError

    def process_weights_after_loading(self) -> None:
        self.linear_method.process_weights_after_loading(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_method.apply(self, x, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.input_size_per_partition}, out={self.output_size_per_partition}, bias={self.bias is not None}"


class ReplicatedLinear(LinearBase):
    """Every rank holds the whole weight."""

    def weight_loader(self, param, loaded_weight, shard_id=None):
        check_shape(param.tritium_name, param.shape, loaded_weight)
        param.data.copy_(loaded_weight)


class ColumnParallelLinear(LinearBase):
    """Output features split over ranks (dim 0); `gather_output` concatenates the shards again."""

    def __init__(self, input_size: int, output_size: int, bias: bool = False, gather_output: bool = False, **kw):
        self.gather_output = gather_output
        super().__init__(input_size, output_size, bias, **kw)

    def partition_sizes(self):
        return self.input_size, divide(self.output_size, get_tp_world_size(), f"{type(self).__name__} output_size")

    def weight_loader(self, param, loaded_weight, shard_id=None):
        rows = param.shape[0]
        check_shape(param.tritium_name, (rows * self.tp_size, *param.shape[1:]), loaded_weight)
        param.data.copy_(loaded_weight.narrow(0, self.tp_rank * rows, rows))

    def forward(self, x):
        y = super().forward(x)  # [T, out / tp]
        return tp_all_gather_last_dim(y) if self.gather_output else y


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel projections of the same input fused into one (gate/up -> gate_up).

    Each rank's weight is [shard 0 slice | shard 1 slice | ...] along dim 0.
    """

    def __init__(self, input_size: int, output_sizes: Sequence[int], bias: bool = False, **kw):
        self.output_sizes = list(output_sizes)
        super().__init__(input_size, sum(output_sizes), bias, **kw)
        for i, size in enumerate(self.output_sizes):
            divide(size, self.tp_size, f"{self.prefix} output_sizes[{i}]")

    def weight_loader(self, param, loaded_weight, shard_id=None):
        if shard_id is None:  # an already-fused checkpoint tensor: split it and load each part
            check_shape(param.tritium_name, (self.output_size, *param.shape[1:]), loaded_weight)
            for i, part in enumerate(loaded_weight.split(self.output_sizes, dim=0)):
                self.weight_loader(param, part, i)
            return
        if not isinstance(shard_id, int) or not 0 <= shard_id < len(self.output_sizes):
            raise ValueError(f"{param.tritium_name}: shard_id must be 0..{len(self.output_sizes) - 1}, got {shard_id!r}")
        size = self.output_sizes[shard_id] // self.tp_size
        offset = sum(self.output_sizes[:shard_id]) // self.tp_size
        check_shape(f"{param.tritium_name} (shard {shard_id})", (self.output_sizes[shard_id], *param.shape[1:]),
                    loaded_weight)
        param.data.narrow(0, offset, size).copy_(loaded_weight.narrow(0, self.tp_rank * size, size))


class QKVParallelLinear(ColumnParallelLinear):
    """q, k and v projections fused; heads split over ranks, KV heads replicated when fewer than ranks.

    Per-rank weight rows: [q: heads_per_rank * head_dim | k: kv_heads_per_rank * head_dim | v: same].
    """

    def __init__(self, hidden_size: int, head_dim: int, total_num_heads: int, total_num_kv_heads: int,
                 bias: bool = False, **kw):
        tp = get_tp_world_size()
        self.head_dim = head_dim
        self.total_num_heads, self.total_num_kv_heads = total_num_heads, total_num_kv_heads
        self.num_heads = divide(total_num_heads, tp, "num_attention_heads")
        if total_num_kv_heads >= tp:
            self.num_kv_heads, self.num_kv_replicas = divide(total_num_kv_heads, tp, "num_key_value_heads"), 1
        else:  # each KV head serves tp / kv_heads ranks
            self.num_kv_heads, self.num_kv_replicas = 1, divide(tp, total_num_kv_heads, "tp size over kv heads")
        output_size = (self.num_heads + 2 * self.num_kv_heads) * tp * head_dim
        super().__init__(hidden_size, output_size, bias, **kw)

    def partition_sizes(self):
        return self.input_size, (self.num_heads + 2 * self.num_kv_heads) * self.head_dim

    def weight_loader(self, param, loaded_weight, shard_id=None):
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        if shard_id is None:  # an already-fused checkpoint tensor
            full = [self.total_num_heads * self.head_dim, self.total_num_kv_heads * self.head_dim,
                    self.total_num_kv_heads * self.head_dim]
            check_shape(param.tritium_name, (sum(full), *param.shape[1:]), loaded_weight)
            for sid, part in zip("qkv", loaded_weight.split(full, dim=0)):
                self.weight_loader(param, part, sid)
            return
        if shard_id == "q":
            offset, size, total, start = 0, q, self.total_num_heads, self.tp_rank * q
        elif shard_id in ("k", "v"):
            offset = q if shard_id == "k" else q + kv
            size, total, start = kv, self.total_num_kv_heads, (self.tp_rank // self.num_kv_replicas) * kv
        else:
            raise ValueError(f"{param.tritium_name}: shard_id must be 'q', 'k' or 'v', got {shard_id!r}")
        check_shape(f"{param.tritium_name} (shard {shard_id!r})", (total * self.head_dim, *param.shape[1:]),
                    loaded_weight)
        param.data.narrow(0, offset, size).copy_(loaded_weight.narrow(0, start, size))


class RowParallelLinear(LinearBase):
    """Input features split over ranks (dim 1); partial outputs are summed across ranks.

    The input normally arrives already split (from a column-parallel layer): no communication
    before, one all-reduce after. The bias is added once, after the reduction.
    """

    def partition_sizes(self):
        return divide(self.input_size, get_tp_world_size(), f"{type(self).__name__} input_size"), self.output_size

    def weight_loader(self, param, loaded_weight, shard_id=None):
        if param.dim() == 1:  # bias: replicated
            check_shape(param.tritium_name, param.shape, loaded_weight)
            param.data.copy_(loaded_weight)
            return
        cols = param.shape[1]
        check_shape(param.tritium_name, (param.shape[0], cols * self.tp_size), loaded_weight)
        param.data.copy_(loaded_weight.narrow(1, self.tp_rank * cols, cols))

    def forward(self, x):
        y = self.linear_method.apply(self, x, None)  # [T, out] partial sum over this rank's inputs
        y = tp_all_reduce(y)
        return y + self.bias if self.bias is not None else y
