"""Sweeps: a recipe's `[sweep]` table run as trials, each the recipe with its values set, planned and run as usual
(shared steps come from the store), recorded in `runs/<sweep-id>/` and reported.

This floor sits between the CLI and `api`: a trial is an ordinary run through `api`, in a process of its own.
"""
