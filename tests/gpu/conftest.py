"""Tests of the GPU-only paths (CUDA graphs, overlapped steps, kernels at real sizes). They need a
CUDA device: on a machine without one this folder is not collected (scripts/gpu_check.sh runs it
on the GPU), so CPU CI neither runs nor skips them."""
import torch

collect_ignore_glob = [] if torch.cuda.is_available() else ["test_*.py"]
