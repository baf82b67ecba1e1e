"""Integer weight-only weights for the w4a16 GEMM (W4A16, W4A16_ASYM, W8A16, 2 to 8 bits): unsigned codes
(N, ceil(K/2)) uint8 two per byte for <= 4 bits, else (N, K) uint8; scale (N, G) fp32; zero point (N, G)
uint8, or None for symmetric codes (offset by the storage midpoint). Written to compressed-tensors as
pack-quantized signed codes in int32 words."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..args import QuantArgs, QuantType, Strategy
from ..backends import Kernel
from .base import QuantizedWeight, WeightFormat

if TYPE_CHECKING:
    import torch


class WNA16Format(WeightFormat):
    name = "wna16"
    types = (QuantType.INT,)
    kernel = Kernel("evalsuite.kernels.w4a16_gemm", "w4a16_gemm")
    algorithms = ("gptq", "awq")
    checkpoint_format = "pack-quantized"
    fuses_ops = True
    # the batch-1 8B step on an H100 with them: 364 -> 371 tok/s (W4A16; evalsuite/decode_graph.py's LAYER_OPS)
    decode_layer_ops = True

    def check(self, weights: QuantArgs, acts: QuantArgs | None) -> None:
        super().check(weights, acts)
        if weights.strategy == Strategy.BLOCK:
            raise ValueError("strategy 'block' is for fp8 weights; int weights use 'group' (for example 128)")

    @staticmethod
    def storage_bits(bits: int) -> int:
        return 4 if bits <= 4 else 8

    def pack(self, codes: torch.Tensor, storage: int) -> torch.Tensor:
        """Unsigned codes (N, K) into qdata: two per byte in 4-bit storage."""
        from evalsuite.kernels.w4a16_gemm import pack_int4

        return pack_int4(codes) if storage == 4 else codes

    def unpack(self, qw: QuantizedWeight) -> torch.Tensor:
        """(N, K) uint8: the unsigned codes of qw."""
        from evalsuite.kernels.w4a16_gemm import unpack_int4

        return unpack_int4(qw.qdata, qw.shape[1]) if qw.storage_bits == 4 else qw.qdata

    def quantize(self, w: torch.Tensor, args: QuantArgs) -> QuantizedWeight:
        from .int_codec import int_quantize

        return self.from_int_codes(*int_quantize(w, args), args)

    def from_int_codes(self, q, scale, zero, group: int, args: QuantArgs) -> QuantizedWeight:
        """Codes q (N, K), signed for symmetric and unsigned for asymmetric args, with their scale and zero
        point (N, G) (per tensor: (1, 1))."""
        import torch

        n, k = q.shape
        storage = self.storage_bits(args.num_bits)
        codes = (q + (2 ** (storage - 1) if args.symmetric else 0)).to(torch.uint8)  # (N, K) unsigned
        if args.strategy == Strategy.TENSOR:
            scale = scale.reshape(1, 1).expand(n, 1)
            zero = None if zero is None else zero.reshape(1, 1).expand(n, 1)
            group = k
        return self.stored(codes, scale, zero, group, args)

    def stored(self, codes, scale, zero, group: int, args: QuantArgs) -> QuantizedWeight:
        """Unsigned codes (N, K) with (N, G) scales and unsigned zero points (or None), packed."""
        import torch

        n, k = codes.shape
        storage = self.storage_bits(args.num_bits)
        return QuantizedWeight(
            self.name,
            (n, k),
            self.pack(codes, storage).contiguous(),
            scale.float().contiguous(),
            None if zero is None else zero.to(torch.uint8).contiguous(),
            group_size=group,
            bits=args.num_bits,
            storage_bits=storage,
        )

    def dequantize(self, qw: QuantizedWeight) -> torch.Tensor:
        from evalsuite.kernels.w4a16_gemm import dequantize_wna16

        return dequantize_wna16(qw.qdata, qw.scale, qw.zero_point, qw.group_size, qw.shape[1], qw.storage_bits)

    def element_scales(self, qw: QuantizedWeight) -> torch.Tensor:
        from evalsuite.kernels.w4a16_gemm import expand_groups

        return expand_groups(qw.scale.float(), qw.group_size, qw.shape[1])

    def saturated(self, scaled: torch.Tensor, qw: QuantizedWeight) -> torch.Tensor:
        from .int_codec import int_saturated

        return int_saturated(scaled, qw)

    def matmul(self, layer, x: torch.Tensor, **fused) -> torch.Tensor:
        order = {} if layer.k_order is None else {"k_order": layer.k_order}  # set on the backends that take one
        weights = (layer.qdata, layer.scale, layer.zero_point, layer.group_size, layer.storage_bits, layer.bias)
        return layer.gemm(x, *weights, **order, **fused)

    def to_compressed_tensors(self, qw: QuantizedWeight) -> dict[str, torch.Tensor]:
        import torch
        from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

        offset = 2 ** (qw.storage_bits - 1) if qw.zero_point is None else 2 ** (qw.bits - 1)
        q = self.unpack(qw).to(torch.int16) - offset  # signed codes, as compressed-tensors stores them
        out = {
            "weight_packed": pack_to_int32(q.to(torch.int8), qw.bits),
            "weight_shape": torch.tensor(list(qw.shape)),
            "weight_scale": qw.scale.float(),
        }
        if qw.zero_point is not None:
            zp = (qw.zero_point.to(torch.int16) - 2 ** (qw.bits - 1)).to(torch.int8)
            out["weight_zero_point"] = pack_to_int32(zp, qw.bits, packed_dim=0)
        return out

    def from_compressed_tensors(self, prefix: str, tensors, args: QuantArgs, ct_format: str, scale, zero_point):
        import torch

        if ct_format == "pack-quantized":
            from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

            shape = torch.Size(tensors[f"{prefix}.weight_shape"].tolist())
            q = unpack_from_int32(tensors[f"{prefix}.weight_packed"], args.num_bits, shape)  # signed codes
            if zero_point is not None:
                zero_point = unpack_from_int32(zero_point, args.num_bits, torch.Size(scale.shape), packed_dim=0)
            return self.from_signed_codes(prefix, q, scale, zero_point, args)
        weight = tensors[f"{prefix}.weight"]
        if weight.dtype != torch.int8:
            from ..checkpoints import CheckpointError

            raise CheckpointError(
                f"{prefix}: compressed-tensors format {ct_format!r} with {weight.dtype} weights is not supported"
            )
        return self.from_signed_codes(prefix, weight, scale, zero_point, args)

    def from_signed_codes(self, prefix: str, q, scale, zp, args: QuantArgs) -> QuantizedWeight:
        """compressed-tensors' signed integer codes q (N, K) and signed zero points (asymmetric) into this
        layout: unsigned codes and zero points, both offset by the storage midpoint, so that
        (code - zero) * scale is the package's own (q - zp) * scale."""
        import torch

        from ..checkpoints import CheckpointError

        n, k = q.shape
        storage = self.storage_bits(args.num_bits)
        if not args.symmetric and storage != args.num_bits:
            raise CheckpointError(
                f"{prefix}: asymmetric {args.num_bits}-bit codes in {storage}-bit storage are not supported"
            )
        offset = 2 ** (storage - 1)
        codes = (q.to(torch.int16) + offset).to(torch.uint8)  # (N, K)
        zero = None if zp is None else (zp.to(torch.int16) + offset).to(torch.uint8)
        if args.strategy == Strategy.GROUP:
            group = args.group_size
        elif args.strategy in (Strategy.CHANNEL, Strategy.TENSOR):
            group = k
            scale = scale.reshape(-1, 1).expand(n, 1)  # (N, 1)
            zero = None if zero is None else zero.reshape(-1, 1).expand(n, 1)
        else:
            raise CheckpointError(f"{prefix}: int weights of strategy '{args.strategy.value}' are not supported")
        return self.stored(codes, scale, zero, group, args)
