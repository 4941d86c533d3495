"""The frontier's quality (`divalign eval --temperatures ... --quality SPEC`): one score per sample.

Open-ended prompts have no verifier, so the quality comes from what divalign already has for GRPO:

- `NAME`: a reward of the registry (`divalign.rewards`: `format`, `length_penalty`, `math_answer`, ...) with its
  default settings, called as GRPO calls it on conversational data — a prompt's K completions, each one assistant
  turn after the prompt's messages (a plain prompt is one user turn, as `divalign eval` renders it for a chat
  model), with `completion_ids` (the policy's tokens before the stop token) and the prompt row's other fields as
  dataset columns;
- `reward_model:PATH`: the registry's reward model, a sequence-classification checkpoint (its first logit) scoring
  the conversation rendered by its own chat template (the texts joined when it has none);
- `{"NAME": {settings}}`: a registry reward with settings, as a recipe's `rewards:` entry (JSON);
- `MODULE:FUNCTION`: `fn(completion, answer) -> float` of your own; MODULE is installed or a file in the current
  directory.

A registry name wins over a module of the same name. `darling` is refused: it multiplies quality by each sample's
distinctness within its group, and a frontier sets quality against diversity. A prompt's quality is the mean over
its samples of the scores that are not None.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .prompts import PromptRecord, load_callable

GroupScorer = Callable[[PromptRecord, Sequence[str], Sequence[Sequence[int]]], list[float]]
_CALL_ARGS = ("prompts", "completions", "completion_ids")  # what the call passes itself, never a dataset column


@dataclass(frozen=True)
class Quality:
    """A named per-sample quality: `score(record, texts, token_ids)` gives one float (or NaN) per sample of a prompt."""

    name: str
    score: GroupScorer


def accuracy(verifier: Callable[[str, str | None], bool]) -> Quality:
    """The verifier's verdicts as 0/1 (the default quality of a frontier with `--verifier`)."""
    return Quality("accuracy", lambda record, texts, ids: [float(bool(verifier(t, record.answer))) for t in texts])


def load_quality(spec: str | Callable[[str, str | None], float], records: Sequence[PromptRecord]) -> Quality:
    """The quality `spec` names (see the module docstring), checked against the prompts' fields and, for a reward
    model, loaded — before any sampling."""
    from ..rewards import REWARDS  # torch, math_verify: loaded only when a frontier asks for a quality

    if callable(spec):
        return _per_sample(getattr(spec, "__name__", "quality"), spec)
    name, sep, argument = spec.partition(":")
    if spec.lstrip().startswith("{") or name in REWARDS:
        return _registry_quality(spec, records)
    if sep and name and argument:
        return _per_sample(spec, load_callable(spec, "--quality"))
    raise ValueError(
        f"--quality {spec!r}: expected a reward name ({', '.join(n for n in REWARDS if n != 'darling')}), "
        "reward_model:PATH, a JSON {name: settings} mapping, or MODULE:FUNCTION"
    )


def _per_sample(name: str, fn: Callable[[str, str | None], float]) -> Quality:
    return Quality(name, lambda record, texts, ids: [_number(fn(t, record.answer)) for t in texts])


def _registry_quality(spec: str, records: Sequence[PromptRecord]) -> Quality:
    from ..rewards import build, parse_rewards

    entry = _registry_entry(spec)
    try:
        (parsed,) = parse_rewards([entry])
    except ValueError as err:
        raise ValueError(f"--quality {spec!r}: {err}") from err
    if parsed.name == "darling":
        raise ValueError(
            f"--quality {spec!r}: darling multiplies quality by diversity within the group; a frontier sets quality "
            "against diversity, so give it the quality alone (e.g. darling's own `quality:` reward)"
        )
    reward = build(parsed)
    _check_columns(spec, reward, records)
    if hasattr(reward, "load"):  # a reward model: a bad path fails now, not after the sampling
        try:
            reward.load()
        except (OSError, ValueError) as err:
            raise ValueError(f"--quality {spec!r}: cannot load a sequence-classification model ({err})") from err
    return Quality(parsed.name, lambda record, texts, ids: _call(reward, record, texts, ids))


def _registry_entry(spec: str) -> Any:
    """`NAME`, `reward_model:PATH` or JSON as the registry's `rewards:` entry."""
    if spec.lstrip().startswith("{"):
        try:
            entry = json.loads(spec)
        except json.JSONDecodeError as err:
            raise ValueError(f"--quality {spec!r}: invalid JSON ({err})") from err
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ValueError(f"--quality {spec!r}: expected one reward, {{name: settings}}")
        return entry
    name, sep, argument = spec.partition(":")
    if not sep:
        return name
    if name != "reward_model" or not argument:
        raise ValueError(
            f"--quality {spec!r}: only reward_model takes an argument after ':' (its checkpoint); settings of "
            f"{name!r} go in JSON: --quality '{{\"{name}\": {{...}}}}'"
        )
    return {"reward_model": {"model": argument}}


def _check_columns(spec: str, reward: Any, records: Sequence[PromptRecord]) -> None:
    """Every prompt has one of the column sets the reward reads (e.g. math_answer: `answer` or `solution`)."""
    from ..rewards import required_columns

    options = required_columns([reward])
    for index, record in enumerate(records):
        if not any(set(option) <= record.columns.keys() for option in options):
            wanted = " or ".join("+".join(map(repr, option)) for option in options)
            raise ValueError(
                f"--quality {spec!r} reads the prompt field {wanted}, which prompt {index} lacks "
                f"(its fields: {sorted(record.columns)})"
            )


def _call(reward: Any, record: PromptRecord, texts: Sequence[str], ids: Sequence[Sequence[int]]) -> list[float]:
    """One prompt's samples through a GRPO reward, as a conversation (TRL's conversational format): the prompt's
    messages, a plain prompt as one user turn (how `divalign eval` renders it for a chat model), each completion one
    assistant turn."""
    prompt = [{"role": "user", "content": record.prompt}] if isinstance(record.prompt, str) else record.prompt
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    columns = {key: [value] * len(texts) for key, value in record.columns.items() if key not in _CALL_ARGS}
    scores = reward(
        prompts=[prompt] * len(texts),
        completions=completions,
        completion_ids=[list(row) for row in ids],
        **columns,
    )
    return [_number(value) for value in scores]


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)
