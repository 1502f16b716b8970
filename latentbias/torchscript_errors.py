"""TorchScript and libtorch error messages with their cause first.

A model that fails inside the TorchScript interpreter raises a ``RuntimeError`` (``torch.jit.Error``) whose text
starts with ``The following operation failed in the TorchScript interpreter.``, then one or two tracebacks, and
only on its LAST lines the cause (``RuntimeError: linalg.svd: The algorithm failed to converge because the input
matrix contained non-finite values.``). libtorch's ``c10::Error`` puts the cause first but may append a C++
backtrace (``Exception raised from ... frame #0: ...``). Code and users that read the first line of an error
(logs, ``SystemExit`` lines, the campaign's status) saw no cause at all.

:func:`cause_first` reorders such a message: the cause, then the traceback under a ``TorchScript traceback:``
line. The plugin's C++ (``describeException`` in ``plugin/openmmapi/src/LatentBiasModel.cpp``) applies the same
rule to the exceptions of the ``LatentBiasForce`` torch path.
"""

from __future__ import annotations

import re

__all__ = ["cause_first", "torchscript_cause"]

_INTERPRETER = "The following operation failed in the TorchScript interpreter."
_TRACEBACK = "Traceback of TorchScript"
_CPP_BACKTRACE = "Exception raised from "
#: the line between the cause and the traceback in a reordered message
_MARKER = "TorchScript traceback:"
#: an exception line at column 0: ``RuntimeError: ...``, ``torch.jit.Error: ...``, ``c10::Error: ...``
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.:]*(Error|Exception):\s")


def _split(message: str) -> tuple[str, str]:
    """(cause, rest): the cause of a TorchScript/libtorch message and everything else (may be empty)."""
    lines = message.strip().splitlines()
    if not lines:
        return "", ""
    if _MARKER in lines:  # already reordered (by this module or the plugin's describeException)
        i = lines.index(_MARKER)
        return "\n".join(lines[:i]).strip(), "\n".join(lines[i + 1:]).strip()
    if any(line.startswith(_TRACEBACK) or line.startswith(_INTERPRETER) for line in lines):
        starts = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
        if starts:
            i = starts[-1]
            cause, rest = lines[i:], lines[:i]
        else:  # no exception line: the last non-indented line is the best guess
            j = max((k for k, line in enumerate(lines) if line and not line[0].isspace()), default=len(lines) - 1)
            cause, rest = lines[j:], lines[:j]
    else:
        cause, rest = lines, []
    # a C++ backtrace after the cause goes behind it too
    for k, line in enumerate(cause):
        if line.startswith(_CPP_BACKTRACE):
            cause, rest = cause[:k], rest + cause[k:]
            break
    return "\n".join(cause).strip(), "\n".join(rest).strip()


def torchscript_cause(message: str) -> str:
    """The cause of a TorchScript/libtorch error message (e.g. ``RuntimeError: linalg.svd: ... non-finite
    values.``); the message itself (stripped) when it has no traceback."""
    cause, _ = _split(str(message))
    return cause


def cause_first(message: str) -> str:
    """The message with its cause on the first line and the TorchScript/C++ traceback after it (unchanged when the
    cause already comes first and nothing follows it)."""
    cause, rest = _split(str(message))
    if not rest:
        return cause
    return f"{cause}\n{_MARKER}\n{rest}"
