"""How fast are bounce mails understood, and how many of the corpus right?

Parses and classifies every message of tests/fixtures/bounces/ (the project's corpus of
bounces written from the documented formats of the MTAs) over and over, in one process,
without a database: parse_bounce() is what every intake path (SMTP, IMAP, POP3, import)
calls for each mail, attribution is a few primary-key lookups on top.

    .venv/bin/python bench/bounces.py              # 5 runs of 20 passes over the corpus
    .venv/bin/python bench/bounces.py --runs 9 --passes 50
    .venv/bin/python bench/bounces.py --src ../other-checkout/src   # another version's
                                                   # parser on this corpus, for a before/after

Prints the median rate in messages per second (and the slowest message, best of 5 calls,
and the worst case a hostile sender can make under the default cap), then the figures of
``mailer bounces evaluate`` for the whole corpus, its dev part and its held-out part
(when the parser measured has mailer.bounces.evaluate). Figures also go to
bench/results/bounces-<time>.json. The machine is shared and noisy: compare runs made
together.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fixtures" / "bounces"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--passes", type=int, default=20, help="passes over the corpus per run")
    parser.add_argument("--src", type=Path, default=ROOT / "src",
                        help="the src/ folder whose mailer package is measured")
    args = parser.parse_args()
    sys.path.insert(0, str(args.src.resolve()))

    import functools
    import inspect

    from mailer.bounces.parse import iter_messages
    from mailer.bounces.parse import parse_bounce as parse_any

    # Our addresses are handed in (the default identity, as the corpus was written for);
    # an older parser (--src) read them from the settings itself.
    ours: dict[str, Any] = {}
    if "ours" in inspect.signature(parse_any).parameters:
        from mailer.bounces.parse import OurAddresses
        from mailer.environment import read_bounce_reading

        defaults = read_bounce_reading(environ={}, env_file=None)
        ours = {"ours": OurAddresses.of(defaults)}
    parse_bounce: Any = functools.partial(parse_any, **ours)

    corpus = [(path.name, raw) for path in sorted(CORPUS.glob("*.eml"))
              for _, raw in iter_messages(path)]
    cap = 10 * 1024 * 1024
    rates = []
    for _ in range(args.runs):
        start = time.perf_counter()
        for _ in range(args.passes):
            for _, raw in corpus:
                parse_bounce(raw, max_bytes=cap)
        rates.append(args.passes * len(corpus) / (time.perf_counter() - start))
    # Each message's best of 5 calls: the slowest message, not the slowest moment.
    slowest = max((min(timed(parse_bounce, raw, cap) for _ in range(5)), name)
                  for name, raw in corpus)
    # The worst a sender can do under a 10 MB cap: one 9 MB line.
    hostile = b"From: MAILER-DAEMON@x.example\nSubject: Undelivered\n\n" + b"x" * 9_000_000
    worst = min(timed(parse_bounce, hostile, cap) for _ in range(3))

    figures: dict[str, Any] = {
        "parser": str(args.src.resolve()),
        "messages": len(corpus),
        "bytes_median": statistics.median(len(raw) for _, raw in corpus),
        "classified_per_second_median": round(statistics.median(rates)),
        "classified_per_second_runs": [round(r) for r in rates],
        "slowest_message": {"name": slowest[1], "ms": round(slowest[0] * 1000, 2)},
        "nine_megabyte_line_ms": round(worst * 1000),
    }
    print(f"parser: {figures['parser']}")
    print(f"corpus: {len(corpus)} messages (median {figures['bytes_median']:.0f} bytes)")
    print(f"classified: {figures['classified_per_second_median']:,} messages/s "
          f"(median of {args.runs} runs of {args.passes} passes; "
          f"runs: {', '.join(f'{r:,}' for r in figures['classified_per_second_runs'])})")
    print(f"slowest message: {slowest[1]} at {figures['slowest_message']['ms']} ms; "
          f"a 9 MB one-line message: {figures['nine_megabyte_line_ms']} ms")
    try:
        from mailer.bounces import evaluate
    except ImportError:
        print("(this parser has no mailer.bounces.evaluate: no agreement figures)")
    else:
        for part in ("all", "dev", "held-out"):
            result = evaluate.evaluate(CORPUS, part=part, **ours).figures()
            figures[f"evaluate_{part}"] = result
            print(f"{part}:")
            for line in evaluate.render(result):
                print(f"  {line}")
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    out = results / f"bounces-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(figures, indent=2))


def timed(fn: Any, raw: bytes, cap: int) -> float:
    start = time.perf_counter()
    fn(raw, max_bytes=cap)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
