"""Model shapes shipped with tritium: the config.json of public checkpoints, no weights.

`--model llama-3.1-8b --load-format dummy` benchmarks random weights of that shape without a
download (speed does not depend on weight values). smollm2-135m is the embedded model's shape.
"""
from __future__ import annotations

import os
from typing import Optional

SHAPES_DIR = os.path.dirname(os.path.abspath(__file__))


def available_shapes() -> list[str]:
    return sorted(name for name in os.listdir(SHAPES_DIR)
                  if os.path.isfile(os.path.join(SHAPES_DIR, name, "config.json")))


def resolve_model_arg(model: Optional[str], load_format: str) -> str:
    """A --model argument -> a path: None is the embedded model; an existing path stays as it is;
    a packaged shape name becomes its folder (random weights only)."""
    if model is None:
        from tritium.default_model import default_model_path

        return default_model_path()
    if os.path.exists(os.path.expanduser(model)):
        return model
    shapes = available_shapes()
    if model in shapes:
        if load_format != "dummy":
            raise ValueError(f"{model!r} is a packaged model shape (config.json only, no weights): "
                             f"add --load-format dummy to benchmark it with random weights")
        return os.path.join(SHAPES_DIR, model)
    raise FileNotFoundError(f"model {model!r} is neither a path nor a packaged model shape "
                            f"(shapes: {', '.join(shapes)})")
