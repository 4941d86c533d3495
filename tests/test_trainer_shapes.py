"""Real runs through `divalign.train` on the shapes real datasets have: a short last batch, several epochs, gradient
accumulation with a remainder, an eval split of odd size.

61 rows at batch 4 leave a last batch of one row, and completions of 1 to 7 words make every batch padded; TOFU at
γ = 0, β = 1 is cross-entropy and GEM-linear at β = 1 has the cross-entropy gradient with the value nll − entropy, so
TRL's own `sft` run on the same shapes is their reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from datasets import Dataset, DatasetDict
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from divalign.launch.train import main, run_stage
from divalign.smoke import build_smoke_assets, prompt_completion_rows, write_jsonl
from launching import cpu_accelerate_config
from launching import launch_train as launch

REPO = Path(__file__).resolve().parents[1]
SMOKE_RECIPE = REPO / "recipes" / "smoke" / "tofu_smoke.yaml"
TRAIN_ROWS, EVAL_ROWS = 61, 13
LOSS_BLOCKS = {
    "sft": {},
    "ce_tofu": {"trainer": "tofu", "tofu_gamma": 0.0, "tofu_beta": 1.0},
    "tofu": {"trainer": "tofu", "tofu_gamma": 3.0, "tofu_beta": 0.8},
    "ce_gem": {"trainer": "gem", "gem_beta": 1.0, "gem_h": "linear"},
    "gem": {"trainer": "gem", "gem_beta": 0.7, "gem_h": "linear"},
}
LOGGED = ("loss", "entropy", "mean_token_accuracy", "num_tokens")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """The smoke model, `odd.jsonl` (61 rows) and `split/` (a saved train 61 / test 13 dataset)."""
    root = build_smoke_assets(tmp_path_factory.mktemp("shapes"))
    rows = prompt_completion_rows(TRAIN_ROWS + EVAL_ROWS, seed=1)
    for index, row in enumerate(rows):
        words = row["completion"][0]["content"].split() * 3
        row["completion"] = [{"role": "assistant", "content": " ".join(words[: 1 + index * 5 % 7])}]
    write_jsonl(root / "odd.jsonl", rows[:TRAIN_ROWS])
    split = DatasetDict(train=Dataset.from_list(rows[:TRAIN_ROWS]), test=Dataset.from_list(rows[TRAIN_ROWS:]))
    split.save_to_disk(str(root / "split"))
    return root


def write_recipe(directory: Path, kind: str, **extra) -> Path:
    recipe = {k: v for k, v in yaml.safe_load(SMOKE_RECIPE.read_text()).items() if not k.startswith("tofu_")}
    recipe.update({"trainer": "sft", **LOSS_BLOCKS[kind], **extra})
    path = directory / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def shape_flags(assets: Path, output_dir: Path, dataset: str = "odd.jsonl", **overrides) -> list[str]:
    flags = {
        "model_name_or_path": assets / "model",
        "dataset_name": assets / dataset,
        "output_dir": output_dir,
        "max_steps": -1,
        "num_train_epochs": 2,
        "per_device_train_batch_size": 4,
        "logging_steps": 1,
        "save_strategy": "no",
        **overrides,
    }
    return [item for key, value in flags.items() for item in (f"--{key}", str(value))]


def train(assets: Path, tmp_path: Path, kind: str, dataset: str = "odd.jsonl", **overrides) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / kind
    run_stage(str(write_recipe(tmp_path, kind)), shape_flags(assets, out, dataset, **overrides))
    return out


def history(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


def train_logs(output_dir: Path) -> list[dict]:
    return train_logs_of(history(output_dir))


def train_logs_of(entries: list[dict]) -> list[dict]:
    return [entry for entry in entries if "loss" in entry]


def column(entries: list[dict], key: str) -> list[float]:
    return [entry[key] for entry in entries]


def assert_same_models(a: Path, b: Path, atol: float = 1e-5) -> None:
    left, right = AutoModelForCausalLM.from_pretrained(a), AutoModelForCausalLM.from_pretrained(b)
    for (name, x), y in zip(left.named_parameters(), right.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=atol, msg=f"parameter {name} differs")


def test_tofu_as_cross_entropy_logs_what_trl_logs_over_two_epochs(assets, tmp_path):
    """61 rows, batch 4, 2 epochs: 32 steps whose 16th and 32nd have one row; every logged value equals TRL's."""
    sft = train_logs(train(assets, tmp_path, "sft"))
    tofu_out = train(assets, tmp_path, "ce_tofu")
    tofu = train_logs(tofu_out)
    assert column(tofu, "step") == column(sft, "step") == list(range(1, 33))
    assert column(tofu, "epoch")[15] == 1.0 and column(tofu, "epoch")[-1] == 2.0
    for key in LOGGED:
        assert column(tofu, key) == pytest.approx(column(sft, key), rel=1e-5), key
    assert column(tofu, "nll") == pytest.approx(column(sft, "loss"), rel=1e-5)
    # the last batch of each epoch (one row) counts its own tokens only
    tokens = column(sft, "num_tokens")
    assert tokens[15] - tokens[14] < (tokens[14] - tokens[13]) / 2
    assert_same_models(tofu_out, tmp_path / "sft")


def test_gem_at_beta_one_is_cross_entropy_minus_entropy(assets, tmp_path):
    """GEM-linear at β = 1: the CE gradient (same weights as TRL's run) and the value nll − H(p), step by step."""
    sft = train_logs(train(assets, tmp_path, "sft"))
    gem = train_logs(train(assets, tmp_path, "ce_gem"))
    assert len(gem) == 32
    expected = [entry["loss"] - entry["entropy"] for entry in sft]
    assert column(gem, "loss") == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert column(gem, "nll") == pytest.approx(column(sft, "loss"), rel=1e-5)
    for key in LOGGED[1:]:
        assert column(gem, key) == pytest.approx(column(sft, key), rel=1e-5), key
    assert_same_models(tmp_path / "ce_gem", tmp_path / "sft")


@pytest.mark.parametrize("kind", ["tofu", "gem"])
def test_gradient_accumulation_with_a_remainder(assets, tmp_path, kind):
    """Batch 4 × accumulation 3 on 61 rows: per epoch five updates of 12 rows and one of a single row, exactly the
    updates of batch 12 without accumulation (TRL's token-sum reduction over the accumulated micro-batches)."""
    accumulated = train(assets, tmp_path / "a", kind, gradient_accumulation_steps=3)
    single = train(assets, tmp_path / "b", kind, per_device_train_batch_size=12)
    logs_a, logs_b = train_logs(accumulated), train_logs(single)
    assert column(logs_a, "step") == column(logs_b, "step") == list(range(1, 13))
    for key in ("loss", "num_tokens"):
        assert column(logs_a, key) == pytest.approx(column(logs_b, key), rel=1e-4, abs=1e-6), key
    assert_same_models(accumulated, single, atol=1e-5)


def test_gradient_accumulation_metrics_are_trls(assets, tmp_path):
    """With accumulation TRL averages each micro-batch's metric; TOFU as CE logs exactly TRL's values."""
    sft = train_logs(train(assets, tmp_path, "sft", gradient_accumulation_steps=3))
    tofu = train_logs(train(assets, tmp_path, "ce_tofu", gradient_accumulation_steps=3))
    assert column(tofu, "step") == list(range(1, 13))
    for key in LOGGED:
        assert column(tofu, key) == pytest.approx(column(sft, key), rel=1e-5), key
    assert_same_models(tmp_path / "ce_tofu", tmp_path / "sft")


@pytest.mark.parametrize(("kind", "flag", "value"), [("tofu", "tofu_beta", "nan"), ("tofu", "tofu_gamma", "inf"),
                                                 ("gem", "gem_beta", "-inf"), ("gem", "gem_beta", "NaN")])  # fmt: skip
def test_non_finite_loss_values_on_the_command_line_are_refused(assets, tmp_path, kind, flag, value, capsys):
    """`--tofu_beta nan` used to exit 0 and save an all-NaN model: now an error naming the key, before training."""
    out = tmp_path / "run"
    argv = [str(write_recipe(tmp_path, kind)), *shape_flags(assets, out), f"--{flag}={value}"]
    assert main(argv) == 1
    assert f"`{flag}` must be a finite number" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists()


def test_non_finite_loss_value_in_a_recipe_is_refused(assets, tmp_path, capsys):
    recipe = write_recipe(tmp_path, "tofu", tofu_gamma=float("inf"))
    assert ".inf" in recipe.read_text()
    assert main([str(recipe), *shape_flags(assets, tmp_path / "run")]) == 1
    assert "`tofu_gamma` must be a finite number >= 0, got inf" in capsys.readouterr().err


def reference_eval(model_dir: Path, eval_rows: list[dict], kind: str, batch_size: int) -> dict[str, float]:
    """The eval metrics recomputed from the model's full logits, batch by batch, on TRL's own eval batches.

    Trainer's `eval_loss` weighs each batch's loss by its rows; the metrics, like TRL's entropy, average batch means.
    """
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = SFTConfig(output_dir=str(model_dir / "ref"), use_cpu=True, report_to="none", max_length=64,
                     per_device_eval_batch_size=batch_size)  # fmt: skip
    rows = Dataset.from_list(eval_rows)
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, eval_dataset=rows, processing_class=tokenizer)
    batches = []
    with torch.no_grad():
        for batch in trainer.get_eval_dataloader():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            mask = labels != -100
            log_p = F.log_softmax(logits.double(), -1)
            nll = -log_p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask].mean()
            entropy = -(log_p.exp() * log_p).sum(-1)[mask].mean()
            accuracy = (logits.argmax(-1) == labels)[mask].double().mean()
            loss = nll if kind == "ce_tofu" else nll - entropy  # GEM-linear at β = 1: Σ_v p_v log p_v − log p_y
            batches.append((loss, nll, entropy, accuracy, len(batch["input_ids"])))
    loss, nll, entropy, accuracy, rows = torch.tensor(batches, dtype=torch.float64).unbind(1)
    return {
        "eval_loss": float((loss * rows).sum() / rows.sum()),
        "eval_nll": float(nll.mean()),
        "eval_entropy": float(entropy.mean()),
        "eval_mean_token_accuracy": float(accuracy.mean()),
    }


EVAL_FLAGS = {"eval_strategy": "steps", "eval_steps": 16, "per_device_eval_batch_size": 4}


def eval_logs(output_dir: Path) -> list[dict]:
    return [entry for entry in history(output_dir) if "eval_loss" in entry]


@pytest.mark.parametrize("kind", ["ce_tofu", "ce_gem"])
def test_eval_on_an_odd_split_equals_trl_and_the_full_logits(assets, tmp_path, kind):
    """13 eval rows in batches of 4, 4, 4, 1 at steps 16 and 32: TRL's eval_entropy and eval_mean_token_accuracy
    (and, for TOFU as CE, its eval_loss), and at the end every eval_* recomputed from the saved model's logits."""
    sft = eval_logs(train(assets, tmp_path, "sft", "split", **EVAL_FLAGS))
    ours_dir = train(assets, tmp_path, kind, "split", **EVAL_FLAGS)
    ours = eval_logs(ours_dir)
    assert column(ours, "step") == column(sft, "step") == [16, 32]
    keys = ["eval_entropy", "eval_mean_token_accuracy"] + (["eval_loss"] if kind == "ce_tofu" else [])
    for key in keys:
        assert column(ours, key) == pytest.approx(column(sft, key), rel=1e-5), key
    eval_rows = DatasetDict.load_from_disk(str(assets / "split"))["test"].to_list()
    reference = reference_eval(ours_dir, eval_rows, kind, batch_size=4)
    for key, value in reference.items():
        assert ours[-1][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


# Two processes: rank 0 and rank 1 take alternate batches of 4, so 61 rows give 8 steps per epoch whose last pairs a
# full batch with a single row. accelerate's default `even_batches` pads that row's batch with 3 rows from the start of
# the data (both TRL and divalign then train and log on them); with it off, rank 1's last batch has one row.
UNEVEN = {"accelerator_config": {"even_batches": False}}


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "accumulation"), [("tofu", 1), ("gem", 3)])
def test_two_processes_with_uneven_last_batches_train_like_one(assets, tmp_path, kind, accumulation):
    """Rank 1's last batch is one row against rank 0's four: every logged value and the final weights equal one
    process on batches of 8 (TRL's token-sum reduction across ranks, and the metrics summed over ranks)."""
    two = tmp_path / "two"
    flags = shape_flags(assets, two, gradient_accumulation_steps=accumulation)
    launch(write_recipe(tmp_path, kind, **UNEVEN), cpu_accelerate_config("ddp", tmp_path), flags)
    one = train(assets, tmp_path / "one", kind, per_device_train_batch_size=8, gradient_accumulation_steps=accumulation)
    logs_two, logs_one = train_logs(two), train_logs(one)
    steps = -(-8 // accumulation) * 2
    assert column(logs_two, "step") == column(logs_one, "step") == list(range(1, steps + 1))
    for key in ("loss", "nll", "entropy", "mean_token_accuracy", "num_tokens"):
        assert column(logs_two, key) == pytest.approx(column(logs_one, key), rel=1e-4, abs=1e-6), key
    assert_same_models(two, one)


@pytest.mark.slow
def test_two_processes_log_what_trl_logs_with_padded_last_batches(assets, tmp_path):
    """Default `even_batches`, an eval split of 13 rows over 2 × 4: TOFU as CE logs TRL's train and eval values."""
    flags = {"eval_strategy": "steps", "eval_steps": 8, "per_device_eval_batch_size": 4}
    config = cpu_accelerate_config("ddp", tmp_path)
    logs = {}
    for kind in ("sft", "ce_tofu"):
        out = tmp_path / kind
        launch(write_recipe(tmp_path, kind), config, shape_flags(assets, out, "split", **flags))
        logs[kind] = history(out)
    train_sft, train_tofu = (train_logs_of(logs[k]) for k in ("sft", "ce_tofu"))
    assert column(train_tofu, "step") == list(range(1, 17))
    for key in LOGGED:
        assert column(train_tofu, key) == pytest.approx(column(train_sft, key), rel=1e-5), key
    eval_sft, eval_tofu = ([e for e in logs[k] if "eval_loss" in e] for k in ("sft", "ce_tofu"))
    assert column(eval_tofu, "step") == [8, 16]
    for key in ("eval_loss", "eval_entropy", "eval_mean_token_accuracy"):
        assert column(eval_tofu, key) == pytest.approx(column(eval_sft, key), rel=1e-5), key
    assert_same_models(tmp_path / "ce_tofu", tmp_path / "sft")
