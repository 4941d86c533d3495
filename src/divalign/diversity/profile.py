"""Metric profiles: named sets of metric conventions, so divalign's numbers can sit next to a paper's table.

Papers that report the same metric name often define it differently (what counts as an n-gram, whether an empty
order counts, how a text is cut into NLI premises, which embedder, lowercasing). A profile fixes every such choice
at once; the registry's metrics read it from the scoring context. `divalign` is the default; the others reproduce a
paper's evaluation code, convention by convention (each difference is listed in the profile's `differences`):

- `karouzos2026`: "Where does output diversity collapse in post-training?" (Karouzos et al., arXiv 2604.16027;
  code: ckarouzos/where-diversity-collapses): EAD over whitespace words, NLI over sentence pairs on [0, 2],
  all-mpnet-base-v2 embeddings, `<think>…</think>` stripped before scoring.
- `tofu2026`: the self-BLEU of "Diversity in Large Language Models under Supervised Fine-Tuning" (Klypa &
  Cherednichenko, arXiv 2605.00195; code: rsklypa/TOFU): lowercased, newlines read as spaces, on 0–100.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .embedding import Embedder, load_embedder

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MPNET = "sentence-transformers/all-mpnet-base-v2"
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class MetricProfile:
    """The conventions every metric of one scoring run follows."""

    name: str
    title: str  # one line for results tables: what the profile reproduces
    differences: tuple[str, ...] = ()  # how it differs from the `divalign` profile, one item per convention
    strip_think: bool = False  # drop `<think>…</think>` reasoning from every text before any text metric
    ead_units: str = "token_ids"  # "token_ids" (the policy's) or "words" (`paper_words`)
    ead_empty_orders: str = "skip"  # "skip": an order with no n-grams leaves the mean; "zero": it counts as 0
    ead_clamp: bool = False  # clamp each order's EAD to [0, 1]
    nli_sentence_pairs: int = 0  # 0: whole texts, P(contradiction) − P(entailment) on [−1, 1]; n: up to n sentence
    # pairs per text pair, 1 − [P(entailment) − P(contradiction)] on [0, 2]
    embedding_model: str = MINILM  # the sentence embedder used when none is named
    self_bleu_lowercase: bool = False
    self_bleu_newlines_as_spaces: bool = False  # replace "\n" by " " before BLEU's 13a tokenizer (which joins "-\n")
    self_bleu_scale: float = 1.0  # 1: self-BLEU on [0, 1]; 100: sacrebleu's 0–100

    def prepare_text(self, text: str) -> str:
        """A sample as this profile's text metrics see it."""
        return strip_think(text) if self.strip_think else text

    def settings(self) -> dict[str, object]:
        """Every convention, for results.json and run configs."""
        return dataclasses.asdict(self)


def strip_think(text: str) -> str:
    """Remove chain-of-thought reasoning, as Karouzos et al.'s code does before scoring: every `<think>…</think>`
    block; then, when a `</think>` is left without its `<think>` (a chat template that opens the block inside the
    prompt), everything up to and including it; then surrounding whitespace."""
    while _THINK_OPEN in text and (end := text.find(_THINK_CLOSE, text.find(_THINK_OPEN))) != -1:
        start = text.find(_THINK_OPEN)
        text = text[:start] + text[end + len(_THINK_CLOSE) :]
    if _THINK_CLOSE in text and _THINK_OPEN not in text:
        text = text[text.find(_THINK_CLOSE) + len(_THINK_CLOSE) :]
    return text.strip()


DIVALIGN = MetricProfile(
    name="divalign",
    title="divalign's definitions (policy token ids for n-gram metrics, whole-text NLI, all-MiniLM-L6-v2)",
)
KAROUZOS2026 = MetricProfile(
    name="karouzos2026",
    title='"Where does output diversity collapse in post-training?" (Karouzos et al., arXiv 2604.16027)',
    differences=(
        "<think>…</think> reasoning stripped from every sample before scoring",
        "EAD over whitespace words after deleting '.' and newlines (V stays the policy tokenizer's size)",
        "EAD mean over n = 1..5: an order with no n-grams counts as 0, each order clamped to [0, 1]",
        "NLI over up to 3 index-aligned sentence pairs per sample pair, 1 − (P(ent) − P(con)) averaged over both "
        "directions: range [0, 2]",
        "sentence embedder all-mpnet-base-v2",
    ),
    strip_think=True,
    ead_units="words",
    ead_empty_orders="zero",
    ead_clamp=True,
    nli_sentence_pairs=3,
    embedding_model=MPNET,
)
TOFU2026 = MetricProfile(
    name="tofu2026",
    title='the self-BLEU of "Diversity in Large Language Models under Supervised Fine-Tuning" (Klypa & '
    "Cherednichenko, arXiv 2605.00195)",
    differences=("self-BLEU lowercased, newlines read as spaces, on sacrebleu's 0–100 scale",),
    self_bleu_lowercase=True,
    self_bleu_newlines_as_spaces=True,
    self_bleu_scale=100.0,
)
PROFILES: dict[str, MetricProfile] = {p.name: p for p in (DIVALIGN, KAROUZOS2026, TOFU2026)}
PROFILE_NAMES: tuple[str, ...] = tuple(PROFILES)
DEFAULT_PROFILE = DIVALIGN.name


def get_profile(profile: str | MetricProfile | None) -> MetricProfile:
    """The profile named `profile` (None: the default); ValueError naming the valid names otherwise."""
    if isinstance(profile, MetricProfile):
        return profile
    if profile is None:
        return DIVALIGN
    if profile not in PROFILES:
        raise ValueError(f"Unknown metric profile {profile!r}; valid profiles: {', '.join(PROFILE_NAMES)}")
    return PROFILES[profile]


def embedding_model_for(profile: str | MetricProfile | None, embedding_model: str | None) -> str:
    """The embedder to load: the one named, else (None or "auto") the profile's."""
    if embedding_model in (None, "auto"):
        return get_profile(profile).embedding_model
    return embedding_model


def load_profile_embedder(
    profile: str | MetricProfile | None, embedding_model: str | None, prefix: str = "--", device: str | None = None
) -> Embedder:
    """Load the embedder `embedding_model_for` names; when it is the profile's own and cannot be loaded, the error
    says which profile asked for it and how to give it another (`prefix`: the flag or key prefix of the caller)."""
    conventions = get_profile(profile)
    name = embedding_model_for(conventions, embedding_model)
    try:
        return load_embedder(name, device=device)
    except (ValueError, FileNotFoundError) as error:
        if embedding_model not in (None, "auto"):
            raise
        key = "--embedding-model" if prefix == "--" else f"{prefix}embedding_model"
        raise ValueError(
            f"The {conventions.name!r} metric profile scores with the sentence embedder {name!r}, which could not be "
            f"loaded: download it once where the Hub is reachable (it is then read from the local cache), or set "
            f"{key} to a local copy. {error}"
        ) from error


def record_profile(args: Any, profile: str | MetricProfile | None) -> None:
    """Put the profile's name in the active W&B run's config as `diversity_profile`, when this run reports to W&B."""
    report_to = args.report_to if isinstance(args.report_to, list) else [args.report_to]
    if "wandb" not in report_to and "all" not in report_to:
        return
    import wandb

    if wandb.run is not None:
        wandb.config.update({"diversity_profile": get_profile(profile).name}, allow_val_change=True)
