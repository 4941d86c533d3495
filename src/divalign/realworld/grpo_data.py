"""GRPO prompts of the real-model world, for `recipes/compare/real_rl.yaml`: every phrasing of the seen categories
(the evaluation's and the calibration's, as `world.json` marks the categories seen in SFT) as a user turn, with its
category key in `answer`, the column the `verifier` reward hands to `divalign.realworld.verifier:names_valid_item`.

    python -m divalign.realworld.grpo_data runs/demo-real/world      # after make demo-real: writes grpo.jsonl

GRPO needs the prompt as chat messages: TRL applies the chat template only to conversational prompts, and the
evaluation samples every prompt through it. The held-out categories stay out, so RL never sees them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ..jsonl import write_jsonl

PROMPT_FILES, WORLD_FILE, GRPO_FILE = ("prompts_eval.jsonl", "prompts_calibration.jsonl"), "world.json", "grpo.jsonl"


def _lines(path: Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the world first (make demo-real)")
    text = path.read_text(encoding="utf-8").splitlines()
    return [(number, json.loads(line)) for number, line in enumerate(text, 1) if line.strip()]


def grpo_rows(world_dir: Path) -> list[dict]:
    """The seen categories' prompts of `world_dir`'s prompt files (`{"prompt": TEXT, "answer": CATEGORY}`), each as a
    user turn."""
    world = (
        json.loads((world_dir / WORLD_FILE).read_text(encoding="utf-8")) if (world_dir / WORLD_FILE).is_file() else None
    )
    if world is None:
        raise FileNotFoundError(f"{world_dir / WORLD_FILE} not found: build the world first (make demo-real)")
    heldout = {key for key, category in world["categories"].items() if category["heldout"]}
    rows = []
    for name in PROMPT_FILES:
        for number, record in _lines(world_dir / name):
            if not isinstance(record.get("prompt"), str) or not isinstance(record.get("answer"), str):
                raise ValueError(
                    f"{world_dir / name}:{number}: expected a string `prompt` and `answer`, got {record!r}"
                )
            if record["answer"] not in heldout:
                rows.append({"prompt": [{"role": "user", "content": record["prompt"]}], "answer": record["answer"]})
    if not rows:
        raise ValueError(f"{world_dir}: no prompt of a seen category in {', '.join(PROMPT_FILES)}")
    return rows


def write_grpo_data(world_dir: str | Path) -> Path:
    """Write `world_dir/grpo.jsonl`; returns its path."""
    world_dir = Path(world_dir)
    return write_jsonl(world_dir / GRPO_FILE, grpo_rows(world_dir))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m divalign.realworld.grpo_data", description=__doc__.split("\n")[0])
    parser.add_argument("world_dir", help="the world directory make demo-real wrote (runs/demo-real/world)")
    args = parser.parse_args(argv)
    try:
        print(write_grpo_data(args.world_dir))
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
