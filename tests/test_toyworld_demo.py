"""End to end: the reduced toy demo (`--quick`) builds, pretrains, runs the three recipes, evaluates and reports."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from divalign.toyworld.report import EXACT_COLUMNS, SAMPLED_COLUMNS
from divalign.toyworld.world import ToyWorld, WorldConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = ("truth", "base (plain format)", "base (chat format)", "CE SFT", "TOFU SFT", "GEM SFT")


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the markdown table right under ``heading``."""
    lines = markdown.splitlines()
    start = lines.index(heading) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def zipf_entropy(n: int, exponent: float) -> float:
    """Entropy (nats) of p(k) ∝ 1 / k^s over ranks 1..n."""
    weights = [k**-exponent for k in range(1, n + 1)]
    total = sum(weights)
    return -sum(w / total * math.log(w / total) for w in weights)


@torch.no_grad()
def exact_by_hand(model_dir: Path, tokenizer_dir: Path, world: ToyWorld) -> tuple[float, float]:
    """Mean over the SFT prompts of P(valid answer) and of the entropy over valid answers, from one unpadded forward
    per (prompt, answer): P(answer + EOS | chat prompt) by the chain rule."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    validities, entropies = [], []
    for prompt in world.seen_prompts:
        chat = [{"role": "user", "content": prompt.text}]
        context = list(tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])
        probs = []
        for answer in prompt.answers:
            target = [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
            ids = torch.tensor([context + target])
            log_probs = model(input_ids=ids).logits[0].float().log_softmax(-1)
            positions = range(len(context) - 1, len(context) + len(target) - 1)
            probs.append(math.exp(sum(log_probs[i, ids[0, i + 1]].item() for i in positions)))
        validities.append(sum(probs))
        entropies.append(-sum(p / sum(probs) * math.log(p / sum(probs)) for p in probs if p > 0))
    return sum(validities) / len(validities), sum(entropies) / len(entropies)


def _interpolate(points: list[tuple[float, float]], level: float) -> float:
    """Linear interpolation by hand between the (diversity, quality) points around `level`, among the points that no
    other point beats on both axes."""
    kept = [(x, y) for x, y in points if not any(a >= x and b >= y and (a, b) != (x, y) for a, b in points)]
    for (x0, y0), (x1, y1) in itertools.pairwise(sorted(kept)):
        if x0 <= level <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (level - x0) / (x1 - x0)
    return math.nan


def plain_load_stderr(model: Path) -> str:
    """What loading ``model`` with transformers alone (divalign not imported) writes to stderr."""
    code = "import sys, transformers\ntransformers.AutoModelForCausalLM.from_pretrained(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "divalign.toyworld.demo", "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # signs of life where work takes time (the SFT runs' diversity evaluations, the lineage eval's sampling, the
    # frontier stage), no bar for each of the dozens of tiny models loaded; the control: transformers alone, loading
    # one of the demo's models, draws that bar under this name (a renamed bar fails here, not passes unseen below)
    for bar in ("diversity eval, step 0:", "sampling CE (T=1): 100%", "exact frontiers: 100%"):
        assert bar in proc.stderr, bar
    assert "Loading weights" in plain_load_stderr(out / "ce_sft")
    assert "Loading weights" not in proc.stderr
    report = (out / "results.md").read_text()
    for heading in ("## Exact, SFT prompts (seen)", "## Exact, held-out prompts (categories never in SFT)"):
        rows = _table_rows(report, heading)
        assert rows[0] == ["model", *(title for _, title in EXACT_COLUMNS)]
        labels = [row[0] for row in rows[2:]]
        assert set(MODELS) <= set(labels), labels
        for row in rows[2:]:
            assert len(row) == len(EXACT_COLUMNS) + 1
            assert all(cell != "nan" for cell in row)
    sampled = _table_rows(report, "### SFT prompts (seen)")
    assert sampled[0] == ["model", *(title for _, title in SAMPLED_COLUMNS)]
    results = json.loads((out / "results.json").read_text())
    world = ToyWorld(WorldConfig(**results["world"]))
    truth = results["results"]["truth"]["seen"]["exact"]
    assert truth["validity"] == pytest.approx(1.0) and truth["kl"] == pytest.approx(0.0, abs=1e-9)
    assert truth["entropy"] == pytest.approx(zipf_entropy(len(world.prompts[0].answers), world.config.zipf_exponent))
    num_samples, seen = results["plan"]["num_samples"], len(world.seen_prompts)
    for label in ("CE SFT", "TOFU SFT", "GEM SFT"):
        assert len(results["trajectories"][label.split()[0]]) >= 2  # step 0 and at least one checkpoint
        scores = results["results"][label]["seen"]
        # two independent routes to one number: the exact valid mass (a forward pass over every answer) and the
        # share of valid answers among the generated samples; they agree within 5 standard errors
        exact, sampled = scores["exact"]["validity"], scores["sampled"]["validity"]
        assert abs(exact - sampled) < 5 * math.sqrt(max(exact * (1 - exact), 1e-4) / (seen * num_samples)), label
        # the frontier at T = 1 is the exact table's point
        point = results["frontier"]["points"][label]["1"]
        assert point["quality"] == pytest.approx(scores["exact"]["validity"])
        assert point["diversity"] == pytest.approx(scores["exact"]["coverage"])
    frontier = results["frontier"]
    assert frontier["reference"] == "CE SFT"
    assert set(frontier["comparisons"]) == {"TOFU SFT", "GEM SFT", "base (plain format)"}
    for name, comparison in frontier["comparisons"].items():
        points = sorted((p["diversity"], p["quality"]) for p in frontier["points"][name].values())
        reference = sorted((p["diversity"], p["quality"]) for p in frontier["points"]["CE SFT"].values())
        for level, difference in zip(comparison["levels"], comparison["difference"], strict=True):
            assert difference == pytest.approx(_interpolate(points, level) - _interpolate(reference, level)), name
    assert "## Quality–diversity frontier (exact, SFT prompts; `frontier.png`)" in report
    assert (out / "frontier.png").stat().st_size > 0
    validity, answer_entropy = exact_by_hand(out / "ce_sft", out / "base_model", world)
    ce = results["results"]["CE SFT"]["seen"]["exact"]
    assert ce["validity"] == pytest.approx(validity, rel=1e-4)
    assert ce["entropy"] == pytest.approx(answer_entropy, rel=1e-4)
    for figure in results["figures"]:
        assert Path(figure).stat().st_size > 0
    # the recipes' diversity quality (toy_validity) over training, and its figure against EAD
    assert str(out / "quality_diversity.png") in results["figures"]
    for run in ("ce_sft", "tofu_sft", "gem_sft"):
        history = json.loads((out / run / "trainer_state.json").read_text())["log_history"]
        assert [e["step"] for e in history if "diversity/quality/mean" in e] == [0, 20, 40]
    # the lineage evaluation (divalign eval over CE, TOFU, GEM): answers are single items, so every prompt's semantic
    # cluster count is its number of distinct answers, read back from the written samples
    lineage = json.loads((out / "lineage_eval" / "results.json").read_text())
    assert [m["name"] for m in lineage["models"]] == ["CE", "TOFU", "GEM"]
    for model in lineage["models"]:
        lines = (out / "lineage_eval" / "samples" / f"{model['name']}.jsonl").read_text().splitlines()
        distinct = [len({" ".join(t.split()) for t in json.loads(line)["samples"]}) for line in lines]
        assert model["per_prompt"]["all"]["semantic_clusters"] == distinct, model["name"]
        assert results["lineage"]["models"][model["name"]]["clusters_equal_distinct"] == 1.0
    assert lineage["homogeneity"]["models"] == ["CE", "TOFU", "GEM"]
    assert "## Lineage evaluation (`divalign eval`" in report
    assert (out / "lineage_eval" / "homogeneity.png").stat().st_size > 0
    # the runs went through divalign.train with W&B offline
    assert (out / "ce_sft" / "divalign_recipe.yaml").exists()
    assert any((out / "wandb").glob("offline-run-*"))
