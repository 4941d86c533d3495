"""Quality and diversity measured against a known truth.

Two families, both per prompt:

* **sampled** — from a list of sampled answers: validity (share of samples that are valid answers = quality),
  coverage (share of the valid answers, and of the truth's mass, that appear among the samples), the plug-in entropy
  of the valid samples, and a smoothed KL(truth ‖ empirical).
* **exact** — from the model's exact probability of every valid answer (answer tokens + EOS given the prompt, a
  product of next-token probabilities; the world is small enough to score them all): validity = total valid mass,
  entropy of the model's distribution over valid answers, KL(truth ‖ model), and the *expected* coverage of K
  samples, ``Σ_a w_a · (1 − (1 − m_a)^K)``, with no sampling noise.

Entropies are in nats. The model's probabilities are left sub-normalised in KL(truth ‖ model) on purpose: the
invalid mass then counts as a loss (``KL = KL(truth ‖ m / Z) − log Z`` with ``Z`` the valid mass).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from divalign.distributions import entropy


def normalise(weights: Mapping[str, float]) -> dict[str, float]:
    """Divide by the total; an all-zero mapping stays all-zero."""
    total = sum(weights.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in weights.items()}


def kl_divergence(truth: Mapping[str, float], model: Mapping[str, float], floor: float = 1e-30) -> float:
    """``KL(truth ‖ model) = Σ_a t_a log(t_a / m_a)`` over the truth's support; ``m`` may be sub-normalised.

    ``floor`` keeps an answer the model gives probability 0 finite (≈ 69 nats per unit of truth mass).
    """
    return sum(t * (math.log(t) - math.log(max(model.get(a, 0.0), floor))) for a, t in truth.items() if t > 0)


# ----- sampled -----
@dataclass(frozen=True)
class SampledMetrics:
    """Metrics of one prompt's samples."""

    validity: float  # share of samples that are valid answers
    coverage: float  # share of the valid answers that appear at least once
    mass_coverage: float  # truth mass of the answers that appear at least once
    entropy: float  # plug-in entropy of the valid samples
    kl: float  # KL(truth ‖ add-α smoothed empirical distribution of the valid samples)
    distinct: int  # distinct valid answers


def sampled_metrics(samples: Sequence[str], truth: Mapping[str, float], smoothing: float = 0.5) -> SampledMetrics:
    """Score one prompt's sampled answers against its truth.

    The empirical distribution for KL is ``(count_a + α) / (n_valid + α · |A|)`` over the valid answers ``A``
    (add-α, Jeffreys for α = 0.5), so unseen answers get a finite probability.
    """
    valid = [s for s in samples if s in truth]
    counts = Counter(valid)
    n = len(valid)
    empirical = {a: c / n for a, c in counts.items()} if n else {}
    denom = n + smoothing * len(truth)
    smoothed = {a: (counts.get(a, 0) + smoothing) / denom for a in truth}
    return SampledMetrics(
        validity=n / len(samples) if samples else 0.0,
        coverage=len(counts) / len(truth),
        mass_coverage=sum(truth[a] for a in counts),
        entropy=entropy(empirical),
        kl=kl_divergence(truth, smoothed),
        distinct=len(counts),
    )


# ----- exact -----
@dataclass(frozen=True)
class ExactMetrics:
    """Metrics of one prompt from the model's exact probabilities of the valid answers."""

    validity: float  # Σ_a m_a: probability that one sample is a valid answer
    coverage: float  # expected share of the valid answers that appear among K samples
    mass_coverage: float  # expected truth mass of the answers that appear among K samples
    entropy: float  # entropy of m / Σ m (the model's distribution over the valid answers)
    kl: float  # KL(truth ‖ m), m sub-normalised
    tail_mass: float  # share of the valid mass on the truth's tail answers


def expected_coverage(model: Mapping[str, float], weights: Mapping[str, float], k: int) -> float:
    """``Σ_a w_a · (1 − (1 − m_a)^k)``: the expected weight of the answers seen at least once in ``k`` samples."""
    return sum(w * -math.expm1(k * math.log1p(-min(model.get(a, 0.0), 1.0 - 1e-15))) for a, w in weights.items())


def exact_metrics(
    model: Mapping[str, float], truth: Mapping[str, float], k: int, tail: Sequence[str] = ()
) -> ExactMetrics:
    """Score one prompt from ``model`` = exact probability of each valid answer (answer + EOS | prompt).

    ``k`` is the number of samples for the expected coverage; ``tail`` lists the truth's low-frequency answers.
    """
    valid_mass = sum(model.get(a, 0.0) for a in truth)
    conditional = normalise({a: model.get(a, 0.0) for a in truth})
    uniform = {a: 1.0 / len(truth) for a in truth}
    return ExactMetrics(
        validity=valid_mass,
        coverage=expected_coverage(model, uniform, k),
        mass_coverage=expected_coverage(model, truth, k),
        entropy=entropy(conditional),
        kl=kl_divergence(truth, model),
        tail_mass=sum(conditional[a] for a in tail),
    )
