"""A procedurally generated world with exact ground truth, and the small model trained on it.

- :mod:`.scene`: objects that enter, move, stop and leave; frames and per-frame masks;
- :mod:`.language`: the caption grammar, caption parsing into facts, questions with answers;
- :mod:`.model`: the untrained LLaVA-OneVision architecture and tokenizer of ``synthetic-world``;
- :mod:`.train`: training on streams of worlds with memories made by the method itself (GPU);
- :mod:`.evaluate`: ``rats-ros eval synthetic``: selection and recurrence ablations on an unseen
  world through the real captioner and answerer.

Nothing here imports ROS.
"""
from pathlib import Path

from rats_ros.errors import ModelError

#: the model name that :func:`rats_ros.models.resolve_model` maps to the committed weights
SYNTHETIC_WORLD = "synthetic-world"
CHECKPOINT = Path(__file__).resolve().parent / "synthetic_world"


def checkpoint_dir() -> Path:
    """:returns: the committed ``synthetic-world`` checkpoint directory.
    :raises ModelError: when it is not there (a partial install)."""
    if not (CHECKPOINT / "model.safetensors").is_file():
        raise ModelError(f"the {SYNTHETIC_WORLD} weights are missing from {CHECKPOINT}; "
                         "reinstall rats_ros or train them with `python -m rats_ros.world.train`")
    return CHECKPOINT
