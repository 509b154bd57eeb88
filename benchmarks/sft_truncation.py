"""What an SFT step keeps of dialogue rows whose prompts are longer than `max_seq_len`: cut at the end vs fitted.

The rows are chit-chat pairs from `chatterbot.jsonl` whose prompt carries the dialogue so far (the previous pairs of
the file, a few hundred tokens), the shape of open-domain dialogue data. A byte-level BPE tokenizer is trained on
Jane Austen. For each row the conversation is rendered with ChatML and encoded, then:
- cut at the end (what SFT did before): rows whose response survives whole, in part, or not at all;
- fitted with `truncation = "left"` and `"drop"`: rows intact, prompt-trimmed, dropped, and target tokens.

    python benchmarks/sft_truncation.py --data /work/shared/data --max-seq-len 128

It measures counts, not time. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from llmrecipe.finetune.chat_data import assistant_spans, conversation, encode_example, load_examples
from llmrecipe.recipe.finetune import CHAT_TEMPLATES, DatasetConfig
from llmrecipe.steps.finetune.sft import add_special_tokens
from llmrecipe.tokenizer.train import train_bpe

TEMPLATE, SPECIALS, END = CHAT_TEMPLATES["chatml"]


def dialogue_rows(pairs: list[dict], history: int) -> list[dict]:
    """Each pair with the `history` pairs before it folded into its prompt as earlier speaker turns."""
    rows = []
    for i, pair in enumerate(pairs):
        earlier = pairs[max(0, i - history): i]
        context = " ".join(f"A: {p['prompt']} B: {p['response']}" for p in earlier)
        rows.append({"prompt": f"{context} A: {pair['prompt']}".strip(), "response": pair["response"]})
    return rows


def cut_at_the_end(rows: list[dict], tokenizer, dataset: DatasetConfig, limit: int) -> dict[str, int]:
    """The old behaviour: the first `limit` ids of every example."""
    whole = part = none = 0
    for number, row in enumerate(rows, start=1):
        text, spans = assistant_spans(TEMPLATE, conversation(row, dataset, "rows", number), END, f"row {number}")
        example = encode_example(tokenizer, text, spans)
        kept = sum(example.targets[1:limit])
        total = sum(example.targets[1:])
        whole, part, none = whole + (kept == total), part + (0 < kept < total), none + (kept == 0)
    return {"response_whole": whole, "response_partly_cut": part, "response_lost": none}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--history", type=int, default=8, help="earlier pairs folded into each prompt")
    args = parser.parse_args()
    data = Path(args.data)
    pairs = [json.loads(line) for line in (data / "sft" / "chatterbot.jsonl").read_text().splitlines() if line]
    rows = dialogue_rows(pairs, args.history)
    tokenizer = train_bpe([(data / "pretrain" / "austen.txt").read_text()[:1_000_000]], 4096, 2, "<|endoftext|>")
    add_special_tokens(tokenizer, SPECIALS, 4200)
    dataset = DatasetConfig(path="dialogue.jsonl", val_fraction=0.0)
    limit = args.max_seq_len + 1  # a row of max_seq_len inputs holds max_seq_len + 1 ids
    before = cut_at_the_end(rows, tokenizer, dataset, limit)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dialogue.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        after = {mode: load_examples(path, dataset, tokenizer, TEMPLATE, END, limit, mode)[1]["train"]
                 for mode in ("left", "drop")}
    lengths = sorted(len(tokenizer.encode(r["prompt"]).ids) for r in rows)
    print(f"{len(rows)} rows, prompt tokens median {lengths[len(lengths) // 2]}, max {lengths[-1]}; "
          f"max_seq_len = {args.max_seq_len}")
    print(f"cut at the end (before): response whole {before['response_whole']}, partly cut "
          f"{before['response_partly_cut']}, lost {before['response_lost']}")
    for mode, counts in after.items():
        print(f"truncation = {mode!r} (after): {counts.sentence()}")
    print(json.dumps({"rows": len(rows), "max_seq_len": args.max_seq_len, "history": args.history,
                      "before_cut_at_end": before,
                      **{f"after_{mode}": asdict(counts) for mode, counts in after.items()}}))


if __name__ == "__main__":
    main()
