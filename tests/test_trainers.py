"""TOFU and GEM trainers train real tiny models through TRL, with TRL's reduction, LoRA and the SFT masks."""

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

from divalign import GEMConfig, GEMTrainer, TOFUConfig, TOFUTrainer
from divalign.smoke import build_model, build_tokenizer, messages_rows, prompt_completion_rows

COMMON = {
    "use_cpu": True,
    "bf16": False,
    "report_to": "none",
    "seed": 0,
    "learning_rate": 3e-3,
    "logging_steps": 1,
    "save_strategy": "no",
    "gradient_checkpointing": False,
    "per_device_train_batch_size": 4,
    "max_steps": 4,
}


def train(trainer_class, config_class, tmp_path, dataset=None, peft_config=None, **overrides):
    tokenizer = build_tokenizer()
    args = config_class(output_dir=str(tmp_path / trainer_class.__name__), **{**COMMON, **overrides})
    trainer = trainer_class(
        model=build_model(tokenizer),
        args=args,
        train_dataset=dataset if dataset is not None else Dataset.from_list(prompt_completion_rows(32)),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    return trainer


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry and "train_runtime" not in entry]


def weights(trainer):
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


def assert_same_weights(a, b, atol=1e-5):
    for name, tensor in a.items():
        torch.testing.assert_close(tensor, b[name], atol=atol, rtol=1e-4, msg=f"parameter {name} differs")


@pytest.mark.parametrize(("trainer_class", "config_class"), [(TOFUTrainer, TOFUConfig), (GEMTrainer, GEMConfig)])
def test_tiny_model_learns(tmp_path, trainer_class, config_class):
    trainer = train(trainer_class, config_class, tmp_path, max_steps=30, logging_steps=10)
    nll = logged(trainer, "nll")
    assert len(nll) == 3 and nll[-1] < nll[0] - 0.3, nll
    for key in ("entropy", "mean_token_accuracy", "num_tokens"):
        assert logged(trainer, key), f"{key} not logged"


def test_tofu_at_gamma_zero_beta_one_trains_exactly_like_trl_nll(tmp_path):
    """γ = 0, β = 1 makes TOFU plain cross-entropy: same losses and weights as TRL's own loss, accumulation included."""
    sft = train(SFTTrainer, SFTConfig, tmp_path, gradient_accumulation_steps=2, max_steps=3)
    tofu = train(
        TOFUTrainer, TOFUConfig, tmp_path, gradient_accumulation_steps=2, max_steps=3, tofu_gamma=0.0, tofu_beta=1.0
    )
    assert logged(tofu, "loss") == pytest.approx(logged(sft, "loss"), rel=1e-5)
    assert logged(tofu, "nll") == pytest.approx(logged(sft, "loss"), rel=1e-5)
    assert logged(tofu, "entropy") == pytest.approx(logged(sft, "entropy"), rel=1e-5)
    assert logged(tofu, "num_tokens") == logged(sft, "num_tokens")
    assert_same_weights(weights(tofu), weights(sft))


@pytest.mark.parametrize(("trainer_class", "config_class"), [(TOFUTrainer, TOFUConfig), (GEMTrainer, GEMConfig)])
def test_gradient_accumulation_1x4_equals_4x1(tmp_path, trainer_class, config_class):
    big = train(trainer_class, config_class, tmp_path / "a", per_device_train_batch_size=4, max_steps=3)
    small = train(
        trainer_class,
        config_class,
        tmp_path / "b",
        per_device_train_batch_size=1,
        gradient_accumulation_steps=4,
        max_steps=3,
    )
    assert logged(small, "loss") == pytest.approx(logged(big, "loss"), rel=1e-4, abs=1e-5)
    assert_same_weights(weights(small), weights(big))


def test_assistant_only_loss_matches_trl(tmp_path):
    dataset = Dataset.from_list(messages_rows(32))
    sft = train(SFTTrainer, SFTConfig, tmp_path, dataset=dataset, assistant_only_loss=True)
    tofu = train(
        TOFUTrainer, TOFUConfig, tmp_path, dataset=dataset, assistant_only_loss=True, tofu_gamma=0.0, tofu_beta=1.0
    )
    assert logged(tofu, "loss") == pytest.approx(logged(sft, "loss"), rel=1e-5)


def test_gradient_checkpointing_does_not_change_training(tmp_path):
    plain = train(GEMTrainer, GEMConfig, tmp_path / "a", max_steps=2)
    checkpointed = train(GEMTrainer, GEMConfig, tmp_path / "b", max_steps=2, gradient_checkpointing=True)
    assert logged(checkpointed, "loss") == pytest.approx(logged(plain, "loss"), rel=1e-5)


def test_lora_trains_only_the_adapters(tmp_path):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    before = {n: p.detach().clone() for n, p in build_model(build_tokenizer()).named_parameters()}
    trainer = train(TOFUTrainer, TOFUConfig, tmp_path, peft_config=lora, max_steps=3)
    changed = {
        name
        for name, p in trainer.model.named_parameters()
        if "lora_" not in name
        and not torch.equal(p.detach(), before[name.replace("base_model.model.", "").replace(".base_layer", "")])
    }
    assert not changed, f"frozen base weights changed: {sorted(changed)[:3]}"
    lora_weights = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_weights and any(p.abs().sum() > 0 for p in lora_weights)
    assert logged(trainer, "nll")


def test_compute_loss_func_is_refused(tmp_path):
    tokenizer = build_tokenizer()
    with pytest.raises(ValueError, match="compute_loss_func"):
        TOFUTrainer(
            model=build_model(tokenizer),
            args=TOFUConfig(output_dir=str(tmp_path), **COMMON),
            train_dataset=Dataset.from_list(prompt_completion_rows(4)),
            processing_class=tokenizer,
            compute_loss_func=lambda *a, **k: 0,
        )


@pytest.mark.parametrize(
    ("config_class", "key", "value", "message"),
    [
        (TOFUConfig, "tofu_beta", 0.0, "`tofu_beta` must be > 0"),
        (TOFUConfig, "tofu_beta", "hot", "`tofu_beta` must be a number"),
        (TOFUConfig, "tofu_gamma", -1.0, "`tofu_gamma` must be >= 0"),
        (GEMConfig, "gem_beta", -0.5, "`gem_beta` must be > 0"),
        (GEMConfig, "gem_h", "square", "`gem_h` must be one of"),
        (GEMConfig, "loss_type", "dft", "cannot be combined with GEMConfig"),
        (TOFUConfig, "loss_head", "magic", "`loss_head` must be one of"),
        (TOFUConfig, "loss_chunk_rows", 0, "`loss_chunk_rows` must be >= 1"),
        (TOFUConfig, "tofu_beta", float("nan"), "`tofu_beta` must be a finite number > 0, got nan"),
        (TOFUConfig, "tofu_beta", float("inf"), "`tofu_beta` must be a finite number > 0, got inf"),
        (TOFUConfig, "tofu_gamma", float("nan"), "`tofu_gamma` must be a finite number >= 0, got nan"),
        (TOFUConfig, "tofu_gamma", float("inf"), "`tofu_gamma` must be a finite number >= 0, got inf"),
        (GEMConfig, "gem_beta", float("nan"), "`gem_beta` must be a finite number > 0, got nan"),
        (GEMConfig, "gem_beta", float("-inf"), "`gem_beta` must be a finite number > 0, got -inf"),
    ],
)
def test_bad_hyper_parameters_are_refused_at_construction(tmp_path, config_class, key, value, message):
    with pytest.raises(ValueError, match=message):
        config_class(output_dir=str(tmp_path), use_cpu=True, **{key: value})


def test_qlora_trains_a_4bit_base(tmp_path):
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from divalign.smoke import save_tiny_model

    path = save_tiny_model(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=BitsAndBytesConfig(load_in_4bit=True))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = TOFUTrainer(
        model=model,
        args=TOFUConfig(output_dir=str(tmp_path / "out"), **{**COMMON, "max_steps": 3}),
        train_dataset=Dataset.from_list(prompt_completion_rows(16)),
        processing_class=build_tokenizer(),
        peft_config=lora,
    )
    trainer.train()
    nll = logged(trainer, "nll")
    assert len(nll) == 3 and all(torch.isfinite(torch.tensor(nll)))
    assert any(p.abs().sum() > 0 for n, p in trainer.model.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize(("trainer_class", "config_class"), [(TOFUTrainer, TOFUConfig), (GEMTrainer, GEMConfig)])
def test_fused_head_trains_like_the_reference(tmp_path, trainer_class, config_class):
    reference = train(trainer_class, config_class, tmp_path / "a", loss_head="reference", max_steps=3)
    fused = train(trainer_class, config_class, tmp_path / "b", loss_head="fused", max_steps=3)
    assert logged(fused, "loss") == pytest.approx(logged(reference, "loss"), rel=1e-5, abs=1e-6)
    assert logged(fused, "entropy") == pytest.approx(logged(reference, "entropy"), rel=1e-5)
    assert_same_weights(weights(fused), weights(reference))


def test_packed_padding_free_batches_match_trl(tmp_path):
    """Packing (padding-free rows with position_ids) goes through the same head; γ = 0, β = 1 equals TRL's nll."""
    sft = train(SFTTrainer, SFTConfig, tmp_path / "a", packing=True, max_length=64, max_steps=2)
    tofu = train(TOFUTrainer, TOFUConfig, tmp_path / "b", packing=True, max_length=64, max_steps=2, tofu_gamma=0.0,
                 tofu_beta=1.0)  # fmt: skip
    assert logged(tofu, "loss") == pytest.approx(logged(sft, "loss"), rel=1e-5)
    assert logged(tofu, "num_tokens") == logged(sft, "num_tokens")


def evaluation(trainer_class, config_class, tmp_path, compute_metrics=None, **overrides):
    """``(metrics, full-logits forwards, predictions seen by compute_metrics)`` of one evaluate() on 13 rows."""
    tokenizer = build_tokenizer()
    args = config_class(output_dir=str(tmp_path / trainer_class.__name__), per_device_eval_batch_size=4,
                        **{**COMMON, **overrides})  # fmt: skip
    seen = []

    def record(prediction):
        seen.append(prediction)
        return compute_metrics(prediction)

    trainer = trainer_class(
        model=build_model(tokenizer),
        args=args,
        train_dataset=Dataset.from_list(prompt_completion_rows(8)),
        eval_dataset=Dataset.from_list(prompt_completion_rows(13, seed=3)),
        processing_class=tokenizer,
        compute_metrics=None if compute_metrics is None else record,
    )
    full_logits_calls = []
    trainer.model.lm_head.register_forward_hook(lambda *_: full_logits_calls.append(1))
    metrics = trainer.evaluate()
    return metrics, len(full_logits_calls), seen


CE_TOFU = {"tofu_gamma": 0.0, "tofu_beta": 1.0}


def test_eval_loss_only_runs_no_full_logits_forward(tmp_path):
    """Without compute_metrics (or with prediction_loss_only) the eval is the head alone, as TRL's SFT eval is."""
    metrics, calls, _ = evaluation(TOFUTrainer, TOFUConfig, tmp_path / "a", **CE_TOFU)
    assert calls == 0
    assert {"eval_loss", "eval_nll", "eval_entropy", "eval_mean_token_accuracy"} <= metrics.keys()
    sft_metrics, sft_calls, _ = evaluation(SFTTrainer, SFTConfig, tmp_path / "b")
    assert sft_calls == 0
    for key in ("eval_loss", "eval_entropy", "eval_mean_token_accuracy"):
        assert metrics[key] == pytest.approx(sft_metrics[key], rel=1e-5), key
    _, calls, seen = evaluation(
        TOFUTrainer, TOFUConfig, tmp_path / "c", compute_metrics=lambda p: {}, prediction_loss_only=True, **CE_TOFU
    )
    assert calls == 0 and seen == []


def test_eval_with_compute_metrics_gets_trls_logits_and_labels(tmp_path):
    """prediction_loss_only false: compute_metrics sees the same full logits and labels as under TRL's SFT."""

    def token_accuracy(prediction):
        logits, labels = prediction.predictions[:, :-1], prediction.label_ids[:, 1:]
        mask = labels != -100
        return {"acc": float((logits.argmax(-1) == labels)[mask].mean())}

    ours, calls, seen = evaluation(TOFUTrainer, TOFUConfig, tmp_path / "a", compute_metrics=token_accuracy, **CE_TOFU)
    trl, _, trl_seen = evaluation(SFTTrainer, SFTConfig, tmp_path / "b", compute_metrics=token_accuracy)
    assert calls == 4  # one full-logits forward per eval batch (4, 4, 4, 1 rows), as TRL does
    (prediction,), (trl_prediction,) = seen, trl_seen
    assert prediction.predictions.shape == trl_prediction.predictions.shape and prediction.predictions.shape[0] == 13
    torch.testing.assert_close(torch.tensor(prediction.predictions), torch.tensor(trl_prediction.predictions))
    assert (prediction.label_ids == trl_prediction.label_ids).all()
    assert ours["eval_acc"] == trl["eval_acc"] == pytest.approx(ours["eval_mean_token_accuracy"], abs=0.1)
    assert ours["eval_loss"] == pytest.approx(trl["eval_loss"], rel=1e-5)


@pytest.mark.parametrize("head", ["reference", "fused"])
@pytest.mark.parametrize(("trainer_class", "config_class"), [(TOFUTrainer, TOFUConfig), (GEMTrainer, GEMConfig)])
def test_a_batch_without_trainable_tokens_gives_zero_loss_and_zero_gradients(
    tmp_path, trainer_class, config_class, head
):
    """Every label −100 (a batch of prompts cut before their completions): the loss is exactly 0 and every gradient
    exactly 0, whether `num_items_in_batch` is None (the batch's own count, 0) or 0 — never 0/0."""
    tokenizer = build_tokenizer()
    trainer = trainer_class(
        model=build_model(tokenizer),
        args=config_class(output_dir=str(tmp_path), loss_head=head, **COMMON),
        train_dataset=Dataset.from_list(prompt_completion_rows(4)),
        processing_class=tokenizer,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    batch["labels"] = torch.full_like(batch["labels"], -100)
    trainer.model.train()
    for num_items_in_batch in (None, 0, torch.tensor(0)):
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=num_items_in_batch)
        loss.backward()
        assert loss.item() == 0.0 and torch.isfinite(loss)
        grads = [p.grad for p in trainer.model.parameters() if p.requires_grad]
        assert all(g is None or torch.count_nonzero(g) == 0 for g in grads), num_items_in_batch
        assert any(g is not None for g in grads)  # the backward reached the weights: zeros, not skipped
