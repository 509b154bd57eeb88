"""Write chat_pairs.jsonl for recipes/preference.toml: preference pairs made from ChatterBot's question/answer rows
(../shared/data/sft/chatterbot.jsonl). Each row's own answer is `chosen`; an answer drawn from another topic (another
`category`) is `rejected`, so the pairs teach a chat model to prefer answers that fit the question.

    python recipes/data/make_chat_pairs.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "../../../shared/data/sft/chatterbot.jsonl"


def pairs(rows: list[dict[str, str]], rng: random.Random) -> list[dict[str, str]]:
    made = []
    for row in rows:
        others = [other["response"] for other in rows
                  if other["category"] != row["category"] and other["response"] != row["response"]]
        made.append({"prompt": row["prompt"], "chosen": row["response"], "rejected": rng.choice(others)})
    return made


def main() -> None:
    rows = [json.loads(line) for line in SOURCE.read_text(encoding="utf-8").splitlines() if line.strip()]
    made = pairs(rows, random.Random(23))
    out = HERE / "chat_pairs.jsonl"
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in made), encoding="utf-8")
    print(f"{out}: {len(made)} pairs")


if __name__ == "__main__":
    main()
