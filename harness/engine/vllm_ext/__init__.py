"""Extensions that vLLM loads into its own processes by name: the names and request keys
live here, so the engine configures them without importing vllm or torch.

- :mod:`.nucleus`: the V1 logits processor that counts exact top-p nucleus sizes;
- :mod:`.samplers`: the V1 logits processor that applies the samplers' rules (typical, eta,
  epsilon, Mirostat v2, dynamic top-p) inside ``generate``; its request key is
  :data:`strategies.base.SAMPLER_ARG`;
- :mod:`.v2`: the same two processors for vLLM's model runner V2 (the CUDA default);
- :mod:`.rules`: the counts, masks and per-request state both pairs share;
- :mod:`.tailcache`: the KV connector that reuses sub-block prompt tails between steps.
"""

#: ``SamplingParams.extra_args`` key: the request wants its top-p nucleus size counted.
NUCLEUS_ARG = "deceval_nucleus_p"
#: The V1 logits processors' FQCNs, for ``LLM(logits_processors=[...])``.
NUCLEUS_PROCESSOR = "harness.engine.vllm_ext.nucleus:NucleusCountProcessor"
SAMPLER_PROCESSOR = "harness.engine.vllm_ext.samplers:SamplerProcessor"
#: Their twins for vLLM's model runner V2.
NUCLEUS_PROCESSOR_V2 = "harness.engine.vllm_ext.v2:NucleusCountProcessorV2"
SAMPLER_PROCESSOR_V2 = "harness.engine.vllm_ext.v2:SamplerProcessorV2"
#: model runner ("v1" or "v2") -> (nucleus counter, sampler processor) it loads.
PROCESSORS = {"v1": (NUCLEUS_PROCESSOR, SAMPLER_PROCESSOR), "v2": (NUCLEUS_PROCESSOR_V2, SAMPLER_PROCESSOR_V2)}

#: ``SamplingParams.extra_args`` key: this request's prompt tail may be stored and reused.
TAIL_ARG = "deceval_tail"
#: ``kv_connector_extra_config`` key: the ring size in slots (one block of every layer each).
SLOTS_KEY = "slots"
#: The KV connector's class and module, for ``kv_transfer_config``.
TAIL_CONNECTOR = "TailCacheConnector"
TAIL_CONNECTOR_MODULE = "harness.engine.vllm_ext.tailcache"
