"""How a handler's failure reaches the page and the client: the fix as written, or one plain sentence.

A `ShapeInvError` already says what to do, so it is shown as it is. A full disk and anything
unexpected are not the visitor's to fix: they get one sentence, and the terminal gets the traceback.
"""

from __future__ import annotations

import errno
import functools
import logging

import gradio as gr

from shapeinv_core.errors import ModelLoadError, ShapeInvError

UNEXPECTED = "Something went wrong on the server; it has been logged. Try again, and report it if it persists."
DISK_FULL = "The server's disk is full. Try again later; nothing of your jobs is lost."
# A visitor cannot fix a model that did not load; the terminal has the cause and the operator's fixes.
MODEL_UNAVAILABLE = ("No model could be loaded on this server, so nothing can be learned or drawn now (masks still "
                     "work). Whoever runs the app finds the cause and the fix in its terminal.")

log = logging.getLogger(__name__)


def user_errors(function):
    """Show `ShapeInvError`s as they are written; a full disk and anything unexpected as one plain sentence."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except gr.Error:
            raise
        except ModelLoadError as error:
            log.error("%s", error)  # the terminal, again: the cause and the fixes
            raise gr.Error(MODEL_UNAVAILABLE, print_exception=False) from error
        except ShapeInvError as error:
            raise gr.Error(str(error), print_exception=False) from error
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise gr.Error(DISK_FULL, print_exception=False) from error
            log.exception("%s failed", function.__name__)
            raise gr.Error(UNEXPECTED, print_exception=False) from error
        except Exception as error:
            log.exception("%s failed", function.__name__)
            raise gr.Error(UNEXPECTED, print_exception=False) from error

    return wrapper
