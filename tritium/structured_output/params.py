"""GuidedDecodingParams: which grammar a request's output must follow (TensorRT-LLM's names).

    SamplingParams(guided_decoding=GuidedDecodingParams(json={"type": "object", ...}))
    SamplingParams(guided_decoding=GuidedDecodingParams(regex=r"\\d{3}-\\d{4}"))
    SamplingParams(guided_decoding=GuidedDecodingParams(json_object=True))   # any JSON object

Exactly one of json, regex, grammar, json_object is set. `grammar` is a Lark grammar
(llguidance's dialect) or a GBNF one (recognised by its `::=` rules).
"""
from __future__ import annotations

import json as _json
from dataclasses import dataclass
from typing import Any, Optional, Union


@dataclass(frozen=True)
class GuidedDecodingParams:
    json: Union[None, str, dict[str, Any], Any] = None  # a JSON schema: dict, its JSON text, or a pydantic model
    regex: Optional[str] = None
    grammar: Optional[str] = None
    json_object: bool = False
    structural_tag: Optional[str] = None  # TensorRT-LLM's xgrammar-only guide: not supported here

    def __post_init__(self):
        if self.structural_tag is not None:
            raise ValueError("GuidedDecodingParams.structural_tag is not supported (TensorRT-LLM serves it with "
                             "xgrammar only); use json, regex or grammar")
        if hasattr(self.json, "model_json_schema"):  # a pydantic model (class or instance), as TensorRT-LLM takes
            object.__setattr__(self, "json", self.json.model_json_schema())
        chosen = [name for name in ("json", "regex", "grammar") if getattr(self, name) is not None]
        if self.json_object:
            chosen.append("json_object")
        if len(chosen) != 1:
            raise ValueError("GuidedDecodingParams needs exactly one of json, regex, grammar, json_object; "
                             f"got {chosen or 'none'}")
        if self.json is not None and not isinstance(self.json, (str, dict)):
            raise ValueError(f"GuidedDecodingParams.json must be a JSON schema (dict or str), "
                             f"got {type(self.json).__name__}")
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"GuidedDecodingParams.{name} must be a non-empty string")

    @property
    def kind(self) -> str:
        return "json_object" if self.json_object else next(
            n for n in ("json", "regex", "grammar") if getattr(self, n) is not None)

    def schema_text(self) -> Optional[str]:
        """The JSON schema as text (json_object: any object), or None for regex / grammar."""
        if self.json_object:
            return '{"type": "object"}'
        if self.json is None:
            return None
        return self.json if isinstance(self.json, str) else _json.dumps(self.json)
