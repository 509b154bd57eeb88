"""Decoding with a KV cache: the engine behind `llmrecipe generate`, the HTTP server and the benchmarks.

cache.py (the cache a forward pass reads and extends) -> step.py (the torch model's forward, lean for decoding)
-> decoders.py (torch or onnxruntime forward) ->
sampling.py (one next token) -> text.py (detokenizing with stop sequences) -> engine.py (batched decoding)
-> artifact.py (an artifact folder -> an engine) and chat.py (chat templates).
"""
