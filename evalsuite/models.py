"""Loading a baseline model: `embedded:tiny` or a local Hugging Face directory, checked before it loads.

spec = resolve_model("embedded:tiny")      # ModelSource: path, identity (sha256 of config + weights), ...
loaded = load(spec, device="cpu", dtype="auto")
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from evalsuite.errors import UserError

EMBEDDED = {"embedded:tiny": Path(__file__).resolve().parent / "reference" / "tiny"}
IDENTITY_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class ModelSource:
    spec: str
    path: Path  # the model directory (for GGUF, the file's folder)
    identity: str
    checkpoint_dtype: str
    gguf_file: str | None = None  # a GGUF baseline, which transformers dequantizes as it loads
    gguf_types: dict | None = None  # tensor type -> count, for the provenance
    file_bytes: int | None = None  # the weight files on disk (the GGUF file, or the safetensors / .bin files)


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as err:
            raise ModelLoadError(f"{index}: not a valid safetensors index ({err})") from None
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise ModelLoadError(f"{path}: the index names shards that are missing: {', '.join(missing)}")
        return [path / s for s in shards]
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise ModelLoadError(f"{path}: holds no weights (*.safetensors or pytorch_model*.bin)")
    return files


def check_safetensors(file: Path) -> dict:
    """Read a safetensors header and check that the file holds every byte it promises."""
    size = file.stat().st_size
    with file.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"{file}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ModelLoadError(f"{file}: truncated safetensors file (header of {n} bytes, file of {size})")
        try:
            header = json.loads(f.read(n))
        except json.JSONDecodeError:
            raise ModelLoadError(f"{file}: corrupt safetensors header") from None
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ModelLoadError(
            f"{file}: truncated safetensors file: it holds {size} bytes but its tensors need {8 + n + end}; "
            "download or copy it again"
        )
    return header


def _checkpoint_dtype(files: list[Path], config: dict) -> str:
    """The dtype holding most of the checkpoint's float bytes (quantized codes are not counted)."""
    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
    counts: dict[str, int] = {}
    for file in files:
        if file.suffix == ".safetensors":
            for key, tensor in check_safetensors(file).items():
                if key != "__metadata__" and tensor["dtype"] in names:
                    size = tensor["data_offsets"][1] - tensor["data_offsets"][0]
                    counts[names[tensor["dtype"]]] = counts.get(names[tensor["dtype"]], 0) + size
    if counts:
        return max(counts, key=counts.get)
    return str(config.get("torch_dtype") or config.get("dtype") or "float32")


def identity_of(path: Path, files: list[Path]) -> str:
    """sha256 over the config, tokenizer and weight files. The chat template is left out: it changes prompts,
    and the prompts are hashed into every request key, so only the samples that use it are recomputed."""
    digest = hashlib.sha256()
    for file in [path / f for f in IDENTITY_FILES if (path / f).is_file()] + files:
        digest.update(file.name.encode() + b"\0")
        if file.name == "tokenizer_config.json":
            config = json.loads(file.read_text())
            config.pop("chat_template", None)
            digest.update(json.dumps(config, sort_keys=True).encode())
            continue
        with file.open("rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def resolve_gguf(spec: str, file: Path) -> ModelSource:
    """A .gguf file as a baseline: fingerprinted by its bytes, its tensor types read for the provenance."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelLoadError(f"{file} is a GGUF file: pip install gguf to load it") from None
    try:
        reader = GGUFReader(file)
    except (ValueError, OSError) as err:
        raise ModelLoadError(f"{file}: not a readable GGUF file ({err})") from None
    types: dict[str, int] = {}
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
    digest = hashlib.sha256()
    with file.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return ModelSource(spec, file.parent, digest.hexdigest(), "float32", file.name, types, file.stat().st_size)


def resolve_model(spec: str) -> ModelSource:
    """Check a model path and fingerprint it, without loading it."""
    if spec.startswith("embedded:"):
        if spec not in EMBEDDED:
            raise ModelLoadError(f"unknown embedded model {spec!r}; known: {', '.join(EMBEDDED)}")
        path = EMBEDDED[spec]
    else:
        path = Path(spec).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model path {spec!r} does not exist; give a Hugging Face model directory")
    if path.is_file() and path.suffix == ".gguf":
        return resolve_gguf(spec, path)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelLoadError(
            f"model path {spec!r} holds no model: expected a Hugging Face directory with config.json and weights"
        )
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path / 'config.json'}: not valid JSON ({err})") from None
    files = _weight_files(path)
    for file in files:
        if file.suffix == ".safetensors":
            check_safetensors(file)
    disk = sum(f.stat().st_size for f in files)
    return ModelSource(spec, path, identity_of(path, files), _checkpoint_dtype(files, config), file_bytes=disk)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA device")
    return torch.device(device)


def compute_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on CUDA and float32 on CPU (where bf16 matmuls are slow and lossy)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


@dataclass
class LoadedModel:
    source: ModelSource
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    if source.gguf_file:
        return AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    return AutoTokenizer.from_pretrained(source.path)


def max_length(source: ModelSource, tokenizer) -> int:
    """The context length lm-eval would use for this model, from its config alone (no weights loaded)."""
    from lm_eval.models.utils import resolve_max_length
    from transformers import AutoConfig

    extra = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    return resolve_max_length(AutoConfig.from_pretrained(source.path, **extra), tokenizer)


def gpus_of_rank(local_rank: int, world: int) -> list[int]:
    """The GPUs a rank spreads its model over when ranks share a host's GPUs evenly."""
    per_rank = max(1, torch.cuda.device_count() // world)
    return list(range(local_rank * per_rank, (local_rank + 1) * per_rank))


# transformers >= 5.25 swaps layers for Hugging Face hub kernels by default when the `kernels` package is
# installed. The baseline must be the model's own modules, the same on every machine, so that a variant's
# difference comes from its quantization alone.
PLAIN_MODULES = {"use_kernels": False}


def load(
    source: ModelSource,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    device_map: str | None = None,
    gpus: list[int] | None = None,
) -> LoadedModel:
    """Load on one device, or with device_map="auto" over `gpus` (default: all), layer by layer."""
    from transformers import AutoModelForCausalLM

    device = pick_device(device) if isinstance(device, str) else device
    torch_dtype = compute_dtype(dtype, device)
    if device_map is not None and device.type == "cuda":
        gpus = gpus if gpus is not None else list(range(torch.cuda.device_count()))
        memory = {i: torch.cuda.get_device_properties(i).total_memory for i in gpus}
        model = AutoModelForCausalLM.from_pretrained(
            source.path, dtype=torch_dtype, device_map="auto", max_memory=memory, **PLAIN_MODULES
        )
        device = next(model.parameters()).device  # where the embeddings, and so the inputs, live
    elif source.gguf_file:
        model = AutoModelForCausalLM.from_pretrained(
            source.path, gguf_file=source.gguf_file, dtype=torch_dtype, **PLAIN_MODULES
        )
        model = model.to(device)
    else:
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch_dtype, **PLAIN_MODULES).to(device)
    model.eval()
    return LoadedModel(source, model, load_tokenizer(source), device, torch_dtype)


def memory_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights as the model holds them for evaluation: float parameters at their evaluation
    dtype, quantized layers at the size of their codes, scales and zero points. Tied weights count once. The
    baseline and its variants are compared on this measure (the file on disk is recorded beside it)."""
    from evalsuite.quant_schemes.linear import QuantLinear

    total = sum(m.nbytes for m in model.modules() if isinstance(m, QuantLinear))
    seen = set()
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total
