"""A memory shortage inside the model, made deterministic: a process whose address space is
capped just above what it uses asks for one clip whose prompt needs far more. The allocation
that fails is that prompt's (the largest by far), so the outcome is always the same: a
ModelError that says "out of memory" and what to do, the backend intact, and the next clip
captioned once memory returns. (test_node_faults.py caps a whole running node, where which
allocation fails first is the allocator's choice.)"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys
import numpy as np, torch
from rats_ros.errors import ModelError
from rats_ros.models import load_backend

backend = load_backend("tiny-random")
pixels = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
visual = backend.encode_clip(pixels)
before = backend.caption(visual.tokens[:0], visual, "Describe.", 4, readout=True)
with open("/proc/self/statm") as f:
    used = int(f.read().split()[0]) * resource.getpagesize()
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (used + (256 << 20), hard))
huge = torch.zeros(1, backend.hidden_size).expand(4_000_000, -1)  # a view: no memory yet
result = {}
try:
    backend.caption(huge, visual, "Describe.", 4, readout=True)  # ~4 GB of prompt
except ModelError as error:
    result["error"] = str(error)
resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
after = backend.caption(visual.tokens[:0], visual, "Describe.", 4, readout=True)
result["same_after"] = after.token_ids == before.token_ids
print(json.dumps(result))
"""


def test_a_failed_allocation_in_the_model_is_a_model_error_and_the_next_clip_works(
        model_cache):
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "out of memory while captioning" in result["error"], result
    assert "smaller model" in result["error"]  # says what to do
    assert result["same_after"]
