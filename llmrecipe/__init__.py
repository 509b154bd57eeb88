"""llmrecipe: build language models end to end from one declarative TOML recipe."""

__version__ = "0.1.0"
