"""The progress bar of one sampling call (`divalign.generation.sample_completions`): with a `SamplingProgress`, a
tqdm bar counts the tokens generated as `generate` produces them, at every decoding step (`TokenCounter`), with
tokens/s, time left and the samples done."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria

from .encoding import generated_tokens


@dataclass(frozen=True)
class SamplingProgress:
    """A tqdm bar over one `sample_completions` call, moving at every decoding step: the tokens generated so far of
    this rank's share (each completion's tokens up to and including its stop token; the padding after it not), their
    rate, the time left, and in its postfix the samples done. The total starts at the budget (samples ×
    `max_new_tokens`) and drops by what a completion that stopped early left unused, so the time left is an upper
    bound and the finished bar's total is the tokens generated.

    Args:
        description: the bar's label (which model, which temperature, which step).
        leave: keep the finished bar on screen (a line per stage); False inside a training loop's own bar.
    """

    description: str
    leave: bool = True

    def bar(self, total: int, postfix: str = "") -> Any:
        return tqdm(
            total=total, desc=self.description, unit="token", leave=self.leave, dynamic_ncols=True, postfix=postfix
        )


class TokenCounter(StoppingCriteria):
    """A stopping criterion that never stops: after every decoding step it counts the rows that produced a token
    (those that had not yet produced a stop or pad token) and passes the count to `on_tokens` at most every
    `interval` seconds: reading the count waits for the device, so the steps between reads only add it up there."""

    interval = 0.2

    def __init__(self, on_tokens: Callable[[int], None], ends: set[int]) -> None:
        self.on_tokens = on_tokens
        self.ends = torch.tensor(sorted(ends))
        self.finished: torch.Tensor | None = None
        self.pending: torch.Tensor | None = None
        self.reported = time.monotonic()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        last = input_ids[:, -1]
        if self.finished is None:
            self.finished = torch.zeros_like(last, dtype=torch.bool)
            self.pending = torch.zeros((), dtype=torch.long, device=last.device)
            self.ends = self.ends.to(last.device)
        self.pending += (~self.finished).sum()
        self.finished |= torch.isin(last, self.ends)
        if time.monotonic() - self.reported >= self.interval:
            self.flush()
        return torch.zeros_like(last, dtype=torch.bool)

    def flush(self) -> None:
        if self.pending is not None and (count := int(self.pending)):
            self.on_tokens(count)
            self.pending.zero_()
        self.reported = time.monotonic()


class TokenBar:
    """The bar of one `sample_completions` call: `step` adds tokens as they are generated, `batch_done` makes the
    count exact from the batch's raw completions and drops the budget its early-stopped completions left unused."""

    def __init__(self, progress: SamplingProgress, samples: int, max_new_tokens: int, ends: set[int]) -> None:
        self.samples, self.max_new_tokens, self.ends = samples, max_new_tokens, ends
        self.done_samples = self.done_tokens = 0
        self.bar = progress.bar(samples * max_new_tokens, postfix=self._samples_text())

    def _samples_text(self) -> str:
        return f"{self.done_samples}/{self.samples} samples"

    def step(self, tokens: int) -> None:
        self.bar.update(tokens)

    def batch_done(self, completions: list[list[list[int]]]) -> None:
        rows = [row for group in completions for row in group]
        self.done_tokens += sum(generated_tokens(row, self.ends) for row in rows)
        self.done_samples += len(rows)
        # the rows' unused budget leaves the total; the counted steps are replaced by the exact count
        self.bar.total = self.done_tokens + (self.samples - self.done_samples) * self.max_new_tokens
        self.bar.set_postfix_str(self._samples_text(), refresh=False)
        # the steps not yet reported (or, negative, the extra step of a deferred stop check)
        self.bar.update(self.done_tokens - self.bar.n)
        self.bar.refresh()


@contextlib.contextmanager
def token_bar(
    progress: SamplingProgress | None, samples: int, max_new_tokens: int, ends: set[int]
) -> Iterator[TokenBar | None]:
    """The token bar of `progress` for this call (None without one), closed at the end."""
    if progress is None:
        yield None
        return
    bar = TokenBar(progress, samples, max_new_tokens, ends)
    try:
        yield bar
    finally:
        bar.bar.close()
