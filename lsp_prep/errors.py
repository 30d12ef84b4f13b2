"""The toolkit's exceptions. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations


class LSPError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class InputError(LSPError):
    """The user's input (a file, an option, a directory) cannot be used as given."""


class SchemaError(LSPError):
    """A dataset file does not follow the schema this version of the toolkit knows."""


class CheckpointError(LSPError):
    """A checkpoint is missing, of the wrong stage, or of an unknown version."""


class ToolError(LSPError):
    """An external tool (ffmpeg) failed; the message carries its stderr."""
