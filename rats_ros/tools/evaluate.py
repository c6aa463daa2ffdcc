"""``rats-ros eval synthetic``: selection and recurrence ablations on an unseen synthetic world."""
from __future__ import annotations

import json

from rats_ros.errors import ConfigError, RatsError
from rats_ros.tools.options import fail
from rats_ros.world import SYNTHETIC_WORLD


def add_parser(sub) -> None:
    parser = sub.add_parser("eval", help="measure captions, kept tokens and answers on a "
                                         "synthetic world with exact ground truth")
    parser.add_argument("benchmark", choices=("synthetic",),
                        help="synthetic: a fresh procedurally generated world")
    parser.add_argument("--model", default=SYNTHETIC_WORLD,
                        help=f"checkpoint (default: {SYNTHETIC_WORLD}, trained on that world)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (unseen in training)")
    parser.add_argument("--minutes", type=float, default=16.0, help="stream length")
    parser.add_argument("--selections", default="attention,uniform,random,all",
                        help="comma-separated selection methods to compare")
    parser.add_argument("--recurrence", default="on,off", help="on, off or on,off")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--json", action="store_true", help="one JSON object per configuration")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rats_ros.models import load_backend
    from rats_ros.world.evaluate import EvalConfig, evaluate, table

    try:
        flags = {"on": True, "off": False}
        recurrences = [part.strip() for part in args.recurrence.split(",") if part.strip()]
        if not recurrences or any(r not in flags for r in recurrences):
            raise ConfigError(f"--recurrence must be on, off or on,off, got {args.recurrence!r}")
        config = EvalConfig(seed=args.seed, minutes=args.minutes,
                            selections=tuple(s.strip() for s in args.selections.split(",")),
                            recurrences=tuple(flags[r] for r in recurrences))
        backend = load_backend(args.model, args.device, args.dtype)
        results = evaluate(backend, config, log=lambda line: None if args.json else print(line))
    except RatsError as error:
        return fail("eval", error)
    if args.json:
        for result in results:
            print(json.dumps(result))
    else:
        print(table(results))
    return 0
