"""Model architectures as families: one package each (`llama/`, `gpt2/`, `bert/`, `lstm/`), listed in registry.py.

A family's `__init__.py` is torch-free: the plan asks it for shape rules, sizes and adapters without importing torch.
Its `model.py` holds the torch modules; `build.py` builds and loads them.
"""
