"""A scripted program whose compile and evaluation reports the report tests read: hostile text
in its examples (markup, a closing script tag), demos that fix some dev examples and break one."""

from __future__ import annotations

import textwrap
from pathlib import Path

HOSTILE = '</script><script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'

PROGRAM = textwrap.dedent(
    '''
    # mypy: disable-error-code="empty-body"
    from typing import Literal
    import lmdsl
    from lmdsl.data import Example
    from lmdsl.compiler import RandomSearch

    HOSTILE = HOSTILE_TEXT

    def respond(request):
        text = request.messages[request.prefix_length].content.split(": ", 1)[1]
        demos = sum(1 for m in request.messages[: request.prefix_length] if m.role == "assistant")
        if demos < 2:
            return {"sentiment": "positive"}
        if "fine" in text:  # the demos make it doubt a mild one: an example the compile breaks
            return {"sentiment": "negative"}
        return {"sentiment": "negative" if "bad" in text or "script" in text else "positive"}

    @lmdsl.fuzzy(model=lmdsl.ScriptedModel(respond))
    def sentiment(text: str) -> Literal["positive", "negative"]:
        """Classify the sentiment."""

    def exact(example, prediction):
        return prediction == example.label

    TRAIN = [
        Example(text=t, label=l)
        for t, l in [("good", "positive"), ("bad", "negative"), ("nice", "positive"), (HOSTILE, "negative")]
    ]
    DEV = [
        Example(text=t, label=l)
        for t, l in [("great", "positive"), ("so bad", "negative"), ("fine", "positive"), ("bad " + HOSTILE, "negative")]
    ]

    @lmdsl.optimize(trainset=TRAIN, devset=DEV, metric=exact, optimizer=RandomSearch(candidates=3, threads=1))
    @lmdsl.program
    def classify(text: str) -> str:
        return sentiment(text)
    '''
).replace("HOSTILE_TEXT", repr(HOSTILE))

DEVSET = (
    '{"text": "great", "label": "positive"}\n'
    '{"text": "so bad", "label": "negative"}\n'
    '{"text": "<b>bold</b> </script> bad", "label": "negative"}\n'
)


def program_file(folder: Path) -> Path:
    path = folder / "app.py"
    path.write_text(PROGRAM)
    return path


def devset_file(folder: Path) -> Path:
    path = folder / "dev.jsonl"
    path.write_text(DEVSET)
    return path
