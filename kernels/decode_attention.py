"""Attention of one new token per row over a static KV cache (the decode step), split along the cache.

    out = decode_attention(q, kv, mask, scale, last=write)   # q (B, H, 1, D), kv (2, B, Hkv, L, D) -> (B, 1, H*D)
    out = decode_attention_ref(q, kv, mask, scale, last=write)  # the pure-torch definition
    out = decode_attention(q, kv, mask, scale, last=write, new_kv=kv_new)  # kv_new (B, 2, Hkv, D) written first
    out = decode_attention(q, kv, mask, scale, last=write, new_kv=kv_new, rope=(cos, sin), qk_norm=(wq, wk, eps))

`mask` (B, 1, L) is True where a slot may be read. `last` (optional, a one-element integer device tensor) is
the newest written slot: slots after it are never read, so a cache allocated for the longest generation costs
only what is filled. The caller's mask must be False there too (the graph decoder's is); the reference masks
them, so both agree for any mask. The value is read on the device, so a CUDA graph replays the kernel with the
length of each step. Query head h reads key head h // (H / Hkv) (grouped-query attention).

`new_kv` (B, 2, Hkv, D, any strides but the last), with `last`: the new token's key and value, which the call
writes into the cache at slot `last` before attending (the reference does the same with `index_copy_`). In the
graph decoder this replaces a kernel of its own per layer: the program whose part of the cache holds slot
`last` writes it and then reads its part, after a barrier; no other program reads that slot.

At batch 1 an 8B model has 8 key heads, 8 programs if each read its head's whole cache. The cache is split
into SPLITS parts of the filled length (flash-decoding); each program keeps the running maximum, the sum of
exponentials and the weighted values of its part for the head's whole query group (one tensor-core product
per block of keys), writes them to a workspace and counts itself in; the program that arrives last merges the
parts in split order, so the result does not depend on which one that is, and puts the counter back to zero
(the split-K GEMV's scheme, `_weight_only_gemv`). Scores are rounded to q's dtype before scaling and the
probabilities to V's before the second product, as the reference's matmuls round them; the softmax runs in
fp32. The kernel matches the reference within attention-in-bf16 tolerances (its exponentials are taken
against a running, not the global, maximum), and to fp32 rounding in fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._bits import bf16_rne, normed_element
from ._launch import check_device, check_tensor, interpreting, num_sms
from ._weight_only_gemv import split_counters

WHO = "decode_attention"
TILE_BYTES = 32 * 1024  # the most one K or V tile may take in shared memory (bf16 at 128 keys x 128 dims)
DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def rope_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, norm: tuple | None = None) -> torch.Tensor:
    """x (B, heads, D) rotated by cos, sin (B, D) as the kernel rotates q and the new keys: first, with `norm`
    (weight, eps), the HF RMSNorm of each head (fp32, rounded to x's dtype, times the weight in x's dtype), then
    x * cos + rotate_half(x) * sin in fp32, rounded once to x's dtype."""
    if norm is not None:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm[1])
        x = norm[0] * x32.to(x.dtype)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x.float() * cos.float()[:, None] + rotated.float() * sin.float()[:, None]).to(x.dtype)


def decode_attention_ref(
    q: torch.Tensor,
    kv: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    last: torch.Tensor | None = None,
    new_kv: torch.Tensor | None = None,
    rope: tuple | None = None,
    qk_norm: tuple | None = None,
) -> torch.Tensor:
    """The graph decoder's `attend` at one token (the same operations, so the same bits; a test holds them
    equal), with slots after `last` masked: each key head's query group in one matmul in q's dtype, softmax in
    fp32, probabilities back in V's dtype for the second matmul. `new_kv` is first written into kv at slot
    `last`, in place; with `rope`, q and its keys are rotated first (`rope_ref`)."""
    if rope is not None:
        norms = (None, None) if qk_norm is None else ((qk_norm[0], qk_norm[2]), (qk_norm[1], qk_norm[2]))
        q = rope_ref(q[:, :, 0], *rope, norms[0]).unsqueeze(2)
        new_kv = torch.stack((rope_ref(new_kv[:, 0], *rope, norms[1]), new_kv[:, 1]), dim=1)
    if new_kv is not None:
        kv.index_copy_(3, last.reshape(1), new_kv.transpose(0, 1).unsqueeze(3))
    b, heads, _, d = q.shape
    kv_heads = kv.shape[2]
    qg = q.reshape(b, kv_heads, heads // kv_heads, d)
    allowed = mask[:, None]  # (B, 1, 1, L)
    if last is not None:
        allowed = allowed & (torch.arange(kv.shape[3], device=kv.device) <= last.reshape(()))
    scores = torch.matmul(qg, kv[0].transpose(-1, -2)).float() * scale  # (B, Hkv, G, L)
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).to(q.dtype)
    out = torch.matmul(probs, kv[1]).view(b, heads, 1, d)
    return out.transpose(1, 2).reshape(b, 1, heads * d)


@triton.jit
def _rope_rows(rows, ok, offs_d, D, cos, sin, w_ptr, eps, QK_NORM: tl.constexpr, RNE: tl.constexpr):
    """The (R, BLOCK_D) rows at pointers `rows` (R, 1), rotated (`rope_ref`): cos, sin (1, BLOCK_D) fp32; each
    element's rotate-half partner is loaded from its own address (L1), so no register shuffles. RNE (bf16 on
    the interpreter, whose casts truncate): round to bf16 with integer operations first."""
    half = D // 2
    first = offs_d < half
    offs_p = tl.where(first, offs_d + half, offs_d - half)
    d_ok = offs_d < D
    x = tl.load(rows + offs_d[None, :], mask=ok & d_ok[None, :], other=0.0)
    xp = tl.load(rows + offs_p[None, :], mask=ok & d_ok[None, :], other=0.0)
    dtype = x.dtype
    x, xp = x.to(tl.float32), xp.to(tl.float32)
    if QK_NORM:
        r = tl.math.rsqrt(tl.sum(x * x, axis=1) / D + eps)[:, None]  # the same per row for x and its partners
        w = tl.load(w_ptr + offs_d, mask=d_ok, other=0.0).to(tl.float32)[None, :]
        wp = tl.load(w_ptr + offs_p, mask=d_ok, other=0.0).to(tl.float32)[None, :]
        x, xp = normed_element(x, w, r, dtype, RNE), normed_element(xp, wp, r, dtype, RNE)
    out = x * cos + tl.where(first[None, :], -xp, xp) * sin
    if RNE:
        out = bf16_rne(out)
    return out.to(dtype)


@triton.jit
def _decode_attention_kernel(
    q_ptr, kv_ptr, mask_ptr, last_ptr, out_ptr, ws_ptr, count_ptr, new_ptr, cos_ptr, sin_ptr, wq_ptr, wk_ptr,
    L, D, GROUP, KV_HEADS, scale, eps,
    stride_qb, stride_qh, stride_kv, stride_kb, stride_kh, stride_kl, stride_mb, stride_ob,
    stride_nb, stride_nkv, stride_nh, stride_cb,
    HAS_LAST: tl.constexpr, WRITE: tl.constexpr, ROPE: tl.constexpr, QK_NORM: tl.constexpr, RNE: tl.constexpr,
    SPLITS: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """Program (row and key head, split). The head's query group is padded to BLOCK_G >= 16 rows for the
    tensor-core products; the padding rows read zeros and are never stored. PRECISION: "ieee" for fp32 inputs
    (no TF32: the reference multiplies in fp32), the default for 16-bit ones. DOT_IN_FP32 (the interpreter, whose
    bf16 `tl.dot` returns garbage, triton 3.9): 16-bit operands widened to fp32 first, the same exact products."""
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)
    b = (pid // KV_HEADS).to(tl.int64)
    j = pid % KV_HEADS
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    g_ok = offs_g < GROUP
    d_ok = offs_d < D
    heads = j * GROUP + offs_g
    q_rows = q_ptr + b * stride_qb + heads[:, None] * stride_qh
    if ROPE:
        cos = tl.load(cos_ptr + b * stride_cb + offs_d, mask=d_ok, other=0.0).to(tl.float32)[None, :]
        sin = tl.load(sin_ptr + b * stride_cb + offs_d, mask=d_ok, other=0.0).to(tl.float32)[None, :]
        q = _rope_rows(q_rows, g_ok[:, None], offs_d, D, cos, sin, wq_ptr, eps, QK_NORM, RNE)
    else:
        q = tl.load(q_rows + offs_d[None, :], mask=g_ok[:, None] & d_ok[None, :], other=0.0)
    n = L
    if HAS_LAST:
        n = tl.minimum(tl.load(last_ptr).to(tl.int32) + 1, L)
    per_split = tl.cdiv(tl.cdiv(n, BLOCK_L), SPLITS) * BLOCK_L
    lo = pid_s * per_split
    hi = tl.minimum(lo + per_split, n)
    k_base = kv_ptr + b * stride_kb + j * stride_kh
    if WRITE:  # the new key and value into slot n - 1 (= last), by the one program that reads that slot
        if (lo <= n - 1) & (n - 1 < hi):
            new = new_ptr + b * stride_nb + j * stride_nh + offs_d
            slot = k_base + (n - 1) * stride_kl + offs_d
            if ROPE:
                key_row = new_ptr + b * stride_nb + j * stride_nh + tl.zeros((1, 1), tl.int32)
                key = _rope_rows(key_row, (offs_d >= 0)[None, :], offs_d, D, cos, sin, wk_ptr, eps, QK_NORM, RNE)
                tl.store(slot[None, :], key, mask=d_ok[None, :])
            else:
                tl.store(slot, tl.load(new, mask=d_ok), mask=d_ok)
            tl.store(slot + stride_kv, tl.load(new + stride_nkv, mask=d_ok), mask=d_ok)
        tl.debug_barrier()  # the slot is written before any thread of this program reads it
    m_i = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
    for start in range(lo, hi, BLOCK_L):
        offs_l = start + tl.arange(0, BLOCK_L)
        l_ok = offs_l < hi
        allowed = tl.load(mask_ptr + b * stride_mb + offs_l, mask=l_ok, other=0) != 0
        tile = offs_l[:, None] * stride_kl + offs_d[None, :]
        tile_ok = l_ok[:, None] & d_ok[None, :]
        k = tl.load(k_base + tile, mask=tile_ok, other=0.0)
        v = tl.load(k_base + stride_kv + tile, mask=tile_ok, other=0.0)  # issued with K: the two latencies overlap
        if DOT_IN_FP32:
            s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # (BLOCK_G, BLOCK_L), fp32
        s = s.to(q_ptr.dtype.element_ty).to(tl.float32) * scale  # the reference's matmul output rounding
        s = tl.where(allowed[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing allowed yet: keep everything at zero
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DOT_IN_FP32:
            pv = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    out_ptrs = out_ptr + b * stride_ob + heads[:, None] * D + offs_d[None, :]
    out_ok = g_ok[:, None] & d_ok[None, :]
    if SPLITS == 1:
        tl.store(out_ptrs, (acc / l_i[:, None]).to(out_ptr.dtype.element_ty), mask=out_ok)
    else:
        # workspace per (program, split): BLOCK_G maxima, BLOCK_G sums, then BLOCK_G x BLOCK_D values
        part = BLOCK_G * (BLOCK_D + 2)
        base = ws_ptr + (pid * SPLITS).to(tl.int64) * part
        mine = base + pid_s * part
        tl.store(mine + offs_g, m_i)
        tl.store(mine + BLOCK_G + offs_g, l_i)
        tl.store(mine + 2 * BLOCK_G + offs_g[:, None] * BLOCK_D + offs_d[None, :], acc)
        tl.debug_barrier()  # every thread's part is written before the counter says so
        counter = count_ptr + pid
        if tl.atomic_add(counter, 1, sem="acq_rel") == SPLITS - 1:
            # the last program of this head: merge the parts in split order, read from L2 (.cg: L1 may hold
            # stale lines of the workspace from an earlier call)
            m = tl.full((BLOCK_G,), float("-inf"), tl.float32)
            for s in range(SPLITS):
                m = tl.maximum(m, tl.load(base + s * part + offs_g, cache_modifier=".cg"))
            m = tl.where(m == float("-inf"), 0.0, m)
            total_l = tl.zeros((BLOCK_G,), tl.float32)
            total = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
            for s in range(SPLITS):
                w = tl.exp(tl.load(base + s * part + offs_g, cache_modifier=".cg") - m)
                total_l += w * tl.load(base + s * part + BLOCK_G + offs_g, cache_modifier=".cg")
                vals = tl.load(base + s * part + 2 * BLOCK_G + offs_g[:, None] * BLOCK_D + offs_d[None, :],
                               cache_modifier=".cg")  # fmt: skip
                total += w[:, None] * vals
            tl.store(out_ptrs, (total / total_l[:, None]).to(out_ptr.dtype.element_ty), mask=out_ok)
            tl.atomic_xchg(counter, 0)


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def pick_launch(programs: int, length: int, sms: int, head_dim: int = 128, element_size: int = 2) -> tuple[int, int]:
    """(parts of the cache per key head, keys per step), from the H100 sweep of `evalsuite bench kernels --only
    decode_attention` (benchmarks/decode-attention-h100/): about one program per SM over all heads (two, the
    earlier rule, was slower at every batch-1 length: 18.9 against 15.8 us at 1,500 slots), at least one
    block of keys each at the cache's full length; 128 keys a step while the heads leave SMs idle, 64 once
    they fill the GPU (batch 32: 64 keys in one part, 47.6 us, against 54.9 us with 128). One key's bytes as
    the kernel holds it (the head size padded to its block, times the element size) cap a K or V tile at TILE_BYTES:
    Triton keeps two of each in shared memory, and 128 fp32 keys of 128 dimensions asked an H100 for 272 KB
    of its 227."""
    block_l = 128 if programs < sms else 64
    block_l = max(16, min(block_l, TILE_BYTES // (_block_d(head_dim) * element_size)))
    return _splits(programs, length, sms, block_l), block_l


def _splits(programs: int, length: int, sms: int, block_l: int) -> int:
    return max(1, min(triton.cdiv(sms, programs), triton.cdiv(length, block_l)))


def decode_attention(
    q: torch.Tensor,
    kv: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    last: torch.Tensor | None = None,
    splits: int | None = None,
    block_l: int | None = None,
    new_kv: torch.Tensor | None = None,
    rope: tuple | None = None,
    qk_norm: tuple | None = None,
) -> torch.Tensor:
    """See the module docstring; `splits` and `block_l` (keys per step, a power of two >= 16) override the
    defaults (tests, `evalsuite bench kernels --only decode_attention`)."""
    check_device(q.device, WHO)
    check_tensor(q, "q", WHO, DTYPES, (None, None, 1, None))
    b, heads, _, d = q.shape
    check_tensor(kv, "kv", WHO, (q.dtype,), (2, b, None, None, d), q.device)
    kv_heads, length = kv.shape[2], kv.shape[3]
    if heads % kv_heads:
        raise ValueError(f"{WHO}: q's {heads} heads are not a whole number of groups over kv's {kv_heads} heads")
    check_tensor(mask, "mask", WHO, (torch.bool,), (b, 1, length), q.device)
    if last is not None:
        check_tensor(last, "last", WHO, (torch.int64, torch.int32), None, q.device)
        if last.numel() != 1:
            raise ValueError(f"{WHO}: last must hold one slot index, got {last.numel()} values")
    if new_kv is not None:
        if last is None:
            raise ValueError(f"{WHO}: new_kv is written at slot `last`: pass last as well")
        check_tensor(new_kv, "new_kv", WHO, (q.dtype,), (b, 2, kv_heads, d), q.device)
    if qk_norm is not None and rope is None:
        raise ValueError(f"{WHO}: qk_norm is applied before the rotation: pass rope as well")
    if rope is not None:
        if new_kv is None:
            raise ValueError(f"{WHO}: rope rotates q and the new keys: pass new_kv as well")
        if d % 2:
            raise ValueError(f"{WHO}: rope needs an even head size, got {d}")
        for name, t in zip(("cos", "sin"), rope, strict=True):
            check_tensor(t, name, WHO, DTYPES, (b, d), q.device)
        if rope[0].stride() != rope[1].stride():
            raise ValueError(f"{WHO}: cos and sin must have the same strides, got {rope[0].stride()} and "
                             f"{rope[1].stride()}")  # fmt: skip
    if qk_norm is not None:
        for name, t in zip(("qk_norm's q weight", "qk_norm's k weight"), qk_norm[:2], strict=True):
            check_tensor(t, name, WHO, DTYPES, (d,), q.device)
    extra = (*(rope or ()), *(qk_norm[:2] if qk_norm is not None else ()))
    if any(t is not None and t.stride(-1) != 1 for t in (q, kv, mask, new_kv, *extra)):
        raise ValueError(f"{WHO}: q, kv, mask, new_kv, rope and qk_norm need a contiguous last dimension")
    group = heads // kv_heads
    programs = b * kv_heads
    sms = num_sms(q.device)
    block_g = max(16, triton.next_power_of_2(group))
    block_d = _block_d(d)
    block_l = block_l or pick_launch(programs, length, sms, d, q.element_size())[1]
    if block_l < 16 or block_l & (block_l - 1):
        raise ValueError(f"{WHO}: block_l must be a power of two >= 16, got {block_l}")
    splits = splits or _splits(programs, length, sms, block_l)
    out = torch.empty((b, 1, heads * d), dtype=q.dtype, device=q.device)
    ws, counters = out, out
    if splits > 1:
        ws = torch.empty(programs * splits * block_g * (block_d + 2), dtype=torch.float32, device=q.device)
        counters = split_counters(q.device, programs)
    new = new_kv if new_kv is not None else out
    cos, sin = rope if rope is not None else (out, out)
    wq, wk, eps = qk_norm if qk_norm is not None else (out, out, 0.0)
    _decode_attention_kernel[(programs, splits)](
        q, kv, mask.view(torch.uint8), last if last is not None else out, out, ws, counters, new, cos, sin, wq, wk,
        length, d, group, kv_heads, float(scale), float(eps),
        q.stride(0), q.stride(1), kv.stride(0), kv.stride(1), kv.stride(2), kv.stride(3), mask.stride(0),
        out.stride(0), *(new.stride()[:3] if new_kv is not None else (0, 0, 0)), cos.stride(0),
        HAS_LAST=last is not None, WRITE=new_kv is not None, ROPE=rope is not None, QK_NORM=qk_norm is not None,
        RNE=interpreting() and q.dtype == torch.bfloat16, SPLITS=splits, BLOCK_G=block_g, BLOCK_L=block_l,
        BLOCK_D=block_d,
        PRECISION="ieee" if q.dtype == torch.float32 else None, DOT_IN_FP32=interpreting(), num_warps=4,
    )  # fmt: skip
    return out
