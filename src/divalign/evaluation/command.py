"""`divalign eval`: the subcommand's arguments, handed to `evaluate_lineage` (imported only when it runs, so that
`divalign --help` loads neither torch nor transformers)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..diversity import DEFAULT_EVAL_METRICS, DEFAULT_NLI_MODEL
from ..diversity.clusters import DEFAULT_CLUSTER_THRESHOLD
from ..diversity.profile import DEFAULT_PROFILE, PROFILE_NAMES
from .backends import BACKENDS, VLLM_OPT_IN


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
    parser.add_argument("--prompts-split", default="test", help="split to read when --prompts is a dataset")
    parser.add_argument("--prompts-column", default=None, help="prompt column (default: prompt, else messages)")
    parser.add_argument(
        "--answer-column", default=None, help="reference-answer column (default: answer, else solution)"
    )
    parser.add_argument("--num-prompts", type=int, default=None, help="use the first N prompts (default: all)")
    parser.add_argument("--samples", type=int, default=16, help="samples per prompt (K >= 2)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=1.0, help="the temperature of the main tables")
    parser.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=None,
        metavar="T",
        help="also sample at each T and draw every model's quality-diversity frontier (frontier.png, "
        "and the quality difference vs --reference at matched diversity); needs --verifier or --quality (without "
        "--temperatures, --quality is reported next to diversity at --temperature)",
    )
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument(
        "--top-k",
        type=int,
        default=0,
        help="0 = off; nothing else is applied: the checkpoints' generation_config.json is ignored",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="a sample's noise depends only on the seed, its prompt's index, its own index and --max-new-tokens "
        "(another length budget changes the noise of every sample but each prompt's first)",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help=f"metric names (space or comma separated; default: {' '.join(DEFAULT_EVAL_METRICS)})",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        default=DEFAULT_PROFILE,
        help="metric conventions: divalign (default); karouzos2026 (Karouzos et al., arXiv 2604.16027: EAD over "
        "words, NLI over sentence pairs on [0, 2], all-mpnet-base-v2, <think> stripped); tofu2026 (the TOFU paper's "
        "lowercased self-BLEU on 0-100). Named in results.md and results.json",
    )
    parser.add_argument(
        "--embedding-model",
        default=None,
        help="sentence embedder of the semantic metrics and views (default: the profile's; divalign: all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--cluster-threshold",
        type=float,
        default=DEFAULT_CLUSTER_THRESHOLD,
        help="cosine similarity at which two samples are one semantic cluster (semantic_clusters; default "
        f"{DEFAULT_CLUSTER_THRESHOLD}, chosen for all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--nli-model",
        default=DEFAULT_NLI_MODEL,
        help="used only when `nli` or `semantic_clusters_nli` is among the metrics",
    )
    parser.add_argument(
        "--verifier",
        default=None,
        metavar="MODULE:FUNCTION",
        help="fn(completion, answer) -> bool, e.g. divalign.diversity.answers:final_answer_matches; MODULE is "
        "installed or a .py file in the current directory",
    )
    parser.add_argument(
        "--quality",
        default=None,
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
        default=None,
        help="the frontier's diversity metric (default: the first diversity metric of --metrics)",
    )
    parser.add_argument(
        "--reference",
        default=None,
        metavar="NAME",
        help="the model the others are compared with: the frontier's matched-diversity quality differences and "
        "the quality-control/narrowing split (default: the first --model)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help=f"auto (the default) is hf, transformers' generate; {VLLM_OPT_IN}",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (speed, not samples)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CI")
    parser.add_argument("--out", default="eval_results", help="output directory (must be empty or absent)")
    parser.add_argument(
        "--move-aside",
        action="store_true",
        help="when --out holds an earlier evaluation, rename it to <out>.old-<time> first",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `divalign eval` from parsed arguments."""
    from .lineage import evaluate_lineage

    metrics = None if args.metrics is None else [m for arg in args.metrics for m in arg.split(",") if m]
    results = evaluate_lineage(
        [parse_model_spec(s) for s in args.model],
        args.prompts,
        prompts_split=args.prompts_split,
        prompts_column=args.prompts_column,
        answer_column=args.answer_column,
        num_prompts=args.num_prompts,
        num_samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        temperatures=args.temperatures,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        metrics=metrics,
        profile=args.profile,
        embedding_model=args.embedding_model,
        cluster_threshold=args.cluster_threshold,
        nli_model=args.nli_model,
        verifier=args.verifier,
        quality=args.quality,
        frontier_metric=args.frontier_metric,
        reference=args.reference,
        backend=args.backend,
        batch_size=args.batch_size,
        device=args.device,
        n_bootstrap=args.bootstrap,
        out_dir=args.out,
        move_aside=args.move_aside,
    )
    for kind, path in results["files"].items():
        print(f"{kind}: {path}")
    return 0
