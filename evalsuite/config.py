"""The suite file: which model, which quantized variants, which benchmarks, and how to run them.

    config = load_suite("suite.yaml")        # validated; errors name the file, the line and the field
    config = load_suite(None)                # the built-in demo suite on embedded:tiny

Everything here is checked before any model loads. Unknown keys, wrong types, unknown schemes, algorithms and
task names are errors with the line they stand on and what to write instead.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evalsuite.errors import UserError
from evalsuite.quant_schemes.algorithms import check_algorithm, check_combination
from evalsuite.quant_schemes.scheme import Scheme, resolve
from evalsuite.task_names import task_problems
from evalsuite.tasks import HERE as TASKS_DIR
from evalsuite.yaml_files import format_errors, format_problems, load_yaml

SUITES_DIR = TASKS_DIR / "suites"  # inside the installed package, editable or not
BASELINE = "baseline"


class ConfigError(UserError, ValueError):
    """A suite file that cannot be run; the message lists every problem with its file and line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    path: str = "embedded:tiny"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device_map: Literal["auto"] | None = None  # spread a model larger than one GPU over several (accelerate)


class CalibrationSpec(_Strict):
    """A calibration set cut into `samples` windows of `seq_len` tokens. Fields a suite file leaves out take
    the defaults for its model (`calibration_defaults`), filled in when the suite file is read."""

    set: str | None = None
    samples: int | None = Field(default=None, gt=0)
    seq_len: int | None = Field(default=None, gt=1)
    batch_size: int = Field(default=8, gt=0)
    chat_template: bool | None = None  # render each text as a chat turn with the model's template (None: if it has one)
    origin: str = "suite file"  # where `set` came from: the suite file, or the default for this model (and why)
    defaulted: tuple[str, ...] = ()  # the fields filled by calibration_defaults (refilled if the model changes)


DEMO_MODEL = Path(__file__).resolve().parent / "reference" / "tiny"
# The demo model was trained on its own small world's text: its calibration set is that text. Any other model
# gets a general text set shipped with Python itself (see evalsuite/calibration.py), in longer windows.
DEMO_CALIBRATION = {"set": "tiny_calib", "samples": 32, "seq_len": 128, "chat_template": False}
MODEL_CALIBRATION = {"set": "python_reference", "samples": 128, "seq_len": 512, "chat_template": None}


def is_demo_model(path: str) -> bool:
    return path == "embedded:tiny" or Path(path).expanduser().resolve() == DEMO_MODEL


def calibration_defaults(spec: CalibrationSpec, model_path: str) -> CalibrationSpec:
    """The spec with every field it leaves out set to the default for this model."""
    demo = is_demo_model(model_path)
    defaults = DEMO_CALIBRATION if demo else MODEL_CALIBRATION
    given = {k: getattr(spec, k) for k in defaults if k not in spec.defaulted}
    update = {k: v for k, v in defaults.items() if given.get(k) is None}
    origin = "suite file"
    if "set" in update:
        origin = f"default ({'the demo model' if demo else 'a model other than the demo'}, no set named)"
    return spec.model_copy(update={**given, **update, "origin": origin, "defaulted": tuple(update)})


class VariantSpec(_Strict):
    name: str
    scheme: str | dict[str, Any] | None = None
    path: str | None = None  # a checkpoint: pre-quantized (used as it is), or float (as it is, or quantized by scheme)
    algorithm: str = "rtn"
    rotation: Literal["hadamard"] | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the algorithm, e.g. {alpha: 0.8}
    calibration: CalibrationSpec | None = None  # default: run.calibration
    # per-layer exceptions to the scheme, first match wins: [{layers: "re:.*down_proj", scheme: W8A16 | float}]
    overrides: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("scheme")
    @classmethod
    def _scheme_resolves(cls, value):
        if value is None:
            return value
        try:
            resolve(value)
        except ValidationError as err:
            details = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'scheme'}: {e['msg'].removeprefix('Value error, ')}"
                for e in err.errors()
            )
            raise ValueError(f"invalid scheme: {details}") from None
        return value

    @field_validator("algorithm")
    @classmethod
    def _algorithm_known(cls, value):
        check_algorithm(value)
        return value

    @model_validator(mode="after")
    def _combination(self) -> VariantSpec:
        if self.scheme is None and self.path is None:
            raise ValueError(
                "a variant needs a scheme (to quantize the baseline), a path (a checkpoint, used as it is) or both "
                "(a float checkpoint, such as one `evalsuite train` wrote, quantized with the scheme)"
            )
        if self.scheme is None:
            if self.algorithm != "rtn" or self.rotation or self.options or self.overrides:
                raise ValueError(
                    "a checkpoint variant without a scheme is used as it is: leave out algorithm, rotation, options "
                    "and overrides"
                )
            return self
        try:
            scheme = self.resolved_scheme
        except ValidationError as err:
            details = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()
            )
            raise ValueError(f"invalid overrides: {details}") from None
        check_combination(scheme, self.algorithm, self.rotation)
        return self

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value):
        if value == BASELINE:
            raise ValueError(f"'{BASELINE}' is reserved for the unquantized model; pick another variant name")
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", value):
            raise ValueError("variant names use letters, digits and _ . + - only")
        return value

    @property
    def resolved_scheme(self) -> Scheme | None:
        if self.scheme is None:
            return None
        scheme = resolve(self.scheme)
        if not self.overrides:
            return scheme
        return Scheme(
            **{**scheme.model_dump(), "overrides": [*scheme.model_dump().get("overrides", []), *self.overrides]}
        )


class TaskSpec(_Strict):
    name: str
    num_fewshot: int | None = Field(default=None, ge=0)
    limit: int | None = Field(default=None, gt=0)
    metric: str | None = None
    data_dir: str | None = None  # a local copy of the task's data (see the README), for offline machines


class AcademicSuite(_Strict):
    tasks: list[TaskSpec] = Field(min_length=1)
    include: list[str] = Field(default_factory=list)  # folders or files with more lm-eval task YAML
    num_fewshot: int | None = Field(default=None, ge=0)
    limit: int | None = Field(default=None, gt=0)

    @field_validator("tasks", mode="before")
    @classmethod
    def _names_to_specs(cls, value):
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


class CodeSuite(_Strict):
    """HumanEval-format code tasks, executed in the sandbox. Greedy pass@1 by default."""

    tasks: list[str] = Field(default_factory=lambda: ["tiny_code"], min_length=1)
    n: int = Field(default=1, ge=1)
    k: list[int] = Field(default_factory=lambda: [1], min_length=1)
    temperature: float = Field(default=0.0, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_gen_toks: int = Field(default=256, gt=0)
    limit: int | None = Field(default=None, gt=0)
    allow_code_execution: bool = False
    timeout_s: float = Field(default=10.0, gt=0)
    workers: int | None = Field(default=None, ge=1)
    run_as: Literal["auto", "nobody", "root"] = "auto"

    @model_validator(mode="after")
    def _consistent(self) -> CodeSuite:
        if not self.allow_code_execution:
            raise ValueError(
                "the code suite runs model-generated programs: set allow_code_execution: true to allow it "
                "(they run sandboxed; see the README)"
            )
        too_big = [k for k in self.k if k > self.n]
        if too_big:
            raise ValueError(f"pass@k needs n >= k samples per problem: k={too_big} but n={self.n}; raise n")
        if self.n > 1 and self.temperature == 0:
            raise ValueError(f"n={self.n} greedy samples would all be identical: set a temperature > 0 (e.g. 0.8)")
        return self


class SimilaritySuite(_Strict):
    """Greedy answers to a prompt set, compared with the baseline's answers (ROUGE, BERTScore, STS)."""

    prompts: list[str] = Field(default_factory=lambda: ["tiny_chat"], min_length=1)
    max_gen_toks: int = Field(default=128, gt=0)
    limit: int | None = Field(default=None, gt=0)


class JudgeSpec(_Strict):
    """A local causal LM (`model`) or an OpenAI-compatible endpoint (`endpoint` + `name`) as the judge."""

    model: str | None = None
    endpoint: str | None = None
    name: str | None = None
    api_key_env: str | None = None
    template: str = "arena"
    max_tokens: int = Field(default=512, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _one_judge(self) -> JudgeSpec:
        if (self.model is None) == (self.endpoint is None):
            raise ValueError("name exactly one judge: model (a local model path or embedded:tiny) or endpoint")
        if self.endpoint is not None and not self.name:
            raise ValueError("an endpoint judge needs name: the model name the endpoint serves")
        if self.endpoint is not None and not re.match(r"https?://", self.endpoint):
            raise ValueError(f"endpoint {self.endpoint!r} is not an http(s) URL, e.g. http://127.0.0.1:8000/v1")
        return self


class JudgeSuite(_Strict):
    """Arena-Hard-style pairwise judging of each variant's answers against the baseline's."""

    prompts: list[str] = Field(default_factory=lambda: ["tiny_arena"], min_length=1)
    judge: JudgeSpec
    max_gen_toks: int = Field(default=128, gt=0)
    limit: int | None = Field(default=None, gt=0)


class FidelitySuite(_Strict):
    """Token-level KL divergence, top-1 agreement and perplexity ratio against the baseline."""

    texts: list[str] = Field(default_factory=lambda: ["tiny_ppl"], min_length=1)
    limit: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=8, gt=0)


class Suites(BaseModel):
    """The built-in suites' settings, and those of any suite registered in `evalsuite.suites.base.REGISTRY`
    (validated by its class's `Spec` model)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    academic: AcademicSuite | None = None
    code: CodeSuite | None = None
    similarity: SimilaritySuite | None = None
    judge: JudgeSuite | None = None
    fidelity: FidelitySuite | None = None

    @model_validator(mode="before")
    @classmethod
    def _registered(cls, data):
        from evalsuite.suites.base import REGISTRY, suite_class

        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, value in data.items():
            if name in cls.model_fields:
                continue
            if name not in REGISTRY:
                close = difflib.get_close_matches(str(name), list(REGISTRY), n=1, cutoff=0.6)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown suite {name!r}.{hint} Suites: {', '.join(REGISTRY)}")
            try:
                out[name] = None if value is None else suite_class(name).Spec(**(value or {}))
            except ValidationError as err:
                problems = "; ".join(f"{'.'.join(map(str, (name, *e['loc'])))}: {e['msg']}" for e in err.errors())
                raise ValueError(problems) from None
        return out

    @model_validator(mode="after")
    def _some_suite(self) -> Suites:
        if not self.named():
            raise ValueError("name at least one suite (for example academic: {tasks: [tiny_mc]})")
        return self

    def named(self) -> list[tuple[str, BaseModel]]:
        """(name, settings) of every suite the file names, in registry order."""
        from evalsuite.suites.base import REGISTRY

        given = {**{n: getattr(self, n) for n in type(self).model_fields}, **(self.model_extra or {})}
        return [(name, given[name]) for name in REGISTRY if given.get(name) is not None]


class RunSpec(_Strict):
    device: str = "auto"
    backend: str = "auto"  # auto, or a registered kernel backend (triton, torch-ref, or one a plugin registers)
    # how the Triton fp8 GEMM sums on Hopper: as deployed (fast) or promoted to fp32 every 128 columns
    fp8_accumulation: Literal["fast", "precise"] = "fast"
    batch_size: int = Field(default=32, gt=0)
    seed: int = 1234
    bootstrap_iters: int = Field(default=1000, ge=0)
    out_dir: str | None = None
    calibration: CalibrationSpec | None = CalibrationSpec()  # per-layer sensitivity; calibrated algorithms
    sqnr_floor_db: float = 20.0  # layers whose output SQNR falls under this are flagged in the report
    noise_floor: bool = False  # also evaluate the baseline against itself (other batch size, other backend)
    measure_speed: bool = False  # time prefill and decode of every variant; the report shows speed beside accuracy
    noise_floor_batch_size: int | None = Field(default=None, gt=0)  # default: batch_size // 4

    @field_validator("backend")
    @classmethod
    def _backend_known(cls, value):
        from evalsuite.quant_schemes.backends import BACKENDS

        if value != "auto" and value not in BACKENDS:
            raise ValueError(f"unknown kernel backend {value!r}; use auto or one of {', '.join(BACKENDS)}")
        return value

    @field_validator("device")
    @classmethod
    def _device_ok(cls, value):
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"device {value!r} is not one of auto, cpu, cuda, cuda:N")
        return value


class SuiteConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    model: ModelSpec = ModelSpec()
    variants: list[VariantSpec] = Field(min_length=1)
    suites: Suites
    run: RunSpec = RunSpec()
    source: str = "<dict>"

    @field_validator("variants", mode="before")
    @classmethod
    def _names_to_variants(cls, value):
        if isinstance(value, list):
            out = []
            for v in value:
                if isinstance(v, str):
                    v = {"name": v, "scheme": v}
                elif isinstance(v, dict) and "scheme" in v and "name" not in v and isinstance(v["scheme"], str):
                    algorithm = "" if v.get("algorithm", "rtn") == "rtn" else f"-{v['algorithm']}"
                    rotation = f"-{v['rotation']}" if v.get("rotation") else ""
                    v = {**v, "name": v["scheme"] + algorithm + rotation}
                elif isinstance(v, dict) and isinstance(v.get("path"), str) and "name" not in v:
                    v = {**v, "name": re.sub(r"[^A-Za-z0-9_.+-]", "-", Path(v["path"]).name) or "checkpoint"}
                out.append(v)
            return out
        return value

    @model_validator(mode="after")
    def _calibration_defaults(self) -> SuiteConfig:
        """Fill what calibration specs leave out with the defaults for this suite's model."""
        run = self.run
        if run.calibration is not None:
            run = run.model_copy(update={"calibration": calibration_defaults(run.calibration, self.model.path)})
        variants = [
            v.model_copy(update={"calibration": calibration_defaults(v.calibration, self.model.path)})
            if v.calibration is not None
            else v
            for v in self.variants
        ]
        object.__setattr__(self, "run", run)
        object.__setattr__(self, "variants", variants)
        return self

    @model_validator(mode="after")
    def _calibration_available(self) -> SuiteConfig:
        from evalsuite.quant_schemes.algorithms import CALIBRATED

        for v in self.variants:
            if v.scheme is None:
                continue
            kv = v.resolved_scheme.kv_cache
            needs = v.algorithm in CALIBRATED or (kv is not None and not kv.dynamic)
            if needs and v.calibration is None and self.run.calibration is None:
                raise ValueError(
                    f"variant {v.name!r} needs calibration data ({v.algorithm}"
                    f"{', static KV-cache scales' if kv is not None and not kv.dynamic else ''}): set "
                    "run.calibration or the variant's calibration"
                )
        return self

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, value):
        names = [v.name for v in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)} (set name: for each)")
        return value


def parse_suite(data: Any, source: str = "<dict>", lines: dict[tuple, int] | None = None) -> SuiteConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a suite file is a mapping with name, model, variants and suites")
    try:
        config = SuiteConfig(**{**data, "source": source})
    except ValidationError as err:
        raise ConfigError(format_errors(err, source, lines or {})) from None
    problems = task_name_problems(config, lines or {})
    if problems:
        raise ConfigError(format_problems(problems, source, lines or {}, "suite file"))
    return config


def task_name_problems(config: SuiteConfig, lines: dict[tuple, int]) -> list[tuple[tuple, str]]:
    """The academic suite's task names that are neither built in nor lm-eval's, and include folders that do not
    exist, with their field paths (read from lm-eval's task files line by line, not from its full index)."""
    academic = config.suites.academic
    if academic is None:
        return []
    problems = []
    for at, message in task_problems([t.name for t in academic.tasks], academic.include):
        path = ("suites", "academic", *at)
        problems.append((path + ("name",) if path + ("name",) in lines else path, message))
    return problems


def builtin_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.yaml"))}


def load_suite(path: str | Path | None) -> SuiteConfig:
    """Load a suite file, or a built-in suite by name (None: the demo)."""
    path = "demo" if path is None else path
    builtin = builtin_suites()
    if isinstance(path, str) and path in builtin:
        path = builtin[path]
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"suite file {str(path)!r} does not exist; give a YAML file or a built-in suite: {', '.join(builtin)}"
        )
    data, lines = load_yaml(path, ConfigError)
    return parse_suite(data, str(path), lines)
