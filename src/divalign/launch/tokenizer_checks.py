"""What a stage's trainer will ask of the tokenizer, checked from the tokenizer alone before the model loads.

TRL's ``SFTTrainer`` masks the loss to the assistant turns (``assistant_only_loss: true``) with the
``{% generation %}`` markers of the chat template. A template without them is replaced by TRL's training version of
it, which TRL 1.16 has for a fixed list of templates (``trl.chat_template_utils.get_training_chat_template``: Qwen,
Llama 3, Gemma, Phi-3, ...); any other template (SmolLM2's, for one) fails in the trainer's constructor, after the
model has loaded. The same holds for an ``eos_token``/``pad_token`` the vocabulary does not have. Here the tokenizer
the trainer will use (that of ``model_name_or_path``, with ``chat_template_path`` applied as TRL applies it) is loaded
on its own and put through TRL's own decision, so the run — and ``divalign train --dry-run`` — refuses with what to do
instead. A ``chat_template_path`` is checked as TRL will read it: a ``.jinja``/``.j2`` file compiled as transformers
compiles it (a syntax error named with its line), anything else loaded as the tokenizer TRL copies the template of.

A tokenizer that cannot be loaded here (a Hub model not in the local cache during a dry run, a later pipeline stage's
model that does not exist yet, an adapter directory without tokenizer files) is not checked: the trainer reports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .recipe import RecipeError

TEMPLATE_SUFFIXES = (".jinja", ".j2")  # a chat_template_path TRL reads as a template file (else: a tokenizer to clone)
FIX = (
    "Either give a template whose assistant turns are wrapped in {% generation %} ... {% endgeneration %} as "
    "`chat_template_path: FILE.jinja` (TRL's SFTConfig key), or train on prompt/completion data with "
    '`assistant_only_loss: false` and `completion_only_loss: true` (recipes/README.md, "Chat templates")'
)


def load_tokenizer(source: str, local_only: bool, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """The tokenizer of ``source`` as TRL's trainers load it, or ``None`` when it cannot be loaded here."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            source, revision=revision, trust_remote_code=trust_remote_code, local_files_only=local_only
        )
    except Exception:  # anything that stops loading it here is the trainer's to report
        return None


def _training_template(tokenizer: Any, training_args: Any, local_only: bool) -> tuple[Any, str]:
    """The chat template the trainer will use and where it comes from: ``chat_template_path`` (a template file, or a
    tokenizer whose template TRL clones), else the tokenizer's own."""
    path = getattr(training_args, "chat_template_path", None)
    if path is None:
        return tokenizer.chat_template, "the chat template of model_name_or_path"
    if str(path).endswith(TEMPLATE_SUFFIXES):
        return Path(path).read_text(encoding="utf-8"), f"chat_template_path {path}"
    source = load_tokenizer(path, local_only, trust_remote_code=getattr(training_args, "trust_remote_code", False))
    return (None if source is None else source.chat_template), f"the chat template of chat_template_path {path}"


def check_assistant_only_loss(tokenizer: Any, training_args: Any, model: str, local_only: bool) -> None:
    """Refuse ``assistant_only_loss`` when the template the trainer will use has no ``{% generation %}`` markers and
    TRL cannot patch it (``get_training_chat_template`` raises), naming what to do instead."""
    from trl import __version__ as trl_version
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if not getattr(training_args, "assistant_only_loss", False):
        return
    template, where = _training_template(tokenizer, training_args, local_only)
    if template is None:
        if getattr(training_args, "chat_template_path", None) is None:
            raise RecipeError(
                f"assistant_only_loss is true, but model_name_or_path {model} has no chat template. {FIX}"
            )
        return  # a chat_template_path tokenizer that cannot be loaded here: the trainer reports it
    if has_generation_markers(template):
        return
    tokenizer.chat_template = template
    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        raise RecipeError(
            f"assistant_only_loss is true, but {where} ({model}) has no {{% generation %}} markers and is not one "
            f"TRL {trl_version} knows how to add them to, so the assistant turns cannot be masked. {FIX}"
        ) from None


def check_special_tokens(tokenizer: Any, training_args: Any, model: str) -> None:
    """Refuse an ``eos_token``/``pad_token`` that the tokenizer's vocabulary lacks (TRL refuses it after loading)."""
    vocabulary = tokenizer.get_vocab()
    for key in ("eos_token", "pad_token"):
        token = getattr(training_args, key, None)
        if token is not None and token not in vocabulary:
            raise RecipeError(
                f"{key} {token!r} is not in the vocabulary of the tokenizer of model_name_or_path {model}; set {key} "
                "to one of its tokens (e.g. the end-of-turn token of its chat template), or leave it unset"
            )


def compile_template(template: str, where: str) -> None:
    """Compile ``template`` as transformers does when the trainer renders a conversation; a Jinja syntax error is
    raised as a :class:`RecipeError` naming ``where`` and the template's line (the trainer would stop on it only
    after the model has loaded)."""
    from jinja2 import TemplateSyntaxError

    # transformers' own compiler: the same environment and extensions ({% generation %}) the trainer renders with
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        _compile_jinja_template(template)
    except TemplateSyntaxError as error:
        raise RecipeError(
            f"{where}: Jinja syntax error at line {error.lineno} of the chat template: {error.message}"
        ) from error


def _template_source(training_args: Any, local_only: bool) -> None:
    """Refuse a ``chat_template_path`` TRL cannot use, naming the key: a template file that is missing or does not
    compile, another kind of file, or a folder that is no tokenizer with a chat template (TRL would clone its template:
    ``clone_chat_template``). A tokenizer id that is not on this machine is checked only when ``local_only`` is off."""
    path = getattr(training_args, "chat_template_path", None)
    if path is None:
        return
    where, local = f"chat_template_path {path}", Path(path)
    if str(path).endswith(TEMPLATE_SUFFIXES):
        if not local.is_file():
            raise RecipeError(f"{where} does not exist (a {'/'.join(TEMPLATE_SUFFIXES)} template file)")
        compile_template(local.read_text(encoding="utf-8"), where)
        return
    if local.is_file():
        raise RecipeError(
            f"{where} is a file, but not a {'/'.join(TEMPLATE_SUFFIXES)} template: TRL reads chat_template_path as a "
            "template file only with those suffixes, else as a tokenizer (folder or Hub id) to copy the template of"
        )
    if local_only and not local.exists():
        return  # a Hub id: the run loads it
    tokenizer, error = _tokenizer_or_error(str(path), local_only, getattr(training_args, "trust_remote_code", False))
    if tokenizer is None:
        raise RecipeError(
            f"{where} is {'a folder' if local.is_dir() else 'no template file'} and no tokenizer TRL can copy a chat "
            f"template from ({error}); give a {'/'.join(TEMPLATE_SUFFIXES)} template file, or a tokenizer folder or "
            "Hub id whose tokenizer has a chat template"
        )
    if tokenizer.chat_template is None:
        raise RecipeError(f"{where}: its tokenizer has no chat template to copy; give a .jinja template file instead")
    if isinstance(tokenizer.chat_template, str):
        compile_template(tokenizer.chat_template, f"{where} (its tokenizer's chat template)")


def _tokenizer_or_error(source: str, local_only: bool, trust_remote_code: bool) -> tuple[Any, str]:
    """The tokenizer of ``source``, or ``None`` and why it could not be loaded (on one line)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            source, trust_remote_code=trust_remote_code, local_files_only=local_only
        ), ""
    except Exception as error:  # any failure is reported with the key that named the source
        text = " ".join(str(error).split())
        return None, f"{type(error).__name__}: {text[:240]}{'...' if len(text) > 240 else ''}".rstrip(": ")


def check_tokenizer(training_args: Any, model_args: Any, local_only: bool) -> None:
    """The ``chat_template_path`` (:func:`_template_source`); :func:`check_special_tokens` and
    :func:`check_assistant_only_loss` on the tokenizer the trainer will load (``local_only``: never download it, as in
    a dry run), nothing when it cannot be loaded here."""
    _template_source(training_args, local_only)
    wanted = ("assistant_only_loss", "eos_token", "pad_token")
    if not any(getattr(training_args, key, None) for key in wanted):
        return
    model = model_args.model_name_or_path
    remote_code = getattr(training_args, "trust_remote_code", False)
    tokenizer = load_tokenizer(model, local_only, model_args.model_revision, remote_code)
    if tokenizer is None:
        return
    check_special_tokens(tokenizer, training_args, model)
    check_assistant_only_loss(tokenizer, training_args, model, local_only)
