"""What does the digest cost? Composing an edition of 12 articles (Jinja + premailer, once
per edition) against personalising one reader's message from the frozen snapshot.

    .venv/bin/python bench/compose.py                  # 60 compositions, 50,000 messages
    .venv/bin/python bench/compose.py --compose-runs 200 --personalise-runs 200000

Runs on a throw-away SQLite database with the articles of the fixture feeds; nothing else
is needed. Prints medians (and the 95th percentile) of single calls; figures also go to
bench/results/compose-<time>.json. The machine is shared and noisy: compare within a run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FEEDS = [ROOT / "tests" / "fixtures" / "cep-feed.xml",  # a copy of shared/fixtures/
         ROOT / "tests" / "fixtures" / "atom-feed.xml",
         ROOT / "tests" / "fixtures" / "articles.json"]
ARTICLES = 12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compose-runs", type=int, default=60)
    parser.add_argument("--personalise-runs", type=int, default=50_000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mailer-bench-compose-"))
    os.environ.update({"MAILER_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
                       "MAILER_VAR_DIR": str(workdir), "MAILER_ENV": "development"})
    try:
        run(args)
    finally:
        from mailer.db import dispose_engines

        dispose_engines()
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace) -> None:

    from mailer import migrate
    from mailer.articles.feeds import load
    from mailer.articles.importer import import_feed
    from mailer.config import ArticleSettings, IdentitySettings, get_settings
    from mailer.db import transaction
    from mailer.editions import service, snapshot
    from mailer.editions.compose import compose, digest_context, placeholders
    from mailer.emails.render import inline_css, jinja_env
    from mailer.subscribers.unsubscribe import unsubscribe_url_for

    migrate.upgrade(get_settings().database_url)
    for path in FEEDS:
        feed = load(str(path), ArticleSettings(), website_url=IdentitySettings().website_url)
        with transaction() as session:
            import_feed(session, feed)

    with transaction() as session:
        edition = service.draft_edition(session, identity=get_settings().identity,
                                        window_start=dt.datetime(2017, 1, 1, tzinfo=dt.UTC),
                                        window_end=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                                        by="bench")
        ids = [link.article_id for link in edition.articles][:ARTICLES]
        service.set_articles(session, edition, ids)
        service.update_edition(session, edition, intro=(
            "Welcome to the last edition of 2025. Register for the CEP conference at "
            "https://www.cep-probation.org/events/2026/."), by="bench",
            identity=get_settings().identity)
        assert len(edition.articles) == ARTICLES, "the fixture feeds hold fewer articles"

        settings = get_settings()
        compose(edition, settings)  # warm up: templates compiled, premailer's CSS cache filled
        compose_times = [_timed(compose, edition, settings) for _ in range(args.compose_runs)]

        # The parts of a composition, to see where the time goes.
        env = jinja_env()
        page = env.get_template("email/digest/body.html")
        personal = placeholders("0" * 32)
        context = {**digest_context(edition, get_settings()), "personal": personal,
                   "greeting": personal["greeting"]}
        raw_html = page.render(**context)
        render_times = [_timed(page.render, **context) for _ in range(args.compose_runs)]
        inline_times = [_timed(inline_css, raw_html) for _ in range(args.compose_runs)]

        snapshot.freeze(session, edition, get_settings())
        personaliser = snapshot.personaliser_for(edition, get_settings().base_url)
        html_bytes = len(edition.html_snapshot.encode())

    readers = [{"unsubscribe_url": unsubscribe_url_for(f"{n:032x}", base_url=settings.base_url,
                                                       keys=settings.all_secrets),
                "view_url": "https://news.example.org/archive/2025-12-newsletter",
                "first_name": ["Anna", "", "Jean-Pierre", "Małgorzata"][n % 4],
                "email": f"reader{n}@example.org"} for n in range(1000)]
    personalise_times = []
    for n in range(args.personalise_runs):
        values = readers[n % len(readers)]
        start = time.perf_counter_ns()
        personaliser.html(values)
        personaliser.text(values)
        personalise_times.append(time.perf_counter_ns() - start)

    figures = {
        "articles": ARTICLES,
        "html_bytes_before_inlining": len(raw_html.encode()),
        "html_bytes_inlined": html_bytes,
        "compose_ms_median": _median_ms(compose_times),
        "compose_ms_p95": _p95(compose_times) / 1e6,
        "jinja_render_ms_median": _median_ms(render_times),
        "premailer_ms_median": _median_ms(inline_times),
        "personalise_us_median": statistics.median(personalise_times) / 1e3,
        "personalise_us_p95": _p95(personalise_times) / 1e3,
        "compose_runs": args.compose_runs,
        "personalise_runs": args.personalise_runs,
        "python": sys.version.split()[0],
    }
    print(f"Edition of {ARTICLES} articles: {figures['html_bytes_before_inlining']:,} bytes of "
          f"HTML before inlining, {html_bytes:,} after")
    print(f"compose (Jinja + premailer, HTML + text + archive copy): "
          f"median {figures['compose_ms_median']:.2f} ms, p95 {figures['compose_ms_p95']:.2f} ms "
          f"over {args.compose_runs} runs")
    print(f"  of which Jinja render of the HTML {figures['jinja_render_ms_median']:.3f} ms, "
          f"premailer {figures['premailer_ms_median']:.2f} ms")
    print(f"personalise one message (HTML + text) from the snapshot: "
          f"median {figures['personalise_us_median']:.2f} µs, "
          f"p95 {figures['personalise_us_p95']:.2f} µs over {args.personalise_runs:,} runs")
    ratio = figures["compose_ms_median"] * 1000 / figures["personalise_us_median"]
    print(f"  one composition costs as much as {ratio:,.0f} personalisations")

    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    out = results / f"compose-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(figures, indent=2))
    print(f"figures written to {out.relative_to(ROOT)}")


def _timed(fn, *args, **kwargs) -> int:  # type: ignore[no-untyped-def]
    start = time.perf_counter_ns()
    fn(*args, **kwargs)
    return time.perf_counter_ns() - start


def _median_ms(samples: list[int]) -> float:
    return statistics.median(samples) / 1e6


def _p95(samples: list[int]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


if __name__ == "__main__":
    main()
