"""The real-model world: which categories SFT sees, the SFT answer distribution, and the files the demo writes.

The SFT set is what drives diversity collapse in the TOFU paper (arXiv 2605.00195): data that under-represents the
tail. For each *seen* category the answers follow a steep Zipf distribution over its *head*, a seeded random part of
the valid set (``head_fraction`` of it, at most ``head_max`` items, so popularity in the model's pretraining has no
say in which items the head holds); the rest of the valid set never appears in SFT. Whole *held-out* categories
never appear at all. Every file is a pure function of :class:`RealWorldConfig`.

Files (``RealWorld.write``): ``sft.jsonl`` (conversational prompt/completion, for ``completion_only_loss``),
``prompts_eval.jsonl`` (every category, seen then held-out, all phrasings but the last ``calibration_phrasings``) and
``prompts_calibration.jsonl`` (those last phrasings: the same categories, other prompts), each with ``answer`` = the
category key the verifier reads, ``prompts_probe.jsonl`` (the diversity callback's prompts: the first phrasing of
each seen category) and ``world.json`` (the config, every valid set, head and SFT probability).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from ..distributions import zipf_probs
from ..jsonl import write_jsonl
from .catalog import NON_MEMBER_STATES, Category, category

SEEN_CATEGORIES = ("european_country", "asian_country", "us_state", "chemical_element", "planet", "weekday")
HELDOUT_CATEGORIES = ("african_country", "south_american_country", "month", "rainbow_colour")


@dataclass(frozen=True)
class RealWorldConfig:
    """Everything that defines the world's SFT data; the same config always writes the same files."""

    seed: int = 0
    seen: tuple[str, ...] = SEEN_CATEGORIES
    heldout: tuple[str, ...] = HELDOUT_CATEGORIES
    head_fraction: float = 0.5  # the SFT answers cover this share of each valid set...
    head_max: int = 10  # ...and at most this many items
    zipf_exponent: float = 1.5  # SFT answer of head rank k drawn with probability ∝ 1 / k^s
    sft_examples_per_prompt: int = 32  # per phrasing of each seen category
    calibration_phrasings: int = 1  # the last phrasings of every category: compare's calibration prompts

    def __post_init__(self) -> None:
        overlap = set(self.seen) & set(self.heldout)
        if overlap:
            raise ValueError(f"categories both seen and held out: {sorted(overlap)}")
        if not 0 < self.head_fraction <= 1 or self.head_max < 1 or self.sft_examples_per_prompt < 1:
            raise ValueError("need 0 < head_fraction <= 1, head_max >= 1 and sft_examples_per_prompt >= 1")
        if self.calibration_phrasings < 1:
            raise ValueError(f"need calibration_phrasings >= 1, got {self.calibration_phrasings}")


@dataclass(frozen=True)
class PromptSpec:
    """One eval prompt: its text, its category key and whether SFT saw the category."""

    text: str
    category: str
    heldout: bool


class RealWorld:
    """The categories, their SFT heads and distributions, the prompts and the files."""

    def __init__(self, config: RealWorldConfig | None = None) -> None:
        self.config = config or RealWorldConfig()
        self.categories: dict[str, Category] = {k: category(k) for k in (*self.config.seen, *self.config.heldout)}

    def head(self, key: str) -> tuple[str, ...]:
        """The items of the category that SFT answers use, most frequent first: a seeded draw from the valid set less
        `NON_MEMBER_STATES` (the Vatican is valid but in no head, so accepting it left the SFT data as it was)."""
        items = [item.name for item in self.categories[key].items if item.name not in NON_MEMBER_STATES]
        size = min(self.config.head_max, max(1, math.ceil(self.config.head_fraction * len(items))))
        return tuple(random.Random(f"{self.config.seed}:{key}").sample(items, size))

    def sft_distribution(self, key: str) -> dict[str, float]:
        """The SFT answer distribution of a seen category: {item: probability}, the steep Zipf over its head."""
        head = self.head(key)
        return dict(zip(head, zipf_probs(len(head), self.config.zipf_exponent), strict=True))

    def prompts(self, heldout: bool) -> list[PromptSpec]:
        """Every phrasing of the seen (or held-out) categories."""
        keys = self.config.heldout if heldout else self.config.seen
        return [PromptSpec(text, key, heldout) for key in keys for text in self.categories[key].phrasings]

    def prompt_sets(self) -> dict[str, list[PromptSpec]]:
        """Evaluation and calibration prompts for `divalign compare`: every category (seen, then held-out) in both,
        the last `calibration_phrasings` phrasings of each for calibration and the others for evaluation."""
        sets: dict[str, list[PromptSpec]] = {"eval": [], "calibration": []}
        for heldout in (False, True):
            for key in self.config.heldout if heldout else self.config.seen:
                phrasings = self.categories[key].phrasings
                cut = len(phrasings) - self.config.calibration_phrasings
                if cut < 1:
                    raise ValueError(
                        f"category {key!r} has {len(phrasings)} phrasing(s): calibration_phrasings "
                        f"{self.config.calibration_phrasings} leaves none to evaluate"
                    )
                sets["eval"] += [PromptSpec(text, key, heldout) for text in phrasings[:cut]]
                sets["calibration"] += [PromptSpec(text, key, heldout) for text in phrasings[cut:]]
        return sets

    def sft_records(self) -> list[dict]:
        """The SFT set: per phrasing of each seen category, answers drawn from its SFT distribution (seeded)."""
        rng = random.Random(self.config.seed)
        records = []
        for prompt in self.prompts(heldout=False):
            distribution = self.sft_distribution(prompt.category)
            answers = rng.choices(
                list(distribution), weights=list(distribution.values()), k=self.config.sft_examples_per_prompt
            )
            records += [
                {
                    "prompt": [{"role": "user", "content": prompt.text}],
                    "completion": [{"role": "assistant", "content": answer}],
                }
                for answer in answers
            ]
        rng.shuffle(records)
        return records

    def write(self, directory: str | Path) -> Path:
        """Write the SFT set, the prompt files and world.json into `directory` (created); returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_jsonl(directory / "sft.jsonl", self.sft_records())
        for name, prompts in self.prompt_sets().items():
            write_jsonl(
                directory / f"prompts_{name}.jsonl", [{"prompt": p.text, "answer": p.category} for p in prompts]
            )
        probe = [{"prompt": self.categories[k].phrasings[0], "answer": k} for k in self.config.seen]
        write_jsonl(directory / "prompts_probe.jsonl", probe)
        (directory / "world.json").write_text(json.dumps(self.describe(), indent=1, ensure_ascii=False))
        return directory

    def describe(self) -> dict:
        """The config, and per category its source, valid set, SFT head and SFT distribution."""
        return {
            "config": asdict(self.config),
            "categories": {
                key: {
                    "source": cat.source,
                    "heldout": key in self.config.heldout,
                    "valid": [item.name for item in cat.items],
                    "sft_distribution": None if key in self.config.heldout else self.sft_distribution(key),
                }
                for key, cat in self.categories.items()
            },
        }
