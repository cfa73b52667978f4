"""What do topics cost a send? 100,000 readers on a list with 8 topics, each following a
random subset of them, against the same readers on a list where everybody follows
everything (one variant: the send of before), in the same run, through real Celery workers
(Procfile.dev's command line, 4 processes), a Redis of its own and Postfix's smtp-sink on
loopback, with PostgreSQL. ``bench/send.py`` is the set-up reused.

    .venv/bin/python bench/topics.py                     # 100,000 readers
    .venv/bin/python bench/topics.py --readers 20000     # a quicker look
    .venv/bin/python bench/topics.py --topics-first      # the other order

The edition has 12 articles: one of each topic's category, and four with two of them, so
that every distinct topic set selects distinct articles (255 variants, the worst case for
8 topics). Prints:
- the audience freeze of each edition on its own (same statement, rolled back; median of
  3): the single-variant one, and the one with topics *including* composing its variants;
- composing all the variants on their own (one Jinja and premailer run, a cut and a text
  rendering per variant);
- each send's rate end to end (from the send command to the last delivery recorded) and
  the topics send's as a share of the single-variant one's;
- the workers' memory (RSS, every process) before the sends, after the single-variant send
  and after the topics send.
Figures go to bench/results/topics-<time>.json too. The machine is shared: compare figures
within one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
CATEGORIES = ["Criminal Justice", "Mental Health", "Partners", "CEP Events", "Reading corner",
              "Human rights and ethics", "Research", "Training"]


def make_articles() -> None:
    """One article per category, and four with two categories: 12 in all."""
    from mailer.articles.models import Article
    from mailer.db import transaction, utcnow

    now = utcnow()
    pairs = [[c] for c in CATEGORIES] + [[CATEGORIES[i], CATEGORIES[i + 4]] for i in range(4)]
    with transaction() as session:
        for i, categories in enumerate(pairs):
            session.add(Article(
                guid=f"https://www.cep-probation.org/?p={50000 + i}",
                link=f"https://www.cep-probation.org/news/article-{i}/",
                title=f"Probation news {i}: {' and '.join(categories)}",
                published_at=now - dt.timedelta(days=i + 1), categories=categories,
                author="CEP", summary_html=f"<p>What happened in {categories[0]}.</p>",
                summary_text=("What happened in " + categories[0] + ". ") * 8,
                image_url=f"https://www.cep-probation.org/images/{i}.jpg", image_width=800,
                image_height=450, image_alt=f"Picture {i}"))


def give_topics(list_id: int, seed: int) -> dict[str, int]:
    """Every subscription of the list follows a random non-empty subset of its 8 topics
    (all 8: NULL, as the preference page stores it), in one statement."""
    from sqlalchemy import select, text

    from mailer.db import transaction
    from mailer.lists import topics
    from mailer.lists.models import Subscription

    rng = random.Random(seed)
    with transaction() as session:
        topics.sync(session, list_id)
        ids = [v.id for v in topics.catalogue(session, list_id)]
        assert len(ids) == 8, ids
        subscribers = list(session.scalars(select(Subscription.subscriber_id)
                                           .where(Subscription.list_id == list_id)))
        chosen: list[str | None] = []
        for _ in subscribers:
            mask = rng.randrange(1, 256)
            chosen.append(None if mask == 255 else
                          json.dumps([ids[k] for k in range(8) if mask & (1 << k)]))
        session.execute(text(
            "UPDATE subscription SET topics = CAST(m.topics AS json) FROM "
            "(SELECT unnest(CAST(:ids AS int[])) AS id, unnest(CAST(:topics AS text[])) AS topics)"
            " AS m WHERE subscription.subscriber_id = m.id AND subscription.list_id = :list"),
            {"ids": subscribers, "topics": chosen, "list": list_id})
    return {"distinct_topic_sets": len(set(chosen))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readers", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=4, help="prefork processes")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--topics-first", action="store_true",
                    help="send the topics edition before the single-variant one (the second "
                         "send meets the first one's dead rows and autovacuum)")
    args = ap.parse_args()

    import psycopg

    from bench.send import (
        descendants,
        free_port,
        make_readers,
        proc_status,
        report,
        start_redis,
        start_sink,
        stop_stack,
        worker_argv,
    )

    db_name = f"mailer_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    port, redis_port = free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="mailer-bench-topics-"))
    env = {
        "MAILER_ENV": "test",
        "MAILER_SECRET_KEY": secrets.token_urlsafe(32),
        "MAILER_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}",
        "MAILER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MAILER_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "MAILER_BATCH_SIZE": str(args.batch_size),
        "MAILER_BASE_URL": "https://news.cep-probation.example.org",
    }
    os.environ.update(env)
    sink = start_sink(port)
    redis_server = start_redis(redis_port, workdir)
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, object] = {"readers": args.readers, "concurrency": args.concurrency,
                                  "batch_size": args.batch_size,
                                  "order": "topics first" if args.topics_first else
                                  "single first"}
    try:
        from sqlalchemy import func, select, text

        from mailer import migrate
        from mailer.config import get_settings
        from mailer.db import transaction, utcnow
        from mailer.deliveries.models import Delivery
        from mailer.delivery import service as sending
        from mailer.editions import service as editions
        from mailer.editions import variants
        from mailer.editions.models import Edition, EditionVariant
        from mailer.lists import service as lists

        settings = get_settings()
        migrate.upgrade(settings.database_url)
        make_readers(args.readers)  # confirmed on the first list, which gets the topics
        make_articles()
        with transaction() as session:
            single = lists.create(session, slug="everything", name="Everything",
                                  list_id="everything.cep-probation.example.org")
            single_id = single.id
            # The same readers on the second list, following everything.
            session.execute(text(
                "INSERT INTO subscription (subscriber_id, list_id, status, created_at, "
                "updated_at, confirmed_at) SELECT subscriber_id, :list, status, created_at, "
                "updated_at, confirmed_at FROM subscription WHERE list_id = 1"),
                {"list": single_id})
        results.update(give_topics(1, args.seed))
        window_start = utcnow() - dt.timedelta(days=30)
        with transaction() as session:
            topics_list, single = lists.find(session, 1), lists.find(session, single_id)
            made = {}
            for name, lst in (("topics", topics_list), ("single", single),
                              ("topics_probe", topics_list), ("single_probe", single)):
                made[name] = editions.draft_edition(
                    session, identity=settings.identity, subject=f"Benchmark – {name}",
                    window_start=window_start, by="bench", mailing_list=lst).id
            assert all(len(session.get(Edition, i).articles) == 12 for i in made.values())
        with psycopg.connect(args.pg.rsplit("/", 1)[0] + f"/{db_name}", autocommit=True) as c:
            c.execute("VACUUM ANALYZE")

        # Composing all the variants on their own.
        from mailer.editions import snapshot

        with transaction() as session:
            probe = session.get(Edition, made["topics_probe"])
            snapshot.freeze(session, probe, settings)
            groups = sending._topic_groups(session, probe)
            subsets = variants.partial_subsets(probe, variants.assign(session, probe,
                                                                      groups).values())
            compose_times = []
            for _ in range(3):
                t0 = time.perf_counter()
                composed, _links = variants.compose_variants(probe, settings, subsets)
                compose_times.append(time.perf_counter() - t0)
            results["variants"] = len(composed)
            results["compose_all_variants_seconds"] = round(statistics.median(compose_times), 3)
            results["variant_html_bytes_median"] = int(statistics.median(
                len(v.html.encode()) for v in composed))
            results["whole_html_bytes"] = len((probe.html_snapshot or "").encode())
            session.rollback()

        # The audience freezes on their own (the same statements, rolled back).
        for name in ("single_probe", "topics_probe"):
            times = []
            for _ in range(3):
                with transaction() as session:
                    probe = session.get(Edition, made[name])
                    snapshot.freeze(session, probe, settings)
                    t0 = time.perf_counter()
                    frozen = sending._freeze_audience(session, probe, settings)
                    times.append(time.perf_counter() - t0)
                    assert frozen == args.readers, frozen
                    session.rollback()
            key = "freeze_seconds_single_variant" if name == "single_probe" else \
                "freeze_seconds_topics_with_composing"
            results[key] = round(statistics.median(times), 3)

        (ROOT / "var").mkdir(exist_ok=True)
        with open(ROOT / "var" / "bench-topics-worker.log", "wb") as log:
            argv = worker_argv(args.concurrency)
            argv[0] = str(BIN / "celery")
            procs.append(subprocess.Popen(argv, env={**os.environ, **env}, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          cwd=str(ROOT)))
        time.sleep(6)  # the workers up and connected

        def worker_pids() -> list[int]:
            return [pid for p in procs for pid in (p.pid, *descendants(p.pid))]

        def rss() -> dict[str, float]:
            return {str(p): round(proc_status(p, "VmRSS") / 1024, 1) for p in worker_pids()}

        results["worker_rss_mib_before"] = rss()
        for name in ("topics", "single") if args.topics_first else ("single", "topics"):
            edition_id = made[name]
            started_at = utcnow()
            t0 = time.perf_counter()
            with transaction() as session:
                audience = sending.start_send(session, edition_id, by="bench", settings=settings)
            results[f"start_send_seconds_{name}"] = round(time.perf_counter() - t0, 3)
            assert audience == args.readers, audience
            while True:
                with transaction() as session:
                    state = session.scalar(select(Edition.state).where(Edition.id == edition_id))
                    if state == "sent":
                        last = session.scalar(select(func.max(Delivery.sent_at))
                                              .where(Delivery.edition_id == edition_id))
                        counts = sending.state_counts(session, edition_id)
                        break
                time.sleep(0.2)
                if time.perf_counter() - t0 > 7200:
                    raise RuntimeError("the send did not finish in two hours")
            elapsed = (last - started_at).total_seconds()
            sent = counts.get("sent", 0)
            results[f"deliveries_{name}"] = counts
            results[f"messages_per_second_{name}"] = round(sent / elapsed, 1)
            results[f"worker_rss_mib_after_{name}"] = rss()
        with transaction() as session:
            results["variants_of_the_send"] = session.scalar(
                select(func.count()).select_from(EditionVariant)
                .where(EditionVariant.edition_id == made["topics"]))
        topics_rate = float(results["messages_per_second_topics"])  # type: ignore[arg-type]
        single_rate = float(results["messages_per_second_single"])  # type: ignore[arg-type]
        results["topics_rate_share_of_single"] = round(topics_rate / single_rate, 3)
        results["load_average"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    finally:
        stop_stack(procs, sink, redis_server, workdir, args.pg, db_name)
    report(results, "topics")


if __name__ == "__main__":
    main()
