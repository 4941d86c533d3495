"""Toy-world data for the stages after SFT: DPO preference pairs, GRPO prompts with their valid answers, eval prompts.

    python -m divalign.toyworld.preference_data runs/demo/world   # add the files to a world written earlier

* ``dpo.jsonl``: TRL's conversational preference format (``prompt``/``chosen``/``rejected`` message lists). ``chosen``
  is a valid answer drawn from the same sharpened truth as the SFT set (the popularity-biased annotator), ``rejected``
  a well-formed but wrong answer: a valid answer of another category, so every word is in the toy vocabulary and the
  pair differs only in validity.
* ``grpo.jsonl``: the seen prompts with a ``valid_answers`` column, which the ``toy_validity`` reward
  (:mod:`divalign.rewards.toy_validity`) checks completions against; held-out categories stay out of RL as they stay
  out of SFT.
* ``prompts_eval.jsonl``: the probe prompts (seen and held-out) for ``divalign eval`` / a pipeline's lineage eval, with
  the valid answers JSON-encoded in ``answer`` for ``--verifier divalign.rewards.toy_validity:verify``.
* ``prompts_calibration.jsonl``: the same categories in the second phrasing, in the same format: the calibration
  prompts of ``recipes/compare/toy.yaml``, disjoint from ``prompts_eval.jsonl``.

Like :meth:`~divalign.toyworld.world.ToyWorld.write`, everything is a pure function of the world's config.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from divalign.toyworld.world import TEMPLATES, Prompt, ToyWorld, sharpen

DPO_FILE = "dpo.jsonl"
GRPO_FILE = "grpo.jsonl"
EVAL_FILE = "prompts_eval.jsonl"
CALIBRATION_FILE = "prompts_calibration.jsonl"
ANSWERS_COLUMN = "valid_answers"  # the toy_validity reward's default column
_DPO_SEED_OFFSET = 3  # the world uses seed + 1 for SFT and seed + 2 for pretraining


def _user(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt.text}]


def _assistant(answer: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": answer}]


def invalid_answer(world: ToyWorld, prompt: Prompt, rng: random.Random) -> str:
    """A valid answer of another category (uniform over categories, then answers): fluent, in-vocabulary, wrong."""
    valid = set(prompt.answers)
    others = sorted({p.category for p in world.prompts} - {prompt.category})
    while True:  # categories share no answer today; the check keeps a rejected answer invalid if one ever does
        category = rng.choice(others)
        answer = rng.choice(next(p.answers for p in world.prompts if p.category == category))
        if answer not in valid:
            return answer


def dpo_records(world: ToyWorld, pairs_per_prompt: int = 8) -> list[dict]:
    """Conversational preference pairs for the seen prompts: chosen from the sharpened truth, rejected invalid."""
    rng = random.Random(world.config.seed + _DPO_SEED_OFFSET)
    records = []
    for prompt in world.seen_prompts:
        weights = sharpen(prompt.probs, world.config.sft_sharpening)
        for chosen in rng.choices(prompt.answers, weights=weights, k=pairs_per_prompt):
            records.append(
                {
                    "prompt": _user(prompt),
                    "chosen": _assistant(chosen),
                    "rejected": _assistant(invalid_answer(world, prompt, rng)),
                }
            )
    rng.shuffle(records)
    return records


def grpo_records(world: ToyWorld) -> list[dict]:
    """One row per seen prompt: the chat prompt, its valid answers (by decreasing probability) and its category."""
    return [{"prompt": _user(p), ANSWERS_COLUMN: list(p.answers), "category": p.category} for p in world.seen_prompts]


def eval_records(world: ToyWorld, phrasing: int = 0) -> list[dict]:
    """The prompts of one phrasing (the first: the probe prompts) of every category, with the valid answers as a JSON
    string in ``answer``."""
    first = TEMPLATES[phrasing].split()[0]
    return [
        {"prompt": _user(p), "answer": json.dumps(list(p.answers)), "category": p.category, "heldout": p.heldout}
        for p in world.prompts
        if p.text.startswith(first)
    ]


def write_preference_data(world: ToyWorld, out_dir: str | Path, pairs_per_prompt: int = 8) -> dict[str, Path]:
    """Write ``dpo.jsonl``, ``grpo.jsonl``, ``prompts_eval.jsonl`` and ``prompts_calibration.jsonl`` into ``out_dir``
    (the world directory)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "dpo": (out / DPO_FILE, dpo_records(world, pairs_per_prompt)),
        "grpo": (out / GRPO_FILE, grpo_records(world)),
        "eval_prompts": (out / EVAL_FILE, eval_records(world)),
        "calibration_prompts": (out / CALIBRATION_FILE, eval_records(world, phrasing=1)),
    }
    for path, rows in files.values():
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {name: path for name, (path, _) in files.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m divalign.toyworld.preference_data", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("world_dir", help="a world directory written by the demo (holds truth.json)")
    parser.add_argument("--pairs-per-prompt", type=int, default=8, help="DPO pairs per seen prompt (default: 8)")
    args = parser.parse_args(argv)
    world = ToyWorld.from_truth_file(Path(args.world_dir) / "truth.json")
    for name, path in write_preference_data(world, args.world_dir, args.pairs_per_prompt).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
