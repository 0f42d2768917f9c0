"""Parameter files byte for byte: what `save` writes, what `load` accepts, and the exact message
for every way a file can fail to fit (unreadable, not JSON, not Unicode, wrong shape, stale)."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import lmdsl
from lmdsl.params import dump_demos, dump_params, file_params, load_demos, read_params_file
from lmdsl.program import Program


class Season(enum.Enum):
    WINTER = "winter"
    SUMMER = "summer"


class Point(BaseModel):
    x: int
    y: int


@lmdsl.fuzzy
def locate(place: str, season: Season) -> tuple[int, int]:
    """Give the grid cell of the place on that day."""


@lmdsl.fuzzy
def describe(point: Point) -> str:
    """Describe the point in a few words."""


@lmdsl.program
def tour(place: str) -> str:
    x, y = locate(place=place, season=Season.WINTER)
    return describe(point=Point(x=x, y=y))


@lmdsl.program
def locating(place: str) -> tuple[int, int]:
    return locate(place=place, season=Season.WINTER)


LOCATE_SIGNATURE = "28d1d26015f369a3"
DESCRIBE_SIGNATURE = "716a763846702755"

TUNED = lmdsl.Params(
    "Donne la cellule — précisément.",
    (lmdsl.Demo({"place": "Café", "season": Season.SUMMER}, (1, 2), "north-east of the square"),),
)

SAVED_TEXT = """{
  "format": "lmdsl-params/1",
  "lmdsl": "@VERSION@",
  "program": "tour",
  "functions": {
    "locate": {
      "signature": "28d1d26015f369a3",
      "instructions": "Donne la cellule — précisément.",
      "demos": [
        {
          "inputs": {
            "place": "Café",
            "season": "summer"
          },
          "output": [
            1,
            2
          ],
          "reasoning": "north-east of the square"
        }
      ]
    },
    "describe": {
      "signature": "716a763846702755",
      "instructions": "Describe the point in a few words.",
      "demos": []
    }
  }
}"""


@pytest.fixture(autouse=True)
def _fresh_params() -> Iterator[None]:
    yield
    locate.reset_params()
    describe.reset_params()


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def tour_file(locate_entry: dict[str, object] | None = None, **functions: dict[str, object]) -> dict[str, object]:
    """A well-formed file for `tour` with the docstring parameters, entries replaced as given."""
    entries: dict[str, object] = {
        "locate": locate_entry
        or {"signature": LOCATE_SIGNATURE, "instructions": "Give the grid cell of the place on that day.", "demos": []},
        "describe": {
            "signature": DESCRIBE_SIGNATURE,
            "instructions": "Describe the point in a few words.",
            "demos": [],
        },
    }
    entries.update(functions)
    return {"format": "lmdsl-params/1", "program": "tour", "functions": entries}


# -- writing --------------------------------------------------------------------------------------------


def test_save_writes_indented_utf8_json_with_every_function_in_order(tmp_path: Path) -> None:
    locate.params = TUNED
    path = tmp_path / "tour.json"
    tour.save(path)
    assert path.read_bytes().decode("utf-8") == SAVED_TEXT.replace("@VERSION@", lmdsl.__version__)


def test_dump_params_is_plain_json_data() -> None:
    locate.params = TUNED
    assert dump_params("a name", {"where": locate}) == {
        "format": "lmdsl-params/1",
        "lmdsl": lmdsl.__version__,
        "program": "a name",
        "functions": {
            "where": {
                "signature": LOCATE_SIGNATURE,
                "instructions": "Donne la cellule — précisément.",
                "demos": [
                    {
                        "inputs": {"place": "Café", "season": "summer"},
                        "output": [1, 2],
                        "reasoning": "north-east of the square",
                    }
                ],
            }
        },
    }


def test_dump_demos_writes_models_dates_and_tuples_as_json() -> None:
    demos = [
        lmdsl.Demo({"point": Point(x=3, y=4)}, "a corner"),
        lmdsl.Demo({"point": Point(x=0, y=0)}, "the origin", "both zero"),
    ]
    assert dump_demos(describe.signature, demos) == [
        {"inputs": {"point": {"x": 3, "y": 4}}, "output": "a corner", "reasoning": None},
        {"inputs": {"point": {"x": 0, "y": 0}}, "output": "the origin", "reasoning": "both zero"},
    ]
    assert dump_demos(locate.signature, [lmdsl.Demo({"season": Season.WINTER, "place": "Pier"}, (5, 6))]) == [
        {"inputs": {"season": "winter", "place": "Pier"}, "output": [5, 6], "reasoning": None}
    ]


# -- reading back -----------------------------------------------------------------------------------------


def test_load_restores_instructions_demos_and_reasoning_with_their_types(tmp_path: Path) -> None:
    locate.params = TUNED
    path = tmp_path / "tour.json"
    tour.save(path)
    locate.reset_params()
    describe.params = lmdsl.Params("Something else.")
    tour.load(str(path))
    assert locate.params == lmdsl.Params(
        "Donne la cellule — précisément.",
        (lmdsl.Demo({"place": "Café", "season": Season.SUMMER}, (1, 2), "north-east of the square"),),
    )
    assert describe.params == lmdsl.Params("Describe the point in a few words.", ())


def test_load_demos_checks_and_coerces_against_the_signature() -> None:
    data = [
        {"inputs": {"place": "Dock", "season": "summer"}, "output": [7, 8], "reasoning": "by the water"},
        {"inputs": {"place": "Hill", "season": "winter"}, "output": [0, 1]},
    ]
    assert load_demos(locate.signature, data) == (
        lmdsl.Demo({"place": "Dock", "season": Season.SUMMER}, (7, 8), "by the water"),
        lmdsl.Demo({"place": "Hill", "season": Season.WINTER}, (0, 1), None),
    )


def test_load_demos_that_do_not_fit_are_an_artifact_error_naming_the_function() -> None:
    with pytest.raises(lmdsl.ArtifactError) as caught:
        load_demos(locate.signature, [{"inputs": {"place": "Dock"}, "output": [7, 8]}])
    assert str(caught.value) == (
        "demos of locate do not fit its signature: locate: a demo's missing input field 'season' (Season)"
    )
    with pytest.raises(lmdsl.ArtifactError) as shaped:
        load_demos(locate.signature, [{"inputs": {}, "output": [1, 2], "extra": 1}])
    assert str(shaped.value).startswith("demos of locate do not fit its signature: 1 validation error")


def test_read_params_file_keeps_unknown_top_level_keys_and_returns_the_entries(tmp_path: Path) -> None:
    data = tour_file()
    data["written by"] = "hand"
    parsed = read_params_file(write(tmp_path / "tour.json", data))
    assert parsed.program == "tour"
    assert list(parsed.functions) == ["locate", "describe"]
    assert parsed.functions["describe"].instructions == "Describe the point in a few words."


# -- files that cannot be read -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it (No such file or directory)"),
        (b"\xff\xfe{}", "not valid JSON: not UTF-8 text (invalid start byte at byte 0)"),
        (
            b'{"format": "lmdsl-params/1", "program": "x", "funct',
            "not valid JSON (Unterminated string starting at: line 1 column 46 (char 45)); was it truncated?",
        ),
        (
            b'{"format": "lmdsl-params/1", "program": "p", "functions": {"a": {"signature": "s", "instructions": "\\ud800"}}}',
            "functions.a.instructions: it is not valid Unicode (a lone surrogate U+D800 at position 0)",
        ),
        (
            b'{"format": "lmdsl-params/1", "program": "p", "functions": {"a": {"signature": "s", "instructions": "i", '
            b'"demos": [{"inputs": {}}]}}}',
            "not a parameter file: functions.a.demos.0.output: Field required",
        ),
        (
            b'{"format": "lmdsl-params/2", "program": "p", "functions": {}}',
            "format 'lmdsl-params/2' is not 'lmdsl-params/1'",
        ),
    ],
)
def test_unreadable_files_are_artifact_errors_with_the_exact_reason(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "params.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(lmdsl.ArtifactError) as caught:
        read_params_file(path)
    assert str(caught.value) == f"{path}: {message}"


def test_a_file_name_that_is_not_valid_unicode_is_escaped_in_the_message(tmp_path: Path) -> None:
    path = tmp_path / "caf\udce9.json"
    with pytest.raises(lmdsl.ArtifactError) as caught:
        read_params_file(path)
    assert str(caught.value) == f"{tmp_path}/caf\\udce9.json: cannot read it (No such file or directory)"


# -- files that do not fit the program ---------------------------------------------------------------------


def test_a_function_missing_from_the_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "locating.json"
    locating.save(path)
    with pytest.raises(lmdsl.ArtifactError) as caught:
        tour.load(path)
    assert str(caught.value) == f"{path}: fuzzy function 'describe' is not in the file"


def test_a_function_the_program_does_not_have_is_named(tmp_path: Path) -> None:
    path = tmp_path / "tour.json"
    tour.save(path)
    with pytest.raises(lmdsl.ArtifactError) as caught:
        locating.load(path)
    assert str(caught.value) == (
        f"{path}: fuzzy function 'describe' is in the file but not in the program (one the program receives "
        "as an argument is known before its first run only when listed in @lmdsl.program(functions=[...]))"
    )


def test_when_functions_are_both_missing_and_extra_the_missing_one_is_named(tmp_path: Path) -> None:
    data = tour_file()
    functions = data["functions"]
    assert isinstance(functions, dict)
    functions["elsewhere"] = functions.pop("describe")
    path = write(tmp_path / "tour.json", data)
    with pytest.raises(lmdsl.ArtifactError) as caught:
        tour.load(path)
    assert str(caught.value) == f"{path}: fuzzy function 'describe' is not in the file"


def test_a_changed_function_is_named_and_nothing_is_applied(tmp_path: Path) -> None:
    data = tour_file(
        {"signature": LOCATE_SIGNATURE, "instructions": "New.", "demos": []},
        describe={"signature": "0123456789abcdef", "instructions": "Changed.", "demos": []},
    )
    path = write(tmp_path / "tour.json", data)
    with pytest.raises(lmdsl.ArtifactError) as caught:
        tour.load(path)
    assert str(caught.value) == (
        f"{path}: fuzzy function 'describe' changed since the file was written "
        "(its docstring, annotations or field descriptions differ)"
    )
    assert locate.params == lmdsl.Params("Give the grid cell of the place on that day.", ())


def test_a_demo_that_does_not_fit_is_named_with_its_function_and_nothing_is_applied(tmp_path: Path) -> None:
    data = tour_file(
        {"signature": LOCATE_SIGNATURE, "instructions": "New.", "demos": []},
        describe={
            "signature": DESCRIBE_SIGNATURE,
            "instructions": "Changed.",
            "demos": [{"inputs": {"point": {"x": "far"}}, "output": "x"}],
        },
    )
    path = write(tmp_path / "tour.json", data)
    with pytest.raises(lmdsl.ArtifactError) as caught:
        tour.load(path)
    assert str(caught.value) == (
        f"{path}: fuzzy function 'describe': describe: a demo's input field 'point.x': "
        "Input should be a valid integer, unable to parse string as an integer"
    )
    assert (locate.params.instructions, describe.params.instructions) == (
        "Give the grid cell of the place on that day.",
        "Describe the point in a few words.",
    )


def test_file_params_names_the_source_it_is_given_and_sets_nothing(tmp_path: Path) -> None:
    parsed = read_params_file(write(tmp_path / "tour.json", tour_file()))
    with pytest.raises(lmdsl.ArtifactError) as caught:
        file_params(parsed, {"locate": locate}, source="the artifact")
    assert str(caught.value).startswith("the artifact: fuzzy function 'describe' is in the file but not in the program")
    read = file_params(parsed, {"locate": locate, "describe": describe}, source="the artifact")
    assert read["describe"] == lmdsl.Params("Describe the point in a few words.", ())
    assert locate.params == lmdsl.Params("Give the grid cell of the place on that day.", ())


# -- parameters in memory -----------------------------------------------------------------------------------


def test_params_maps_each_function_name_to_its_parameters() -> None:
    locate.params = TUNED
    assert tour.params == {"locate": TUNED, "describe": lmdsl.Params("Describe the point in a few words.", ())}
    tour.params = {"describe": lmdsl.Params("Be brief.")}
    assert describe.params == lmdsl.Params("Be brief.", ())
    assert locate.params == TUNED
    tour.reset_params()
    assert tour.params == {
        "locate": lmdsl.Params("Give the grid cell of the place on that day.", ()),
        "describe": lmdsl.Params("Describe the point in a few words.", ()),
    }


def test_with_params_checks_the_values_and_applies_them_in_the_block_only() -> None:
    candidate = lmdsl.Params("Try this.", (lmdsl.Demo({"place": "Bay", "season": "winter"}, [9, 9]),))
    with tour.with_params({"locate": candidate}):
        assert locate.params == lmdsl.Params(
            "Try this.", (lmdsl.Demo({"place": "Bay", "season": Season.WINTER}, (9, 9)),)
        )
        assert describe.params.instructions == "Describe the point in a few words."
    assert locate.params == lmdsl.Params("Give the grid cell of the place on that day.", ())
    with pytest.raises(KeyError) as caught, tour.with_params({"nowhere": candidate}):
        pass  # pragma: no cover - the block is never entered
    assert caught.value.args == ("tour has no fuzzy function 'nowhere'; it has ['locate', 'describe']",)
    with pytest.raises(lmdsl.InputError, match="missing input field 'season'"):
        with tour.with_params({"locate": lmdsl.Params("x", (lmdsl.Demo({"place": "Bay"}, [1, 1]),))}):
            pass  # pragma: no cover - the block is never entered


def test_a_program_built_directly_saves_under_its_function_name(tmp_path: Path) -> None:
    def plain(place: str) -> tuple[int, int]:
        return locate(place=place, season=Season.WINTER)

    path = tmp_path / "plain.json"
    Program(plain).save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["program"] == "test_a_program_built_directly_saves_under_its_function_name.<locals>.plain"
    assert list(data["functions"]) == ["locate"]
