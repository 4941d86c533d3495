"""Each private TRL/transformers name divalign touches (divalign.compat), checked against the installed versions.

A failure here names the touch point an upgrade broke; pyproject pins TRL to the minor version these pass on.
"""

import inspect
import re
from pathlib import Path

import pytest
import torch
import trl
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM
from trl import GRPOTrainer, ModelConfig, SFTConfig, SFTTrainer, TrlParser

from divalign import compat
from divalign.smoke import build_tokenizer, save_tiny_model

SRC = Path(__file__).resolve().parents[1] / "src" / "divalign"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


def sft_trainer(model_dir: Path, tmp_path: Path, **kwargs) -> SFTTrainer:
    rows = [{"prompt": "say a word", "completion": f" w{i} w{i + 1}"} for i in range(4)]
    args = SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=1, logging_steps=1)
    return SFTTrainer(
        model=str(model_dir),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=build_tokenizer(),
        **kwargs,
    )


def training(trainer: SFTTrainer) -> SFTTrainer:
    trainer.model.train()  # TRL logs the "train" metrics while the model is in training mode
    return trainer


def test_trl_pin_is_the_tested_minor_version():
    assert trl.__version__.startswith(compat.TESTED_TRL + "."), trl.__version__
    pyproject = (SRC.parents[1] / "pyproject.toml").read_text()
    assert f'"trl>={compat.TESTED_TRL},<' in pyproject


def test_trainer_metrics_are_averaged_into_the_next_log_entry(model_dir, tmp_path):
    trainer = training(sft_trainer(model_dir, tmp_path))
    compat.trainer_metrics(trainer, "train")["probe"].extend([1.0, 3.0])
    trainer.log({"loss": 0.5})
    assert trainer.state.log_history[-1]["probe"] == 2.0
    assert compat.trainer_metrics(trainer, "train")["probe"] == []  # TRL clears what it logged


def test_hidden_trainer_metrics_survive_a_foreign_log_call(model_dir, tmp_path):
    trainer = training(sft_trainer(model_dir, tmp_path))
    compat.trainer_metrics(trainer, "train")["probe"].append(4.0)
    with compat.trainer_metrics_hidden(trainer):
        trainer.log({"diversity/x": 1.0})
    assert "probe" not in trainer.state.log_history[-1]
    trainer.log({"loss": 0.5})
    assert trainer.state.log_history[-1]["probe"] == 4.0


def test_train_token_count_is_trls_num_tokens(model_dir, tmp_path):
    trainer = sft_trainer(model_dir, tmp_path)
    assert compat.total_train_tokens(trainer) == 0
    trainer.train()
    counted = compat.total_train_tokens(trainer)
    assert counted > 0
    assert [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e][-1] == counted
    assert compat.add_train_tokens(trainer, 5) == counted + 5


def test_missing_trainer_state_is_named():
    class Plain:
        pass

    with pytest.raises(compat.CompatError, match=r"Plain\._metrics\['train'\].*trl 1\.16"):
        compat.trainer_metrics(Plain(), "train")
    with pytest.raises(compat.CompatError, match=r"Plain\._total_train_tokens"):
        compat.total_train_tokens(Plain())


def test_grpo_scores_rewards_in_the_hook_divalign_extends():
    compat.check_grpo_reward_hook(GRPOTrainer)

    class Renamed:
        def _compute_rewards(self, inputs, prompts, completions, completion_ids_list): ...

    class Resigned:
        def _calculate_rewards(self, inputs, prompts, completions): ...

    for broken in (Renamed, Resigned):
        with pytest.raises(compat.CompatError, match="_calculate_rewards"):
            compat.check_grpo_reward_hook(broken)


def test_zero3_gather_is_a_null_context_without_zero3():
    weight = torch.nn.Parameter(torch.ones(3, 2))
    with compat.gather_zero3_params(weight, None):
        assert weight.shape == (3, 2)


def test_create_model_from_path_loads_like_trl(model_dir):
    model = compat.create_model_from_path(str(model_dir), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    reference = AutoModelForCausalLM.from_pretrained(model_dir)
    assert type(model) is type(reference)


def test_trl_refuses_an_lm_head_adapter_unless_lifted(model_dir, tmp_path):
    from peft.tuners.tuners_utils import BaseTunerLayer
    from trl.trainer import sft_trainer as trl_sft

    assert trl_sft.BaseTunerLayer is BaseTunerLayer  # the name TRL's check reads
    lora = LoraConfig(r=2, target_modules=["q_proj", "lm_head"], task_type="CAUSAL_LM")
    with pytest.raises(ValueError, match="lm_head"):
        sft_trainer(model_dir, tmp_path, peft_config=lora)
    with compat.trl_lm_head_adapter_check_lifted():
        trainer = sft_trainer(model_dir, tmp_path, peft_config=lora)
    assert isinstance(trainer.model.get_output_embeddings(), BaseTunerLayer)
    assert trl_sft.BaseTunerLayer is BaseTunerLayer  # restored


def test_active_deepspeed_config_follows_transformers(tmp_path):
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    assert compat.active_hf_deepspeed_config() is None
    config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    try:
        assert compat.active_hf_deepspeed_config() is config
    finally:
        unset_hf_deepspeed_config()
    assert compat.active_hf_deepspeed_config() is None


def test_a_rebuilt_deepspeed_config_does_not_stay_active():
    """Why divalign.zero3 restores transformers' own config object (found through divalign.compat) rather than one
    rebuilt from the public deepspeed_config(): transformers keeps only a weak reference to it."""
    import gc

    from transformers.integrations.deepspeed import (
        HfDeepSpeedConfig,
        deepspeed_config,
        is_deepspeed_zero3_enabled,
        set_hf_deepspeed_config,
        unset_hf_deepspeed_config,
    )

    config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    try:
        assert is_deepspeed_zero3_enabled()
        public = deepspeed_config()
        unset_hf_deepspeed_config()
        set_hf_deepspeed_config(HfDeepSpeedConfig(public))
        gc.collect()
        assert not is_deepspeed_zero3_enabled()  # the rebuilt object is gone
        set_hf_deepspeed_config(config)
        assert is_deepspeed_zero3_enabled()
    finally:
        unset_hf_deepspeed_config()


def test_multi_value_flags_are_the_list_fields():
    flags = compat.multi_value_flags(TrlParser([ModelConfig]))
    assert {"lora_target_modules", "lora_modules_to_save"} <= flags
    assert "lora_r" not in flags


def test_zero3_generation_state_is_a_no_op_without_zero3():
    with compat.zero3_generation_state(None, gathered=True):
        pass


def test_deepspeed_keeps_the_offload_internals_divalign_resets():
    import inspect

    from deepspeed.runtime.zero.parameter_offload import DeepSpeedZeRoOffload
    from deepspeed.runtime.zero.partitioned_param_coordinator import PartitionedParameterCoordinator

    assert callable(PartitionedParameterCoordinator._invalidate_trace)
    assert callable(PartitionedParameterCoordinator.is_invalid_trace)
    source = inspect.getsource(DeepSpeedZeRoOffload)
    assert "self.fwd_pre_hook = self.module.register_forward_pre_hook(" in source
    assert "self.param_coordinator = PartitionedParameterCoordinator(" in source


def test_wandb_callback_is_set_up_once():
    from transformers.integrations import WandbCallback

    class Recording(WandbCallback):
        def setup(self, args, state, model, **kwargs):
            calls.append(model)
            self._initialized = True  # what WandbCallback.setup does first

    calls = []
    callback = Recording()
    assert callback._initialized is False  # the flag transformers keeps
    compat.wandb_callback_set_up(callback, None, None, "model")
    compat.wandb_callback_set_up(callback, None, None, "model")
    assert calls == ["model"]
    with pytest.raises(compat.CompatError, match=r"object\._initialized"):
        compat.wandb_callback_set_up(object(), None, None, None)


PRIVATE_NAMES = re.compile(
    r"\._metrics\b|_total_train_tokens|\._tp_size\b|maybe_gather_lm_head_ctx|trainer\.utils import create_model"
    r"|_hf_deepspeed_config_weak_ref|\._actions\b|\._name_or_path\b|sft_trainer, \"BaseTunerLayer\""
    r"|_invalidate_trace|_forward_pre_hooks|parameter_offload|\._initialized\b|\._wandb\b"
)


def test_no_module_but_compat_touches_the_private_names():
    offenders = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in SRC.rglob("*.py")
        if path.name != "compat.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if PRIVATE_NAMES.search(line)
    ]
    assert not offenders, "private TRL/transformers names outside divalign.compat:\n" + "\n".join(offenders)


def test_the_cache_keyword_is_the_installed_transformers_one(model_dir):
    """A forward's cache is found under the installed name, and `generate` takes it back under that name."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        cache = compat.model_output_cache(model(input_ids=ids, use_cache=True))
    assert cache is not None and cache.get_seq_length() == 3
    assert compat.generate_cache_kwargs(None) == {}
    (keyword,) = compat.generate_cache_kwargs(cache)
    assert keyword in inspect.signature(model.prepare_inputs_for_generation).parameters
