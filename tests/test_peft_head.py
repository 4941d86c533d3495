"""PEFT on the LM head: the loss head trains the adapter exactly, or the trainer refuses to be built.

Reference: the same PEFT model's ordinary forward (its full logits, through PEFT's own wrappers) and the per-token
loss with TRL's reduction. LoRA adapters start random (`init_lora_weights=False`) so they shape the logits and every
adapter weight gets a gradient; LoRA dropout is replaced by a deterministic mask (a function of each value), so the
loss head and the reference drop the same entries; models run in float64 for a tight comparison.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from peft import IA3Config, LoraConfig, TrainableTokensConfig
from transformers import PhiConfig, PhiForCausalLM

from divalign import GEMConfig, GEMTrainer, TOFUConfig, TOFUTrainer
from divalign.heads.losses import IGNORE_INDEX, gem_per_token, tofu_per_token
from divalign.heads.operands import UnsupportedHeadError, resolve_head
from divalign.smoke import build_model, build_tokenizer, prompt_completion_rows


class ValueMaskDropout(torch.nn.Module):
    """Dropout with p = 0.3 whose mask is a function of each input value: the same entries drop on every call."""

    def forward(self, x):
        keep = torch.frac(x * 997.0).abs() > 0.3
        return x * keep / 0.7


def llama(tied: bool):
    return build_model(build_tokenizer(), tie_word_embeddings=tied, initializer_range=0.3).double()


def phi_with_head_bias():
    tokenizer = build_tokenizer()
    config = PhiConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, initializer_range=0.3, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    return PhiForCausalLM(config).double()


def lora(*modules, **extra):
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=list(modules), init_lora_weights=False,
                      task_type="CAUSAL_LM", **extra)  # fmt: skip


LOSSES = {
    "tofu": (TOFUTrainer, TOFUConfig, {"tofu_gamma": 3.0, "tofu_beta": 0.8}),
    "gem-logsigmoid": (GEMTrainer, GEMConfig, {"gem_beta": 0.7, "gem_h": "logsigmoid"}),
}


def build_trainer(tmp_path, model, peft_config, loss="tofu", head="reference"):
    trainer_class, config_class, hyper = LOSSES[loss]
    args = config_class(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=8,
                        max_length=64, loss_head=head, **hyper)  # fmt: skip
    return trainer_class(model=model, args=args, train_dataset=Dataset.from_list(prompt_completion_rows(8)),
                         processing_class=build_tokenizer(), peft_config=peft_config)  # fmt: skip


def reference_loss(model, batch, loss):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:].reshape(-1)
    logits = logits.reshape(-1, logits.shape[-1])
    if loss == "tofu":
        per_token = tofu_per_token(logits, labels, gamma=3.0, beta=0.8)
    else:
        per_token = gem_per_token(logits, labels, beta=0.7, h="logsigmoid")
    return per_token.sum() / (labels != IGNORE_INDEX).sum()


def assert_exact_on_trainable(trainer, loss="tofu", head_param_marker="lm_head"):
    model = trainer.model
    model.train()
    for module in model.modules():
        for name, child in list(getattr(module, "lora_dropout", {}).items()):
            if isinstance(child, torch.nn.Dropout):
                module.lora_dropout[name] = ValueMaskDropout()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    head_params = [name for name in trainable if head_param_marker in name]
    assert head_params, f"no trainable parameter on the head among {sorted(trainable)}"

    ours = trainer.compute_loss(model, dict(batch))
    reference = reference_loss(model, batch, loss)
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    got = torch.autograd.grad(ours, list(trainable.values()), allow_unused=True)
    want = torch.autograd.grad(reference, list(trainable.values()), allow_unused=True)
    for name, g, w in zip(trainable, got, want, strict=True):
        assert w is not None and w.abs().max() > 0, f"{name}: no gradient in the reference"
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-12, msg=name)
    return ours, batch


@pytest.mark.parametrize("head", ["reference", "fused"])
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_lora_on_the_head_trains_exactly(tmp_path, tied, loss, head):
    trainer = build_trainer(tmp_path, llama(tied), lora("q_proj", "lm_head"), loss, head)
    ours, batch = assert_exact_on_trainable(trainer, loss)
    with trainer.model.disable_adapter():  # the adapter on the head matters: the frozen base gives another loss
        assert abs(reference_loss(trainer.model, batch, loss).item() - ours.item()) > 1e-3


def test_trl_sft_itself_refuses_lora_on_the_head(tmp_path):
    """What the README states: TRL's own SFT (its fused head reads `lm_head.weight`) refuses what TOFU/GEM train."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_length=64)

    def build(target: str) -> SFTTrainer:
        return SFTTrainer(model=llama(tied=False), args=args, train_dataset=Dataset.from_list(prompt_completion_rows(8)),
                          processing_class=build_tokenizer(), peft_config=lora(target))  # fmt: skip

    build("q_proj")  # the control: the same adapter off the head is accepted
    with pytest.raises(ValueError):  # the head is what TRL refuses (its wording is TRL's, not asserted)
        build("lm_head")


def test_lora_on_tied_embeddings_with_tied_adapters_trains_exactly(tmp_path):
    """`ensure_weight_tying`: LoRA on the input embedding puts the same (transposed) adapter on the tied head."""
    trainer = build_trainer(tmp_path, llama(tied=True), lora("embed_tokens", ensure_weight_tying=True))
    head = trainer.model.base_model.model.lm_head
    assert type(head).__name__ == "Linear" and "default" in head.lora_A
    assert_exact_on_trainable(trainer, head_param_marker="embed_tokens.lora_embedding")


def test_lora_bias_on_a_head_with_a_bias_trains_exactly(tmp_path):
    """Phi's head has a bias; with `lora_bias` the adapter's up-projection has one too."""
    trainer = build_trainer(tmp_path, phi_with_head_bias(), lora("lm_head", lora_bias=True), "gem-logsigmoid")
    assert trainer.model.base_model.model.lm_head.lora_B["default"].bias is not None
    assert_exact_on_trainable(trainer, "gem-logsigmoid")


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_modules_to_save_head_trains_exactly(tmp_path, tied):
    config = LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"], init_lora_weights=False,
                        task_type="CAUSAL_LM")  # fmt: skip
    trainer = build_trainer(tmp_path, llama(tied), config)
    assert_exact_on_trainable(trainer, head_param_marker="lm_head.modules_to_save")


@pytest.mark.parametrize("method", ["trainable-tokens", "lora-trainable-token-indices"])
def test_trainable_tokens_tied_to_the_head_train_exactly(tmp_path, method):
    if method == "trainable-tokens":
        config = TrainableTokensConfig(target_modules=["embed_tokens"], token_indices=[5, 6, 7], init_weights=False)
    else:
        config = lora("q_proj", trainable_token_indices=[5, 6, 7])
    trainer = build_trainer(tmp_path, llama(tied=True), config)
    assert_exact_on_trainable(trainer, head_param_marker="trainable_tokens_delta")


@pytest.mark.parametrize(
    ("peft_config", "message"),
    [
        (lora("lm_head", use_dora=True), "LoRA variant"),
        (IA3Config(target_modules=["lm_head"], feedforward_modules=[], task_type="CAUSAL_LM"), "wrapped by PEFT as"),
    ],
    ids=["dora", "ia3"],
)
def test_adapters_the_head_cannot_reproduce_are_refused_at_construction(tmp_path, peft_config, message):
    with pytest.raises(ValueError, match=message) as caught:
        build_trainer(tmp_path, llama(tied=False), peft_config)
    assert "TOFUTrainer" in str(caught.value) and "lm_head" in str(caught.value)


def test_several_active_lora_adapters_on_a_head_are_all_counted():
    """Two active adapters (one block of extra columns each, one with a bias) reproduce the wrapped head's output."""
    from peft import get_peft_model

    model = get_peft_model(phi_with_head_bias(), lora("lm_head", lora_bias=True))
    model.add_adapter("second", lora("lm_head"))
    model.base_model.set_adapter(["default", "second"])
    head = model.base_model.model.lm_head
    for name in ("default", "second"):
        head.lora_dropout[name] = ValueMaskDropout()
    x = torch.randn(5, 16, dtype=torch.float64)
    operands = resolve_head(head)
    assert len(operands.lora) == 2
    hidden, weight, bias = operands.project_inputs(x)
    torch.testing.assert_close(hidden @ weight.t() + bias, head(x), rtol=1e-12, atol=1e-12)
    head.merge()  # merged adapters live in the base weight; the forward is the base layer alone
    merged = resolve_head(head)
    assert merged.lora == ()
    torch.testing.assert_close(x @ merged.weight.t() + merged.bias, head(x), rtol=1e-12, atol=1e-12)


class _IntegerHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.zeros(4, 3, dtype=torch.int8))


@pytest.mark.parametrize("head", [torch.nn.Identity(), _IntegerHead()], ids=["no-weight", "integer-weight"])
def test_a_quantized_or_weightless_head_is_refused(head):
    with pytest.raises(UnsupportedHeadError, match="floating-point weight"):
        resolve_head(head)


def test_lora_on_the_head_through_divalign_train(tmp_path):
    """A recipe with `lm_head` in `lora_target_modules` trains the head's adapter and saves it."""
    from pathlib import Path

    from safetensors.torch import load_file

    from divalign.launch.train import run_stage
    from divalign.smoke import build_smoke_assets

    assets = build_smoke_assets(tmp_path / "smoke")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "smoke" / "tofu_smoke.yaml"
    out = tmp_path / "run"
    flags = ["--model_name_or_path", str(assets / "model"), "--dataset_name", str(assets / "train.jsonl"),
             "--output_dir", str(out), "--max_steps", "3", "--save_strategy", "no", "--use_peft", "true",
             "--lora_target_modules", "q_proj", "lm_head", "--lora_r", "4"]  # fmt: skip
    run_stage(str(recipe), flags)
    saved = load_file(out / "adapter_model.safetensors")
    head_up = [tensor for name, tensor in saved.items() if "lm_head.lora_B" in name]
    assert head_up and head_up[0].abs().max() > 0  # LoRA's B starts at zero: the head's adapter was trained
