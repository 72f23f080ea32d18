"""Reading and checking artifacts: a restricted unpickler, skops, and what an estimator must be.

A joblib artifact is a pickle, and a pickle can name any importable callable and call it.
Every joblib read therefore goes through `RestrictedUnpickler`, whose `find_class` resolves
only allow-listed scikit-learn, NumPy and SciPy types and the few builtins they need, so a
hostile file is refused before any of its code runs, whoever uploaded it.
"""

import importlib
import io
import platform
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import joblib
import numpy as np
import sklearn
from django.conf import settings
from joblib.numpy_pickle import NumpyUnpickler
from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.exceptions import InconsistentVersionWarning, NotFittedError
from sklearn.utils.validation import check_is_fitted

from mlsite.errors import BadInput, TooLarge

from .models import ArtifactFormat, TaskKind


class ArtifactRefused(BadInput):
    code = "artifact_refused"


class UnsafeArtifact(ArtifactRefused):
    code = "unsafe_artifact"


class UnreadableArtifact(ArtifactRefused):
    code = "unreadable_artifact"


class NotAnEstimator(ArtifactRefused):
    code = "not_an_estimator"


class NoPredict(ArtifactRefused):
    code = "no_predict"


class NotFitted(ArtifactRefused):
    code = "not_fitted"


class TextFeatures(ArtifactRefused):
    code = "text_features"


class ArtifactTooLarge(TooLarge):
    code = "artifact_too_large"


# Exact globals that scikit-learn, NumPy and SciPy pickles need. Each is harmless to call
# with any arguments: constructors of plain containers and of arrays, never I/O.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [
        *(
            ("builtins", name)
            for name in (
                *("bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset"),
                *("int", "list", "object", "range", "set", "slice", "str", "tuple"),
            )
        ),
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("copyreg", "_reconstructor"),
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        *(
            (module, name)
            for module in ("numpy._core.multiarray", "numpy.core.multiarray")
            for name in ("_reconstruct", "scalar")
        ),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy.ma", "MaskedArray"),
        ("numpy.ma.core", "MaskedArray"),
        ("numpy.ma.core", "_mareconstruct"),
        *(
            ("numpy.random._pickle", name)
            for name in ("__bit_generator_ctor", "__generator_ctor", "__randomstate_ctor")
        ),
        ("numpy.random.mtrand", "RandomState"),
        ("numpy.random._generator", "Generator"),
        ("numpy.random._mt19937", "MT19937"),
        ("numpy.random._pcg64", "PCG64"),
        ("numpy.random._pcg64", "PCG64DXSM"),
        ("numpy.random._philox", "Philox"),
        ("numpy.random._sfc64", "SFC64"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        ("scipy._lib.array_api_compat.numpy._aliases", "asarray"),
    ]
)

# Packages whose own classes (defined in them, not re-exported) may be rebuilt. Modules
# that do I/O or run code on purpose are kept out even inside these packages.
ALLOWED_CLASS_PACKAGES = ("sklearn", "scipy.sparse", "scipy.interpolate", "scipy.spatial")
DENIED_MODULE_PARTS = ("tests", "_testing", "conftest", "externals", "datasets", "__check_build")
# Cython's pickle helpers: they rebuild an instance of a class that must itself be allowed.
CYTHON_HELPERS = ("__pyx_unpickle_", "newObj")


def is_allowed_global(module: str, name: str) -> bool:
    """Whether the pickle global `module.name` may be resolved (before importing anything)."""
    if (module, name) in ALLOWED_GLOBALS or f"{module}.{name}" in _extra_exact():
        return True
    if "." in name or (name.startswith("__") and not name.startswith(CYTHON_HELPERS)):
        return False  # a dotted name walks attributes: ("sklearn.base", "os.system")
    if any(part in DENIED_MODULE_PARTS for part in module.split(".")):
        return False
    return _in_packages(module, _class_packages()) or _is_numpy_scalar_module(module)


def _is_numpy_scalar_module(module: str) -> bool:
    return module in ("numpy", "numpy.dtypes")


def _in_packages(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def _extra_exact() -> set[str]:
    return {entry for entry in settings.UNPICKLE_EXTRA_ALLOWED if not entry.endswith(".*")}


def _class_packages() -> tuple[str, ...]:
    extra = [entry[:-2] for entry in settings.UNPICKLE_EXTRA_ALLOWED if entry.endswith(".*")]
    return (*ALLOWED_CLASS_PACKAGES, *extra)


def is_allowed_object(module: str, name: str, resolved: Any) -> bool:
    """Whether what `module.name` resolved to is one of the kinds of object we rebuild."""
    if (module, name) in ALLOWED_GLOBALS or f"{module}.{name}" in _extra_exact():
        return True
    defined_in = getattr(resolved, "__module__", None) or ""
    if _is_numpy_scalar_module(module):  # numpy.float64, numpy.dtypes.Float64DType, …
        return isinstance(resolved, type) and issubclass(resolved, np.generic | np.dtype)
    if not _in_packages(defined_in, _class_packages()):
        return False  # e.g. a module that did `from subprocess import Popen`
    if name.startswith(CYTHON_HELPERS):
        return callable(resolved)
    return isinstance(resolved, type)


class RestrictedUnpickler(NumpyUnpickler):
    """joblib's unpickler, resolving only allow-listed globals.

    joblib routes the nested pickle of object arrays through this same `find_class`.
    """

    def find_class(self, module: str, name: str) -> Any:
        if not is_allowed_global(module, name):
            raise UnsafeArtifact(_refusal(module, name))
        try:
            resolved = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            raise UnreadableArtifact(
                f"the artifact names {module}.{name}, which does not exist"
            ) from None
        if not is_allowed_object(module, name, resolved):
            raise UnsafeArtifact(_refusal(module, name))
        return resolved


def _refusal(module: str, name: str) -> str:
    return (
        f"the artifact refers to {module}.{name}, which is not an allowed scikit-learn, NumPy "
        "or SciPy type; it was not loaded (allow your own types with UNPICKLE_EXTRA_ALLOWED)"
    )


def read_joblib(stream: IO[bytes]) -> Any:
    """Unpickle a joblib artifact through the restricted unpickler. Raises ArtifactRefused."""
    stream.seek(0)
    try:
        with _validate_fileobject_and_memmap(stream, "", None) as (fileobj, _):
            if isinstance(fileobj, str):  # joblib < 0.10 format, read by an unrestricted path
                raise UnreadableArtifact("artifacts from joblib older than 0.10 are not read")
            return RestrictedUnpickler("", fileobj, ensure_native_byte_order=True).load()
    except (
        ArtifactRefused,
        MemoryError,
    ):  # MemoryError: past the reader's cap (upload_inspection.py)
        raise
    except Exception as exc:  # a corrupt or truncated pickle fails in many ways
        raise UnreadableArtifact(
            f"not a readable joblib artifact: {_unreadable(stream, exc)}"
        ) from None


def _unreadable(stream: IO[bytes], exc: Exception) -> str:
    """Why a joblib read failed, in words: the exception alone can be a bare "118"."""
    stream.seek(0)
    if stream.read(4) == b"PK\x03\x04":  # a zip archive, which is what skops writes
        return "it is a zip file, as skops writes; choose the skops format"
    return f"the file is not a joblib or pickle file, or is damaged ({type(exc).__name__}: {exc})"


def read_skops(stream: IO[bytes]) -> Any:
    """Load a skops artifact, trusting only the types our unpickler would also resolve."""
    import skops.io

    data = _read_all(stream)
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:
        raise UnreadableArtifact(f"not a readable skops artifact: {exc}") from None
    for dotted in untrusted:
        module, _, name = dotted.rpartition(".")
        if not _is_allowed_dotted(module, name):
            raise UnsafeArtifact(_refusal(module, name))
    try:
        return skops.io.load(io.BytesIO(data), trusted=untrusted)
    except MemoryError:
        raise
    except Exception as exc:
        raise UnreadableArtifact(f"not a readable skops artifact: {exc}") from None


def _is_allowed_dotted(module: str, name: str) -> bool:
    if not is_allowed_global(module, name):
        return False
    try:
        resolved = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return is_allowed_object(module, name, resolved)


def read_estimator(stream: IO[bytes], artifact_format: str) -> Any:
    """The object stored in an artifact of the given format, read without running its code."""
    if artifact_format == ArtifactFormat.SKOPS:
        return read_skops(stream)
    return read_joblib(stream)


def _read_all(stream: IO[bytes]) -> bytes:
    stream.seek(0)
    return stream.read()


@dataclass
class Inspection:
    """What an uploaded artifact holds, once it has passed every check."""

    estimator: Any
    estimator_class: str
    task_kind: str
    feature_names: list[str]
    feature_names_from_estimator: bool
    library_versions: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def input_schema(self) -> list[dict[str, str]]:
        return [{"name": name, "type": "number"} for name in self.feature_names]


def size_of(stream: IO[bytes]) -> int:
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size


def check_size(stream: IO[bytes]) -> int:
    """The artifact's size; raises ArtifactTooLarge above settings.MAX_ARTIFACT_BYTES."""
    size = size_of(stream)
    if size > settings.MAX_ARTIFACT_BYTES:
        raise ArtifactTooLarge(
            f"the artifact is {size} bytes; the limit is {settings.MAX_ARTIFACT_BYTES} bytes "
            "(MAX_ARTIFACT_BYTES)"
        )
    if size == 0:
        raise UnreadableArtifact("the artifact is empty")
    return size


def inspect_artifact(stream: IO[bytes], artifact_format: str) -> Inspection:
    """Read an uploaded artifact safely and check it is a fitted estimator with predict.

    Raises ArtifactTooLarge, UnsafeArtifact, UnreadableArtifact, NotAnEstimator, NoPredict
    or NotFitted; never runs code named by the artifact.
    """
    check_size(stream)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        estimator = read_estimator(stream, artifact_format)
    check_estimator(estimator)
    names, from_estimator = feature_names_of(estimator)
    return Inspection(
        estimator=estimator,
        estimator_class=f"{type(estimator).__module__}.{type(estimator).__qualname__}",
        task_kind=TaskKind.CLASSIFICATION if is_classifier(estimator) else TaskKind.REGRESSION,
        feature_names=names,
        feature_names_from_estimator=from_estimator,
        library_versions=library_versions(_saved_sklearn_version(caught)),
        params=json_params(estimator),
    )


def check_estimator(estimator: Any) -> None:
    if not isinstance(estimator, BaseEstimator):
        kind = type(estimator).__name__
        raise NotAnEstimator(f"the artifact holds a {kind}, not a scikit-learn estimator")
    if not callable(getattr(estimator, "predict", None)):
        raise NoPredict(f"{type(estimator).__name__} has no predict method")
    if not (is_classifier(estimator) or is_regressor(estimator)):
        raise NoPredict(f"{type(estimator).__name__} is neither a classifier nor a regressor")
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise NotFitted(
            f"{type(estimator).__name__} is not fitted: call fit before saving"
        ) from None
    if not isinstance(getattr(estimator, "n_features_in_", None), int | np.integer):
        raise NotFitted(f"{type(estimator).__name__} does not record its feature count")
    check_takes_numbers(estimator)


def check_takes_numbers(estimator: Any) -> None:
    """Raise TextFeatures when an encoder inside the estimator was fitted on text categories:
    rows are sent as numbers, so it could score none (every job failed, in NumPy's words)."""
    for part in _parts(estimator):
        columns = getattr(part, "feature_names_in_", None)
        for at, categories in enumerate(getattr(part, "categories_", None) or []):
            texts = [repr(value) for value in categories if isinstance(value, str)]
            if texts:
                column = columns[at] if columns is not None else f"its column {at + 1}"
                raise TextFeatures(
                    f"{type(part).__name__} was fitted on text in {column} "
                    f"({', '.join(texts[:3])}): features are sent as numbers, so it could "
                    "score no row; encode the categories as numbers before fitting"
                )


def _parts(value: Any, depth: int = 0) -> Iterator[BaseEstimator]:
    """The estimators in `value`, itself first: pipeline steps, a column transformer's fitted
    transformers, ensemble members, the preprocessors estimators keep as attributes."""
    if depth > 20:  # deeper than any real composition; a crafted artifact ends here
        return
    if isinstance(value, BaseEstimator):
        yield value
        value = list(vars(value).values())
    if isinstance(value, list | tuple):
        for item in value:
            yield from _parts(item, depth + 1)


def feature_names_of(estimator: Any) -> tuple[list[str], bool]:
    """`feature_names_in_` when fitted on a DataFrame (True), else x0 … x{n-1} (False)."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        return [str(name) for name in names], True
    return [f"x{i}" for i in range(int(estimator.n_features_in_))], False


def library_versions(saved_sklearn: str | None = None) -> dict[str, str]:
    """Versions an artifact is read with; scikit-learn's is the one it was saved with."""
    return {
        "python": platform.python_version(),
        "scikit-learn": saved_sklearn or sklearn.__version__,
        "joblib": joblib.__version__,
        "numpy": np.__version__,
    }


def _saved_sklearn_version(caught: list[warnings.WarningMessage]) -> str | None:
    for warning in caught:
        if isinstance(warning.message, InconsistentVersionWarning):
            return str(warning.message.original_sklearn_version)
    return None


def json_params(estimator: Any) -> dict[str, Any]:
    """The estimator's top-level parameters that are plain JSON values."""
    plain = (str, int, float, bool, type(None))
    return {k: v for k, v in estimator.get_params(deep=False).items() if isinstance(v, plain)}


def dump_joblib(estimator: Any) -> io.BytesIO:
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    buffer.seek(0)
    return buffer


def dump_skops(estimator: Any) -> io.BytesIO:
    import skops.io

    return io.BytesIO(skops.io.dumps(estimator))
