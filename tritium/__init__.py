"""tritium: an LLM inference engine with a TensorRT-LLM-style Python API."""
from tritium.config import (BuildConfig, CapacitySchedulerPolicy, ContextChunkingPolicy, CudaGraphConfig,
                            KvCacheConfig, SchedulerConfig)
from tritium.outputs import CompletionOutput, Logprob, RequestOutput
from tritium.quantization import CalibConfig, QuantAlgo, QuantConfig
from tritium.sampling_params import BatchedLogitsProcessor, LogitsProcessor, SamplingParams
from tritium.structured_output import GuidedDecodingParams

__version__ = "0.1.0"


def __getattr__(name):
    # LLM pulls in torch models and transformers: import it lazily so `import tritium` stays fast.
    if name == "LLM":
        from tritium.llm.llm import LLM

        return LLM
    raise AttributeError(f"module 'tritium' has no attribute {name!r}")


__all__ = ["LLM", "SamplingParams", "GuidedDecodingParams", "BuildConfig", "KvCacheConfig", "SchedulerConfig",
           "CapacitySchedulerPolicy", "ContextChunkingPolicy", "CudaGraphConfig", "QuantConfig", "QuantAlgo",
           "CalibConfig", "RequestOutput", "CompletionOutput", "Logprob", "LogitsProcessor",
           "BatchedLogitsProcessor"]
