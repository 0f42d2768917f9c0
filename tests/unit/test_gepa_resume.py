"""A GEPA compile killed with SIGKILL resumes at the iteration it reached and ends where an
uninterrupted compile ends: the same pool, the same lineage, the same metric and LM calls."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.children import start

SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, time
    import lmdsl
    from lmdsl.compiler import GEPA, compile_program, optimize
    from tests.unit.test_gepa import TRAIN, VAL, explained, knows, mood

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("lmdsl.compiler.progress").setLevel(logging.WARNING)
    artifact, delay = sys.argv[1], float(sys.argv[2])

    def slow(request):
        time.sleep(delay)
        return knows(request)

    @optimize(trainset=TRAIN, devset=VAL, metric=explained, artifact=artifact,
              optimizer=GEPA(max_metric_calls=110, seed=7, threads=1))
    @lmdsl.program
    def judge(text: str) -> str:
        return mood(text)

    with lmdsl.using(model=lmdsl.ScriptedModel(slow), cache=False):
        compiled = compile_program(judge)
    print(json.dumps({"settings": compiled.settings, "lm_calls": compiled.lm_calls, "score": compiled.score}))
    """
)


def finish(process: subprocess.Popen[str]) -> tuple[dict[str, Any], str]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


def iteration(state: Path) -> int:
    try:
        return int(json.loads(state.read_text())["iteration"])
    except (OSError, ValueError, KeyError):  # not written yet
        return 0


def test_a_killed_gepa_compile_resumes_at_the_iteration_it_reached(tmp_path: Path) -> None:
    script = tmp_path / "compile_judge.py"
    script.write_text(SCRIPT)
    artifact = tmp_path / "judge.lmdsl.json"
    state = tmp_path / "judge.lmdsl.json.gepa.json"

    process = start(script, artifact, delay=0.03)
    deadline = time.monotonic() + 60
    while iteration(state) < 3:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the compile made no progress"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    reached = iteration(state)
    assert reached >= 3 and not artifact.exists()

    resumed, log = finish(start(script, artifact, delay=0.0))
    assert f"GEPA: resuming at iteration {reached + 1} " in log
    assert "GEPA seed" not in log  # the seed was not scored again

    fresh_folder = tmp_path / "fresh"
    fresh_folder.mkdir()
    fresh, _ = finish(start(script, fresh_folder / "judge.lmdsl.json", delay=0.0))
    for key in ("lineage", "iterations", "candidates"):
        assert resumed["settings"][key] == fresh["settings"][key]
    for key in ("metric_calls", "lm_calls", "tokens"):
        assert resumed["settings"]["spent"][key] == fresh["settings"]["spent"][key]
    assert resumed["settings"]["spent"]["metric_calls"] <= 110
    assert resumed["score"] == fresh["score"] and resumed["score"] > resumed["settings"]["lineage"][0]["score"]
    assert json.loads(artifact.read_text())["optimizer"]["iterations"] == resumed["settings"]["iterations"]
