"""Guided decoding (structured output): GuidedDecodingParams in, token bitmasks on the logits out."""
from tritium.structured_output.params import GuidedDecodingParams

__all__ = ["GuidedDecodingParams"]
