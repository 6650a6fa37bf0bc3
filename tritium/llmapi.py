"""`from tritium.llmapi import ...`: the names TensorRT-LLM's `tensorrt_llm.llmapi` module offers
that tritium implements, so scripts need only their import changed."""
from tritium.config import BuildConfig, KvCacheConfig
from tritium.llm.llm import LLM
from tritium.outputs import CompletionOutput, Logprob, RequestOutput
from tritium.sampling_params import BatchedLogitsProcessor, LogitsProcessor, SamplingParams
from tritium.structured_output import GuidedDecodingParams

__all__ = ["LLM", "SamplingParams", "GuidedDecodingParams", "BuildConfig", "KvCacheConfig", "RequestOutput",
           "CompletionOutput", "Logprob", "LogitsProcessor", "BatchedLogitsProcessor"]
