"""MIPRO's shared study on a real PostgreSQL server: two worker processes, one killed mid-trial.

The test starts a throwaway PostgreSQL server of its own: `initdb` into a fresh temporary folder, the
server listening on a Unix socket in that folder only (no TCP port, so nothing to collide with), stopped
and deleted at teardown. PostgreSQL refuses to run as root, so under root the server runs as the
`postgres` user (else `nobody`) through `runuser`; the folder is made with `tempfile` rather than in
`tmp_path`, which pytest keeps in a folder only root may enter. Without PostgreSQL's binaries, or
without a user to run them as, the test is skipped and says why.

Two processes then run `compile_program` on the same MIPRO program with the same
`postgresql+psycopg://` study URL and a scripted model (no real LM). Each pauses inside a trial it
names and waits for a file, so the test acts at known moments rather than after guessed delays:
worker A completes its first trials and a full evaluation, then is SIGKILLed inside its next trial
while worker B is inside one of its own; B then finishes the study and writes its artifact. The
test reads the study with Optuna directly to check what both left there, and that B's artifact holds
the instruction and demos of the best of all completed trials, A's included.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from glob import glob
from pathlib import Path
from typing import Any

import pytest

import lmdsl
from lmdsl.lm.types import Request
from tests.conftest import ROOT

optuna = pytest.importorskip("optuna", reason="MIPRO needs optuna (./dev setup installs it)")

TRIALS = 14  # past TPE's 10 random start-up trials, so the survivor's last trials are TPE's own
KILLED_IN = 4  # A completes 3 trials (and, full_eval_every=3, a full evaluation), then dies in its 4th
PAUSED_IN = 2  # B completes 1 trial and is inside its 2nd when A dies
TPE_FROM = 11  # the first trial TPE samples itself: 10 completed before it (its start-up), and A's stale one
WAIT_SECONDS = 60  # for a worker to reach its pause; the whole test takes a few seconds

LABELS = {"good": "pos", "bad": "neg", "nice": "pos", "awful": "neg", "fine": "pos", "grim": "neg"}
TRAIN = [lmdsl.Example(text=text, label=label) for text, label in LABELS.items()]
DEV_LABELS = {
    "lovely": "pos",
    "great": "pos",
    "dull": "neg",
    "sunny": "pos",
    "bleak": "neg",
    "superb": "pos",
    "dreary": "neg",
    "bright": "pos",
    "tedious": "neg",
    "warm": "pos",
}
DEV = [lmdsl.Example(text=text, label=label) for text, label in DEV_LABELS.items()]
RANK = {text: i for labels in (LABELS, DEV_LABELS) for i, text in enumerate(labels)}
OPPOSITE = {"pos": "neg", "neg": "pos"}
# Mixed into the scores' digest. Chosen so that (with MIPRO's seeded sampling) the best combination
# is the one worker A tries first and is retrying when it is killed: the case where sharing matters.
SALT = "a"


@lmdsl.fuzzy
def tone(text: str) -> str:
    """Say pos or neg."""


def exact(example: lmdsl.Example, prediction: str) -> bool:
    return bool(prediction == example.label)


def skill(request: Request) -> int:
    """How many examples, in their set's order, a prompt gets right: one without demos (zero-shot
    scores 10), otherwise a number from 1 to 10 drawn from a digest of the prompt's instruction and
    demos, so each combination of candidates has a fixed score, the same in both workers."""
    shown = request.messages[: request.prefix_length]
    if not any(m.role == "assistant" for m in shown):
        return 1
    digest = hashlib.sha256((SALT + json.dumps([[m.role, m.content] for m in shown])).encode()).digest()
    return 1 + digest[0] % len(DEV)


def reply(request: Request) -> dict[str, Any]:
    """The scripted model of both workers: a data summary and numbered proposals for MIPRO's
    proposer; for the program, the right label for the first `skill` examples, else the wrong one."""
    schema = request.json_schema or ""
    if '"summarize_data"' in schema:
        return {"summarize_data": "One-word reviews."}
    if '"instruction"' in schema:
        return {"instruction": f"Proposal {request.rollout}."}
    text = request.messages[request.prefix_length].content.split(": ", 1)[1]
    label = {**LABELS, **DEV_LABELS}[text]
    return {"tone": label if RANK[text] < skill(request) else OPPOSITE[label]}


# A worker: `python worker.py URL ARTIFACT FOLDER NAME PAUSE_IN`. Inside its PAUSE_IN-th trial (the
# PAUSE_IN-th study.ask of this process), at the first model call, it writes FOLDER/NAME.paused and
# waits for FOLDER/NAME.go (for WAIT_SECONDS at most: a worker never outlives a failed test for long).
WORKER = textwrap.dedent(
    f"""
    import sys, time
    from pathlib import Path

    import optuna

    import lmdsl
    from lmdsl.compiler import MIPRO, compile_program, optimize
    from tests.integration.test_mipro_postgres import DEV, TRAIN, exact, reply, tone

    url, artifact, folder, name, pause_in = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    asked = 0
    real_ask = optuna.study.Study.ask

    def ask(study, *args, **kwargs):
        global asked
        asked += 1
        return real_ask(study, *args, **kwargs)

    optuna.study.Study.ask = ask

    def model(request):
        if asked == pause_in:
            (folder / f"{{name}}.paused").touch()
            deadline = time.monotonic() + {WAIT_SECONDS}
            while not (folder / f"{{name}}.go").exists():
                if time.monotonic() > deadline:
                    sys.exit(f"{{name}}: not let go within {WAIT_SECONDS} s")
                time.sleep(0.01)
        return reply(request)

    @optimize(trainset=TRAIN, devset=DEV, metric=exact, artifact=artifact,
              optimizer=MIPRO(trials={TRIALS}, minibatch_size=len(DEV), full_eval_every=3, instructions=3,
                              demo_sets=4, max_demos=2, max_labeled=3, seed=0, threads=1))
    @lmdsl.program
    def review(text: str) -> str:
        return tone(text)

    with lmdsl.using(model=lmdsl.ScriptedModel(model, name="scripted-postgres")):
        compiled = compile_program(review, storage=url)
    print("score", compiled.score)
    """
)


def _binary(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, or in Debian's /usr/lib/postgresql/VERSION/bin."""
    found = shutil.which(name)
    if found is not None:
        return found
    installed = sorted(
        glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: [int(n) for n in p.split("/")[4].split(".")]
    )
    return installed[-1] if installed else None


def _server_user() -> list[str]:
    """The command prefix that runs PostgreSQL's programs as a user it accepts (empty unless root)."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("PostgreSQL refuses to run as root, and runuser (to run it as another user) is not installed")
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return [runuser, "-u", user, "--"]
    pytest.skip("PostgreSQL refuses to run as root, and there is no postgres or nobody user to run it as")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server's database, as a SQLAlchemy URL for psycopg 3."""
    psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL driver is in the dev extra: ./dev setup")
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    as_user = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="lmdsl-pg-"))  # short: a socket's path has at most 107 bytes
    if as_user:
        owner = pwd.getpwnam(as_user[2])
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data = folder / "data"

    def run(*command: str, check: bool = True) -> None:
        done = subprocess.run([*as_user, *command], cwd=folder, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 or not check, f"{' '.join(command)}: {done.stdout}{done.stderr}"

    started = False
    try:
        run(initdb, "-D", str(data), "-U", "lmdsl", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        # no TCP at all (listen_addresses empty), the socket in the folder, no fsync: a test database
        options = f"-c listen_addresses= -k {shlex.quote(str(folder))} -F"
        run(pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "-t", "60", "start")
        started = True
        with psycopg.connect(host=str(folder), dbname="postgres", user="lmdsl", autocommit=True) as connection:
            connection.execute("CREATE DATABASE studies")
        yield f"postgresql+psycopg://lmdsl@/studies?host={folder}"
    finally:
        if started:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(folder, ignore_errors=True)


class Worker:
    """One compile in its own process, paused inside its `pause_in`-th trial until let go."""

    def __init__(self, name: str, url: str, folder: Path, pause_in: int) -> None:
        self.name, self.folder = name, folder
        self.artifact = folder / f"{name}.lmdsl.json"
        self.out, self.err = folder / f"{name}.out", folder / f"{name}.err"  # files: a full pipe would block it
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(folder / "worker.py"), url, str(self.artifact), str(folder), name, str(pause_in)],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=out,
                stderr=err,
            )

    @property
    def tag(self) -> str:
        """How MIPRO tags this worker's trials: HOST:PID."""
        return f"{socket.gethostname()}:{self.process.pid}"

    def wait_until_paused(self) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not (self.folder / f"{self.name}.paused").exists():
            if self.process.poll() is not None:
                pytest.fail(f"worker {self.name} ended before its pause:\n{self.err.read_text()[-3000:]}")
            assert time.monotonic() < deadline, f"worker {self.name} did not reach its pause in {WAIT_SECONDS} s"
            time.sleep(0.02)

    def go(self) -> None:
        (self.folder / f"{self.name}.go").touch()

    def finish(self) -> float:
        code = self.process.wait(timeout=WAIT_SECONDS)
        assert code == 0, f"worker {self.name} failed:\n{self.err.read_text()[-3000:]}"
        return float(self.out.read_text().split("score")[1].split()[0])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def load(url: str) -> Any:
    """The one study in the database (named after the program and a digest of its setup)."""
    [name] = optuna.get_all_study_names(url)
    assert name.startswith("review-")
    return optuna.load_study(study_name=name, storage=url)


def combination(trial: Any) -> tuple[int, int]:
    return trial.params["tone:instruction"], trial.params["tone:demos"]


def test_a_worker_killed_mid_trial_leaves_the_shared_postgres_study_to_the_other(
    postgres_url: str, tmp_path: Path
) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    states = optuna.trial.TrialState
    (tmp_path / "worker.py").write_text(WORKER)
    started = time.monotonic()
    a = Worker("a", postgres_url, tmp_path, pause_in=KILLED_IN)
    b: Worker | None = None
    try:
        # A proposed the candidates, scored zero-shot, completed 3 trials and a full evaluation (of
        # the best of them), and is inside its 4th trial
        a.wait_until_paused()
        study = load(postgres_url)
        before = study.trials
        assert [t.state for t in before] == [states.COMPLETE] * (KILLED_IN - 1) + [states.RUNNING]
        found = max(before[:-1], key=lambda t: t.value)
        instruction, demo_set = combination(found)
        [digest] = {t.user_attrs["candidates"] for t in before}
        assert study.user_attrs[f'full:{digest}:{{"tone": [{instruction}, {demo_set}]}}'] == found.value

        # B read those candidates and scores, completed 1 trial and is inside its 2nd when A dies
        b = Worker("b", postgres_url, tmp_path, pause_in=PAUSED_IN)
        b.wait_until_paused()
        a.process.send_signal(signal.SIGKILL)
        assert a.process.wait(timeout=WAIT_SECONDS) == -signal.SIGKILL
        b.go()
        score = b.finish()
    finally:
        for worker in (a, b):
            if worker is not None:
                worker.stop()
    seconds = time.monotonic() - started

    study = load(postgres_url)
    by_worker: dict[str, list[Any]] = {}
    for trial in study.trials:
        by_worker.setdefault(trial.user_attrs["worker"], []).append(trial)
    assert set(by_worker) == {a.tag, b.tag}
    # A's trials: 3 completed, and the one it was killed in, left RUNNING for good (no heartbeat is
    # set, so Optuna never fails it), its choice made and no value. MIPRO counts only completed
    # trials and scores only trials with a value: B ran trials until the study had all 14 completed.
    assert [t.state for t in by_worker[a.tag]] == [states.COMPLETE] * (KILLED_IN - 1) + [states.RUNNING]
    stale = by_worker[a.tag][-1]
    assert stale.value is None and set(stale.params) == {"tone:instruction", "tone:demos"}
    assert [t.state for t in by_worker[b.tag]] == [states.COMPLETE] * (TRIALS - KILLED_IN + 1)
    completed = [t for t in study.trials if t.state == states.COMPLETE]
    assert len(completed) == TRIALS and len(study.trials) == TRIALS + 1
    assert {t.user_attrs["candidates"] for t in study.trials} == {digest}  # B searched A's candidates
    # each trial samples with a sampler seeded by its number: B's random start-up trials are its own,
    # not a replay of A's (as they were when every process seeded one sampler with MIPRO's seed)
    assert [combination(t) for t in by_worker[b.tag][:KILLED_IN]] != [combination(t) for t in by_worker[a.tag]]

    # The expected best, from the study alone: the combination of candidates of the best completed
    # trial, whichever worker ran it. Every trial is scored on the whole dev set here
    # (minibatch_size=len(DEV)) by a deterministic model, so a trial's value is its combination's score.
    best = max(t.value for t in completed)
    best_trials = [t for t in completed if t.value == best]
    [(best_instruction, best_demo_set)] = {combination(t) for t in best_trials}
    candidates = json.loads(study.user_attrs["candidates"])
    data = json.loads(b.artifact.read_text())
    assert data["functions"]["tone"]["instructions"] == candidates["instructions"]["tone"][best_instruction]
    assert data["functions"]["tone"]["demos"] == candidates["demo_sets"][best_demo_set]["tone"]
    assert data["scores"] == {"uncompiled": 10.0, "compiled": best} and score == best  # zero-shot: 1 in 10
    assert not a.artifact.exists()  # A never got to write one

    # The case this run makes (SALT): the best combination is A's find, its first trial, and the one
    # A was retrying when killed; B came back to it in its TPE trials (after the 10 random start-up
    # trials) all the same. A RUNNING trial used to count as a "constant liar" worst score, which
    # kept TPE away from that combination for good once a worker died in it.
    assert (best_trials[0].user_attrs["worker"], best_trials[0].number, best) == (a.tag, 0, found.value)
    assert combination(stale) == (best_instruction, best_demo_set)
    assert any(t.number >= TPE_FROM for t in best_trials if t.user_attrs["worker"] == b.tag)
    assert seconds < 60, f"{seconds:.1f} s"
