"""Tests of the GPU-only paths (CUDA graphs, overlapped steps, kernels at real sizes). They need a
CUDA device: on a machine without one this folder is not collected (scripts/gpu_check.sh runs it
on the GPU), so CPU CI neither runs nor skips them."""
import os

import torch

# Fixed GEMM tiles: compiling and timing every candidate tile at each new layer shape is start-up
# work these tests do not need (the whole GPU suite once ran past ten minutes with it);
# test_weight_streaming_gpu.py turns timing back on for the tests of the timed choice.
os.environ.setdefault("TRITIUM_GEMM_TUNING", "0")

collect_ignore_glob = [] if torch.cuda.is_available() else ["test_*.py"]
