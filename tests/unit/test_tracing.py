"""OpenTelemetry tracing (`lmdsl.tracing`), read back through the SDK's in-memory exporters: the
span tree of a program with a retry and a backtrack, the GenAI metrics, content only on opt-in,
never an API key, cache hits, errors, evaluation events, compile spans, threads and tasks, and
OTLP/HTTP export to a collector stand-in on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import opentelemetry.metrics._internal as metrics_internal
import opentelemetry.trace as trace_api
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import lmdsl
from lmdsl import tracing
from lmdsl.lm.types import Completion, Request, Usage
from tests.provider_servers import FakeServer, openai_message


@dataclass
class Otel:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name == name]

    def histogram(self, name: str) -> list[HistogramDataPoint]:
        data = self.metrics.get_metrics_data()
        points: list[HistogramDataPoint] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        points.extend(p for p in metric.data.data_points if isinstance(p, HistogramDataPoint))
        return points


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Otel]:
    """An SDK tracer and meter provider in force for one test, as `set_tracer_provider` /
    `set_meter_provider` would make them (those refuse a second provider in a process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    monkeypatch.setattr(trace_api, "_TRACER_PROVIDER", provider)
    monkeypatch.setattr(metrics_internal, "_METER_PROVIDER", MeterProvider(metric_readers=[reader]))
    monkeypatch.delenv(tracing.CONTENT_VARIABLE, raising=False)
    tracing._instruments.cache_clear()
    yield Otel(exporter, reader)
    tracing._instruments.cache_clear()


@lmdsl.fuzzy(retries=2)
def title(topic: str) -> str:
    """Write a short title about the topic."""


@title.ensure
def short(out: str) -> None:
    if len(out) > 20:
        raise lmdsl.Retry("Keep the title under 20 characters.")


@lmdsl.fuzzy
def blurb(title: str) -> str:
    """Write a one-sentence blurb for the title."""


@lmdsl.program
def article(topic: str) -> str:
    headline = title(topic=topic)
    text = blurb(title=headline)
    lmdsl.require("cat" in text.lower(), "The blurb must mention cats.")
    return f"{headline}: {text}"


TOPIC = "private topic 7f3a"


def scripted(**replies: list[str]) -> lmdsl.ScriptedModel:
    """Replies per function (told apart by the output key in the request's schema), each with usage 10 in, 3 out."""
    queues = {name: list(texts) for name, texts in replies.items()}

    def respond(request: Request) -> Completion:
        name = next(key for key in queues if f'"{key}"' in (request.json_schema or ""))
        return Completion(json.dumps({name: queues[name].pop(0)}), Usage(10, 3))

    return lmdsl.ScriptedModel(respond, name="scripted:tiny-model")


def run_article() -> str:
    model = scripted(title=["A title far too long for the check", "Cats"], blurb=["Dogs bark.", "Cats purr."])
    with lmdsl.using(model=model, cache=False):
        return article(topic=TOPIC)


def children(otel: Otel, parent: ReadableSpan) -> list[ReadableSpan]:
    spans = sorted(otel.finished(), key=lambda span: span.start_time or 0)
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def all_text(span: ReadableSpan) -> str:
    """Every attribute value and event attribute value of a span, and its status, as one string."""
    values = [str(v) for v in (span.attributes or {}).values()]
    values += [str(v) for e in span.events for v in (e.attributes or {}).values()]
    values.append(str(span.status.description))
    return "\n".join(values)


def test_the_span_tree_of_a_program_with_a_retry_and_a_backtrack(otel: Otel) -> None:
    assert run_article() == "Cats: Cats purr."

    (root,) = otel.named("invoke_workflow article")
    assert root.parent is None and root.kind is SpanKind.INTERNAL
    assert root.attributes is not None
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert root.attributes["lmdsl.backtracks"] == 1 and root.attributes["lmdsl.fuzzy_calls"] == 2
    (backtrack,) = [e for e in root.events if e.name == "lmdsl.backtrack"]
    assert dict(backtrack.attributes or {}) == {"lmdsl.retried": "blurb"}  # the reason is content: not without opt-in

    calls = children(otel, root)
    assert [span.name for span in calls] == ["fuzzy title", "fuzzy blurb", "fuzzy title", "fuzzy blurb"]
    first_title, first_blurb, replayed, retried = calls
    attrs = dict(first_title.attributes or {})
    assert attrs["lmdsl.function"] == "title" and attrs["lmdsl.strategy"] == "Predict"
    assert attrs["lmdsl.attempts"] == 2 and attrs["lmdsl.lm_calls"] == 2
    assert attrs["lmdsl.checks_failed"] == ("short",)
    assert attrs["lmdsl.usage.input_tokens"] == 20 and attrs["lmdsl.usage.output_tokens"] == 6
    (retry,) = first_title.events
    assert retry.name == "lmdsl.retry"
    assert dict(retry.attributes or {}) == {"lmdsl.attempt": 1, "lmdsl.finish_reason": "stop", "lmdsl.check": "short"}
    assert (replayed.attributes or {}).get("lmdsl.replayed") is True and children(otel, replayed) == []
    assert "lmdsl.lm_calls" not in (replayed.attributes or {})  # it spent nothing: the first pass did
    assert (retried.attributes or {}).get("lmdsl.backtracked") is True
    assert "lmdsl.backtracked" not in (first_blurb.attributes or {})

    chats = children(otel, first_title)
    assert [span.name for span in chats] == ["chat tiny-model", "chat tiny-model"]
    chat = dict(chats[0].attributes or {})
    assert chats[0].kind is SpanKind.INTERNAL  # a scripted model runs in this process
    assert chat["gen_ai.operation.name"] == "chat" and chat["gen_ai.provider.name"] == "scripted"
    assert chat["gen_ai.request.model"] == "tiny-model" and chat["gen_ai.request.temperature"] == 0.0
    assert isinstance(chat["gen_ai.request.max_tokens"], int) and chat["gen_ai.output.type"] == "json"
    assert chat["gen_ai.usage.input_tokens"] == 10 and chat["gen_ai.usage.output_tokens"] == 3
    assert chat["gen_ai.response.finish_reasons"] == ("stop",) and chat["lmdsl.cache_hit"] is False
    assert [len(children(otel, span)) for span in (first_blurb, retried)] == [1, 1]
    assert all(span.context.trace_id == root.context.trace_id for span in otel.finished())


def test_token_and_duration_metrics(otel: Otel) -> None:
    run_article()
    usage = {(p.attributes or {})["gen_ai.token.type"]: p for p in otel.histogram("gen_ai.client.token.usage")}
    assert usage["input"].count == 4 and usage["input"].sum == 40  # four model calls, 10 tokens in each
    assert usage["output"].count == 4 and usage["output"].sum == 12
    assert dict(usage["input"].attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "tiny-model",
        "gen_ai.token.type": "input",
    }
    (duration,) = otel.histogram("gen_ai.client.operation.duration")
    assert duration.count == 4 and 0 < duration.sum < 5


def test_no_content_without_opt_in_and_all_of_it_with(otel: Otel) -> None:
    run_article()
    for span in otel.finished():
        text = all_text(span)
        for secret in (TOPIC, "Cats", "Dogs bark", "mention cats", "Write a short title"):
            assert secret not in text, (span.name, secret)
    otel.spans.clear()

    with tracing.capturing_content():
        run_article()
    (root,) = otel.named("invoke_workflow article")
    assert json.loads(str((root.attributes or {})["lmdsl.inputs"])) == {"topic": TOPIC}
    assert json.loads(str((root.attributes or {})["lmdsl.output"])) == "Cats: Cats purr."
    (backtrack,) = root.events
    assert (backtrack.attributes or {})["lmdsl.reason"] == "The blurb must mention cats."
    chat = otel.named("chat tiny-model")[0]
    attrs = chat.attributes or {}
    system = json.loads(str(attrs["gen_ai.system_instructions"]))
    assert system[0]["type"] == "text" and system[0]["content"].startswith("Write a short title about the topic.")
    messages = json.loads(str(attrs["gen_ai.input.messages"]))
    assert messages[-1]["role"] == "user" and TOPIC in messages[-1]["parts"][0]["content"]
    output = json.loads(str(attrs["gen_ai.output.messages"]))
    assert output == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": '{"title": "A title far too long for the check"}'}],
            "finish_reason": "stop",
        }
    ]
    retry = otel.named("fuzzy title")[0].events[0]
    assert (retry.attributes or {})["lmdsl.error"] == "Keep the title under 20 characters."


def test_the_environment_variable_opts_in_and_a_block_can_opt_out(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracing.CONTENT_VARIABLE, "true")
    run_article()
    assert "lmdsl.inputs" in (otel.named("invoke_workflow article")[0].attributes or {})
    otel.spans.clear()
    with tracing.capturing_content(False):
        run_article()
    assert "lmdsl.inputs" not in (otel.named("invoke_workflow article")[0].attributes or {})


@pytest.mark.lmdsl_live  # the "provider" is a fake server on 127.0.0.1
def test_a_hosted_model_call_is_a_client_span_and_never_shows_its_key(otel: Otel) -> None:
    key = "sk-test-do-not-leak-9d1c"
    with FakeServer(lambda _: openai_message(json.dumps({"title": "Cats"}), usage=(12, 5))) as server:
        model = lmdsl.OpenAIModel("gpt-test", api_key=key, base_url=f"{server.url}/v1")
        with lmdsl.using(model=model, cache=False), tracing.capturing_content():
            assert title(topic="cats") == "Cats"
    (chat,) = otel.named("chat gpt-test")
    attrs = chat.attributes or {}
    assert chat.kind is SpanKind.CLIENT
    assert attrs["gen_ai.provider.name"] == "openai" and attrs["gen_ai.request.model"] == "gpt-test"
    assert attrs["gen_ai.usage.input_tokens"] == 12 and attrs["gen_ai.usage.output_tokens"] == 5
    for span in otel.finished():  # content on, and still no key anywhere
        assert key not in all_text(span) and key not in span.name


def test_a_cache_hit_is_marked_and_spends_no_tokens(otel: Otel, tmp_path: Path) -> None:
    model = lmdsl.ScriptedModel(lambda _: Completion('{"title": "Cats"}', Usage(10, 3)), cacheable=True)
    with lmdsl.using(model=model, cache=True, cache_dir=tmp_path):
        title(topic="cats")
        title(topic="cats")
    first, second = otel.named("chat scripted")
    assert (first.attributes or {})["lmdsl.cache_hit"] is False
    assert (second.attributes or {})["lmdsl.cache_hit"] is True
    assert "gen_ai.usage.input_tokens" not in (second.attributes or {})
    assert (otel.named("fuzzy title")[1].attributes or {})["lmdsl.cache_hit"] is True
    assert sum(p.count for p in otel.histogram("gen_ai.client.token.usage")) == 2  # the first call only


def test_errors_are_recorded_with_their_type_and_no_message(otel: Otel) -> None:
    model = lmdsl.ScriptedModel(['{"title": "A title far too long for the check"}'] * 3)
    with lmdsl.using(model=model, cache=False), pytest.raises(lmdsl.AssertionFailed):
        title(topic="cats")
    (call,) = otel.named("fuzzy title")
    assert (call.attributes or {})["error.type"] == "lmdsl.errors.AssertionFailed"
    assert call.status.status_code is StatusCode.ERROR and call.status.description == "lmdsl.errors.AssertionFailed"
    assert [e.name for e in call.events] == ["lmdsl.retry", "lmdsl.retry", "lmdsl.rejected"]

    def broken(request: Request) -> Completion:
        raise lmdsl.BackendError("the prompt is too long for the model (private topic)")

    with lmdsl.using(model=lmdsl.ScriptedModel(broken), cache=False), pytest.raises(lmdsl.BackendError):
        title(topic="cats")
    chat = otel.named("chat scripted")[-1]
    assert (chat.attributes or {})["error.type"] == "lmdsl.errors.BackendError"
    assert "private topic" not in all_text(chat) and chat.events == ()
    (failed,) = [p for p in otel.histogram("gen_ai.client.operation.duration") if "error.type" in (p.attributes or {})]
    assert (failed.attributes or {})["error.type"] == "lmdsl.errors.BackendError"


def test_spans_nest_across_map_threads_and_acall_tasks(otel: Otel) -> None:
    model = lmdsl.ScriptedModel(lambda _: '{"title": "Cats"}')
    tracer = trace_api.get_tracer("test")
    with lmdsl.using(model=model, cache=False), tracer.start_as_current_span("batch") as batch:
        outcomes = title.map([{"topic": f"t{n}"} for n in range(6)], threads=3)

        async def both() -> list[str]:
            return list(await asyncio.gather(title.acall(topic="a"), title.acall(topic="b")))

        assert asyncio.run(both()) == ["Cats", "Cats"]
    assert all(outcome.ok for outcome in outcomes)
    calls = otel.named("fuzzy title")
    assert len(calls) == 8
    assert all(call.parent is not None and call.parent.span_id == batch.get_span_context().span_id for call in calls)
    chats = otel.named("chat scripted")
    assert {chat.parent.span_id for chat in chats if chat.parent} == {call.context.span_id for call in calls}


def test_evaluation_results_are_events_on_each_examples_span(otel: Otel) -> None:
    model = lmdsl.ScriptedModel(
        lambda request: '{"title": "Cats"}' if "cats" in request.messages[-1].content else '{"title": "Dogs"}'
    )
    devset = [lmdsl.Example(topic="cats", title="Cats"), lmdsl.Example(topic="dogs", title="Cats")]

    def exact(example: lmdsl.Example, prediction: str) -> bool:
        return bool(prediction == example.title)

    with lmdsl.using(model=model, cache=False):
        result = lmdsl.evaluate(title, devset, exact, threads=2, progress=False)
    assert result.score == 50.0
    (evaluation,) = otel.named("evaluate title")
    assert (evaluation.attributes or {})["lmdsl.score"] == 50.0
    examples = sorted(otel.named("evaluate title example"), key=lambda s: str((s.attributes or {})["lmdsl.example"]))
    assert [s.parent.span_id for s in examples if s.parent] == [evaluation.context.span_id] * 2
    events = [e for s in examples for e in s.events]
    assert [e.name for e in events] == ["gen_ai.evaluation.result"] * 2
    assert [dict(e.attributes or {}) for e in events] == [
        {
            "gen_ai.evaluation.name": "exact",
            "gen_ai.evaluation.score.value": 1.0,
            "gen_ai.evaluation.score.label": "pass",
        },
        {
            "gen_ai.evaluation.name": "exact",
            "gen_ai.evaluation.score.value": 0.0,
            "gen_ai.evaluation.score.label": "fail",
        },
    ]
    for span in examples:  # the fuzzy call each example ran nests under it
        assert len(children(otel, span)) == 1


def test_nothing_is_traced_and_nothing_imported_without_a_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace_api, "_TRACER_PROVIDER", None)
    assert tracing.telemetry() is None
    with tracing.span("anything") as nothing:
        assert nothing is None
    model = lmdsl.ScriptedModel(['{"title": "Cats"}'])
    with lmdsl.using(model=model, cache=False):
        assert title(topic="cats") == "Cats"


# -- OTLP/HTTP to a collector stand-in ---------------------------------------------------------------
class Collector:
    """Accepts OTLP/HTTP trace exports (protobuf) on 127.0.0.1 and keeps the decoded requests."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.paths: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (the standard library's name)
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.requests.append(request)
                collector.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_spans_export_over_otlp_http_to_a_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    collector = Collector()
    try:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=collector.url, timeout=5)))
        monkeypatch.setattr(trace_api, "_TRACER_PROVIDER", provider)
        tracing._instruments.cache_clear()
        run_article()
        provider.shutdown()
    finally:
        collector.close()
        tracing._instruments.cache_clear()
    assert set(collector.paths) == {"/v1/traces"}
    spans = [
        span
        for request in collector.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        if scope.scope.name == "lmdsl"
        for span in scope.spans
    ]
    names = sorted(span.name for span in spans)
    assert names == sorted(["invoke_workflow article"] + ["fuzzy title", "fuzzy blurb"] * 2 + ["chat tiny-model"] * 4)
    schema = {scope.schema_url for r in collector.requests for res in r.resource_spans for scope in res.scope_spans}
    assert schema == {tracing.SCHEMA_URL}
    chat = next(span for span in spans if span.name == "chat tiny-model")
    attributes = {a.key: a.value for a in chat.attributes}
    assert attributes["gen_ai.usage.input_tokens"].int_value == 10
    assert attributes["gen_ai.provider.name"].string_value == "scripted"


def same_title(example: lmdsl.Example, prediction: str) -> bool:
    return bool(prediction == example.title)


TRAIN = [lmdsl.Example(topic=f"topic {n}", title="Cats") for n in range(4)]


@lmdsl.optimize(trainset=TRAIN, metric=same_title, optimizer=lmdsl.RandomSearch(candidates=3, threads=1))
@lmdsl.program
def titled(topic: str) -> str:
    return title(topic=topic)


def test_a_compile_is_a_span_tree_of_scored_candidates(otel: Otel) -> None:
    model = lmdsl.ScriptedModel(
        lambda request: '{"title": "Cats"}' if len(request.messages) > 2 else '{"title": "Dogs"}'
    )
    with lmdsl.using(model=model, cache=False):
        compiled = lmdsl.compile_program(titled, write=False)
    (root,) = otel.named("compile titled")
    assert root.parent is None
    attributes = dict(root.attributes or {})
    assert attributes["lmdsl.optimizer"] == "RandomSearch" and attributes["lmdsl.candidates"] == 3
    assert attributes["lmdsl.score"] == compiled.score == 100.0 and attributes["lmdsl.baseline"] == 0.0
    scored = [span for span in children(otel, root) if span.name.startswith("score ")]
    assert [span.name for span in scored] == [
        "score candidate 1/3 (zero-shot)",
        "score candidate 2/3 (labelled)",
        "score candidate 3/3 (bootstrapped)",
    ]
    assert [(span.attributes or {})["lmdsl.score"] for span in scored] == [0.0, 100.0, 100.0]
    (result,) = scored[1].events
    assert result.name == "gen_ai.evaluation.result"
    assert dict(result.attributes or {}) == {
        "gen_ai.evaluation.name": "same_title",
        "gen_ai.evaluation.score.value": 1.0,
    }
    evaluations = [span for span in otel.finished() if span.name == "evaluate titled"]
    assert {span.parent.span_id for span in evaluations if span.parent} == {span.context.span_id for span in scored}


# printable text with no space at either end, built so, not filtered: a filter dropped too many draws
VISIBLE = st.characters(categories=("L", "M", "N", "P", "S"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    topic=st.builds(
        lambda first, middle, last: first + middle + last,
        VISIBLE,
        st.text(VISIBLE | st.just(" "), min_size=10, max_size=58),
        VISIBLE,
    )
)
def test_no_input_or_reply_reaches_a_span_without_opt_in(otel: Otel, topic: str) -> None:
    otel.spans.clear()
    model = lmdsl.ScriptedModel(lambda _: json.dumps({"title": topic}))  # rejected by `short` past 20 characters
    with lmdsl.using(model=model, cache=False), contextlib.suppress(lmdsl.AssertionFailed):
        title.invoke({"topic": topic})
    for span in otel.finished():
        assert topic not in all_text(span) and topic not in span.name
