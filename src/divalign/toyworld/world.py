"""A small world whose true answer distribution is known exactly.

Every prompt ("name a fruit", "tell me a bird", ...) has a fixed set of valid answers with long-tailed (Zipf)
frequencies: that is the *truth*. From it the module draws

* a **pretraining corpus** in plain, non-chat formats (``"name a fruit : mango"``, ``"question name a fruit answer
  mango"``, ...) covering every category, the long tail included, so a base model trained on it knows the whole truth;
* an **SFT set** in the chat format (prompt/completion messages) drawn from a *sharpened* truth (``p^α`` renormalised:
  an annotator or teacher that favours popular answers) and covering only the *seen* categories. These are the two
  drivers of diversity collapse that TOFU (arXiv 2605.00195) names: the format change has to be learned, and the
  low-frequency answers are under-represented or absent, so plain cross-entropy is pushed to forget them;
* **held-out prompts** whose categories never appear in SFT, to measure what the SFT model forgets or fails to carry
  over to the new format.

Everything is a pure function of :class:`WorldConfig` (seeded), so two builds give byte-identical files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from divalign.distributions import zipf_probs
from divalign.jsonl import write_jsonl

# The answers of every category, written for this world, in package data (categories.json: one category a line). Two-
# word answers exist on purpose: an answer is a token *sequence*, so the exact answer probabilities have to multiply
# several next-token probabilities.
CATEGORIES: dict[str, tuple[str, ...]] = {
    category: tuple(answers)
    for category, answers in json.loads(
        resources.files(__package__).joinpath("categories.json").read_text(encoding="utf-8")
    ).items()
}

TEMPLATES: tuple[str, ...] = ("name {article} {category}", "tell me {article} {category}", "give one {category}")
# Plain (non-chat) formats of the pretraining corpus, "<context> <answer>". Web text asks and answers in many ways, so
# the corpus does too; the first one is where the base model's knowledge is measured. None uses the chat role tokens.
PLAIN_FORMATS: tuple[str, ...] = ("{prompt} :", "{prompt} ?", "question {prompt} answer")


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines a world; the same config always gives the same world."""

    seed: int = 0
    zipf_exponent: float = 1.0  # truth: p(rank k) ∝ 1 / k^s
    num_heldout_categories: int = 5  # whole categories never shown in SFT
    sft_sharpening: float = 2.0  # SFT answers drawn from p^α / Σ p^α (α > 1 under-represents the tail)
    sft_examples_per_prompt: int = 32
    pretrain_examples: int = 200_000  # size of the written corpus (the trainer may also draw fresh samples)
    tail_start_rank: int = 8  # answers of rank > this count as the "tail" in reports and tests
    categories: tuple[str, ...] = field(default_factory=lambda: tuple(CATEGORIES))


@dataclass(frozen=True)
class Prompt:
    """One prompt and its true answer distribution (answers sorted by decreasing probability)."""

    text: str
    category: str
    answers: tuple[str, ...]
    probs: tuple[float, ...]
    heldout: bool

    def truth(self) -> dict[str, float]:
        """The true answer distribution as ``{answer: probability}``."""
        return dict(zip(self.answers, self.probs, strict=True))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def sharpen(probs: list[float] | tuple[float, ...], alpha: float) -> list[float]:
    """``p^α / Σ p^α``: α > 1 moves mass from the tail to the head (a low-temperature teacher, popularity bias)."""
    weights = [p**alpha for p in probs]
    total = sum(weights)
    return [w / total for w in weights]


class ToyWorld:
    """The prompts, their truth, and the corpora drawn from it."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        self.prompts = self._build_prompts()

    def _build_prompts(self) -> list[Prompt]:
        rng = random.Random(self.config.seed)
        categories = list(self.config.categories)
        heldout = set(rng.sample(categories, self.config.num_heldout_categories))
        probs = zipf_probs(len(CATEGORIES[categories[0]]), self.config.zipf_exponent)
        prompts = []
        for category in categories:
            # The popularity order is a seeded shuffle, so rank is unrelated to list order or spelling
            answers = list(CATEGORIES[category])
            rng.shuffle(answers)
            assert len(answers) == len(probs), f"every category needs {len(probs)} answers"
            for template in TEMPLATES:
                text = template.format(article=_article(category), category=category)
                prompts.append(Prompt(text, category, tuple(answers), tuple(probs), category in heldout))
        return prompts

    @property
    def seen_prompts(self) -> list[Prompt]:
        """Prompts whose category appears in the SFT set."""
        return [p for p in self.prompts if not p.heldout]

    @property
    def heldout_prompts(self) -> list[Prompt]:
        """Prompts whose category never appears in the SFT set (only in pretraining)."""
        return [p for p in self.prompts if p.heldout]

    def tail_share(self, prompt: Prompt) -> float:
        """True probability mass of the answers ranked below ``tail_start_rank``."""
        return sum(prompt.probs[self.config.tail_start_rank :])

    # ----- corpora -----
    @staticmethod
    def plain_prefix(prompt_text: str, plain_format: int = 0) -> str:
        """The context before the answer in one of the pretraining formats (without BOS)."""
        return PLAIN_FORMATS[plain_format].format(prompt=prompt_text)

    def pretrain_texts(self, n: int, seed: int) -> Iterator[str]:
        """``n`` plain-format documents (e.g. ``"name a fruit : mango"``): prompt and format uniform, answer from the
        full truth."""
        rng = random.Random(seed)
        for _ in range(n):
            prompt = rng.choice(self.prompts)
            plain_format = rng.randrange(len(PLAIN_FORMATS))
            answer = rng.choices(prompt.answers, weights=prompt.probs)[0]
            yield f"{self.plain_prefix(prompt.text, plain_format)} {answer}"

    def sft_records(self) -> list[dict]:
        """Chat-format prompt/completion records for the seen prompts, answers from the sharpened truth."""
        rng = random.Random(self.config.seed + 1)
        records = []
        for prompt in self.seen_prompts:
            weights = sharpen(prompt.probs, self.config.sft_sharpening)
            for answer in rng.choices(prompt.answers, weights=weights, k=self.config.sft_examples_per_prompt):
                records.append(
                    {
                        "prompt": [{"role": "user", "content": prompt.text}],
                        "completion": [{"role": "assistant", "content": answer}],
                    }
                )
        rng.shuffle(records)
        return records

    # ----- files -----
    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the world to ``out_dir``: truth, SFT set, prompt lists and a pretraining corpus sample.

        Returns the written paths by name. The prompt files carry a ``prompt`` field in the chat (messages) format,
        so a generation callback renders them exactly as SFT does, and the prompt's ``valid_answers`` (the column the
        ``toy_validity`` reward reads: the toy recipes' diversity ``quality``).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "truth": out / "truth.json",
            "sft": out / "sft.jsonl",
            "seen_prompts": out / "prompts_seen.jsonl",
            "heldout_prompts": out / "prompts_heldout.jsonl",
            "probe_prompts": out / "prompts_probe.jsonl",
            "pretrain": out / "pretrain.txt",
        }
        truth = {"config": asdict(self.config), "prompts": [asdict(p) for p in self.prompts]}
        paths["truth"].write_text(json.dumps(truth, indent=1))
        write_jsonl(paths["sft"], self.sft_records())
        # The probe for in-training diversity curves: the first phrasing of every category, seen and held-out
        probe = [p for p in self.prompts if p.text.startswith(TEMPLATES[0].split()[0])]
        for key, prompts in (
            ("seen_prompts", self.seen_prompts),
            ("heldout_prompts", self.heldout_prompts),
            ("probe_prompts", probe),
        ):
            rows = [
                {
                    "prompt": [{"role": "user", "content": p.text}],
                    "category": p.category,
                    "heldout": p.heldout,
                    "valid_answers": list(p.answers),
                }
                for p in prompts
            ]
            write_jsonl(paths[key], rows)
        texts = self.pretrain_texts(self.config.pretrain_examples, seed=self.config.seed + 2)
        paths["pretrain"].write_text("\n".join(texts) + "\n")
        return paths

    @classmethod
    def from_truth_file(cls, path: str | Path) -> ToyWorld:
        """Rebuild the world from a ``truth.json`` written by :meth:`write`."""
        config = json.loads(Path(path).read_text())["config"]
        config["categories"] = tuple(config["categories"])
        return cls(WorldConfig(**config))
