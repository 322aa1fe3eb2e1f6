"""Errors a user can act on.

Every error raised for bad input or an unusable model is a `ShapeInvError` whose message names
the problem and the fix in one or two sentences, so the CLI and the app can show it as is
instead of a traceback.
"""


class ShapeInvError(Exception):
    """Base class: the message is meant for the user, not for a developer."""


class InputError(ShapeInvError, ValueError):
    """An image, mask, prompt, setting or folder the user gave cannot be used."""


class ModelLoadError(ShapeInvError, RuntimeError):
    """A Stable Diffusion (or CLIP) model could not be loaded."""


def first_line(error: BaseException) -> str:
    """The first line of a library's error message, to quote inside one of ours."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class DiskFullError(ShapeInvError):
    """The disk (or the data folder's budget) is full; the work that hit it can resume once there is room."""
