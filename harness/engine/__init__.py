"""The engine process: what runs inside a Ray actor next to its vLLM engine.

- :mod:`.actor`: the actor class, one per model replica (the driver wraps it with
  ``ray.remote``);
- :mod:`.worker`: one work unit -> its sample rows (native and stepwise strategies);
- :mod:`.engine`: the vLLM engine wrapper (tokenize, generate, ``next_token``, beam search);
- :mod:`.stepdriver`: runs a stepwise strategy over a unit, batching every step;
- :mod:`.vllm_ext`: what vLLM loads into its own processes by name (a logits processor, a
  KV connector).

Nothing here imports the driver (``harness.driver``); vllm and torch are imported where
the engine starts, not when these modules are.
"""
