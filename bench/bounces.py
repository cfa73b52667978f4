"""How fast are bounce mails understood, and how many of the corpus right?

Parses and classifies every message of tests/fixtures/bounces/ (the corpus of real-world
bounces) over and over, in one process, without a database: parse_bounce() is what every
intake path (SMTP, IMAP, POP3, import) calls for each mail, attribution is a few primary-key
lookups on top.

    .venv/bin/python bench/bounces.py              # 5 runs of 20 passes over the corpus
    .venv/bin/python bench/bounces.py --runs 9 --passes 50

Prints the median rate in messages per second (and the slowest message, best of 5 calls),
and the share of the corpus classified as manifest.json expects: a message counts as right
when its kind, its failed recipients with their classes and every expected status match.
Figures also go to bench/results/bounces-<time>.json. The machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
CORPUS = ROOT / "tests" / "fixtures" / "bounces"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--passes", type=int, default=20, help="passes over the corpus per run")
    args = parser.parse_args()

    from mailer.bounces.parse import iter_messages, parse_bounce

    manifest = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
    corpus = [(path.name, raw) for path in sorted(CORPUS.glob("*.eml"))
              for _, raw in iter_messages(path)]

    wrong = [name for name, raw in corpus if not matches(parse_bounce(raw), manifest[name])]
    right = len(corpus) - len(wrong)

    rates = []
    for _ in range(args.runs):
        start = time.perf_counter()
        for _ in range(args.passes):
            for _, raw in corpus:
                parse_bounce(raw)
        rates.append(args.passes * len(corpus) / (time.perf_counter() - start))
    # Each message's best of 5 calls: the slowest message, not the slowest moment.
    slowest = max((min(timed(parse_bounce, raw) for _ in range(5)), name)
                  for name, raw in corpus)

    # The worst a sender can do under the default 10 MB cap: one 9 MB line.
    hostile = b"From: MAILER-DAEMON@x.example\nSubject: Undelivered\n\n" + b"x" * 9_000_000
    worst = min(timed(parse_bounce, hostile) for _ in range(3))

    figures = {
        "messages": len(corpus),
        "bytes_median": statistics.median(len(raw) for _, raw in corpus),
        "classified_per_second_median": round(statistics.median(rates)),
        "classified_per_second_runs": [round(r) for r in rates],
        "slowest_message": {"name": slowest[1], "ms": round(slowest[0] * 1000, 2)},
        "nine_megabyte_line_ms": round(worst * 1000),
        "correct": right,
        "share_correct": round(right / len(corpus), 4),
        "wrong": wrong,
    }
    print(f"corpus: {len(corpus)} messages (median {figures['bytes_median']:.0f} bytes)")
    print(f"classified: {figures['classified_per_second_median']:,} messages/s "
          f"(median of {args.runs} runs of {args.passes} passes; "
          f"runs: {', '.join(f'{r:,}' for r in figures['classified_per_second_runs'])})")
    print(f"slowest message: {slowest[1]} at {figures['slowest_message']['ms']} ms; "
          f"a 9 MB one-line message: {figures['nine_megabyte_line_ms']} ms")
    print(f"correct: {right}/{len(corpus)} = {figures['share_correct']:.1%}"
          + (f"; wrong: {', '.join(wrong)}" if wrong else ""))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    out = results / f"bounces-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(figures, indent=2))


def matches(report: object, expected: dict) -> bool:
    """Kind, (recipient, class) pairs and every expected status code as the manifest says."""
    got = sorted((r.recipient, str(r.bounce_class)) for r in report.recipients)  # type: ignore[attr-defined]
    want = sorted((r["recipient"], r["class"]) for r in expected["recipients"])
    statuses = {r.recipient: r.status for r in report.recipients}  # type: ignore[attr-defined]
    return (report.kind == expected["kind"] and got == want  # type: ignore[attr-defined]
            and all(statuses.get(r["recipient"]) == r["status"]
                    for r in expected["recipients"] if r["status"]))


def timed(fn: object, raw: bytes) -> float:
    start = time.perf_counter()
    fn(raw)  # type: ignore[operator]
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
