"""Train ``synthetic-world`` from scratch on one GPU:

    python -m rats_ros.world.train OUT_DIR [--steps N] [--seed S] [--device cuda]

Captioning and answering steps (:mod:`.trainer`) interleaved, on fresh worlds: a round of
``stream_clips`` captioning steps per batch of worlds, every ``qa_every``-th step an answering
step. Frames are drawn on the GPU with the same shape formula as :mod:`.scene` and resized by the
backend's own preprocessing. Seeded: the same seed and step count give the same weights on the
same hardware and software. Worlds for training use seeds below 10**9; evaluation worlds above.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from rats_ros.errors import RatsError
from rats_ros.world import language, scene
from rats_ros.world.model import qa_examples
from rats_ros.world.render import RENDER_SIZE, render_frames, token_labels
from rats_ros.world.trainer import TrainConfig, Trainer


def train(config: TrainConfig, out_dir: Path, device: str, log=print) -> dict:
    """Train and save into ``out_dir``. :returns: a summary (losses, time, settings)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    with tempfile.TemporaryDirectory(prefix="rats_untrained_") as scratch:
        trainer = Trainer(config, Path(scratch), device)
        started = time.perf_counter()
        history = _steps(trainer, config, rng, log)
        trainer.save(out_dir)
    summary = {"config": asdict(config), "device": str(torch.device(device)),
               "seconds": round(time.perf_counter() - started, 1), "steps_done": len(history),
               "final_caption_loss": _recent(history, "caption", 300),
               "final_qa_loss": _recent(history, "qa", 300),
               "torch": torch.__version__, "commit": os.environ.get("RATS_GIT_COMMIT", "")}
    (Path(out_dir) / "training.json").write_text(json.dumps(summary, indent=2))
    return summary


def _recent(history, kind: str, window: int) -> float:
    values = [v for k, v in history[-window:] if k == kind]
    return float(np.mean(values)) if values else float("nan")


def _steps(trainer: Trainer, config: TrainConfig, rng, log) -> list[tuple[str, float]]:
    """The training loop: fresh worlds per round of ``stream_clips`` steps. :returns: losses."""
    started, step, history = time.perf_counter(), 0, []
    while step < config.steps:
        worlds = [scene.generate(int(rng.integers(0, 10**9)), config.stream_clips)
                  for _ in range(config.streams)]
        floors = torch.stack([torch.from_numpy(scene.background(w.seed, RENDER_SIZE))
                              for w in worlds]).to(trainer.device)
        memory = torch.zeros(config.streams, 0, trainer.backend.hidden_size,
                             device=trainer.device)
        for clip in range(config.stream_clips):
            late = config.max_seconds and time.perf_counter() - started > config.max_seconds
            if step >= config.steps or late:
                return history
            if step % config.qa_every == config.qa_every - 1:
                loss, kind = trainer.qa_step(qa_examples(rng, config.qa_batch)), "qa"
            else:
                frames, owner = render_frames(worlds, clip, floors)
                captions = [language.caption(language.clip_facts(w, clip)) for w in worlds]
                targets = token_labels(worlds, clip, owner, trainer.backend.pooled_side)
                loss, kept, _ = trainer.caption_step(frames, captions, memory, targets)
                limit = config.memory_clips * kept.shape[1]
                memory = torch.cat([memory, kept.float()], dim=1)[:, -limit:]
                kind = "caption"
            trainer.update(loss, step)
            history.append((kind, trainer.last_caption_loss if kind == "caption"
                            else trainer.last_qa_loss))
            step += 1
            if step % 100 == 0 or step == config.steps:
                log(f"step {step}/{config.steps} caption loss "
                    f"{_recent(history, 'caption', 100):.3f} qa loss "
                    f"{_recent(history, 'qa', 100):.3f} ({time.perf_counter() - started:.0f} s)")
    return history


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rats_ros.world.train",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--device", default="cuda")
    for name, value in asdict(TrainConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    out_dir, device = args.pop("out_dir"), args.pop("device")
    try:
        summary = train(TrainConfig(**args), out_dir, device)
    except RatsError as error:  # bad settings, no CUDA, an unloadable checkpoint: one line
        print(f"train: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
