"""Kernel tests run compiled on a CUDA GPU and in Triton's interpreter on the CPU.

TRITON_INTERPRET must be set before any kernel module is imported (triton.jit reads it then).
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
    import numpy as np
    from triton.runtime import interpreter

    # Triton 3.6's interpreter turns scalar tensors into Python ints with int(ndarray of shape
    # (1,)), which NumPy >= 2.4 refuses ("only 0-dimensional arrays can be converted"): loops
    # with run-time bounds then fail. Convert through .item() instead.
    _patch_lang_tensor = interpreter._patch_lang_tensor

    def _patch_lang_tensor_numpy2(tensor, scope):
        _patch_lang_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    interpreter._patch_lang_tensor = _patch_lang_tensor_numpy2


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
