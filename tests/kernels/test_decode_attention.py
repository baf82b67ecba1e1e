"""The decode-step attention kernel against its reference, and the reference against the graph decoder's own
`attend` (what the step computed before the kernel): grouped heads, odd head sizes and cache lengths, any
number of splits, the filled length read on the device, and the errors."""

import pytest
import torch

from evalsuite.decode_graph import GraphDecoder, attend
from evalsuite.kernels.decode_attention import decode_attention, decode_attention_ref, pick_launch, rope_ref
from tests.kernels.common import DEVICE, shapes
from tests.utils import assert_close

TOL = {torch.float32: (2e-5, 2e-5), torch.bfloat16: (2e-2, 2e-2), torch.float16: (4e-3, 4e-3)}
# (batch, query heads, key heads, cache length, head size)
CPU_SHAPES = [(1, 4, 1, 1, 16), (2, 8, 2, 70, 32), (3, 6, 3, 130, 20), (1, 2, 2, 17, 64)]
GPU_SHAPES = [(1, 32, 8, 1400, 128), (4, 32, 8, 777, 128), (2, 28, 4, 300, 128), (8, 16, 16, 2048, 64)]


def _inputs(shape, dtype, last: int | None = None, density: float = 0.8):
    b, heads, kv_heads, length, d = shape
    q = torch.randn(b, heads, 1, d).to(dtype)
    kv = torch.randn(2, b, kv_heads, length, d).to(dtype)
    mask = torch.rand(b, 1, length) < density
    mask[:, :, 0] = True  # every row may read something
    if last is not None:
        mask[:, :, last + 1 :] = False
        mask[:, :, last] = True  # the newest token reads itself, as in the decoder
    return q, kv, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", shapes(CPU_SHAPES, []))
def test_reference_is_the_decoders_attend(shape, dtype):
    q, kv, mask = _inputs(shape, dtype)
    scale = shape[-1] ** -0.5
    assert_close(decode_attention_ref(q, kv, mask, scale), attend(q, kv, mask, scale), what="ref vs attend")


def _check(shape, dtype, splits, last, block_l=None):
    q, kv, mask = _inputs(shape, dtype, last)
    scale = shape[-1] ** -0.5
    last_t = None if last is None else torch.tensor([last], device=DEVICE)
    expected = decode_attention_ref(q, kv, mask, scale)
    got = decode_attention(q.to(DEVICE), kv.to(DEVICE), mask.to(DEVICE), scale, last_t, splits=splits, block_l=block_l)
    assert_close(got.cpu(), expected, *TOL[dtype], what=f"splits={splits} last={last} block_l={block_l}")


@pytest.mark.parametrize("splits", [None, 1, 2, 3, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", shapes(CPU_SHAPES, []))
def test_matches_reference(shape, dtype, splits):
    _check(shape, dtype, splits, None)


@pytest.mark.parametrize("block_l", [64, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("last", [0, 1, 63, 64, 100, 127, 128, 129])
def test_reads_up_to_the_last_slot(last, dtype, block_l):
    _check((2, 8, 2, 130, 32), dtype, 3, last, block_l)


def test_launch_rule():
    """About one program per SM, no part shorter than a block of keys; 128 keys a step while the heads leave
    SMs idle, 64 once they fill them (the H100 sweep in pick_launch's docstring)."""
    assert pick_launch(8, 160, 132) == (2, 128)  # batch 1 of an 8B model, a short cache
    assert pick_launch(8, 4096, 132) == (17, 128)
    assert pick_launch(32, 1500, 132) == (5, 128)
    assert pick_launch(256, 1024, 132) == (1, 64)  # batch 32: the heads alone fill the GPU
    # fp32 keys of 128 dimensions: 64 a step (128 needed 272 KB of shared memory on an H100), and 32 at 256
    assert pick_launch(8, 160, 132, 128, 4) == (3, 64)
    assert pick_launch(8, 4096, 132, 256, 4) == (17, 32)
    assert pick_launch(8, 160, 132, 96, 4) == (3, 64)  # 96 dimensions are held padded to 128


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", shapes([], GPU_SHAPES))
def test_matches_reference_at_model_shapes(shape, dtype):
    for last in (0, shape[3] // 3, shape[3] - 1):
        _check(shape, dtype, None, last)


def test_slots_after_last_are_never_read():
    """Garbage (NaN) after the newest slot, with a mask that allows it: the kernel does not read it, and its
    result is the reference's over the clean cache with those slots masked."""
    shape, last = (1, 4, 2, 90, 16), 40
    q, kv, mask = _inputs(shape, torch.float32, last)
    clean = decode_attention_ref(q, kv, mask, 0.25)
    kv[:, :, :, last + 1 :] = float("nan")
    mask[:, :, last + 1 :] = True
    got = decode_attention(q.to(DEVICE), kv.to(DEVICE), mask.to(DEVICE), 0.25, torch.tensor([last], device=DEVICE))
    assert_close(got.cpu(), clean, *TOL[torch.float32], what="with NaN after last")
    assert_close(decode_attention_ref(q, kv.nan_to_num(7.0), mask, 0.25, torch.tensor([last])), clean, 1e-6, 1e-6,
                 "the reference masks after last")  # fmt: skip


@pytest.mark.parametrize("splits", [1, 3, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("last", [0, 63, 64, 100, 129])
def test_writes_the_new_key_and_value_at_last_before_reading_it(last, dtype, splits):
    """new_kv lands in slot `last` of the cache (and nowhere else), and the output attends over it: the same
    output and cache as the reference, which index_copies it first. The slot holds other values before, so
    reading the old ones would show."""
    shape = (2, 8, 2, 130, 32)
    q, kv, mask = _inputs(shape, dtype, last)
    new_kv = torch.randn(shape[0], 2, shape[2], shape[4]).to(dtype)
    strided = torch.randn(shape[0], 2, shape[2], shape[4] + 16).to(dtype)[..., 8 : 8 + shape[4]]
    strided.copy_(new_kv)  # the decoder passes a view into a wider tensor
    scale = shape[-1] ** -0.5
    kv_ref, last_t = kv.clone(), torch.tensor([last])
    expected = decode_attention_ref(q, kv_ref, mask, scale, last_t, new_kv=new_kv)
    kv_dev = kv.to(DEVICE)
    got = decode_attention(q.to(DEVICE), kv_dev, mask.to(DEVICE), scale, last_t.to(DEVICE), splits=splits,
                           new_kv=strided.to(DEVICE))  # fmt: skip
    assert torch.equal(kv_ref[:, :, :, last], new_kv.transpose(0, 1))
    assert torch.equal(kv_dev.cpu(), kv_ref), "the cache after the call"
    assert_close(got.cpu(), expected, *TOL[dtype], what=f"splits={splits} last={last}")


def _rotation(b: int, d: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B, D) of Llama's layout: each row's D / 2 angles, repeated for the two halves."""
    angles = torch.rand(b, d // 2) * 20
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


ROPE_TOL = {torch.float32: (1e-6, 1e-6), torch.bfloat16: (1e-2, 1e-2)}  # bf16: one rounding of the rotation


@pytest.mark.parametrize("qk_norm", [False, True], ids=["rope", "qk-norm+rope"])
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("last", [0, 129])
def test_rotates_q_and_the_new_key_before_writing_and_attending(last, dtype, splits, qk_norm):
    """rope (and Qwen3's q/k norms): q and the new key as the projections left them, rotated in the kernel; the
    cache and the output are the reference's, which rotates first (`rope_ref`). q is a transposed view of a
    (B, 1, H*D) projection and new_kv a view into a wider tensor, as the decoder passes them."""
    b, heads, kv_heads, length, d = 2, 8, 2, 130, 32
    _, kv, mask = _inputs((b, heads, kv_heads, length, d), dtype, last)
    q = torch.randn(b, 1, heads * d + 16).to(dtype)[..., : heads * d].view(b, 1, heads, d).transpose(1, 2)
    new_kv = torch.randn(b, 2, kv_heads, d + 16).to(dtype)[..., 8 : 8 + d]
    rope = _rotation(b, d, dtype)
    norm = (torch.rand(d).to(dtype) + 0.5, torch.rand(d).to(dtype) + 0.5, 1e-6) if qk_norm else None
    scale = d**-0.5
    kv_ref, last_t = kv.clone(), torch.tensor([last])
    expected = decode_attention_ref(q, kv_ref, mask, scale, last_t, new_kv=new_kv, rope=rope, qk_norm=norm)
    kv_dev = kv.to(DEVICE)
    to_dev = lambda t: tuple(x.to(DEVICE) if isinstance(x, torch.Tensor) else x for x in t)  # noqa: E731
    got = decode_attention(
        q.to(DEVICE),
        kv_dev,
        mask.to(DEVICE),
        scale,
        last_t.to(DEVICE),
        splits=splits,
        new_kv=new_kv.to(DEVICE),
        rope=to_dev(rope),
        qk_norm=to_dev(norm) if norm else None,
    )
    kv_got = kv_dev.cpu()
    others = torch.arange(length) != last
    assert torch.equal(kv_got[:, :, :, others], kv[:, :, :, others]), "only slot `last` is written"
    assert torch.equal(kv_got[1], kv_ref[1]), "the values are written as they came"
    assert not torch.equal(kv_ref[0, :, :, last], new_kv[:, 0]), "the reference rotated the keys"
    assert_close(kv_got[0, :, :, last], kv_ref[0, :, :, last], *ROPE_TOL[dtype], what="the rotated keys")
    assert_close(got.cpu(), expected, *TOL[dtype], what=f"splits={splits} last={last}")


def test_rope_ref_is_the_decoders_rope():
    """`rope_ref` against the graph decoder's `rope` (the HF rotate-half form), Qwen3's norms included, in fp32."""
    from evalsuite.decode_graph import rope

    b, heads, kv_heads, d = 3, 4, 2, 16
    q, k, v = (torch.randn(b, 1, n * d) for n in (heads, kv_heads, kv_heads))
    cos, sin = _rotation(b, d, torch.float32)
    norm = (torch.rand(d) + 0.5, torch.rand(d) + 0.5, 1e-6)
    cache = torch.zeros(2, b, kv_heads, 4, d)
    want_q = rope(q, k, v, cos[:, None], sin[:, None], d, norm, cache, torch.tensor([2]))
    got_q = rope_ref(q.view(b, heads, d), cos, sin, (norm[0], norm[2]))
    torch.testing.assert_close(got_q, want_q[:, :, 0], atol=1e-6, rtol=1e-6)
    got_k = rope_ref(k.view(b, kv_heads, d), cos, sin, (norm[1], norm[2]))
    torch.testing.assert_close(got_k, cache[0, :, :, 2], atol=1e-6, rtol=1e-6)


def test_rope_needs_new_kv_an_even_head_and_its_shapes():
    q, kv, mask = (t.to(DEVICE) for t in _inputs((1, 4, 2, 40, 16), torch.float32))
    last = torch.tensor([3], device=DEVICE)
    new_kv = torch.zeros(1, 2, 2, 16, device=DEVICE)
    rope = tuple(t.to(DEVICE) for t in _rotation(1, 16, torch.float32))
    norm = (torch.ones(16, device=DEVICE), torch.ones(16, device=DEVICE), 1e-6)
    with pytest.raises(ValueError, match="rope rotates q and the new keys: pass new_kv as well"):
        decode_attention(q, kv, mask, 0.25, last, rope=rope)
    with pytest.raises(ValueError, match="qk_norm is applied before the rotation: pass rope as well"):
        decode_attention(q, kv, mask, 0.25, last, new_kv=new_kv, qk_norm=norm)
    with pytest.raises(ValueError, match=r"cos must have shape \(1, 16\), got \(1, 8\)"):
        decode_attention(q, kv, mask, 0.25, last, new_kv=new_kv, rope=(rope[0][:, :8], rope[1]))
    with pytest.raises(ValueError, match=r"qk_norm's k weight must have shape \(16\), got \(15,\)"):
        decode_attention(q, kv, mask, 0.25, last, new_kv=new_kv, rope=rope, qk_norm=(norm[0], norm[1][:15], 1e-6))
    odd = [t.to(DEVICE) for t in _inputs((1, 4, 2, 40, 15), torch.float32)]
    with pytest.raises(ValueError, match="rope needs an even head size, got 15"):
        decode_attention(
            *odd,
            0.25,
            last,
            new_kv=torch.zeros(1, 2, 2, 15, device=DEVICE),
            rope=(torch.ones(1, 15, device=DEVICE),) * 2,
        )


def test_new_kv_needs_last_and_its_shape():
    q, kv, mask = (t.to(DEVICE) for t in _inputs((1, 4, 2, 40, 16), torch.float32))
    new_kv = torch.zeros(1, 2, 2, 16, device=DEVICE)
    with pytest.raises(ValueError, match="new_kv is written at slot `last`: pass last as well"):
        decode_attention(q, kv, mask, 0.25, new_kv=new_kv)
    with pytest.raises(ValueError, match=r"new_kv must have shape \(1, 2, 2, 16\)"):
        decode_attention(q, kv, mask, 0.25, torch.tensor([3], device=DEVICE), new_kv=new_kv[:, :1])


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_the_decoder_whose_kernel_writes_the_cache_matches_the_one_whose_rope_does(kind):
    """float32, eager steps: the graph decoder with our kernel (which rotates q and the new keys and writes the
    keys and values) gives the tokens, logits and cache of the one with `rope` and `attend`; Qwen3's per-head q/k
    norms included."""
    from tests.test_decode_graph import CONTEXTS, greedy, random_model

    model = random_model(kind).to(DEVICE)
    decoders = [GraphDecoder(model, batch_size=3, max_len=24, attention=a, graphs=False) for a in ("triton", "torch")]
    (got, got_logits), (want, want_logits) = (greedy(d, CONTEXTS, 8) for d in decoders)
    assert "applies RoPE and writes the new keys and values" in decoders[0].describe()
    assert got == want
    for a, b in zip(got_logits, want_logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for ours, theirs in zip(decoders[0].kv, decoders[1].kv, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_repeated_calls_put_the_counters_back():
    """The last-arriving program zeroes its counter: a second call, and a call of another shape, merge right."""
    for shape in ((2, 8, 2, 70, 32), (2, 8, 2, 70, 32), (1, 4, 4, 33, 16)):
        _check(shape, torch.float32, 4, None)


def test_a_row_with_nothing_allowed_is_nan_as_in_the_reference():
    q, kv, mask = _inputs((2, 4, 2, 40, 16), torch.float32)
    mask[1] = False
    got = decode_attention(q.to(DEVICE), kv.to(DEVICE), mask.to(DEVICE), 0.25, splits=3).cpu()
    ref = decode_attention_ref(q, kv, mask, 0.25)
    assert got[1].isnan().all() and ref[1].isnan().all()
    assert_close(got[:1], ref[:1], *TOL[torch.float32], what="the other row")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda q, kv, m: (q.expand(-1, -1, 2, -1), kv, m), r"q must have shape \(\*, \*, 1, \*\)"),
        (lambda q, kv, m: (q, kv.half(), m), "kv must be float32"),
        (lambda q, kv, m: (q[:, :3], kv, m), "3 heads are not a whole number of groups over kv's 2"),
        (lambda q, kv, m: (q, kv, m.float()), "mask must be bool"),
        (lambda q, kv, m: (q, kv, m[..., :-1]), r"mask must have shape \(2, 1, 40\)"),
    ],
    ids=["two-tokens", "kv-dtype", "groups", "mask-dtype", "mask-length"],
)
def test_errors_name_the_argument(change, message):
    q, kv, mask = _inputs((2, 4, 2, 40, 16), torch.float32)
    q, kv, mask = change(q.to(DEVICE), kv.to(DEVICE), mask.to(DEVICE))
    with pytest.raises(ValueError, match=message):
        decode_attention(q, kv, mask, 0.25)


def test_last_must_be_one_integer():
    q, kv, mask = (t.to(DEVICE) for t in _inputs((1, 4, 2, 40, 16), torch.float32))
    with pytest.raises(ValueError, match="last must hold one slot index, got 2"):
        decode_attention(q, kv, mask, 0.25, torch.tensor([3, 4], device=DEVICE))
    with pytest.raises(ValueError, match="last must be int64 or int32"):
        decode_attention(q, kv, mask, 0.25, torch.tensor([3.0], device=DEVICE))


def test_the_bench_runs_and_writes_its_table(tmp_path, capsys):
    """`bench kernels --only decode_attention --tiny` on the interpreter: the code path, not the speed."""
    from evalsuite.kernels.bench import main

    device = ["--device", "cpu"] if DEVICE == "cpu" else []
    assert main(["--only", "decode_attention", "--tiny", "--rep", "5", "--out", str(tmp_path), *device]) == 0
    stem = next(tmp_path.glob("decode-attention-*.json"))
    rows = __import__("json").loads(stem.read_text())["rows"]
    assert [(r["batch"], r["filled"], r["cache"]) for r in rows] == [(1, 40, 70)]
    assert rows[0]["max_abs_diff"] < 2e-2 and set(rows[0]["sweep_us"]) >= {"32x1", "32x2", "64x1", "64x2"}
    assert all(rows[0][key] > 0 for key in ("write_us", "write_rope_us", "write_rope_norm_us"))
    assert "| 1 | 40 | 70 |" in stem.with_suffix(".md").read_text()


def forced(decoder, contexts, tokens) -> list[torch.Tensor]:
    """Each step's logits (float32 copies) when the same `tokens` (steps of B ids) are fed to `decoder`."""
    logits = [decoder.prefill(contexts).float().clone()]
    for ids in tokens:
        logits.append(decoder.step(torch.tensor(ids, device=logits[0].device)).float().clone())
    return logits


def test_in_the_decoder_it_drifts_from_float32_no_more_than_the_compiled_attend(monkeypatch):
    """bf16 steps over a cache far longer than the contexts, the graph decoder with our kernel (reading the
    filled slots) and with `attend` (reading the whole cache), both fed the float32 model's greedy tokens: the
    kernel's logits stay as close to float32's as attend's do (bf16 rounding drifts either path by a few per
    cent over 24 steps; a filled length one slot short, which drops the newest token, fails it). The cache
    holds one block of keys here, so the merge and the running rescale are the kernel tests' to check. On the
    GPU both paths run in CUDA graphs; on the CPU the kernel runs on the interpreter and the steps eagerly."""
    from evalsuite import models
    from evalsuite.graphs import DynamicDecoder
    from tests.test_decode_graph import CONTEXTS, greedy

    if DEVICE == "cuda":  # the float32 reference without TF32
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    spec = models.resolve_model("embedded:tiny")
    tokens, reference = greedy(DynamicDecoder(models.load(spec, DEVICE, "float32").model), CONTEXTS, 24)
    reference = [r.float() for r in reference]
    bf16 = models.load(spec, DEVICE, "bfloat16").model
    kernel = GraphDecoder(bf16, batch_size=3, max_len=1024, attention="triton")
    compiled_attend = GraphDecoder(bf16, batch_size=3, max_len=1024, attention="torch")
    assert "step attention: Triton decode kernel" in kernel.describe()
    assert "step attention" not in compiled_attend.describe()

    def error(decoder) -> float:
        got = forced(decoder, CONTEXTS, tokens)
        return max(float((g - r).abs().max() / r.abs().max()) for g, r in zip(got, reference, strict=True))

    kernel_error, attend_error = error(kernel), error(compiled_attend)
    assert kernel_error <= 1.5 * attend_error + 1e-3, f"kernel {kernel_error:.3g} vs attend {attend_error:.3g}"
