"""The project's own error types: what the CLI prints as a one-line user error; anything else is a bug and keeps
its traceback.

Each also derives from the builtin a caller would catch for it (``ValueError``, ``FileNotFoundError``), so code
written against the builtins keeps working.
"""

from __future__ import annotations


class ClipworksError(Exception):
    """Bad input the user can fix; the message names the file, field or value."""


class ConfigError(ClipworksError, ValueError):
    """A model or run config names an unknown key, an unknown model, or an impossible value."""


class CheckpointError(ClipworksError, ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names the file and the key."""


class PretrainedError(ClipworksError, ValueError):
    """A pretrained name, Hub repo or download is unknown, missing, incomplete or of another architecture."""


class TokenizerError(ClipworksError, ValueError):
    """A tokenizer cannot be built: a missing tokenizer file, an unknown tokenizer type, bad input text types."""


class UsageError(ClipworksError, ValueError):
    """Arguments that cannot work together, or a value outside what a command or function accepts."""


class BusyError(UsageError):
    """A resource another process holds right now (an index being written); trying again later can succeed."""


class MissingFileError(ClipworksError, FileNotFoundError):
    """A file or directory the user named is not there."""


class InputTypeError(ClipworksError, TypeError):
    """An input of the wrong type (a tokenizer given bytes or None, …)."""


class TrainingError(ClipworksError, RuntimeError):
    """A run cannot continue (e.g. the loss stays non-finite and there is no checkpoint to roll back to)."""


class MissingDependencyError(ClipworksError, ImportError):
    """An optional library is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, what: str):
    """Import ``module`` or fail naming the pip extra: ``pip install 'clipworks[extra]'``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{what} needs the '{module}' package, which is not installed: pip install 'clipworks[{extra}]'"
        ) from e


TORCH_EXTRA_MODULES = ("torch", "torchvision", "huggingface_hub", "matplotlib", "tensorboard")


def torch_extra_missing(error: ModuleNotFoundError, what: str) -> MissingDependencyError | None:
    """The user error for ``what`` when ``error`` is a module of the ``torch`` extra missing (a torch-free install:
    the core plus ``runtime``); None when another module is missing (a bug, which keeps its traceback)."""
    top = (error.name or "").split(".")[0]
    if top not in TORCH_EXTRA_MODULES:
        return None
    return MissingDependencyError(f"{what} needs {top}, which is not installed: pip install 'clipworks[torch]' (without "
                                  "torch, an exported folder runs with --backend onnx / load_encoder(FOLDER, "
                                  "backend='onnx'))")
