"""`assistant_only_loss` and the chat template: a template TRL cannot give `{% generation %}` markers is refused from
the tokenizer alone (in the dry run too, before any model loads), and the two ways out the error names both train.

The tiny tokenizer's template is modelled on SmolLM2-Instruct's: Llama-style ChatML without generation markers,
inserting a default system prompt when the conversation has none. TRL 1.16 cannot patch it."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer
from trl import chat_template_utils

import divalign.launch.train as train
from divalign.launch.recipe import RecipeError
from divalign.launch.tokenizer_checks import check_tokenizer
from divalign.smoke import WORDS, build_model, messages_rows, prompt_completion_rows, word_level_tokenizer, write_jsonl

REPO = Path(__file__).resolve().parents[1]
MARKED_TEMPLATE = REPO / "recipes" / "chat_templates" / "smollm2_training.jinja"
SMOLLM2_LIKE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
SYSTEM_WORDS = ["system", "You", "are", "helpful", "AI", "named", "SmolLM,", "trained", "by", "Hugging", "Face"]


@pytest.fixture(scope="module")
def smol_model(tmp_path_factory) -> Path:
    """A tiny Llama whose tokenizer has the SmolLM2-like template; `<|im_start|>`/`<|im_end|>` are special tokens
    (split out before the whitespace pre-tokenizer, as in the real tokenizer)."""
    tokenizer = word_level_tokenizer(
        SPECIALS + WORDS + SYSTEM_WORDS,
        SMOLLM2_LIKE,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    directory = tmp_path_factory.mktemp("smol") / "model"
    build_model(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        "messages": write_jsonl(root / "messages.jsonl", messages_rows(16)),
        "prompt_completion": write_jsonl(root / "prompt_completion.jsonl", prompt_completion_rows(16)),
        "text": write_jsonl(root / "text.jsonl", [{"text": "say a word w1 w2"}] * 8),
    }


def recipe(tmp_path: Path, model: Path, dataset: Path, **keys) -> Path:
    content = {
        "trainer": "sft",
        "model_name_or_path": str(model),
        "dataset_name": str(dataset),
        "output_dir": str(tmp_path / "run"),
        "assistant_only_loss": True,
        "max_length": 64,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "learning_rate": 1.0e-3,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        **keys,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.fixture
def no_model_load(monkeypatch):
    def build(run):
        raise AssertionError("the model was loaded before the bad input was reported")

    for name, stage in list(train.STAGES.items()):
        monkeypatch.setitem(train.STAGES, name, dataclasses.replace(stage, build=build))


def test_an_unpatchable_template_is_refused_before_the_model_loads(tmp_path, smol_model, data, no_model_load, capsys):
    path = recipe(tmp_path, smol_model, data["messages"])
    with pytest.raises(RecipeError) as caught:
        train.run_stage(str(path))
    message = str(caught.value)
    assert message.startswith(
        f"assistant_only_loss is true, but the chat template of model_name_or_path ({smol_model}) has no "
        "{% generation %} markers and is not one TRL 1.16"
    )
    assert "`chat_template_path: FILE.jinja`" in message and "`completion_only_loss: true`" in message
    assert "\n" not in message and not (tmp_path / "run").exists()
    assert train.main([str(path), "--dry-run"]) == 1  # the dry run refuses it too
    assert "has no {% generation %} markers" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("family", ["qwen2_5", "qwen3", "llama3", "gemma", "phi3"])
def test_templates_trl_can_use_pass_the_check(smol_model, tmp_path, family):
    """A template with markers, and those TRL 1.16 swaps for a training version (the families recipes/README.md names),
    are not refused."""
    from trl import ModelConfig, SFTConfig

    model_args = ModelConfig(model_name_or_path=str(smol_model))
    for template in (MARKED_TEMPLATE.read_text(), getattr(chat_template_utils, f"{family}_chat_template")):
        tokenizer = AutoTokenizer.from_pretrained(smol_model)
        tokenizer.chat_template = template
        tokenizer.save_pretrained(tmp_path / "tok")
        args = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, use_cpu=True, bf16=False)
        check_tokenizer(args, dataclasses.replace(model_args, model_name_or_path=str(tmp_path / "tok")), True)
    args = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=False, use_cpu=True, bf16=False)
    check_tokenizer(args, model_args, True)  # not asked for: not checked


def test_the_shipped_marked_template_renders_what_the_model_s_template_renders(smol_model):
    tokenizer = AutoTokenizer.from_pretrained(smol_model)
    marked = MARKED_TEMPLATE.read_text()
    conversations = [
        [{"role": "user", "content": "say a word"}, {"role": "assistant", "content": "w1 w2"}],
        [{"role": "system", "content": "say"}, {"role": "user", "content": "a word"}, {"role": "assistant", "content": "w3"}],
    ]  # fmt: skip
    for messages in conversations:
        for prompt_only in (False, True):
            shown = messages[:-1] if prompt_only else messages
            plain = tokenizer.apply_chat_template(shown, tokenize=False, add_generation_prompt=prompt_only)
            assert (
                tokenizer.apply_chat_template(
                    shown, tokenize=False, add_generation_prompt=prompt_only, chat_template=marked
                )
                == plain
            )
        masked = tokenizer.apply_chat_template(
            messages, return_dict=True, return_assistant_tokens_mask=True, chat_template=marked
        )
        ids = [i for i, keep in zip(masked["input_ids"], masked["assistant_masks"], strict=True) if keep]
        assert tokenizer.convert_ids_to_tokens(ids) == [*messages[-1]["content"].split(), "<|im_end|>"]


def trained(out: Path) -> dict:
    assert json.loads((out / "divalign_finished.json").read_text())["global_step"] == 2
    return yaml.safe_load((out / "divalign_recipe.yaml").read_text())


def test_a_generation_marked_template_through_chat_template_path_trains(tmp_path, smol_model, data):
    path = recipe(tmp_path, smol_model, data["messages"], chat_template_path=str(MARKED_TEMPLATE))
    out = Path(train.run_stage(str(path)))
    assert trained(out)["chat_template_path"] == str(MARKED_TEMPLATE)
    assert AutoTokenizer.from_pretrained(out).chat_template == MARKED_TEMPLATE.read_text()  # saved with the model


def test_prompt_completion_data_with_completion_only_loss_trains(tmp_path, smol_model, data):
    path = recipe(tmp_path, smol_model, data["prompt_completion"], assistant_only_loss=False, completion_only_loss=True)
    out = Path(train.run_stage(str(path)))
    assert trained(out)["completion_only_loss"] is True
    assert AutoTokenizer.from_pretrained(out).chat_template == SMOLLM2_LIKE  # the model's own template, unchanged


@pytest.mark.parametrize(
    ("dataset", "keys", "message"),
    [
        ("messages", {"eos_token": "<|eot_id|>"}, "eos_token '<|eot_id|>' is not in the vocabulary of the tokenizer"),
        ("prompt_completion", {"assistant_only_loss": False, "chat_template_path": "templates/missing.jinja"}, r"chat_template_path templates/missing.jinja "
         r"does not exist \(a .jinja/.j2 template file\)"),
        ("text", {"chat_template_path": str(MARKED_TEMPLATE)}, r"assistant_only_loss is true, but dataset .* is not "
         r"conversational \(field 'text' holds text\)"),
    ],
)  # fmt: skip
def test_other_tokenizer_failures_are_refused_before_the_model_loads(
    tmp_path, smol_model, data, no_model_load, dataset, keys, message
):
    with pytest.raises(RecipeError, match=message):
        train.run_stage(str(recipe(tmp_path, smol_model, data[dataset], **keys)))
    assert not (tmp_path / "run").exists()


def test_a_tokenizer_without_a_chat_template_is_refused(tmp_path, smol_model, data, no_model_load):
    bare = tmp_path / "bare"
    tokenizer = AutoTokenizer.from_pretrained(smol_model)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(bare)
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        (bare / name).write_bytes((smol_model / name).read_bytes())
    with pytest.raises(RecipeError, match=rf"^assistant_only_loss is true, but model_name_or_path {bare} has no chat "):
        train.run_stage(str(recipe(tmp_path, bare, data["messages"])))


def test_the_dry_run_never_downloads_a_tokenizer(tmp_path, data, monkeypatch, capsys):
    """A Hub model the machine does not have (a login node's dry run): its tokenizer is looked up in the local cache
    only, and not checked when it is not there; the run itself checks it before its model loads."""
    from transformers import AutoTokenizer as Loader

    asked = []
    original = Loader.from_pretrained.__func__

    def recording(cls, source, *args, **kwargs):
        asked.append((source, kwargs.get("local_files_only")))
        return original(cls, source, *args, **kwargs)

    monkeypatch.setattr(Loader, "from_pretrained", classmethod(recording))
    path = recipe(tmp_path, "divalign-tests/not-downloaded", data["messages"])
    assert train.main([str(path), "--dry-run"]) == 0
    assert asked == [("divalign-tests/not-downloaded", True)]
    assert "divalign train: in this process: python -m divalign.train" in capsys.readouterr().out


# chat_template_path: checked in the dry run and before the model loads, naming the key


def test_a_template_file_with_a_jinja_syntax_error_is_refused_in_the_dry_run_and_before_the_model_loads(
    tmp_path, smol_model, data, no_model_load, capsys
):
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for message in messages %}\n{{ message['content' }}\n{% endfor %}\n")
    path = recipe(
        tmp_path, smol_model, data["prompt_completion"], assistant_only_loss=False, chat_template_path=str(broken)
    )
    expected = f"chat_template_path {broken}: Jinja syntax error at line 2 of the chat template: "
    assert train.main([str(path), "--dry-run"]) == 1
    assert capsys.readouterr().err.startswith(f"divalign.train: error: {expected}")
    with pytest.raises(RecipeError) as caught:
        train.run_stage(str(path))
    assert str(caught.value).startswith(expected) and not (tmp_path / "run").exists()
    broken.write_text(MARKED_TEMPLATE.read_text())  # the same file, fixed: {% generation %} compiles
    assert train.main([str(path), "--dry-run"]) == 0


def test_a_chat_template_path_that_is_no_template_and_no_tokenizer_names_the_key(
    tmp_path, smol_model, data, no_model_load, capsys
):
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "chat.jinja").write_text(MARKED_TEMPLATE.read_text())
    text_file = tmp_path / "template.txt"
    text_file.write_text(MARKED_TEMPLATE.read_text())
    refusals = {
        folder: f"chat_template_path {folder} is a folder and no tokenizer TRL can copy a chat template from (",
        text_file: f"chat_template_path {text_file} is a file, but not a .jinja/.j2 template",
    }
    for source, expected in refusals.items():
        keys = {"assistant_only_loss": False, "chat_template_path": str(source)}
        path = recipe(tmp_path, smol_model, data["prompt_completion"], **keys)
        assert train.main([str(path), "--dry-run"]) == 1
        assert capsys.readouterr().err.startswith(f"divalign.train: error: {expected}")
        with pytest.raises(RecipeError, match="^" + re.escape(expected)):
            train.run_stage(str(path))
    # a tokenizer folder is what TRL copies a template from: accepted
    keys = {"assistant_only_loss": False, "chat_template_path": str(smol_model)}
    assert train.main([str(recipe(tmp_path, smol_model, data["prompt_completion"], **keys)), "--dry-run"]) == 0
