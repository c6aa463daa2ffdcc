"""``rats-ros eval``: ``synthetic`` (selection and recurrence ablations on an unseen synthetic
world) and ``rvs`` (the paper's streaming QA protocol on annotated videos, predictions for a
judge)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rats_ros.errors import ConfigError, RatsError
from rats_ros.tools.options import add_engine_options, backend_config, fail, positive_float
from rats_ros.world import SYNTHETIC_WORLD


def add_parser(sub) -> None:
    parser = sub.add_parser("eval", help="evaluate: a synthetic world with exact ground truth, "
                                         "or RVS-style annotated video streams")
    benchmarks = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    synthetic = benchmarks.add_parser(
        "synthetic", help="captions, kept tokens and answers on a fresh synthetic world")
    _model_options(synthetic, SYNTHETIC_WORLD)
    synthetic.add_argument("--seed", type=int, default=0, help="world seed (unseen in training)")
    synthetic.add_argument("--minutes", type=float, default=16.0, help="stream length")
    synthetic.add_argument("--selections", default="attention,uniform,random,all",
                           help="comma-separated selection methods to compare")
    synthetic.add_argument("--recurrence", default="on,off", help="on, off or on,off")
    synthetic.add_argument("--json", action="store_true",
                           help="one JSON object per configuration")
    synthetic.set_defaults(handler=run_synthetic)
    rvs = benchmarks.add_parser(
        "rvs", help="stream annotated videos, answer each question at its time (causal)",
        description="Annotations: a JSON list of {video_id, video_path?, conversations: "
                    "[{question, answer, end_time}]} (ReKV's RVS-Ego/RVS-Movie files). Writes "
                    "one JSON line per question with id, question, answer, pred (the fields "
                    "Flash-VStream's GPT judge reads).")
    rvs.add_argument("annotations", help="annotation JSON file")
    rvs.add_argument("--video-root", type=Path, help="directory of the videos")
    rvs.add_argument("--out", type=Path, default=Path("pred.jsonl"), help="predictions file")
    _model_options(rvs, None)
    rvs.add_argument("--fps", type=positive_float, default=0.5, help="sampling rate")
    rvs.add_argument("--clip-frames", type=int, default=16, help="frames per clip")
    rvs.add_argument("--embedder", default="model", choices=("model", "sentence"),
                     help="retrieval embedder (the paper's: model)")
    rvs.set_defaults(handler=run_rvs)


def _model_options(parser, default) -> None:
    parser.add_argument("--model", default=default, required=default is None,
                        help="checkpoint directory, cached Hugging Face id or a built-in name"
                             + (f" (default: {default})" if default else ""))
    add_engine_options(parser)


def run_synthetic(args) -> int:
    from rats_ros.pipeline import Pipeline
    from rats_ros.world.evaluate import EvalConfig, evaluate, pipeline_config, table

    try:
        flags = {"on": True, "off": False}
        recurrences = [part.strip() for part in args.recurrence.split(",") if part.strip()]
        if not recurrences or any(r not in flags for r in recurrences):
            raise ConfigError(f"--recurrence must be on, off or on,off, got {args.recurrence!r}")
        config = EvalConfig(seed=args.seed, minutes=args.minutes,
                            selections=tuple(s.strip() for s in args.selections.split(",")),
                            recurrences=tuple(flags[r] for r in recurrences))
        pipeline = Pipeline(pipeline_config(backend_config(args)))
        results = evaluate(pipeline, config, log=lambda line: None if args.json else print(line))
    except RatsError as error:
        return fail("eval", error)
    if args.json:
        for result in results:
            print(json.dumps(result))
    else:
        print(table(results))
    return 0


def run_rvs(args) -> int:
    from rats_ros.pipeline import Pipeline, PipelineConfig
    from rats_ros.tools import rvs

    try:
        samples = rvs.load_annotations(args.annotations)
        pipeline = Pipeline(PipelineConfig(backend_config(args), embedder=args.embedder,
                                           fps=args.fps, clip_frames=args.clip_frames))
        with open(args.out, "w") as out:
            count = rvs.run(pipeline, samples, args.video_root, out,
                            log=lambda line: print(line, file=sys.stderr))
    except (RatsError, OSError) as error:
        return fail("eval", error)
    print(f"{count} predictions in {args.out}")
    return 0
