"""Form and API values read as what a handler needs, or an `InputError` that names the field.

A client may send anything for any parameter (a string for a number, NaN, a list), and Gradio
passes some of it through; these read each value once, so the message names the field as the page labels it.
"""

from __future__ import annotations

import math

from shapeinv_core.errors import InputError


def whole(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """A form or API value as an int, or `InputError` naming the field and its range."""
    number = real(value, name)
    if not number.is_integer():
        raise InputError(f"{name} must be a whole number, not {value!r:.40}.")
    number = int(number)
    if (low is not None and number < low) or (high is not None and number > high):
        raise InputError(f"{name} must be between {low} and {high}, not {number}.")
    return number


def real(value, name: str) -> float:
    """A form or API value as a finite float, or `InputError` naming the field."""
    if value is None or value == "":
        raise InputError(f"{name} is missing; give a number.")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"{name} must be a number, not {type(value).__name__}.")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise InputError(f"{name} must be a number, not {str(value)[:40]!r}.") from None
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, not {value!r:.40}.")
    return number


def text(value, name: str) -> str:
    """A form or API value as text ('' for none), or `InputError` naming the field."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{name} must be text, not {type(value).__name__}.")
    return value


def given_id(value, kind: str, start: str) -> str:
    """A job or sweep id someone asked about; an empty one is told, not answered with an empty status."""
    job_id = text(value, f"{kind.capitalize()} id").strip()
    if not job_id:
        raise InputError(f"No {kind} id given. Type the id that Start gave (it is in the address bar as "
                         f"?job=...); from a program, the id {start} returned.")
    return job_id
