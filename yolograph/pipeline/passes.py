"""The pass API: contracts, results, the Pass base class and the registry.

A pass is a class with a registered name, an options dataclass, a contract and a `run` that edits
`model.graph` in place and returns a `PassResult`. Short passes can be plain functions:

    @register_pass("drop-identity", contract=Contract.exact())
    def drop_identity(model: Model, options: NoOptions) -> PassResult:
        \"\"\"Remove Identity nodes. Bit-exact.\"\"\"
        ...

Passes declare the model *properties* they require, establish and remove (see properties.py),
so the manager can reject an order that cannot work before running anything.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from yolograph.errors import PipelineError
from yolograph.plugins import load_plugins
from yolograph.ir.model import Model


@dataclass(frozen=True)
class NoOptions:
    """Options of a pass that takes none."""


@dataclass(frozen=True)
class Contract:
    """What a pass promises about the model's outputs, checkable against ONNX Runtime.

    - exact: outputs are bit-identical.
    - tolerance: max|new - ref| <= rtol * max|ref| for every output group (box rows and class
      rows of a YOLO output are separate groups, so scores are not judged against pixel values).
    - sqnr: 10*log10(sum(ref^2) / sum((new-ref)^2)) >= min_sqnr_db for every output group;
      used by passes that change accuracy on purpose (quantization).
    - deferred: the pass alone promises nothing checkable (e.g. Q/DQ with placeholder scales);
      its effect is checked at the next non-deferred pass against the model before it.
    """

    kind: Literal["exact", "tolerance", "sqnr", "deferred"]
    rtol: float = 0.0
    min_sqnr_db: float = 0.0
    note: str = ""

    @staticmethod
    def exact(note: str = "") -> Contract:
        return Contract("exact", note=note)

    @staticmethod
    def tolerance(rtol: float, note: str = "") -> Contract:
        return Contract("tolerance", rtol=rtol, note=note)

    @staticmethod
    def sqnr(min_db: float, note: str = "") -> Contract:
        return Contract("sqnr", min_sqnr_db=min_db, note=note)

    @staticmethod
    def deferred(note: str = "") -> Contract:
        return Contract("deferred", note=note)

    @property
    def is_deferred(self) -> bool:
        return self.kind == "deferred"

    def describe(self) -> str:
        text = {
            "exact": "bit-exact",
            "tolerance": f"equal within {self.rtol:g} relative",
            "sqnr": f"changes accuracy: output SQNR >= {self.min_sqnr_db:g} dB",
            "deferred": "checked after a later pass",
        }[self.kind]
        return f"{text} ({self.note})" if self.note else text

    def check(self, reference: list[np.ndarray], candidate: list[np.ndarray]) -> str | None:
        """None when `candidate` keeps the contract, else a sentence saying how it failed.

        `reference` and `candidate` are lists of output groups (arrays of equal shape).
        """
        for index, (ref, new) in enumerate(zip(reference, candidate)):
            if ref.shape != new.shape:
                return f"output group {index} changed shape from {ref.shape} to {new.shape}"
            if self.kind == "exact" and not np.array_equal(ref, new):
                return f"output group {index} differs by {float(np.max(np.abs(ref - new))):.3g} (exact required)"
            if self.kind == "tolerance":
                error = float(np.max(np.abs(ref.astype(np.float64) - new)))
                scale = float(np.max(np.abs(ref))) or 1.0
                if error > self.rtol * scale:
                    return (f"output group {index} differs by {error:.3g} = {error / scale:.3g} relative "
                            f"(allowed {self.rtol:g})")
            if self.kind == "sqnr":
                db = sqnr_db(ref, new)
                if db < self.min_sqnr_db:
                    return f"output group {index} SQNR {db:.1f} dB is below {self.min_sqnr_db:g} dB"
        return None


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when equal)."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - candidate) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(signal, 1e-30) / noise))


@dataclass
class PassResult:
    """What a pass did: whether it changed the graph, and statistics worth reporting."""

    changed: bool
    stats: dict[str, Any] = field(default_factory=dict)


class Pass:
    """Base class of every pass. Subclasses set the class attributes and implement `run`."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    contract: ClassVar[Contract] = Contract.exact()
    # Model properties (see properties.py) this pass needs, creates, and destroys.
    requires: ClassVar[frozenset[str]] = frozenset()
    establishes: ClassVar[frozenset[str]] = frozenset()
    removes: ClassVar[frozenset[str]] = frozenset()
    # Properties the model must not have when this pass runs (fold-bn cannot keep its float32
    # tolerance on float16 weights): the order check names the pass that establishes them.
    excludes: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else self.Options()

    def validate(self) -> None:
        """Check options that need more than their dataclass can (e.g. data that must be given).

        Called when the pipeline is parsed, before any pass runs; raise a YoloGraphError. Per-field
        checks belong in the options dataclass's __post_init__ (raise ValueError there).
        """

    def run(self, model: Model) -> PassResult:
        raise NotImplementedError

    def adapt_inputs(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Map an input feed of the model before this pass to the model after it.

        Only passes that change the graph inputs (layout, dtype) override this; the verifier uses
        it to feed both models the same data.
        """
        return feed

    def restrict_inputs(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Restrict a verification feed to values the model after this pass can be given.

        For passes whose new inputs carry less than the old ones (to-nhwc{input=uint8}: pixels
        k/255 only). The manager applies it to the pipeline's initial verification feeds, before
        computing the reference, so every pass is verified on the restricted inputs. It must not
        depend on the feed's layout (the feed is the pipeline input model's).
        """
        return feed

    @classmethod
    def summary(cls) -> str:
        """First line of the docstring: what the pass does."""
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""

    def spec(self) -> str:
        """The pipeline text that recreates this pass with its non-default options."""
        changed = {
            f.name: getattr(self.options, f.name)
            for f in dataclasses.fields(self.options)
            if getattr(self.options, f.name) != _field_default(f)
        }
        if not changed:
            return self.name
        return f"{self.name}{{{','.join(f'{k}={_format_value(v)}' for k, v in changed.items())}}}"

    def __repr__(self) -> str:
        return f"<pass {self.spec()}>"


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return "|".join(map(str, value))
    return str(value)


_REGISTRY: dict[str, type[Pass]] = {}


def register_pass(
    name: str,
    *,
    options: type = NoOptions,
    contract: Contract | None = None,
    requires: frozenset[str] | set[str] = frozenset(),
    establishes: frozenset[str] | set[str] = frozenset(),
    removes: frozenset[str] | set[str] = frozenset(),
) -> Callable:
    """Register a Pass subclass, or turn a function `(model, options) -> PassResult` into one.

    Used bare on a class (`@register_pass("fold-bn")`) the class attributes are kept; the keyword
    arguments fill in what a decorated function cannot say itself.
    """

    def decorate(target: Any) -> Any:
        is_class = isinstance(target, type) and issubclass(target, Pass)
        # Its own docstring: an inherited one (Pass's) would describe every pass as "Base class of ...".
        if not (target.__dict__.get("__doc__") if is_class else target.__doc__):
            raise PipelineError(f"Pass {name!r} needs a docstring of its own that says what it does and "
                                "what it preserves.")
        known = _REGISTRY.get(name)
        identity = (target.__module__, target.__qualname__)
        if known is not None and _origin(known) != identity:
            raise PipelineError(f"A pass named {name!r} is already registered ({known.__module__}); pick another name.")
        if is_class:
            target.name = name
            cls = target
        else:
            cls = _function_pass(name, target, options, contract, requires, establishes, removes)
        if not dataclasses.is_dataclass(cls.Options):
            raise PipelineError(f"Pass {name!r}: its Options must be a dataclass.")
        _REGISTRY[name] = cls  # the same pass registered again (its module imported twice) replaces itself
        return target if not is_class else cls

    return decorate


def _origin(cls: type[Pass]) -> tuple[str, str]:
    """Where a registered pass was defined: the class, or the function a function pass wraps."""
    return getattr(cls, "_origin", (cls.__module__, cls.__qualname__))


def _function_pass(name, function, options, contract, requires, establishes, removes) -> type[Pass]:
    def run(self: Pass, model: Model) -> PassResult:
        return function(model, self.options)

    return type(
        function.__name__,
        (Pass,),
        {
            "__doc__": function.__doc__,
            "__module__": function.__module__,
            "name": name,
            "Options": options,
            "contract": contract or Contract.exact(),
            "requires": frozenset(requires),
            "establishes": frozenset(establishes),
            "removes": frozenset(removes),
            "run": run,
            "_origin": (function.__module__, function.__qualname__),
        },
    )


def registered_passes() -> dict[str, type[Pass]]:
    """Name -> pass class for every registered pass (built-in passes are imported first)."""
    load_plugins("yolograph.passes")

    return dict(sorted(_REGISTRY.items()))


def get_pass(name: str) -> type[Pass]:
    passes = registered_passes()
    if name not in passes:
        import difflib

        close = difflib.get_close_matches(name, passes, n=1)
        hint = f"; did you mean {close[0]!r}" if close else ""
        raise PipelineError(f"Unknown pass {name!r}{hint}. Available passes: {', '.join(passes)}.")
    return passes[name]
