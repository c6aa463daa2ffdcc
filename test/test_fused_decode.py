"""The fused decode kernels (Triton) compute what the torch decode step computes.

The tiny models read out layers 0, 2, 3 and 5 of 8: the others take the fused attention.

On a CPU machine the kernels run in Triton's interpreter (conftest sets ``TRITON_INTERPRET``), in
float32, where the fused and the torch step must agree to float32 rounding and give the same
tokens. On the GPU the same kernels run compiled inside the CUDA graph, in bf16; those tests are
skipped (and reported as skipped) where there is no CUDA.
"""
import pytest
import torch

from rats_ros.errors import ModelError
from rats_ros.models import load_backend
from rats_ros.models.fast import batch as fast_batch
from rats_ros.models.fast import decode as fast_decode
from rats_ros.models.fast import fused, fused_attention, fused_batch, tiles
from rats_ros.models.fast.quant import Dense

FAMILIES = ("tiny-random", "tiny-random-qwen2_5_vl", "tiny-random-qwen3_vl")
ON_CPU = torch.device("cpu")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Norm(torch.nn.Module):
    """An RMSNorm with the attributes the kernels read (``weight``, ``variance_epsilon``)."""

    def __init__(self, dim: int, generator):
        super().__init__()
        self.weight = torch.nn.Parameter(1 + 0.1 * torch.randn(dim, generator=generator))
        self.variance_epsilon = 1e-6


@pytest.fixture(scope="module", params=FAMILIES)
def backend(request, model_cache):
    return load_backend(request.param)


def _check_product(product, rows: int, shape, with_norm: bool, with_bias: bool, mode: str):
    """``product`` (:func:`fused.norm_gemv` or :func:`fused_batch.norm_gemm`) of ``rows`` rows
    against the torch ops, float32."""
    k_in, n_out, config = shape
    g = torch.Generator().manual_seed(rows)
    w = torch.randn(n_out, k_in, generator=g) / k_in ** 0.5
    b = torch.randn(n_out, generator=g) if with_bias and mode != "glu" else None
    x, res = torch.randn(rows, k_in, generator=g), torch.randn(rows, n_out, generator=g)
    norm = Norm(k_in, g) if with_norm else None
    h = torch.nn.functional.rms_norm(x, (k_in,), norm.weight, 1e-6) if with_norm else x
    want = torch.nn.functional.linear(h, w, b)
    kwargs = {}
    if mode == "residual":
        want, kwargs = want + res, {"residual": res.to(DEVICE)}
    elif mode == "glu":
        half = n_out // 2
        want = torch.nn.functional.silu(want[:, :half]) * want[:, half:]
        kwargs = {"glu": half}
    got = product(x.to(DEVICE), Dense(w.to(DEVICE), None if b is None else b.to(DEVICE)),
                  norm=None if norm is None else norm.to(DEVICE), config=config, **kwargs)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not fused.available(DEVICE), reason="Triton is not installed")
@pytest.mark.parametrize("shape", [(300, 44, None), (512, 32, (8, 128, 4))],
                         ids=["masked", "whole-blocks"])
@pytest.mark.parametrize("with_norm", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("mode", ["plain", "residual", "glu"])
def test_norm_gemv_equals_the_torch_ops(shape, with_norm, with_bias, mode):
    """float32, CPU (interpreted) or CUDA (compiled): K not a multiple of the column block
    (masked tails), and whole blocks with an explicit tile (the unmasked loads)."""
    _check_product(fused.norm_gemv, 1, shape, with_norm, with_bias, mode)


@pytest.mark.skipif(not fused.available(DEVICE), reason="Triton is not installed")
@pytest.mark.parametrize("shape", [(300, 44, None), (512, 64, (16, 128, 4, 4))],
                         ids=["masked", "whole-blocks"])
@pytest.mark.parametrize("with_norm", [False, True])
@pytest.mark.parametrize("mode", ["plain", "residual", "glu"])
def test_norm_gemm_gives_each_row_the_torch_ops(shape, with_norm, mode):
    """The batched products: 3 rows of the 16 a program holds, with a bias; a tile with its
    pipeline depth."""
    _check_product(fused_batch.norm_gemm, 3, shape, with_norm, True, mode)


@pytest.mark.skipif(not fused.available(DEVICE), reason="Triton is not installed")
def test_decode_attention_takes_each_rows_own_keys_and_position():
    """Three rows of a batched cache at positions 600, 0 and 255: each row as alone."""
    g = torch.Generator().manual_seed(3)
    heads, kv_heads, d, positions = 8, 2, 64, (600, 0, 255)
    q = torch.randn(3 * heads, d, generator=g)
    kv = torch.randn(2, 3, kv_heads, 1024, d, generator=g)
    pos = torch.tensor(positions, device=DEVICE)
    got = fused_attention.decode_attention(q.to(DEVICE), kv.to(DEVICE), pos, 768, d ** -0.5)
    for r, position in enumerate(positions):  # each row against torch's softmax attention
        keys = kv[:, r, :, :position + 1].repeat_interleave(heads // kv_heads, 1)
        probs = torch.softmax(torch.einsum("hd,hpd->hp", q[r * heads:(r + 1) * heads], keys[0])
                              * d ** -0.5, dim=-1)
        want = torch.einsum("hp,hpd->hd", probs, keys[1]).reshape(1, -1)
        torch.testing.assert_close(got[r:r + 1].cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not fused.available(DEVICE), reason="Triton is not installed")
@pytest.mark.parametrize("heads,kv_heads,position", [(14, 2, 600), (4, 2, 0), (16, 8, 255)])
def test_decode_attention_equals_softmax_attention(heads, kv_heads, position):
    """Split-K attention over keys ``0..pos`` of a larger cache (slices past ``pos`` and a
    non-power-of-two group of 7 query heads per KV head), float32, against torch's softmax."""
    g = torch.Generator().manual_seed(position)
    d, capacity = 64, 768
    q = torch.randn(heads, d, generator=g)
    kv = torch.randn(2, kv_heads, 1024, d, generator=g)
    keys = kv[:, :, :position + 1].repeat_interleave(heads // kv_heads, 1)  # (2, H, P, d)
    probs = torch.softmax(torch.einsum("hd,hpd->hp", q, keys[0]) * d ** -0.5, dim=-1)
    want = torch.einsum("hp,hpd->hd", probs, keys[1]).reshape(1, -1)
    got = fused_attention.decode_attention(q.to(DEVICE), kv.to(DEVICE),
                                           torch.tensor([position], device=DEVICE), capacity,
                                           d ** -0.5)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not fused.available(ON_CPU), reason="Triton is interpreted on CPU runs only")
@torch.inference_mode()
def test_rope_store_equals_the_torch_step(backend):
    """q after RoPE, and K / V written at the position, as the torch step's ``step_qkv``."""
    dec = fast_decode.FastDecoder(backend.model, fused_step=True)
    dec.run(torch.randn(5, backend.hidden_size) * 0.1, 2)  # buffers and RoPE tables
    st, layer = dec._state, dec.packed[0]
    st.pos.fill_(3)
    x = torch.randn(1, backend.hidden_size) * 0.1
    q, k, v = layer.step_qkv(x, dec._rotation(st))
    qkv = layer.qkv(layer.norm(layer.ln1, x))
    got_q = fused.rope_store(qkv, layer, st.cos, st.sin, st.pos, st.kv[0])
    torch.testing.assert_close(got_q, q, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st.kv[0, 0, :, 3], k, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st.kv[0, 1, :, 3], v)


@pytest.mark.skipif(not fused.available(ON_CPU), reason="Triton is interpreted on CPU runs only")
def test_fused_decoder_gives_the_torch_steps_tokens_and_scores(backend):
    embeds = torch.randn(40, backend.hidden_size, generator=torch.Generator().manual_seed(1))
    runs = []
    for fused_step in (False, True):
        dec = fast_decode.FastDecoder(backend.model, backend.readout_layers,
                                      fused_step=fused_step)
        assert dec.fused_step is fused_step
        runs.append(dec.run(embeds * 0.1, 8, (), (4, 30)))
    assert runs[1].token_ids == runs[0].token_ids
    torch.testing.assert_close(runs[1].scores, runs[0].scores, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not fused.available(ON_CPU), reason="Triton is interpreted on CPU runs only")
def test_fused_batched_step_gives_the_torch_batched_steps_tokens_and_scores(backend):
    """Three cameras' prompts of different lengths decoded together, one row stopping early."""
    g = torch.Generator().manual_seed(4)
    inputs = [torch.randn(n, backend.hidden_size, generator=g) * 0.1 for n in (37, 90, 61)]
    spans = [(5, 30), None, (0, 61)]
    torch_step, fused_step = (fast_batch.BatchDecoder(fast_decode.FastDecoder(
        backend.model, backend.readout_layers, fused_step=fuse)) for fuse in (False, True))
    assert fused_step.fused and not torch_step.fused
    stop = torch_step.run(inputs, 8, (), spans)[1].token_ids[2]  # row 1 stops at its 3rd token
    want = torch_step.run(inputs, 8, (stop,), spans)
    got = fused_step.run(inputs, 8, (stop,), spans)
    assert len(got[1].token_ids) == 3
    for mine, theirs in zip(got, want, strict=True):
        assert mine.token_ids == theirs.token_ids
        if theirs.sums is not None:
            torch.testing.assert_close(mine.sums, theirs.sums, rtol=1e-5, atol=1e-7)


def test_fused_step_is_refused_where_it_cannot_run(backend):
    """Quantized weights keep the torch step; asking for the fused one says what to do."""
    assert not fast_decode.FastDecoder(backend.model).fused_step  # CPU default: torch step
    quantized = load_backend(backend.name)  # quantizing rewrites the model: its own copy
    with pytest.raises(ModelError, match="fused_step=False"):
        fast_decode.FastDecoder(quantized.model, weights="int8", fused_step=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (bench device)")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", FAMILIES)
def test_cuda_fused_graph_matches_the_torch_step(model_cache, name, dtype):
    """Compiled kernels inside the CUDA graph: fp32 gives the torch step's tokens; bf16 rounds
    in another order (the products' sums), so its scores agree to bf16 precision."""
    backend = load_backend(name, device="cuda", dtype=dtype)
    assert fused.available(backend.device)
    embeds = torch.randn(300, backend.hidden_size, device="cuda",
                         generator=torch.Generator("cuda").manual_seed(2)) * 0.1
    tokens = 12 if dtype == "float32" else 2  # bf16: later tokens may part on a near tie
    runs = []
    for fused_step in (False, True):
        dec = fast_decode.FastDecoder(backend.model, backend.readout_layers, bucket=64,
                                      fused_step=fused_step)
        assert dec.use_cuda_graph and dec.fused_step is fused_step
        assert set(dec.tiles) == (set(tiles.PRODUCTS) if fused_step else set())  # timed here
        runs.append(dec.run(embeds.to(dec.dtype), tokens, (), (10, 200)))
    scores = [r.scores.float() for r in runs]
    error = (scores[1] - scores[0]).norm() / scores[0].norm()
    assert runs[1].token_ids == runs[0].token_ids
    assert error < (1e-4 if dtype == "float32" else 5e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (bench device)")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", FAMILIES)
def test_cuda_fused_batched_graph_matches_the_torch_batched_step(model_cache, name, dtype):
    """Three cameras' rows on the compiled batched kernels inside the CUDA graph (captured,
    then replayed) against the torch batched step: fp32 the same tokens, bf16 to its precision."""
    backend = load_backend(name, device="cuda", dtype=dtype)
    g = torch.Generator("cuda").manual_seed(5)
    inputs = [(torch.randn(n, backend.hidden_size, device="cuda", generator=g) * 0.1).to(
        backend.dtype) for n in (300, 120, 700)]
    spans, tokens = [(10, 200), None, (50, 650)], 12 if dtype == "float32" else 2
    runs = []
    for fuse in (False, True):
        batch = fast_batch.BatchDecoder(fast_decode.FastDecoder(backend.model,
                                                                backend.readout_layers, bucket=64),
                                        fused=fuse)
        assert batch.fused is fuse and set(batch.tiles) == (set(tiles.PRODUCTS) if fuse else set())
        runs.append([batch.run(inputs, tokens, (), spans) for _ in range(2)][-1])
    for mine, theirs, span in zip(runs[1], runs[0], spans, strict=True):
        assert mine.token_ids == theirs.token_ids
        if span is not None:
            error = (mine.sums.float() - theirs.sums.float()).norm() / theirs.sums.float().norm()
            assert error < (1e-4 if dtype == "float32" else 5e-2)


def test_tile_candidates_fit_the_input_width():
    """Column blocks wider than the row are capped (and the duplicates dropped)."""
    narrow = tiles.candidates(896)
    assert {k for _, k, _ in narrow} == {512, 1024}
    assert len(narrow) == len(set(narrow))
    assert len(tiles.candidates(18944)) == len(tiles.CANDIDATES)
    assert len(tiles.candidates(18944, rows=16)) == len(tiles.ROW_CANDIDATES)
    assert min(k for _, k, *_ in tiles.candidates(8, rows=16)) == 16  # tl.dot's least


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (bench device)")
def test_a_gpu_that_compiles_no_tile_keeps_the_torch_step(model_cache, monkeypatch, caplog):
    """Real Triton compile failures (a block of 3 rows is not a power of two): the default
    decoder logs and takes the torch step; one that asked for the fused step gets ModelError."""
    backend = load_backend("tiny-random", device="cuda", dtype="bfloat16")
    monkeypatch.setattr(tiles, "CANDIDATES", ((3, 64, 4),))
    monkeypatch.setattr(tiles, "_chosen", {})
    dec = fast_decode.FastDecoder(backend.model, backend.readout_layers)
    assert not dec.fused_step and dec.tiles == {}
    assert "fused decode step off" in caplog.text
    assert dec.run(torch.randn(40, backend.hidden_size, device="cuda").bfloat16(), 4).token_ids
    with pytest.raises(ModelError, match="no tile"):
        fast_decode.FastDecoder(backend.model, fused_step=True)
