"""Compiles in separate processes sharing one Optuna study: one killed (SIGKILL) and resumed, two at once."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.children import start

optuna = pytest.importorskip("optuna", reason="MIPRO needs optuna (./dev test installs it)")

TRIALS = 8
SCRIPT = textwrap.dedent(
    f"""
    import sys, time
    import lmdsl
    from lmdsl.compiler import MIPRO, compile_program, optimize
    from tests.unit.test_optimize import DEV, TRAIN, clean, exact, respond_with_proposals, sentiment

    artifact, delay = sys.argv[1], float(sys.argv[2])

    def slow(request):
        time.sleep(delay)
        return respond_with_proposals(request)

    @optimize(trainset=TRAIN, devset=DEV, metric=exact, artifact=artifact,
              optimizer=MIPRO(trials={TRIALS}, minibatch_size=3, full_eval_every=4, instructions=2, demo_sets=3,
                              seed=1, threads=1))
    @lmdsl.program
    def prog(text: str) -> str:
        return sentiment(clean(text))

    with lmdsl.using(model=lmdsl.ScriptedModel(slow)):
        compiled = compile_program(prog)
    print("lm_calls", compiled.lm_calls)
    """
)


def finish(process: subprocess.Popen[str]) -> int:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return int(out.split("lm_calls")[1].split()[0])


def load(storage: str) -> Any:
    """The one study in `storage` (named after the program and a digest of its setup)."""
    try:
        names = optuna.get_all_study_names(storage)
    except Exception:  # the file is not there, or its tables not yet made
        return None
    assert len(names) <= 1, names
    return optuna.load_study(study_name=names[0], storage=storage) if names else None


def completed(storage: str) -> int:
    study = load(storage)
    return 0 if study is None else sum(1 for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)


def workspace(folder: Path) -> tuple[Path, Path, str]:
    """The compile script, the artifact it writes and the storage URL of the study beside it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    script = folder / "compile_prog.py"
    script.write_text(SCRIPT)
    return script, folder / "prog.lmdsl.json", f"sqlite:///{folder / 'prog.lmdsl.json.optuna.sqlite3'}"


def test_a_killed_compile_resumes_where_it_stopped(tmp_path: Path) -> None:
    script, artifact, storage = workspace(tmp_path)

    process = start(script, artifact, delay=0.02)
    deadline = time.monotonic() + 240
    while completed(storage) < 3:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the compile made no progress"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    killed_at = completed(storage)
    assert 3 <= killed_at < TRIALS and not artifact.exists()

    resumed_calls = finish(start(script, artifact, delay=0.0))
    study = load(storage)
    assert study is not None and study.study_name.startswith("prog-")
    assert completed(storage) == TRIALS  # the trials from before the kill count; none is repeated
    assert len(study.trials) <= TRIALS + 1  # at most the one trial the kill cut short
    assert artifact.exists()

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    fresh_calls = finish(start(script, fresh / "prog.lmdsl.json", delay=0.0))
    assert resumed_calls < fresh_calls  # the resumed compile skipped the trials already done


def test_two_workers_share_one_study(tmp_path: Path) -> None:
    script, artifact, storage = workspace(tmp_path)

    workers = [start(script, artifact, delay=0.02) for _ in range(2)]
    calls = [finish(worker) for worker in workers]
    study = load(storage)
    assert study is not None
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert TRIALS <= len(done) <= TRIALS + 1  # each stops once the study has enough; one may be mid-trial then
    by_worker = {t.user_attrs["worker"] for t in done}
    assert {name.rpartition(":")[2] for name in by_worker} == {str(w.pid) for w in workers}  # both did trials
    assert len({t.user_attrs["candidates"] for t in done}) == 1  # on the same candidates
    assert all(c > 0 for c in calls) and artifact.exists()
