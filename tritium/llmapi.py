"""`from tritium.llmapi import ...`: the names TensorRT-LLM's `tensorrt_llm.llmapi` module offers
that tritium implements, so scripts need only their import changed."""
from tritium.config import (BuildConfig, CapacitySchedulerPolicy, ContextChunkingPolicy, CudaGraphConfig,
                            KvCacheConfig, SchedulerConfig)
from tritium.llm.llm import LLM
from tritium.outputs import CompletionOutput, Logprob, RequestOutput
from tritium.quantization import CalibConfig, QuantAlgo, QuantConfig
from tritium.sampling_params import BatchedLogitsProcessor, LogitsProcessor, SamplingParams
from tritium.structured_output import GuidedDecodingParams

__all__ = ["LLM", "SamplingParams", "GuidedDecodingParams", "BuildConfig", "KvCacheConfig", "SchedulerConfig",
           "CapacitySchedulerPolicy", "ContextChunkingPolicy", "CudaGraphConfig", "QuantConfig", "QuantAlgo",
           "CalibConfig", "RequestOutput", "CompletionOutput", "Logprob", "LogitsProcessor",
           "BatchedLogitsProcessor"]
