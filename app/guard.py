"""Bad values sent to an endpoint get one message naming the field and the fix, never Gradio's internals.

Gradio checks and converts every input before a handler runs (moving files into its cache,
validating the payload, the component's `preprocess`). When that fails it answers with its own
words ("Could not preprocess input component at index 1 ...", sometimes with a server path).
`guard_inputs` wraps both steps of every event of a Blocks app: the failing input is found and
named by its label, with what it should be.
"""

from __future__ import annotations

import logging

import gradio as gr
from fastapi.responses import JSONResponse
from gradio.route_utils import FnIndexInferError
from gradio.utils import get_upload_folder, is_in_or_equal
from PIL import Image

log = logging.getLogger(__name__)

FIXES = {
    gr.Image: "send an image file (PNG, JPEG or WebP); from Python, handle_file(path)",
    gr.File: "send a file; from Python, handle_file(path)",
    gr.Number: "send a number",
    gr.Slider: "send a number within the slider's range",
    gr.Dropdown: "send one of the listed choices",
    gr.Textbox: "send text",
}


class NamedError(gr.Error):
    """An input's own refusal that already names what is wrong (e.g. a file that is not an image): shown as is."""


def checked_image(**options) -> gr.Image:
    """A `gr.Image` that answers a file Pillow cannot open with a message instead of a bare 'Error'.

    The check wraps the instance's `preprocess`; a subclass would make Gradio write a .pyi stub
    next to this module at import time.
    """
    image = gr.Image(**options)
    original = image.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            name = getattr(payload, "orig_name", None) or "The upload"
            raise NamedError(f"{name} is not an image this app can read. Upload a PNG, JPEG or WebP photo.",
                             print_exception=False) from error

    image.preprocess = preprocess
    return image


def fix_for(component) -> str:
    for kind, fix in FIXES.items():
        if isinstance(component, kind):
            if isinstance(component, gr.Dropdown):
                choices = ", ".join(str(value) for _, value in component.choices[:12])
                return f"send one of: {choices}" if choices else \
                    "its choices appear with the results they belong to (e.g. call sweep_results first)"
            if isinstance(component, (gr.Slider, gr.Number)) and component.minimum is not None \
                    and component.maximum is not None:
                return f"send a number from {component.minimum:g} to {component.maximum:g}"
            return fix
    return "check the value against the app's API page"


def input_error(component, error: BaseException) -> gr.Error:
    name = getattr(component, "label", None) or type(component).__name__
    detail = error.message if isinstance(error, gr.Error) and "/" not in str(error.message) \
        and not isinstance(component, gr.Dropdown) else None  # a dropdown's own words list its internals
    reason = f" ({detail})" if detail else ""
    return gr.Error(f"{name}: this value cannot be used{reason}; {fix_for(component)}.", print_exception=False)


def guard_inputs(demo: gr.Blocks) -> gr.Blocks:
    """Wrap every input component's `preprocess`, and the Blocks' input step, to answer bad values plainly."""
    inputs = {id(block): block for function in demo.fns.values() for block in function.inputs}
    for component in inputs.values():
        _guard_preprocess(component)
    original = demo.preprocess_data

    async def preprocess_data(block_fn, inputs, state, explicit_call=False):
        try:
            return await original(block_fn, inputs, state, explicit_call)
        except gr.Error as error:
            if "/" in str(error.message):  # e.g. a server path in one of Gradio's own messages
                raise gr.Error("A value sent to this endpoint cannot be used; files must be uploaded first "
                               "(from Python, handle_file(path)).", print_exception=False) from None
            # Gradio's own range check ("Value 0 is less than minimum value 1.") names no field; the page's
            # components are per-session copies, so their wrapped `preprocess` may not be the one that ran.
            raise _out_of_range(block_fn, inputs) or _refused_input(block_fn, inputs) \
                or gr.Error(error.message, print_exception=False) from None
        except Exception as error:  # noqa: BLE001 - any failure to read an input is the caller's to fix
            log.info("bad input to %s: %s", getattr(block_fn, "api_name", "?"), type(error).__name__)
            raise _refused_input(block_fn, inputs) or _which_input(block_fn, inputs) from None

    demo.preprocess_data = preprocess_data
    return demo


def _guard_preprocess(component) -> None:
    original = component.preprocess
    if getattr(original, "guarded", False):
        return

    def preprocess(payload):
        payload = _as_choice(component, payload)
        if isinstance(payload, dict) and isinstance(component, (gr.Image, gr.File)):  # a raw payload (_refused_input)
            payload = component.data_model.model_validate(payload, context={"validate_meta": True})
        if isinstance(component, gr.Number) and component.precision == 0 and isinstance(payload, float) \
                and not payload.is_integer():  # Gradio would round 2.5 to 2 without a word
            name = getattr(component, "label", None) or "This value"
            raise gr.Error(f"{name} must be a whole number, not {payload:g}.", print_exception=False)
        try:
            return original(payload)
        except NamedError:
            raise
        except Exception as error:  # noqa: BLE001 - gr.Error included: it does not name the field
            raise input_error(component, error) from None

    preprocess.guarded = True
    component.preprocess = preprocess


def _refused_input(block_fn, inputs: list) -> gr.Error | None:
    """The named refusal of the first file input whose own (guarded) `preprocess` refuses it, or None.

    The page's components are per-session copies without the guard; the app's own ones have it.
    """
    for component, value in zip(block_fn.inputs, inputs):
        if not isinstance(component, (gr.Image, gr.File)) or not isinstance(value, dict):
            continue
        try:
            component.preprocess(value)
        except gr.Error as error:
            return error
        except Exception:  # noqa: BLE001 - not this input's own refusal: the next check names it
            continue
    return None


def _out_of_range(block_fn, inputs: list) -> gr.Error | None:
    """The error for the first number outside its component's range, named by its label, or None."""
    for component, value in zip(block_fn.inputs, inputs):
        if not isinstance(component, (gr.Number, gr.Slider)) or isinstance(value, bool) \
                or not isinstance(value, (int, float)):
            continue
        low, high = component.minimum, component.maximum
        if (low is None or value >= low) and (high is None or value <= high):
            continue
        allowed = f"from {low:g} to {high:g}" if low is not None and high is not None else \
            f"{low:g} or more" if low is not None else f"{high:g} or less"
        name = getattr(component, "label", None) or "A number"
        return gr.Error(f"{name} must be {allowed}, not {value:g}.", print_exception=False)
    return None


def _as_choice(component, payload):
    """A dropdown's number sent as text ("16", the type the API page documents for it) as that number."""
    if isinstance(component, gr.Dropdown) and isinstance(payload, str) and not component.multiselect:
        for _, value in component.choices:
            if not isinstance(value, str) and str(value) == payload.strip():
                return value
    return payload


def _which_input(block_fn, inputs: list) -> gr.Error:
    """The error for the first input that does not fit its component's payload (or a general one)."""
    for component, value in zip(block_fn.inputs, inputs):
        model = getattr(component, "data_model", None)
        if model is None or value is None:
            continue
        try:
            model.model_validate(value, context={"validate_meta": True})
        except Exception as error:  # noqa: BLE001
            return input_error(component, error)
        path = value.get("path") if isinstance(value, dict) else None
        if isinstance(path, str) and not is_in_or_equal(path, get_upload_folder()):
            return input_error(component, ValueError("not an uploaded file"))
    return gr.Error("A value sent to this endpoint cannot be used. Check each value against the app's API page; "
                    "files must be uploaded first (from Python, handle_file(path)).", print_exception=False)


def unknown_endpoint(request, error: FnIndexInferError) -> JSONResponse:
    """A call to an endpoint this app does not have: a 404 that says where the list is, not a 500 and a traceback."""
    return JSONResponse({"error": "This app has no such endpoint. Its endpoints and their parameters are on its API "
                                  "page ('Use via API' at the foot of the page)."}, status_code=404)


# For `launch(app_kwargs=...)`: Gradio's own routes raise these for a caller's mistake.
EXCEPTION_HANDLERS = {FnIndexInferError: unknown_endpoint}
