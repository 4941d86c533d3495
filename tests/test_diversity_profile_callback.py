"""The recipe's `diversity.profile` key: validated, used by the callback's metrics, and recorded in the W&B run."""

from __future__ import annotations

import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from divalign.callback import DiversityCallback, DiversityConfig
from divalign.diversity import compute_diversity
from divalign.diversity.profile import embedding_model_for

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from diversity_tiny import save_tiny_policy, train_records, write_probe_prompts


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_policy(tmp_path_factory.mktemp("policy"))


@pytest.fixture
def probe_file(tmp_path: Path) -> Path:
    return write_probe_prompts(tmp_path / "probe.jsonl")


def train(policy: Path, out: Path, config: DiversityConfig, **args) -> tuple[SFTTrainer, DiversityCallback]:
    settings = dict(output_dir=str(out), max_steps=1, per_device_train_batch_size=4, learning_rate=5e-2,
                    logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    settings.update(args)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy),
        args=SFTConfig(**settings),
        train_dataset=datasets.Dataset.from_list(train_records(8)),
        processing_class=AutoTokenizer.from_pretrained(policy),
    )
    callback = DiversityCallback(config)
    trainer.add_callback(callback.bind(trainer))
    trainer.train()
    return trainer, callback


def probe_config(probe: Path, **overrides) -> DiversityConfig:
    settings = dict(prompts=str(probe), every_steps=5, samples_per_prompt=4, max_new_tokens=8, table_every_steps=0,
                    metrics=["ead", "exact_dup_rate"], embedding_model=None, batch_size=3, evaluate_last_step=False)
    settings.update(overrides)
    return DiversityConfig(**settings)


def karouzos_ead(texts: list[str], vocab: int) -> float:
    """EAD as the paper's description defines it: whitespace words after deleting '.' and newlines, n = 1..5, an
    order with no n-gram scores 0, each order clamped at 1, the plain mean of the five."""
    values = []
    for n in range(1, 6):
        words = [t.replace(".", "").replace("\n", "").split() for t in texts]
        grams = [tuple(w[i : i + n]) for w in words for i in range(len(w) - n + 1)]
        expected = vocab * (1 - ((vocab - 1) / vocab) ** len(grams))
        values.append(min(1.0, len(set(grams)) / expected) if grams else 0.0)
    return sum(values) / 5


def test_profile_key_is_validated_and_picks_the_embedder():
    config = DiversityConfig.from_dict({"prompts": "p.txt", "profile": "karouzos2026"})
    assert config.profile == "karouzos2026" and config.embedding_model == "auto"
    assert embedding_model_for(config.profile, config.embedding_model) == "sentence-transformers/all-mpnet-base-v2"
    with pytest.raises(ValueError, match=r"Unknown metric profile 'paper'; valid profiles: divalign, karouzos2026"):
        DiversityConfig.from_dict({"prompts": "p.txt", "profile": "paper"})
    with pytest.raises(ValueError, match=r"diversity\.profile must be of type str"):
        DiversityConfig.from_dict({"prompts": "p.txt", "profile": 2026})


def test_callback_scores_with_the_profile(policy_dir: Path, probe_file: Path, tmp_path: Path):
    trainer, callback = train(policy_dir, tmp_path / "out", probe_config(probe_file, profile="karouzos2026"))
    (logged,) = [e for e in trainer.state.log_history if "diversity/ead" in e]
    groups = callback.last_samples["samples"]
    vocab = len(trainer.processing_class)
    assert logged["diversity/ead"] == pytest.approx(np.mean([karouzos_ead(g, vocab) for g in groups]))
    assert logged["diversity/ead_across"] == pytest.approx(karouzos_ead([g[0] for g in groups], vocab))
    default = compute_diversity(groups, callback.last_samples["token_ids"], metrics=["ead"], vocab_size=vocab)
    assert default["ead"] != pytest.approx(logged["diversity/ead"])  # the divalign profile scores differently


def test_wandb_run_config_names_the_profile(
    policy_dir: Path, probe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    wandb = pytest.importorskip("wandb")
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true",
                       "WANDB_PROJECT": "divalign-test", "WANDB_X_DISABLE_STATS": "true", "WANDB_DISABLE_GIT": "true",
                       "WANDB_X_DISABLE_META": "true", "WANDB_X_DISABLE_MACHINE_INFO": "true"}.items():
        monkeypatch.setenv(key, value)
    try:
        train(policy_dir, tmp_path / "out", probe_config(probe_file, profile="tofu2026"), report_to=["wandb"])
        assert wandb.run.config["diversity_profile"] == "tofu2026"
    finally:
        wandb.finish()
        wandb.teardown()  # flushes the offline run file
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (records,) = run_dir.glob("run-*.wandb")
    data = records.read_bytes()
    assert b"diversity_profile" in data and b'"tofu2026"' in data
