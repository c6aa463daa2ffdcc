"""``rats-ros eval``: ``synthetic`` (selection and recurrence ablations on an unseen synthetic
world), ``recall`` (evidence of first / last / how many / before-after questions over caption
diaries of a day to a month) and ``rvs`` (the paper's streaming QA protocol on annotated videos,
predictions for a judge)."""
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
    recall = benchmarks.add_parser(
        "recall", help="evidence recall per question kind over caption diaries (CPU, no model)",
        description="Write caption diaries of one camera (a day, a week, a month: 2,700 to "
                    "81,000 captions, exact ground truth) into SQLite stores and ask each kind "
                    "of question through the retrieval index, read for its kind and by MMR "
                    "alone; print recall (mean and worst world) and retrieval latency.")
    recall.add_argument("--horizons", default="day,week,month",
                        help="comma-separated: day, week, month")
    recall.add_argument("--seeds", default="0,1,2", help="worlds, comma-separated")
    recall.add_argument("--budget", type=int, default=10000, help="evidence token budget")
    recall.add_argument("--mmr-pool", type=int, default=0,
                        help="as the node's mmr_pool (0: exact MMR over the window)")
    recall.add_argument("--keep", metavar="DIR",
                        help="leave the diary stores (and their questions with the truth) in "
                             "DIR, to ask them with `rats-ros ask --store DIR/day_0.db`")
    recall.add_argument("--json", action="store_true", help="one JSON object per row")
    recall.set_defaults(handler=run_recall)
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


def run_recall(args) -> int:
    from rats_ros.recall.embedders import SentenceEmbedder
    from rats_ros.world import recall
    from rats_ros.world.diary import HORIZON_DAYS

    try:
        horizons = tuple(h.strip() for h in args.horizons.split(",") if h.strip())
        unknown = [h for h in horizons if h not in HORIZON_DAYS]
        if unknown or not horizons:
            raise ConfigError(f"--horizons takes {', '.join(HORIZON_DAYS)}, got {args.horizons!r}")
        try:
            seeds = tuple(int(s) for s in args.seeds.split(","))
        except ValueError:
            raise ConfigError(f"--seeds takes integers, got {args.seeds!r}") from None
        if args.budget < 256:
            raise ConfigError(f"--budget must be >= 256 tokens, got {args.budget}")
        embedder = SentenceEmbedder.default()
        if args.mmr_pool < 0:
            raise ConfigError(f"--mmr-pool must be >= 0, got {args.mmr_pool}")
        rows = recall.table(recall.evaluate(embedder, embedder.count_tokens, horizons, seeds,
                                            args.budget, repeats=3,
                                            mmr_pools=(args.mmr_pool,), keep=args.keep))
    except (RatsError, OSError) as error:
        return fail("eval", error)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'horizon':8} {'kind':6} {'method':9} {'recall':>7} {'worst':>6} {'p50 ms':>7} "
          f"{'p99 ms':>7}  count exact")
    for r in rows:
        print(f"{r['horizon']:8} {r['kind']:6} {r['method']:9} {r['recall_mean']:7.3f} "
              f"{r['recall_min']:6.3f} {r['p50_ms']:7.1f} {r['p99_ms']:7.1f}  "
              f"{r.get('count_exact', '')}")
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
