"""Decode GEMV for int4 weights on tensor cores (M <= 16): y = x @ dequant(W).T as a swap-AB `mma` (W's rows on
the MMA's M side, the tokens on its N side, 8 or 16), with W in a K order permuted offline so that no code crosses
a thread on its way into the MMA's operand.

The operand layout of a bf16 `mma.m16n8k16` with Triton's k_width = 8 gives each thread, per 16 rows and 32 K,
rows r and r + 8 and 8 consecutive K: one 32-bit word of int4 codes each. `mma_layout_words` stores, in each
128-K segment of a row, the 16 words of the segment so that a thread's four (one per 32 K) are adjacent (one
16-byte load), and the codes of a word so that one shift and one `lop3` make a bf16 pair of consecutive K:
code 2i at nibble i, code 2i + 1 at nibble i + 4. The pair is 128 + code exactly (0x4300 | code), so the
kernel needs no conversion and no shuffle, about one instruction per code on the way in.

Per 128-K segment (inside one group: the group size is a multiple of 128) and 16 rows, the MMA gives
d = sum (128 + c) x, and a second MMA of ones gives sum x, the same for every row; the group's
s * (d - (128 + z) * sum x) goes into the fp32 accumulator: two FMAs per output, a 64th of an instruction
per code. K is split over programs when N alone does not fill the GPU; the partials are added as in
`_weight_only_gemv` (the program that arrives last adds them in split order and writes the output).

This is a Gluon kernel (`triton.experimental.gluon`, triton >= 3.5): its layouts are stated, not inferred, so
it runs only on an NVIDIA GPU with bf16 MMA (sm_80 and later), never under the interpreter. Its pure-torch
reference is `mma_gemv_ref`, on the same permuted words.
"""

from __future__ import annotations

import torch
import triton

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.ampere import mma_v2
except ImportError:  # triton < 3.5: the path is unavailable and `available()` says so
    gluon = None

SEGMENT = 128  # K per segment: 16 words, four per thread and row
MAX_M = 16  # two of the MMA's N = 8 columns
K_ORDER = "mma128"  # the name W4A16 layers record for weights stored in this kernel's order
WHY = f"M <= {MAX_M}, bf16 x, codes stored in {K_ORDER!r} order: the tensor-core decode GEMV"


def available() -> bool:
    return gluon is not None


def runs_on(device: torch.device) -> bool:
    """Gluon present and an NVIDIA GPU with bf16 MMA (sm_80 and later), not the interpreter."""
    from ._launch import _capability, nvidia_ptx

    if not (available() and nvidia_ptx(device)):
        return False
    return _capability(device.index if device.index is not None else torch.cuda.current_device()) >= (8, 0)


def runs(x: torch.Tensor, group_size: int) -> bool:
    """Whether this kernel takes the call on (M, K) x: `runs_on` its device and `applies`."""
    return runs_on(x.device) and applies(x.shape[0], x.shape[1], group_size, x)


def applies(m: int, k: int, group_size: int, x: torch.Tensor) -> bool:
    """Tokens within one MMA column block, K whole segments, groups whole segments, bf16 x."""
    return m <= MAX_M and k % SEGMENT == 0 and group_size % SEGMENT == 0 and x.dtype == torch.bfloat16


def _operand_k(position: int) -> int:
    """The segment-relative K of position `position` of the MMA operands' K (Triton's k_width = 8 order: a
    thread's 8 consecutive positions per 32, at 8 x its lane block; the chunk of 32 above). Chosen so that x
    loads straight into the B fragments: each `mma` takes from a thread the positions (chunk c, e, e + 1) and
    (chunk c + 1, e, e + 1), c even, e even, which this order puts at 4 consecutive K; a thread's K per 64 are
    then 16 consecutive values (two 16-byte loads)."""
    chunk, lane_block, e = position // 32, position // 8 % 4, position % 8
    return (chunk // 2) * 64 + lane_block * 16 + (e // 2) * 4 + (chunk % 2) * 2 + e % 2


def _segment_order() -> torch.Tensor:
    """For each physical nibble slot of a 128-K segment (16 words x 8 nibbles), the segment-relative K of the
    code stored there."""
    order = torch.empty(SEGMENT, dtype=torch.long)
    for lane_block in range(4):  # a thread's K block within each 32 operand positions
        for chunk in range(4):  # which 32
            slot_word = lane_block * 4 + chunk
            for e in range(8):  # the thread's 8 positions: pair e // 2, low or high half
                nibble = e // 2 + 4 * (e % 2)
                order[slot_word * 8 + nibble] = _operand_k(chunk * 32 + lane_block * 8 + e)
    return order


def mma_layout_words(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) uint8 codes in [0, 15], K a multiple of 128 -> (N, K / 8) int32 words in the kernel's order. A
    permutation of the codes within each 128-K segment: `mma_layout_codes` inverts it exactly."""
    n, k = codes.shape
    if k % SEGMENT:
        raise ValueError(f"mma_layout_words: K = {k} must be a multiple of {SEGMENT}")
    nib = codes[:, stored_order(k, codes.device)].reshape(n, k // 8, 8).to(torch.int32)  # in slot order
    words = nib[:, :, 0]
    for j in range(1, 8):
        words = words | (nib[:, :, j] << (4 * j))  # int32 wraps: nibble 7 lands in the sign bit
    return words


def mma_layout_codes(words: torch.Tensor) -> torch.Tensor:
    """Inverse of `mma_layout_words`: (N, K / 8) int32 -> (N, K) uint8 codes in K order."""
    n, kw = words.shape
    shifts = torch.arange(0, 32, 4, device=words.device, dtype=torch.int32)
    nib = ((words[:, :, None] >> shifts) & 0xF).to(torch.uint8).reshape(n, kw * 8)
    codes = torch.empty_like(nib)
    codes[:, stored_order(kw * 8, words.device)] = nib
    return codes


_ORDERS: dict = {}


def stored_order(k: int, device: torch.device) -> torch.Tensor:
    """(K,) int64: the K of the code at each position of the stored words, read in canonical order (word by
    word, nibble 0 first). Gathering x by it makes the canonical-order kernels compute x @ W.T on W stored in
    this order."""
    key = (k, str(device))
    if key not in _ORDERS:
        seg = torch.arange(0, k, SEGMENT)[:, None] + _segment_order()[None, :]
        _ORDERS[key] = seg.reshape(-1).to(device)
    return _ORDERS[key]


def to_mma_order(qdata: torch.Tensor, k: int) -> torch.Tensor:
    """(N, K / 2) uint8 int4 codes two per byte in K order -> the same bytes in the kernel's order."""
    from .w4a16_gemm import unpack_int4

    return mma_layout_words(unpack_int4(qdata, k)).view(torch.uint8).reshape(qdata.shape)


def from_mma_order(qdata: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of `to_mma_order`."""
    from .w4a16_gemm import pack_int4

    return pack_int4(mma_layout_codes(qdata.contiguous().view(torch.int32)))


def mma_gemv_ref(x, words, scale, zero_point, group_size, bias=None) -> torch.Tensor:
    """Pure-torch reference on the permuted words: dequantize in fp32, multiply in x's dtype."""
    codes = mma_layout_codes(words).float()
    k = codes.shape[1]
    zp = 8.0 if zero_point is None else zero_point.float().repeat_interleave(group_size, dim=1)[:, :k]
    w = (codes - zp) * scale.float().repeat_interleave(group_size, dim=1)[:, :k]
    y = x @ w.to(x.dtype).t()
    return y if bias is None else y + bias.to(y.dtype)


def _word_layout(num_warps, reps):
    """Layout of the (BLOCK_N, 4, 4) words of a segment as loaded: [row, lane block, 32-K chunk], the chunk in
    registers (16 contiguous bytes), the lane block on lanes 0-1, rows as the MMA operand has them."""
    num_warps, reps = int(num_warps), int(reps)
    regs = [[0, 0, 1], [0, 0, 2], [8, 0, 0]] + [[16 * num_warps * (1 << i), 0, 0] for i in range(reps.bit_length() - 1)]
    lanes = [[0, 1, 0], [0, 2, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]]
    warps = [[16 * (1 << i), 0, 0] for i in range(num_warps.bit_length() - 1)]
    return gl.DistributedLinearLayout(regs, lanes, warps, [], [16 * num_warps * reps, 4, 4])


def _x_layout(num_warps, block_m):
    """Layout of the (BLOCK_M, 64) x pairs (two bf16 as an int32) of a segment as loaded, [token, K / 2]: per
    thread a token (lanes 2-4, and the register above for 16) and 16 consecutive K per 64 (lanes 0-1 pick the
    16), every warp the same."""
    regs = [[0, 1], [0, 2], [0, 4], [0, 32]] + ([[8, 0]] if int(block_m) == 16 else [])
    lanes = [[0, 8], [0, 16], [1, 0], [2, 0], [4, 0]]
    warps = [[0, 0] for _ in range(int(num_warps).bit_length() - 1)]
    return gl.DistributedLinearLayout(regs, lanes, warps, [], [int(block_m), 64])


if gluon is not None:
    _word_layout = gluon.constexpr_function(_word_layout)
    _x_layout = gluon.constexpr_function(_x_layout)
    _barrier = gl.barrier if hasattr(gl, "barrier") else gl.thread_barrier

    @gluon.jit
    def _pair(w, PAIR: gl.constexpr):
        """Codes 2 PAIR and 2 PAIR + 1 of each word's thread-K block as a bf16 pair 128 + code (lo, hi)."""
        if PAIR == 0:
            v = w
        else:
            v = w >> (4 * PAIR)
        p = gl.inline_asm_elementwise(
            "lop3.b32 $0, $1, 983055, 1124090624, 0xEA;", "=r,r", [v], dtype=gl.int32, is_pure=True, pack=1
        )  # (v & 0x000F000F) | 0x43004300
        return _halves(p)

    @gluon.jit
    def _halves(p):
        """The two bf16 values of each 32-bit pair, low half first, as a trailing dimension of 2."""
        lo = p.to(gl.int16).to(gl.bfloat16, bitcast=True)
        hi = (p >> 16).to(gl.int16).to(gl.bfloat16, bitcast=True)
        return gl.join(lo, hi)

    @gluon.jit
    def _int4_mma_gemv_kernel(
        x_ptr, w_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, ws_ptr, count_ptr,
        M, N, segs_per_split, num_segs,
        stride_xm, stride_wn, stride_sn, stride_zn, stride_om, stride_ws,
        SEGS_PER_GROUP: gl.constexpr, HAS_ZP: gl.constexpr, HAS_BIAS: gl.constexpr, SPLIT_K: gl.constexpr,
        PREFETCH: gl.constexpr, CHAINS: gl.constexpr, BLOCK_M: gl.constexpr,
        REPS: gl.constexpr, num_warps: gl.constexpr,
    ):  # fmt: skip
        BLOCK_N: gl.constexpr = 16 * num_warps * REPS
        SEG: gl.constexpr = 128  # SEGMENT
        MMA: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, 8])
        A: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=8)
        B: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=8)
        WL: gl.constexpr = _word_layout(num_warps, REPS)
        pid_n = gl.program_id(0)
        pid_k = gl.program_id(1)

        rows_w = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, gl.SliceLayout(2, WL)))
        rows_w = gl.where(rows_w < N, rows_w, 0).to(gl.int64)  # edge rows read row 0 and are never stored
        slot = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(2, WL)))
        chunk = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, WL)))
        w_offs = (
            gl.expand_dims(gl.expand_dims(rows_w * stride_wn, 1), 2)
            + gl.expand_dims(gl.expand_dims(slot * 4, 0), 2)
            + gl.expand_dims(gl.expand_dims(chunk, 0), 1)
        )  # (BLOCK_N, 4, 4)
        w_tile = w_ptr + w_offs

        XL: gl.constexpr = _x_layout(num_warps, BLOCK_M)
        k_x = gl.arange(0, SEG // 2, layout=gl.SliceLayout(0, XL))
        m_x = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, XL))
        x_pairs = x_ptr.to(gl.pointer_type(gl.int32), bitcast=True)  # x pairs: a loop-carried bf16 is repacked
        x_tile = x_pairs + gl.expand_dims(m_x, 1) * (stride_xm // 2) + gl.expand_dims(k_x, 0)  # (BLOCK_M, 64)
        x_mask = gl.expand_dims(m_x < M, 1) & gl.expand_dims(k_x >= 0, 0)

        rows_c = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, MMA))
        rows_cs = gl.where(rows_c < N, rows_c, 0).to(gl.int64)
        ones = gl.full([BLOCK_N, SEG], 1.0, gl.bfloat16, layout=A)
        ones_half = gl.full([BLOCK_N, SEG // 2], 1.0, gl.bfloat16, layout=A)
        zero = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=MMA)
        acc = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=MMA)

        seg_lo = pid_k * segs_per_split
        seg_hi = gl.minimum(seg_lo + segs_per_split, num_segs)
        # W, x and the group's scale and zero point of the next segment are loaded before this one's arithmetic
        # (W two ahead with PREFETCH = 2); the last step reloads its own segment (an L1 hit) rather than masking
        ahead = gl.load(w_tile + seg_lo * 16)
        if PREFETCH == 2:
            ahead2 = gl.load(w_tile + gl.minimum(seg_lo + 1, seg_hi - 1) * 16)
        x_ahead = gl.load(x_tile + seg_lo * (SEG // 2), mask=x_mask, other=0)
        s_ahead = gl.load(s_ptr + rows_cs * stride_sn + seg_lo // SEGS_PER_GROUP)
        if HAS_ZP:
            z_ahead = gl.load(z_ptr + rows_cs * stride_zn + seg_lo // SEGS_PER_GROUP)
        for seg in range(seg_lo, seg_hi):
            words = ahead
            xk = x_ahead
            s = s_ahead.to(gl.float32)
            if HAS_ZP:
                c = z_ahead.to(gl.float32) + 128.0
            else:
                c = gl.full([BLOCK_N], 136.0, gl.float32, layout=gl.SliceLayout(1, MMA))
            nxt = gl.minimum(seg + 1, seg_hi - 1)
            if PREFETCH == 2:
                ahead = ahead2
                ahead2 = gl.load(w_tile + gl.minimum(seg + 2, seg_hi - 1) * 16)
            else:
                ahead = gl.load(w_tile + nxt * 16)
            x_ahead = gl.load(x_tile + nxt * (SEG // 2), mask=x_mask, other=0)
            s_ahead = gl.load(s_ptr + rows_cs * stride_sn + nxt // SEGS_PER_GROUP)
            if HAS_ZP:
                z_ahead = gl.load(z_ptr + rows_cs * stride_zn + nxt // SEGS_PER_GROUP)
            # K = 64 c1 + 16 lane block + 4 q + 2 c0 + e0 -> operand position 32 (2 c1 + c0) + 8 lane block + 2 q + e0
            xk = gl.permute(gl.reshape(_halves(xk), [BLOCK_M, 2, 4, 4, 2, 2]), [0, 1, 4, 2, 3, 5])
            xb = gl.convert_layout(gl.permute(gl.reshape(xk, [BLOCK_M, SEG]), [1, 0]), B, assert_trivial=True)
            # words (BLOCK_N, slot, chunk) -> (BLOCK_N, 16) in K order: word index chunk * 4 + slot
            wk = gl.reshape(gl.permute(words, [0, 2, 1]), [BLOCK_N, 16])
            q = gl.join(gl.join(_pair(wk, 0), _pair(wk, 1)), gl.join(_pair(wk, 2), _pair(wk, 3)))
            a = gl.reshape(gl.permute(q, [0, 1, 4, 3, 2]), [BLOCK_N, SEG])
            if CHAINS == 2:  # the two 64-K halves as independent MMA chains (4 `mma` each, not 8 in a row)
                A2: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=8)
                a_lo, a_hi = gl.split(gl.permute(gl.reshape(a, [BLOCK_N, 2, SEG // 2]), [0, 2, 1]))
                x_lo, x_hi = gl.split(gl.permute(gl.reshape(xb, [2, SEG // 2, BLOCK_M]), [1, 2, 0]))
                x_lo = gl.convert_layout(x_lo, B, assert_trivial=True)
                x_hi = gl.convert_layout(x_hi, B, assert_trivial=True)
                d = mma_v2(gl.convert_layout(a_lo, A2, assert_trivial=True), x_lo, zero)
                d += mma_v2(gl.convert_layout(a_hi, A2, assert_trivial=True), x_hi, zero)
                xs = mma_v2(ones_half, x_lo, zero) + mma_v2(ones_half, x_hi, zero)
            else:
                a = gl.convert_layout(a, A, assert_trivial=True)
                d = mma_v2(a, xb, zero)
                xs = mma_v2(ones, xb, zero)
            acc += gl.expand_dims(s, 1) * (d - gl.expand_dims(c, 1) * xs)

        m_c = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, MMA))
        mask = gl.expand_dims(rows_c < N, 1) & gl.expand_dims(m_c < M, 0)
        o_offs = gl.expand_dims(m_c, 0) * stride_om + gl.expand_dims(rows_c, 1)
        if SPLIT_K == 1:
            _store(out_ptr + o_offs, acc, bias_ptr, rows_cs, mask, HAS_BIAS)
        else:
            ws_offs = gl.expand_dims(m_c, 0) * N + gl.expand_dims(rows_c, 1)
            gl.store(ws_ptr + pid_k * stride_ws + ws_offs, acc, mask=mask)
            _barrier()  # every thread's partial is written before the counter says so
            counter = count_ptr + pid_n
            if gl.atomic_add(counter, 1, sem="acq_rel") == SPLIT_K - 1:
                total = gl.load(ws_ptr + ws_offs, mask=mask, other=0.0, cache_modifier=".cg")
                for sp in range(1, SPLIT_K):
                    total += gl.load(ws_ptr + sp * stride_ws + ws_offs, mask=mask, other=0.0, cache_modifier=".cg")
                _store(out_ptr + o_offs, total, bias_ptr, rows_cs, mask, HAS_BIAS)
                gl.atomic_xchg(counter, 0)

    @gluon.jit
    def _store(ptrs, out, bias_ptr, rows, mask, HAS_BIAS: gl.constexpr):
        if HAS_BIAS:
            out += gl.expand_dims(gl.load(bias_ptr + rows).to(gl.float32), 1)
        gl.store(ptrs, out.to(ptrs.dtype.element_ty), mask=mask)


def split_k(n: int, k: int, block_n: int, per_sm: int, sms: int) -> int:
    """K splits for about `per_sm` programs per SM, each at least two segments long."""
    segs = k // SEGMENT
    return max(1, min(segs // 2, per_sm * sms // triton.cdiv(n, block_n)))


def pick(m: int) -> dict:
    """Tiles from the H100 probes (benchmarks/mma-gemv-h100/run2-probe.json, M = 1 and 16 at Llama-3.1-8B's and
    -70B's shapes): at M <= 8 one 16-row tile per warp, 8 warps, W one segment ahead and about 4 programs per SM
    (the lowest total over the five shapes, 129 µs; the grid's 16 tiles spanned 129 to 150); at 16 tokens two tiles
    per warp, 4 warps, 4 per SM."""
    if m <= 8:
        return dict(num_warps=8, reps=1, prefetch=1, chains=1, per_sm=4)
    return dict(num_warps=4, reps=2, prefetch=1, chains=1, per_sm=4)


def launch(x, words, scale, zero_point, bias, group_size, out, *, num_warps=None, reps=1, prefetch=1, chains=1,
           splits=None, per_sm=4):  # fmt: skip
    """(M, K) bf16 x times (N, K / 8) int32 words in `mma_layout_words` order into `out` (M, N); `applies` and
    the caller checked the sizes. Tiles from `pick` unless num_warps is given."""
    if num_warps is None:
        return launch(x, words, scale, zero_point, bias, group_size, out, splits=splits, **pick(x.shape[0]))
    from ._launch import num_sms
    from ._weight_only_gemv import split_counters

    (m, k), n = x.shape, words.shape[0]
    block_n = 16 * num_warps * reps
    tiles = triton.cdiv(n, block_n)
    num_segs = k // SEGMENT
    splits = splits or split_k(n, k, block_n, per_sm, num_sms(x.device))
    segs_per_split = triton.cdiv(num_segs, splits)
    splits = triton.cdiv(num_segs, segs_per_split)
    ws, counters = scale, scale
    if splits > 1:
        ws = torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
        counters = split_counters(x.device, tiles)
    _int4_mma_gemv_kernel[(tiles, splits)](
        x, words, scale, zero_point if zero_point is not None else scale, bias if bias is not None else scale, out,
        ws, counters, m, n, segs_per_split, num_segs,
        x.stride(0), words.stride(0), scale.stride(0), zero_point.stride(0) if zero_point is not None else 0,
        out.stride(0), m * n,
        SEGS_PER_GROUP=group_size // SEGMENT, HAS_ZP=zero_point is not None, HAS_BIAS=bias is not None,
        SPLIT_K=splits, PREFETCH=prefetch, CHAINS=chains, BLOCK_M=8 if m <= 8 else 16, REPS=reps,
        num_warps=num_warps,
    )  # fmt: skip
    return out
