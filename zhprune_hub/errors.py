"""One error hierarchy: every user mistake becomes a ZhpruneError whose message is one sentence.

The CLI entry point prints the message (never a traceback) and exits non-zero; unknown
exceptions keep their traceback so bugs stay visible.
"""

from __future__ import annotations


class ZhpruneError(Exception):
    """A failure the user can fix; the message says what is wrong and what to do next."""

    exit_code: int = 2


class UnsupportedArchitectureError(ZhpruneError):
    """The model's architecture has no family spec."""

    def __init__(self, architecture: str, supported: list[str]):
        self.architecture = architecture
        super().__init__(
            f"Architecture {architecture!r} is not supported; supported model types are: "
            f"{', '.join(sorted(supported))}."
        )


class ModelSourceError(ZhpruneError):
    """A model id, path or GGUF file could not be resolved or loaded."""


class RatioError(ZhpruneError):
    """The requested pruning ratio cannot be reached."""


class DataError(ZhpruneError):
    """A corpus name, file or field is wrong, or there is not enough text."""


class VerificationError(ZhpruneError):
    """A pruned checkpoint failed a structural or numerical check."""


class PlanError(ZhpruneError):
    """A publish plan (CLI flags or YAML) is invalid."""


class HubError(ZhpruneError):
    """Talking to the Hub failed; the message says whether anything changed remotely."""

    exit_code = 3


class OutputError(ZhpruneError):
    """An output path cannot be written: it is a file, not writable, too small, or not ours to replace."""


class EvaluationError(ZhpruneError):
    """An evaluation could not run (missing data, bad task name, unusable model)."""


class ExportError(ZhpruneError):
    """A deployable export could not be built or failed its check against the PyTorch model."""
