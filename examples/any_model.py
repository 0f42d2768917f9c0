"""One typed program, unchanged, on the embedded model or on Claude (or any other model string).

    python examples/any_model.py                         # Claude if ANTHROPIC_API_KEY is set, else `local`
    python examples/any_model.py --model local
    python examples/any_model.py --model anthropic:claude-sonnet-4-5
    python examples/any_model.py --model openai:qwen2.5-7b-instruct@http://127.0.0.1:8000/v1

What it shows:
- the same fuzzy functions, prompts and validation on every backend: the output is a
  `Ticket` instance on all of them, and an invalid reply is re-asked the same way;
- the calls run on 16 threads, while a hosted backend keeps at most 8 requests in flight
  (its `max_concurrency`); transient failures such as 429 and 529 are retried with backoff;
- the demonstrations are the static prompt prefix, which Claude caches between calls;
- a provider failure that will not go away is a typed `lmdsl.ProviderError`.
"""

# A fuzzy function's body is its docstring; mypy calls that an empty body.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

import lmdsl

DATA = Path(__file__).parent / "data" / "tickets.jsonl"
CLAUDE = "anthropic:claude-sonnet-4-5"
Intent = Literal["refund", "delivery", "account", "technical"]


class Ticket(BaseModel):
    intent: Intent
    urgent: bool = Field(description="true if the customer is blocked or has lost money")


@lmdsl.fuzzy
def triage(message: str) -> Ticket:
    """Decide which team should handle a customer-support message, and whether it is urgent."""
    ...


triage.params = lmdsl.Params(
    triage.params.instructions,
    (
        lmdsl.Demo({"message": "I was charged twice for my order!"}, Ticket(intent="refund", urgent=True)),
        lmdsl.Demo({"message": "Where is my parcel? It is a week late."}, Ticket(intent="delivery", urgent=False)),
        lmdsl.Demo({"message": "I cannot log in since I changed my email."}, Ticket(intent="account", urgent=True)),
        lmdsl.Demo({"message": "The app crashes when I open settings."}, Ticket(intent="technical", urgent=False)),
    ),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    default = CLAUDE if os.environ.get("ANTHROPIC_API_KEY") else "local"
    parser.add_argument("--model", default=default, help=f"a model string (default here: {default})")
    parser.add_argument("--limit", type=int, default=12, help="how many labelled messages to triage")
    args = parser.parse_args(argv)
    lmdsl.configure(model=args.model)

    cases = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()][: args.limit]
    print(f"Triaging {len(cases)} support messages on {args.model!r}.\n")
    started = time.perf_counter()
    outcomes = triage.map([{"message": case["message"]} for case in cases], threads=16)
    seconds = time.perf_counter() - started

    correct = 0
    for case, outcome in zip(cases, outcomes):
        if isinstance(outcome.error, lmdsl.ProviderError):
            print(f"  provider error (HTTP {outcome.error.status}): {outcome.error.message}")
            continue
        if outcome.error is not None:
            print(f"  {type(outcome.error).__name__}: {outcome.error}")
            continue
        ticket = outcome.unwrap()
        correct += ticket.intent == case["intent"]
        mark = "ok " if ticket.intent == case["intent"] else "   "
        print(f"{mark} {ticket.intent:<9} urgent={ticket.urgent!s:<5}  {case['message']}")
    usage = triage.usage
    print(
        f"\n{correct}/{len(cases)} routed as labelled in {seconds:.1f} s; {usage.lm_calls} LM calls "
        f"({usage.cached_calls} calls answered from the cache), {usage.usage.total_tokens} tokens."
    )


if __name__ == "__main__":
    main()
