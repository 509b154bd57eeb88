"""Regular expressions checked by the engine that runs them: polars, whose `str` methods use Rust's `regex` crate.

Python's `re` is the wrong judge both ways: it accepts look-around and backreferences, which polars rejects when
the step runs, and it rejects Unicode classes such as `\\p{L}`, which polars runs.
"""

from __future__ import annotations

SYNTAX = ("polars' regex engine (Rust's `regex` syntax: classes, groups, `(?i)` flags and `\\p{L}` Unicode classes; "
          "no look-around such as (?=...) or (?<!...), no backreferences such as \\1)")


def pattern_problem(pattern: str) -> str | None:
    """None when polars compiles the pattern, else the engine's reason with the supported syntax."""
    import polars as pl  # only recipes with regex ops pay for the import at `validate`

    try:
        pl.Series([""], dtype=pl.String).str.contains(pattern)
    except pl.exceptions.PolarsError as error:
        lines = str(error).splitlines()
        reason = next((line.removeprefix("error: ") for line in lines if line.startswith("error: ")), lines[0])
        return f"'{pattern}' is not a pattern {SYNTAX} runs: {reason}"
    return None
