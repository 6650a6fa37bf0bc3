"""Weights in: HF safetensors folders, GGUF files, and random (dummy) weights."""
from tritium.loader.model_loader import load_model, load_tokenizer, model_config_from_source
from tritium.loader.source import ModelSource, resolve_model_source

__all__ = ["ModelSource", "resolve_model_source", "model_config_from_source", "load_model", "load_tokenizer"]
