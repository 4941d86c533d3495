"""`divalign eval`: the subcommand's arguments, made one :class:`~divalign.evaluation.options.EvalOptions` and handed
to `evaluate_lineage` (imported only when it runs, so that `divalign --help` loads neither torch nor transformers)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..diversity import DEFAULT_EVAL_METRICS
from ..diversity.clusters import DEFAULT_CLUSTER_THRESHOLD
from ..diversity.profile import PROFILE_NAMES
from .backends import BACKENDS, VLLM_OPT_IN
from .options import EvalOptions, flag_defaults


def parse_model_spec(spec: str) -> tuple[str, str]:
    """`NAME=PATH` → (NAME, PATH); a bare PATH is named after its last path component."""
    name, sep, path = spec.partition("=")
    if not sep:
        path, name = spec, Path(spec.rstrip("/")).name or spec
    if not name or not path:
        raise ValueError(f"--model {spec!r}: expected NAME=PATH")
    return name, path


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `divalign eval`."""
    parser = subparsers.add_parser(
        "eval",
        help="sample from a model lineage and score output diversity",
        description="Sample K completions per prompt from each model and score their diversity (divalign.diversity).",
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="model checkpoint, repeat in lineage order (e.g. --model base=... --model sft=...)",
    )
    parser.add_argument(
        "--prompts",
        required=True,
        help="a .jsonl/.json/.txt/.csv/.parquet file (`prompt` or `messages`, optional `answer`), "
        "a save_to_disk folder, a data folder or a Hub dataset id (the diversity callback's loader)",
    )
    parser.add_argument("--prompts-split", help="split to read when --prompts is a dataset")
    parser.add_argument("--prompts-column", help="prompt column (default: prompt, else messages)")
    parser.add_argument(
        "--answer-column",
        help="reference-answer column (default: answer, else solution)",
    )
    parser.add_argument("--num-prompts", type=int, help="use the first N prompts (default: all)")
    parser.add_argument("--samples", type=int, help="samples per prompt (K >= 2)")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--temperature", type=float, help="the temperature of the main tables")
    parser.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        metavar="T",
        help="also sample at each T and draw every model's quality-diversity frontier (frontier.png, "
        "and the quality difference vs --reference at matched diversity); needs --verifier or --quality (without "
        "--temperatures, --quality is reported next to diversity at --temperature)",
    )
    parser.add_argument("--top-p", type=float)
    parser.add_argument(
        "--top-k",
        type=int,
        help="0 = off; nothing else is applied: the checkpoints' generation_config.json is ignored",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="a sample's noise depends only on the seed, its prompt's index, its own index and --max-new-tokens "
        "(another length budget changes the noise of every sample but each prompt's first)",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        help=f"metric names (space or comma separated; default: {' '.join(DEFAULT_EVAL_METRICS)})",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        help="metric conventions: divalign (default); karouzos2026 (Karouzos et al., arXiv 2604.16027: EAD over "
        "words, NLI over sentence pairs on [0, 2], all-mpnet-base-v2, <think> stripped); tofu2026 (the TOFU paper's "
        "lowercased self-BLEU on 0-100). Named in results.md and results.json",
    )
    parser.add_argument(
        "--embedding-model",
        help="sentence embedder of the semantic metrics and views (default: the profile's; divalign: all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--cluster-threshold",
        type=float,
        help="cosine similarity at which two samples are one semantic cluster (semantic_clusters; default "
        f"{DEFAULT_CLUSTER_THRESHOLD}, chosen for all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--nli-model",
        help="used only when `nli` or `semantic_clusters_nli` is among the metrics",
    )
    parser.add_argument(
        "--verifier",
        metavar="MODULE:FUNCTION",
        help="fn(completion, answer) -> bool, e.g. divalign.diversity.answers:final_answer_matches; MODULE is "
        "installed or a .py file in the current directory",
    )
    parser.add_argument(
        "--quality",
        metavar="SPEC",
        help="a per-sample quality, reported next to diversity at --temperature and, with --temperatures, the "
        "frontier's quality (default there: the verifier's accuracy): a GRPO reward by name "
        "(format, length_penalty, math_answer, ...; it reads the prompt file's other fields as dataset columns), "
        "reward_model:PATH (a sequence-classification checkpoint with its classification head, its first logit), a "
        "JSON '{\"NAME\": {settings}}', or MODULE:FUNCTION, fn(completion, answer) -> float, MODULE installed or a "
        ".py file in the current directory; the grammar of a training recipe's diversity quality:",
    )
    parser.add_argument(
        "--frontier-metric",
        help="the frontier's diversity metric (default: the first diversity metric of --metrics)",
    )
    parser.add_argument(
        "--reference",
        metavar="NAME",
        help="the model the others are compared with: the frontier's matched-diversity quality differences and "
        "the quality-control/narrowing split (default: the first --model)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help=f"auto (the default) is hf, transformers' generate; {VLLM_OPT_IN}",
    )
    parser.add_argument("--batch-size", type=int, help="prompts per generate call (speed, not samples)")
    parser.add_argument("--device")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples for the 95%% CI")
    parser.add_argument("--out", help="output directory (must be empty or absent)")
    parser.add_argument(
        "--move-aside",
        action="store_true",
        help="when --out holds an earlier evaluation, rename it to <out>.old-<time> first",
    )
    parser.set_defaults(func=run, **flag_defaults())  # every option's default is its EvalOptions field's
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `divalign eval` from parsed arguments."""
    from .lineage import evaluate_lineage

    models = [parse_model_spec(spec) for spec in args.model]
    results = evaluate_lineage(models, args.prompts, EvalOptions.from_args(args))
    for kind, path in results["files"].items():
        print(f"{kind}: {path}")
    return 0
