"""GEPA's candidate pool: members with their parents and per-example validation scores, the
per-example Pareto fronts, parent sampling, merge pairing, lineage, and the state file a
compile resumes from.

Pure bookkeeping (no model, no metric), so each rule is tested on its own. A member's index
in the pool is its identity; the seed (the docstrings) is member 0.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdsl.errors import ArtifactError
from lmdsl.files import NotReadable, read_regular, write_atomic

STATE_FORMAT = "lmdsl-gepa/1"
MAX_STATE_BYTES = 256 * 2**20  # a state file larger than this is not one GEPA wrote


@dataclass(frozen=True)
class Member:
    """One candidate: an instruction per fuzzy function, where it came from, and its score on
    each validation example (in [0, 1], validation order). `minibatch` is (parent's sum,
    child's sum) on the minibatch that accepted a reflective child."""

    instructions: Mapping[str, str]
    parents: tuple[int, ...]
    scores: tuple[float, ...]
    iteration: int
    origin: str
    minibatch: tuple[float, float] | None = None

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


def fronts(members: Sequence[Member]) -> list[frozenset[int]]:
    """Per validation example, the members that reach the best score seen on it (ties share it)."""
    if not members:
        return []
    result = []
    for example in range(len(members[0].scores)):
        best = max(member.scores[example] for member in members)
        result.append(frozenset(i for i, member in enumerate(members) if member.scores[example] == best))
    return result


def non_dominated(members: Sequence[Member]) -> set[int]:
    """The members on some front that no other survivor makes redundant.

    A member is dominated when every front it is on also holds another survivor; members are
    considered from the lowest mean score up, one removal at a time, so of two members on
    exactly the same fronts the better one stays. A member that alone wins one example is
    never dominated, however low its mean.
    """
    front_list = fronts(members)
    alive = set().union(*front_list) if front_list else set()
    changed = True
    while changed:
        changed = False
        for candidate in sorted(alive, key=lambda i: (members[i].mean, i)):
            on = [front for front in front_list if candidate in front]
            if all(any(other in alive and other != candidate for other in front) for front in on):
                alive.discard(candidate)
                changed = True
                break
    return alive


def wins(members: Sequence[Member]) -> dict[int, int]:
    """For each non-dominated member, on how many examples' fronts it is (among the survivors)."""
    alive = non_dominated(members)
    counts = dict.fromkeys(sorted(alive), 0)
    for front in fronts(members):
        for i in front & alive:
            counts[i] += 1
    return counts


def select_parent(members: Sequence[Member], rng: random.Random) -> int:
    """A non-dominated member, drawn with probability proportional to its front count."""
    counts = wins(members)
    ids = list(counts)
    return rng.choices(ids, weights=[counts[i] for i in ids])[0]


def best(members: Sequence[Member]) -> int:
    """The member with the best mean validation score (the earliest of equals)."""
    return max(range(len(members)), key=lambda i: (members[i].mean, -i))


def ancestors(members: Sequence[Member], index: int) -> set[int]:
    """Every member `index` descends from (itself excluded)."""
    found: set[int] = set()
    stack = list(members[index].parents)
    while stack:
        parent = stack.pop()
        if parent not in found:
            found.add(parent)
            stack.extend(members[parent].parents)
    return found


def merge_triplet(
    members: Sequence[Member], rng: random.Random, tried: Iterable[tuple[int, int, int]]
) -> tuple[int, int, int] | None:
    """Two non-dominated members, neither the other's ancestor, and a common ancestor that scores
    no higher than either, such that each changed some function the other kept as in the
    ancestor (so a merge holds something of both). None when no untried such triple exists."""
    done = set(tried)
    alive = sorted(non_dominated(members))
    pairs = [(a, b) for n, a in enumerate(alive) for b in alive[n + 1 :]]
    rng.shuffle(pairs)
    for i, j in pairs:
        above_i, above_j = ancestors(members, i), ancestors(members, j)
        if i in above_j or j in above_i:
            continue
        floor = min(members[i].mean, members[j].mean)
        for a in sorted(above_i & above_j, key=lambda k: (-members[k].mean, k)):
            if (i, j, a) in done or members[a].mean > floor:
                continue
            base, left, right = members[a].instructions, members[i].instructions, members[j].instructions
            left_only = any(left[n] != base[n] and right[n] == base[n] for n in base)
            right_only = any(right[n] != base[n] and left[n] == base[n] for n in base)
            if left_only and right_only:
                return i, j, a
    return None


def merged(members: Sequence[Member], i: int, j: int, a: int) -> dict[str, str]:
    """Per function, the side that changed it from the ancestor `a`; when both did, the text of
    the member with the better mean score (`i` on a tie)."""
    base, left, right = members[a].instructions, members[i].instructions, members[j].instructions
    better = left if members[i].mean >= members[j].mean else right
    result = {}
    for name in base:
        if left[name] == base[name]:
            result[name] = right[name]
        elif right[name] == base[name]:
            result[name] = left[name]
        else:
            result[name] = better[name]
    return result


def merge_subsample(members: Sequence[Member], i: int, j: int, rng: random.Random, size: int) -> list[int]:
    """Up to `size` validation examples, drawn in turn from those `i` scores better on, those `j`
    does, and the ties, so the merge is judged where the parents differ."""
    left = [k for k, (x, y) in enumerate(zip(members[i].scores, members[j].scores)) if x > y]
    right = [k for k, (x, y) in enumerate(zip(members[i].scores, members[j].scores)) if y > x]
    ties = [k for k, (x, y) in enumerate(zip(members[i].scores, members[j].scores)) if x == y]
    for bucket in (left, right, ties):
        rng.shuffle(bucket)
    chosen: list[int] = []
    while len(chosen) < size and (left or right or ties):
        for bucket in (left, right, ties):
            if bucket and len(chosen) < size:
                chosen.append(bucket.pop())
    return sorted(chosen)


def lineage(members: Sequence[Member], index: int) -> list[dict[str, Any]]:
    """The chain from the seed to `index` through first parents, each step with its score (0-100)."""
    chain = []
    at: int | None = index
    while at is not None:
        member = members[at]
        chain.append(
            {
                "candidate": at,
                "parents": list(member.parents),
                "origin": member.origin,
                "iteration": member.iteration,
                "score": round(100.0 * member.mean, 2),
                "instructions": dict(member.instructions),
            }
        )
        at = member.parents[0] if member.parents else None
    return chain[::-1]


# -- the state file --------------------------------------------------------------------------


@dataclass
class State:
    """Everything a killed compile needs to go on from its last finished iteration. `spent`
    holds what all runs of this compile spent so far; `setup` is the digest of what it compiles."""

    setup: str
    members: list[Member]
    demos: dict[str, Any]
    iteration: int = 0
    next_component: dict[int, int] = field(default_factory=dict)
    train_order: list[int] = field(default_factory=list)
    train_position: int = 0
    rng: Any = None
    merges_due: int = 0
    merges_done: int = 0
    merges_tried: list[tuple[int, int, int]] = field(default_factory=list)
    spent: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        version, internal, gauss = self.rng
        data = {
            "format": STATE_FORMAT,
            "setup": self.setup,
            "iteration": self.iteration,
            "members": [
                {
                    "instructions": dict(m.instructions),
                    "parents": list(m.parents),
                    "scores": list(m.scores),
                    "iteration": m.iteration,
                    "origin": m.origin,
                    "minibatch": None if m.minibatch is None else list(m.minibatch),
                }
                for m in self.members
            ],
            "fronts": [sorted(front) for front in fronts(self.members)],
            "demos": self.demos,
            "next_component": {str(k): v for k, v in self.next_component.items()},
            "train_order": self.train_order,
            "train_position": self.train_position,
            "rng": [version, list(internal), gauss],
            "merges_due": self.merges_due,
            "merges_done": self.merges_done,
            "merges_tried": [list(t) for t in self.merges_tried],
            "spent": self.spent,
        }
        return json.dumps(data, ensure_ascii=False)

    def save(self, path: Path) -> None:
        write_atomic(path, self.to_json())


def digest(setup: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(setup, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def load_state(path: Path, setup: str, names: Sequence[str], validation: int, train: int) -> State | None:
    """The state at `path`, checked field by field; None when there is none or it was written for
    another setup (other functions, data, model or settings). Anything unreadable is an
    `ArtifactError` that says to delete the file."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        raw = read_regular(path, limit=MAX_STATE_BYTES)
    except NotReadable as error:
        raise ArtifactError(f"cannot read the GEPA state {path}: {error}; delete it to start afresh") from None
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} file")
        if data.get("setup") != setup:
            return None
        state = _decode(data, setup, names, validation, train)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, UnicodeDecodeError) as error:
        raise ArtifactError(
            f"the GEPA state {path} is corrupt ({str(error)[:200]}); delete it to start the compile afresh"
        ) from None
    return state


def _int(value: object, low: int = 0, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        raise ValueError(f"expected a whole number in [{low}, {high}], got {value!r}")
    return value


def _score(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"expected a score in [0, 1], got {value!r}")
    return float(value)


def _decode(data: dict[str, Any], setup: str, names: Sequence[str], validation: int, train: int) -> State:
    members: list[Member] = []
    for number, entry in enumerate(data["members"]):
        instructions = entry["instructions"]
        if not isinstance(instructions, dict) or sorted(instructions) != sorted(names):
            raise ValueError(f"member {number} has instructions for {sorted(instructions)}, not {sorted(names)}")
        if not all(isinstance(text, str) for text in instructions.values()):
            raise ValueError(f"member {number} has an instruction that is not text")
        parents = tuple(_int(p, 0, number - 1) for p in entry["parents"])
        if (number == 0) != (not parents) or len(parents) > 2:
            raise ValueError(f"member {number} has parents {list(parents)}")
        scores = tuple(_score(s) for s in entry["scores"])
        if len(scores) != validation:
            raise ValueError(f"member {number} has {len(scores)} scores for {validation} validation examples")
        batch = entry["minibatch"]
        minibatch = None if batch is None else (float(batch[0]), float(batch[1]))
        origin = entry["origin"]
        if not isinstance(origin, str):
            raise ValueError(f"member {number} has no origin")
        members.append(Member(instructions, parents, scores, _int(entry["iteration"]), origin, minibatch))
    if not members:
        raise ValueError("no members")
    if [sorted(front) for front in fronts(members)] != data["fronts"]:
        raise ValueError("its Pareto fronts do not follow from its scores")
    version, internal, gauss = data["rng"]
    if not isinstance(internal, list) or not all(isinstance(x, int) for x in internal):
        raise ValueError("its random state is not a list of numbers")
    rng_state = (_int(version), tuple(internal), gauss if isinstance(gauss, float) else None)
    random.Random().setstate(rng_state)  # a malformed state fails here, not in the middle of the search
    order = [_int(i, 0, train - 1) for i in data["train_order"]]
    tried = [(_int(a), _int(b), _int(c)) for a, b, c in data["merges_tried"]]
    spent: dict[str, float] = {str(k): (float(v) if k == "seconds" else _int(v)) for k, v in data["spent"].items()}
    if not isinstance(data["demos"], dict):
        raise ValueError("its demos are not a mapping")
    return State(
        setup=setup,
        members=members,
        demos=data["demos"],
        iteration=_int(data["iteration"]),
        next_component={_int(int(k), 0, len(members) - 1): _int(v) for k, v in data["next_component"].items()},
        train_order=order,
        train_position=_int(data["train_position"], 0, len(order)),
        rng=rng_state,
        merges_due=_int(data["merges_due"]),
        merges_done=_int(data["merges_done"]),
        merges_tried=tried,
        spent=spent,
    )
