"""`python -m benchmarks`: run the benchmarks in this folder, repeated, and keep one comparable JSON result.

suite.py (which benchmarks exist, their quick settings, peers and recipes) -> environment.py (the machine and the
checkout) -> runner.py (runs, figures, medians, the result file) -> compare.py (two results side by side).
"""
