"""Instruction data about synthetic images: the questions and answers of the demo instruction pool.

Why it exists: the instruction-tuning track (``pipelines/data/demo_it.py``)
needs conversations in LLaVA's shapes whose truth is known exactly: each
function here turns an image's attributes (:data:`synth.ATTRIBUTES
<cbdsl.pipelines.data.synth.ATTRIBUTES>`, as value names) into the turns of
one task, as LLaVA-665K's sub-datasets phrase them: free conversation,
detailed description and reasoning (LLaVA-Instruct), short answers (VQAv2,
GQA), multiple choice (A-OKVQA), reading text (OCR-VQA), grounding (RefCOCO,
Visual Genome) and text-only chat (ShareGPT). The short-answer and
multiple-choice prompts end with LLaVA's own suffixes, so
:func:`~cbdsl.pipelines.data.importers.llava_source` sorts them as it sorts
the real file.

Everything is a pure function of its arguments; ``u`` is a list of uniform
draws in [0, 1) the caller makes (:data:`DRAWS` per row), so a row's text
never depends on Python's ``random`` or on other rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from cbdsl.pipelines.data import synth

SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."
BBOX = "Please provide the bounding box coordinate of the region this sentence describes: "
REGION = "Please provide a short description for this region: "
YES_NO = "Please answer yes or no."
DRAWS = 24  # uniform draws per row

Turns = list[tuple[str, str]]
"""A conversation as (human, gpt) pairs; the first human turn gets LLaVA's ``<image>`` line when there is an image."""

_POSITION = {"center": "in the center", "top left": "in the top left corner", "top right": "in the top right corner",
             "bottom left": "in the bottom left corner", "bottom right": "in the bottom right corner"}
_ASK = {
    "shape": ("What shape is shown in the image?", "What kind of shape is this?", "Which shape do you see?"),
    "color": ("What color is the shape?", "What is the color of the {shape}?", "Which color does the {shape} have?"),
    "size": ("Is the {shape} large or small?", "How big is the {shape}?", "What size is the {shape}?"),
    "position": ("Where is the {shape} located?", "Where in the image is the {shape}?",
                 "In which part of the image is the {shape}?"),
    "texture": ("What pattern does the {shape} have?", "Is the {shape} solid, striped or dotted?",
                "What is the texture of the {shape}?"),
}
_SAY = {
    "shape": "The shape is a {shape}.", "color": "The {shape} is {color}.", "size": "The {shape} is {size}.",
    "position": "The {shape} is {pos}.", "texture": "The {shape} is {texture}.",
}
DETAIL_PROMPTS = ("Describe the image in detail.", "Give a detailed description of this image.",
                  "What is in this picture? Describe it thoroughly.", "Explain the visual content of the image.")
_OCR_ASK = ("What word is written in the image?", "What does the banner say?", "What text appears in the image?")


def pick(options: Sequence[str], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def fill(template: str, a: dict[str, str]) -> str:
    return template.format(pos=_POSITION[a["position"]], **a)


def describe(a: dict[str, str]) -> str:
    """The full description: every attribute, in one sentence (what a detail answer says)."""
    return fill("The image shows a {size} {color} {shape} with a {texture} pattern, {pos}, on a grey background.", a)


def ask(attribute: str, a: dict[str, str], u: float) -> str:
    return fill(pick(_ASK[attribute], u), a)


def conversation(a: dict[str, str], u: Sequence[float]) -> Turns:
    """Two or three questions about different attributes, answered in full sentences."""
    order = sorted(synth.ATTRIBUTES, key=lambda k: u[list(synth.ATTRIBUTES).index(k)])
    n = 2 + (u[5] < 0.5)
    return [(ask(k, a, u[6 + i]), fill(_SAY[k], a)) for i, k in enumerate(order[:n])]


def detail(a: dict[str, str], u: Sequence[float]) -> Turns:
    return [(pick(DETAIL_PROMPTS, u[0]), describe(a))]


def reasoning(a: dict[str, str], u: Sequence[float]) -> Turns:
    """A question that needs two attributes, answered with the reason."""
    side = "left" if "left" in a["position"] else "right" if "right" in a["position"] else "middle"
    options = (
        (f"If you had to find the {a['color']} object, which side of the image would you look at, and why?",
         fill(f"I would look at the {side}, because the {{color}} {{shape}} is {{pos}}.", a)),
        ("Would this shape be easy to see from far away? Explain.",
         fill("It is a {size} {color} {shape}, so it would be " + ("easy" if a["size"] == "large" else "hard")
              + " to see from far away.", a)),
        ("What makes the shape in this image stand out?",
         fill("The {shape} stands out because it is {color} with a {texture} pattern.", a)),
    )
    return [pick(options, u[0])]


def short(a: dict[str, str], u: Sequence[float]) -> Turns:
    """VQAv2-style: one attribute, a one-word answer; a quarter ask whether a shape is there (yes or no, as
    often), a sixth whether the shape has a value of an attribute."""
    if u[2] < 0.25:
        return [(f"{existence(a, u[3:5])}\n{SHORT}", "yes" if u[3] < 0.5 else "no")]
    if u[2] < 0.42:
        q, yes = attribute_check(a, u[3:6])
        return [(f"{q}\n{SHORT}", "yes" if yes else "no")]
    k = pick(tuple(synth.ATTRIBUTES), u[0])
    return [(f"{ask(k, a, u[1])}\n{SHORT}", a[k])]


def existence(a: dict[str, str], u: Sequence[float]) -> str:
    """POPE-style: is there a <shape> in the image; the image's own shape when ``u[0] < 0.5``, else another."""
    others = [s for s in synth.SHAPES if s != a["shape"]]
    return f"Is there a {a['shape'] if u[0] < 0.5 else pick(others, u[1])} in the image?"


def attribute_check(a: dict[str, str], u: Sequence[float]) -> tuple[str, bool]:
    """MME-style: does the shape have this value (true when ``u[0] < 0.5``)."""
    k = pick(("color", "texture", "size"), u[1])
    value = a[k] if u[0] < 0.5 else pick([v for v in synth.ATTRIBUTES[k] if v != a[k]], u[2])
    return fill(f"Is the {{shape}} {value}?", a), u[0] < 0.5


def compositional(a: dict[str, str], u: Sequence[float]) -> Turns:
    """GQA-style: the question names one or two attributes, the answer is another."""
    options = (
        (f"What color is the {a['size']} {a['shape']}?", a["color"]),
        (f"What shape is {_POSITION[a['position']]}?", a["shape"]),
        (f"What pattern does the {a['color']} {a['shape']} have?", a["texture"]),
        (f"Is the {a['color']} {a['shape']} large or small?", a["size"]),
        (f"Where is the {a['texture']} {a['shape']}?", a["position"]),
    )
    q, ans = pick(options, u[0])
    return [(f"{q}\n{SHORT}", ans)]


def choice(a: dict[str, str], u: Sequence[float]) -> tuple[Turns, int]:
    """A-OKVQA-style multiple choice: four options, the answer is the letter; also returns the right index."""
    k = pick(("shape", "color", "texture", "position"), u[0])
    values = list(synth.ATTRIBUTES[k])
    wrong = [v for v in values if v != a[k]]
    wrong = sorted(wrong, key=lambda v: (u[(1 + values.index(v)) % DRAWS], v))[:3]
    options = sorted([a[k], *wrong], key=lambda v: (u[(9 + values.index(v)) % DRAWS], v))
    right = options.index(a[k])
    lines = "\n".join(f"{'ABCD'[i]}. {v}" for i, v in enumerate(options))
    return [(f"{ask(k, a, u[2])}\n{lines}\n{LETTER}", "ABCD"[right])], right


def ocr(word: str, u: Sequence[float]) -> Turns:
    return [(f"{pick(_OCR_ASK, u[0])}\n{SHORT}", word)]


def box_text(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{x:.2f}" for x in box) + "]"


def grounding(a: dict[str, str], codes: dict[str, int]) -> Turns:
    """RefCOCO-style: the region a phrase describes, as LLaVA writes boxes."""
    return [(fill(BBOX + "the {color} {shape}.", a), box_text(synth.bounding_box(codes["position"], codes["size"])))]


def region(a: dict[str, str], codes: dict[str, int]) -> Turns:
    """Visual-Genome-style: a short description of a box."""
    return [(REGION + box_text(synth.bounding_box(codes["position"], codes["size"])),
             fill("a {color} {texture} {shape}", a))]


_SIDES = {"triangle": 3, "square": 4, "diamond": 4}
_MIXES = (("red", "yellow", "orange"), ("blue", "yellow", "green"), ("red", "blue", "purple"))


def text_only(u: Sequence[float]) -> Turns:
    """ShareGPT-style chat without an image: arithmetic, shapes and colours."""
    x, y = 2 + int(u[1] * 40), 2 + int(u[2] * 40)
    shape = pick(tuple(_SIDES), u[3])
    mix = pick(_MIXES, u[4])
    options = (
        (f"What is {x} plus {y}?", f"{x} plus {y} is {x + y}."),
        (f"How many sides does a {shape} have?", f"A {shape} has {_SIDES[shape]} sides."),
        (f"Which color do you get by mixing {mix[0]} and {mix[1]}?", f"Mixing {mix[0]} and {mix[1]} gives {mix[2]}."),
        (f"What is {max(x, y)} minus {min(x, y)}?", f"{max(x, y)} minus {min(x, y)} is {max(x, y) - min(x, y)}."),
    )
    return [pick(options, u[0])]
