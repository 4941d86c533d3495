"""End to end: the quick toy demo (`--quick`: CE and TOFU × 2 seeds) builds the world and the base model, runs every
cell of the toy compare spec through `divalign compare` (a derived spec under --out), and writes compare's report and
the truth table; numbers of each are recomputed here from what the run saved (the cells' models, compare's
samples)."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from divalign.toyworld.report import EXACT_COLUMNS
from divalign.toyworld.world import ToyWorld, WorldConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = yaml.safe_load((REPO_ROOT / "recipes" / "compare" / "toy.yaml").read_text())
VARIANTS, SEEDS = ["ce", "tofu"], [0, 1]
CELLS = [f"{v}-seed{s}" for v in VARIANTS for s in SEEDS]


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the first markdown table after ``heading``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if i > lines.index(heading) and line.startswith("|"))
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


def valid_share_by_hand(samples_dir: Path, temperature: float, answers: list[set[str]]) -> list[float]:
    """Per evaluation prompt, the share of compare's saved samples at ``temperature`` that are one of its valid answers
    (whitespace runs collapsed: the toy tokenizer decodes words with spaces)."""
    files = [json.loads(p.read_text()) for p in samples_dir.glob("*/evaluation@T*.json")]
    (texts,) = [f["texts"] for f in files if f["temperature"] == temperature]
    return [
        sum(" ".join(t.split()) in valid for t in group) / len(group)
        for group, valid in zip(texts, answers, strict=True)
    ]


def plain_load_stderr(model: Path) -> str:
    """What loading ``model`` with transformers alone (divalign not imported) writes to stderr."""
    code = "import sys, transformers\ntransformers.AutoModelForCausalLM.from_pretrained(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
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
    # the shipped spec, derived under --out: its paths there, the quick plan's variants and seeds
    spec = yaml.safe_load((out / "spec" / "toy.yaml").read_text())
    assert spec["output_root"] == str(out / "compare") and spec["base_model"] == str(out / "base_model")
    assert spec["seeds"] == SEEDS and list(spec["variants"]) == VARIANTS and spec["reference"] == SHIPPED["reference"]
    assert spec["evaluation"]["verifier"] == SHIPPED["evaluation"]["verifier"]
    assert spec["overrides"] == {**SHIPPED["overrides"], "max_steps": 40}
    assert spec["evaluation"]["prompts"] == str(out / "world" / "prompts_eval.jsonl")
    own = ("model_name_or_path", "dataset_name", "output_dir", "diversity")  # what the copies change
    for name, path in spec["variants"].items():
        recipe = yaml.safe_load(Path(path).read_text())
        assert recipe["dataset_name"] == str(out / "world" / "sft.jsonl"), name
        assert recipe["diversity"]["prompts"] == str(out / "world" / "prompts_probe.jsonl"), name
        shipped = yaml.safe_load((REPO_ROOT / SHIPPED["variants"][name]).read_text())
        assert {k: v for k, v in recipe.items() if k not in own} == {k: v for k, v in shipped.items() if k not in own}
    # every cell trained through divalign compare's pipeline (finished markers, the recipe it ran), W&B offline
    compare = json.loads((out / "compare" / "report" / "results.json").read_text())
    assert [c["cell"] for c in compare["cells"]] == CELLS
    for cell in compare["cells"]:
        assert cell["state"] == "finished" and cell["steps"] == [40], cell
        assert (Path(cell["model"]) / "divalign_finished.json").is_file()
        assert (Path(cell["model"]) / "divalign_recipe.yaml").is_file()
    assert any((out / "wandb").glob("offline-run-*"))
    # signs of life where work takes time, no bar for each of the tiny models loaded; the control: transformers
    # alone, loading one of the demo's models, draws that bar under this name (a renamed bar fails here)
    for bar in ("pretrain base model:", "diversity eval, step 0:", "sampling ce (seed 0) (T=1): 100%"):
        assert bar in proc.stderr, bar
    assert "score the cells against the truth: 100%" in proc.stderr
    assert "Loading weights" in plain_load_stderr(out / "base_model")
    assert "Loading weights" not in proc.stderr

    report = (out / "results.md").read_text()
    results = json.loads((out / "results.json").read_text())
    assert "[compare/report/results.md](compare/report/results.md)" in report
    assert results["compare"]["report_json"] == str(out / "compare" / "report" / "results.json")
    world = ToyWorld(WorldConfig(**{**results["world"], "categories": tuple(results["world"]["categories"])}))
    labels = ["truth", "SFT data (truth^2)", "base (plain format)", "base (chat format)"]
    labels += [f"{v} SFT" for v in VARIANTS]
    for heading, expected in (
        ("### SFT categories (seen)", labels),
        ("### held-out categories (never in SFT)", [label for label in labels if label != "SFT data (truth^2)"]),
    ):
        rows = table_rows(report, heading)
        assert rows[0] == ["model", "seeds", *(title for _, title in EXACT_COLUMNS)]
        assert [row[0] for row in rows[2:]] == expected
        for row in rows[2:]:
            assert len(row) == len(EXACT_COLUMNS) + 2 and "nan" not in row
    truth = results["references"]["truth"]["seen"]
    assert truth["validity"] == pytest.approx(1.0) and truth["kl"] == pytest.approx(0.0, abs=1e-9)
    assert truth["entropy"] == pytest.approx(zipf_entropy(len(world.prompts[0].answers), world.config.zipf_exponent))

    # the truth table's ce row, by hand from the cells' saved models: mean ± sample std over the two seeds
    cells = out / "compare" / "cells"
    by_seed = [exact_by_hand(cells / f"ce-seed{s}" / "ce_sft", out / "base_model", world) for s in SEEDS]
    assert by_seed[0] != by_seed[1]  # the seed changed the run
    ce_row = next(row for row in table_rows(report, "### SFT categories (seen)") if row[0] == "ce SFT")
    assert ce_row[1] == "0, 1"
    for column, values in ((2, [v for v, _ in by_seed]), (5, [e for _, e in by_seed])):
        mean, std = (float(x) for x in ce_row[column].split(" ± "))
        assert mean == pytest.approx(statistics.fmean(values), abs=5e-4 + 1e-6)
        assert std == pytest.approx(statistics.stdev(values), abs=5e-4 + 1e-6)

    # compare's quality difference at ce's diversity, by hand from its saved samples: the valid share of each
    # evaluation prompt's samples, the variant at its matched temperature minus ce at the reference temperature
    prompts = [json.loads(line) for line in (out / "world" / "prompts_eval.jsonl").read_text().splitlines()]
    by_text = {p.text: set(p.answers) for p in world.prompts}
    answers = [by_text[row["prompt"][0]["content"]] for row in prompts]
    samples = out / "compare" / "report" / "calibration" / "samples"
    calibration = compare["calibration"]
    heading = "## Calibrated comparison (`divalign compare`; [compare/report/results.md](compare/report/results.md))"
    shown = {row[0]: row for row in table_rows(report, heading)[2:]}
    by_hand = []
    for seed in SEEDS:
        reference = valid_share_by_hand(samples / "ce" / f"seed{seed}", calibration["reference_temperature"], answers)
        entry = calibration["seeds"][str(seed)]["matched"]["tofu"]["at_diversity"]
        if entry.get("temperature") is None:
            continue
        mine = valid_share_by_hand(samples / "tofu" / f"seed{seed}", entry["temperature"], answers)
        by_hand.append(statistics.fmean(a - b for a, b in zip(mine, reference, strict=True)))
        assert entry["quality_difference"]["estimate"] == pytest.approx(by_hand[-1], abs=1e-9), seed
    assert by_hand, "tofu matched ce's diversity at no seed"
    # pooled over the matched seeds: per prompt the mean over seeds, then over prompts (every prompt has a share)
    assert float(shown["tofu"][1].split()[0]) == pytest.approx(statistics.fmean(by_hand), abs=5e-4 + 1e-9)
    assert (out / "validity_vs_coverage.png").stat().st_size > 0


def test_a_plan_naming_a_variant_the_spec_lacks_is_refused_before_anything_is_written(tmp_path):
    from dataclasses import replace

    import divalign.toyworld.demo as demo

    with pytest.raises(ValueError, match=r"Plan.variants: \['nope'\] are not variants of recipes/compare/toy.yaml"):
        demo.derive_spec(tmp_path, replace(demo.QUICK, variants=("nope",)))
    assert list(tmp_path.iterdir()) == []
