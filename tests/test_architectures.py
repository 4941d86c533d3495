"""TOFU and GEM through the trainer on tiny random models of many families, against each model's own full logits.

For every family the trainer's loss (one batch through `compute_loss`, the loss head inside the patched forward) and
its gradients on the LM head and the last decoder layer equal a reference built from `model(...).logits` — whatever the
family does to them (biases, tied embeddings, Cohere's logit scale, Gemma's final soft-capping, Granite's logit
divisor) — followed by the per-token loss and TRL's reduction (sum over label tokens / their count). The models run in
float64, which the head keeps, so the comparison is tight.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from datasets import Dataset

from divalign import GEMConfig, GEMTrainer, TOFUConfig, TOFUTrainer
from divalign.heads.losses import IGNORE_INDEX, gem_per_token, tofu_per_token
from divalign.smoke import build_tokenizer, prompt_completion_rows

SIZES = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
# Larger than the 0.02 default, so the next-token distributions are far from uniform and soft-capping bites
INIT = {"initializer_range": 0.3}
FAMILIES = {
    "llama-untied": ("LlamaConfig", "LlamaForCausalLM", {"num_key_value_heads": 1, "tie_word_embeddings": False}),
    "llama-tied": ("LlamaConfig", "LlamaForCausalLM", {"num_key_value_heads": 1, "tie_word_embeddings": True}),
    "qwen2-biases": ("Qwen2Config", "Qwen2ForCausalLM", {"num_key_value_heads": 1}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"num_key_value_heads": 1, "head_dim": 8}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"num_key_value_heads": 1, "sliding_window": 8}),
    "gemma2-softcap": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {"num_key_value_heads": 1, "head_dim": 8, "final_logit_softcapping": 2.0, "sliding_window": 8},
    ),
    "gemma3-softcap": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {"num_key_value_heads": 1, "head_dim": 8, "final_logit_softcapping": 2.0, "sliding_window": 8},
    ),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"num_key_value_heads": 1}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {"num_key_value_heads": 1}),
    "cohere-logit-scale": ("CohereConfig", "CohereForCausalLM", {"num_key_value_heads": 1, "logit_scale": 0.5}),
    "gpt-neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {}),
    "phi-head-bias": ("PhiConfig", "PhiForCausalLM", {"num_key_value_heads": 1}),
    "granite-logit-divisor": ("GraniteConfig", "GraniteForCausalLM", {"num_key_value_heads": 1, "logits_scaling": 4.0}),
}
LOSSES = {
    "tofu": (TOFUTrainer, TOFUConfig, {"tofu_gamma": 3.0, "tofu_beta": 0.8}),
    "gem-linear": (GEMTrainer, GEMConfig, {"gem_beta": 0.7, "gem_h": "linear"}),
    "gem-logsigmoid": (GEMTrainer, GEMConfig, {"gem_beta": 0.7, "gem_h": "logsigmoid"}),
}


def uneven_rows() -> list[dict]:
    """Six conversations whose completions have 1 to 6 words, so the batch is padded."""
    rows = prompt_completion_rows(6)
    for length, row in enumerate(rows, start=1):
        words = (row["completion"][0]["content"].split() * 2)[:length]
        row["completion"] = [{"role": "assistant", "content": " ".join(words)}]
    return rows


def tiny_model(family: str, tokenizer) -> torch.nn.Module:
    config_name, model_name, extra = FAMILIES[family]
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}  # fmt: skip
    config = getattr(transformers, config_name)(vocab_size=len(tokenizer), **SIZES, **INIT, **ids, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config).to(torch.float64)
    return model.eval()  # no dropout anywhere: both passes see the same function


def reference_loss(model, batch: dict, loss: str) -> torch.Tensor:
    """The loss from the model's own full logits, with TRL's reduction."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    flat_logits, flat_labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    if loss == "tofu":
        per_token = tofu_per_token(flat_logits, flat_labels, gamma=3.0, beta=0.8)
    else:
        per_token = gem_per_token(flat_logits, flat_labels, beta=0.7, h=loss.removeprefix("gem-"))
    return per_token.sum() / (flat_labels != IGNORE_INDEX).sum()


def watched_parameters(model) -> dict[str, torch.nn.Parameter]:
    head = model.get_output_embeddings()
    watched = {f"head.{name}": p for name, p in head.named_parameters()}
    watched |= {f"last_layer.{name}": p for name, p in model.base_model.layers[-1].named_parameters()}
    return watched


def gradients(loss: torch.Tensor, parameters: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    grads = torch.autograd.grad(loss, list(parameters.values()), allow_unused=True)
    return dict(zip(parameters, grads, strict=True))


HEAD_LOSSES = [("reference", loss) for loss in LOSSES] + [("fused", "tofu"), ("fused", "gem-logsigmoid")]


@pytest.mark.parametrize(("head", "loss"), HEAD_LOSSES, ids=[f"{h}-{loss}" for h, loss in HEAD_LOSSES])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_trainer_loss_and_gradients_equal_the_full_logits_reference(tmp_path, family, head, loss):
    tokenizer = build_tokenizer()
    model = tiny_model(family, tokenizer)
    trainer_class, config_class, hyper = LOSSES[loss]
    args = config_class(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=6,
                        max_length=64, loss_head=head, **hyper)  # fmt: skip
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(uneven_rows()),
                            processing_class=tokenizer)  # fmt: skip
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    assert (batch["attention_mask"] == 0).any(), "the batch should carry padding"
    watched = watched_parameters(model)

    ours = trainer.compute_loss(model, dict(batch))
    reference = reference_loss(model, batch, loss)
    assert ours.dtype == reference.dtype == torch.float64
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    got, want = gradients(ours, watched), gradients(reference, watched)
    for name, expected in want.items():
        assert expected is not None and expected.abs().max() > 0, f"{name}: no gradient in the reference"
        torch.testing.assert_close(got[name], expected, rtol=1e-8, atol=1e-10, msg=f"{family} {loss}: {name}")


@pytest.mark.parametrize("family", ["gemma2-softcap", "cohere-logit-scale", "granite-logit-divisor"])
def test_logit_transform_matters_on_these_models(family):
    """The families whose logits are transformed really are: the plain head output would give other logits."""
    model = tiny_model(family, build_tokenizer())
    ids = torch.tensor([[5, 9, 12, 7]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        plain = model.get_output_embeddings()(model.base_model(input_ids=ids).last_hidden_state)
    assert (logits - plain).abs().max() > 0.1
