"""What an adaptation's result says, in words: the tiles of the query grid, the status line
under it, the caption of the selected image or of the camera picture, and the rows of the
CSV export. Plain functions of the result dicts the adapt worker sends
(:meth:`metastudio.app.session.SessionResult.as_dict`,
:meth:`metastudio.app.session.ClassifierSession.classify_picture`)."""

from __future__ import annotations

#: The colour of a class the project no longer has.
NO_COLOUR = "#888888"


def best_class(probabilities: list[float]) -> int:
    """The index of the most probable class."""
    return max(range(len(probabilities)), key=probabilities.__getitem__)


def class_colours(project, names: list[str]) -> list[str]:
    """The colour of each class of ``names`` in ``project``."""
    colours = {c.name: c.colour for c in project.classes}
    return [colours.get(n, NO_COLOUR) for n in names]


def _percent(p: float) -> str:
    return f"{100 * p:.0f}%"


def tile_predictions(project, result: dict) -> dict[str, tuple[str, str, float, str]]:
    """(class, colour, confidence, why it is unsure or "") of each predicted image, by id."""
    names = result["class_names"]
    colours = dict(zip(names, class_colours(project, names)))
    unsure = result.get("unsure") or {}
    predictions = {}
    for image_id, probs in result["probabilities"].items():
        best = best_class(probs)
        predictions[image_id] = (names[best], colours[names[best]], probs[best], unsure.get(image_id, ""))
    return predictions


def summary(project, result: dict, predictions: dict, changed: set, took: float) -> str:
    """The status line of an adaptation that took ``took`` seconds: what it learned from, what
    was predicted, and how many predictions changed since the last one."""
    names = result["class_names"]
    n_images = sum(len(c.images) for c in project.classes)
    text = f"Learned {len(names)} classes from {n_images} examples in {took:.2f} s."
    if project.queries:
        counts: dict[str, int] = {}
        unsure = 0
        for name, _, _, doubt in predictions.values():
            if doubt:
                unsure += 1
            else:
                counts[name] = counts.get(name, 0) + 1
        sure = ", ".join(f"{counts[n]} × {n}" for n in names if n in counts)
        text += f" {len(predictions)} image{'s' if len(predictions) != 1 else ''} classified: {sure or 'none sure'}"
        text += f"; {unsure} unsure (not like any class)." if unsure else "."
    else:
        text += " Now drop images to classify here."
    if changed:
        n = len(changed)
        text += (f" <b>{n} prediction{'s' if n != 1 else ''} changed</b> (marked in orange; "
                 f"“Only the {n} changed” shows just {'them' if n != 1 else 'it'}).")
    for note in result.get("notes", []):
        text += f" <i>{note}</i>"
    return text


def problems_note(project, result: dict) -> str:
    """What the status line adds about files the adaptation could not use ("" when none)."""
    problems = result["problems"]
    if not problems:
        return ""
    bad_support = [pid for pid in problems if project.locate(pid)[0] is not None]
    return (f" <span style='color:#c62828'>{len(problems)} file(s) can't be used"
            f"{f', {len(bad_support)} of them examples' if bad_support else ''} (hover them for the reason).</span>")


def image_caption(name: str, result: dict, image_id: str) -> str | None:
    """The caption of the selected image ``name`` under its bars, or None when it has no
    prediction (then :func:`no_prediction_caption` says why)."""
    probs = (result.get("probabilities") or {}).get(image_id)
    if probs is None:
        return None
    names = result["class_names"]
    best = best_class(probs)
    doubt = (result.get("unsure") or {}).get(image_id)
    if doubt:
        return (f"<b>{name}</b>: unsure, {doubt}. The closest class is {names[best]} "
                f"({_percent(probs[best])}). If it belongs to a class, drop it there.")
    return f"<b>{name}</b>: {names[best]} ({_percent(probs[best])})"


def no_prediction_caption(name: str, result: dict, image_id: str) -> str:
    problem = (result.get("problems") or {}).get(image_id)
    return f"{name}: can't be used ({problem})" if problem else f"{name}: no prediction yet"


def camera_caption(result: dict) -> str:
    """The caption of a camera picture's bars (``result`` of a picture that was classified)."""
    names, probs = result["class_names"], result["probabilities"]
    best = best_class(probs)
    if result.get("unsure"):
        return f"<b>Unsure</b>: {result['unsure']} (closest: {names[best]}, {_percent(probs[best])})"
    return f"<b>{names[best]}</b> ({_percent(probs[best])})"


def camera_failure(result: dict) -> str:
    """Why a camera picture has no bars (a hint such as "add examples", or the error)."""
    return result.get("hint") or f"The camera picture could not be classified: {result.get('message', '')}"
