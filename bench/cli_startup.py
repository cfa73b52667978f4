"""How long does the ``mailer`` command take to start, and to classify one bounce?

Runs each command as a new process, over and over, interleaved so that a busy moment of
the (shared) machine hurts them all alike, and prints the best and the median wall time
of each next to ``python -c pass`` measured in the same run:

- ``mailer --help``;
- ``mailer bounces classify FILE`` (classification only: a migrated SQLite database is
  there, and not read), with ``--json``, and ``--json`` without any database: these two
  run on the quick path of mailer.cli.quick, without Typer or pydantic;
- ``mailer bounces classify --attribute FILE`` (attribution looks the bounce up in the
  SQLite database, read-only), with and without ``--json``.

    .venv/bin/python bench/cli_startup.py              # 15 rounds
    .venv/bin/python bench/cli_startup.py --rounds 30
    .venv/bin/python bench/cli_startup.py --baseline ../main/.venv/bin   # another install's
                                   # mailer timed in the same rounds, for a before/after

Also lists which heavy packages each command imported (python -X importtime), so a
regression says where it comes from. Figures go to bench/results/cli-startup-<time>.json.

The commands run in this process's environment: with PYTHONDONTWRITEBYTECODE set (as in
the team's shells) no ``__pycache__`` is written, so mailer's own modules are compiled
from source on every run (about 35 ms of classify's start-up here); the output says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MAILER = str(BIN / "mailer")
BOUNCE = ROOT / "tests" / "fixtures" / "bounces" / "postfix-user-unknown.eml"
HEAVY = ("sqlalchemy", "celery", "fastapi", "flufl", "premailer", "rich", "alembic",
         "psycopg", "redis", "kombu", "jinja2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--baseline", type=Path,
                        help="the bin/ folder of another install whose mailer is timed too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = {**os.environ, "MAILER_ENV": "development", "MAILER_VAR_DIR": tmp,
                "COLUMNS": "120"}
        with_db = {**base, "MAILER_DATABASE_URL": f"sqlite:///{tmp}/mailer.db"}
        no_db = {**base, "MAILER_DATABASE_URL": f"sqlite:///{tmp}/missing.db"}
        subprocess.run([MAILER, "db", "upgrade"], env=with_db, check=True,
                       capture_output=True)
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], base)}
        installs = [("", MAILER)]
        if args.baseline:
            installs.append(("baseline: ", str(args.baseline / "mailer")))
        for prefix, mailer in installs:
            commands |= {
                f"{prefix}mailer --help": ([mailer, "--help"], base),
                f"{prefix}mailer bounces classify FILE": (
                    [mailer, "bounces", "classify", str(BOUNCE)], with_db),
                f"{prefix}mailer bounces classify --json FILE": (
                    [mailer, "bounces", "classify", "--json", str(BOUNCE)], with_db),
                f"{prefix}mailer bounces classify --json FILE (no database)": (
                    [mailer, "bounces", "classify", "--json", str(BOUNCE)], no_db),
                f"{prefix}mailer bounces classify --attribute FILE (SQLite)": (
                    [mailer, "bounces", "classify", "--attribute", str(BOUNCE)], with_db),
                f"{prefix}mailer bounces classify --attribute --json FILE (SQLite)": (
                    [mailer, "bounces", "classify", "--attribute", "--json", str(BOUNCE)],
                    with_db),
            }
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (argv, env) in commands.items():
                start = time.perf_counter()
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                done = subprocess.run(argv, env=env, capture_output=True, check=False)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                times[name].append(time.perf_counter() - start)
                cpu[name].append(after.ru_utime - before.ru_utime
                                 + after.ru_stime - before.ru_stime)
                if done.returncode != 0:
                    raise SystemExit(f"{name} failed: {done.stderr.decode()[-2000:]}")
        imported = {name: heavy_imports(argv, env) for name, (argv, env) in commands.items()
                    if name != "python -c pass"}

    figures = {name: {"best_ms": round(min(ts) * 1000), "median_ms":
                      round(statistics.median(ts) * 1000),
                      "cpu_median_ms": round(statistics.median(cpu[name]) * 1000)}
               for name, ts in times.items()}
    baseline = figures["python -c pass"]["median_ms"]
    print(f"{args.rounds} rounds, each command a new process; best / median wall time, "
          f"and the median CPU time (user + system: what a busy machine does not inflate "
          f"by making the command wait for a core)")
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("  (PYTHONDONTWRITEBYTECODE is set: modules without a cached .pyc, mailer's "
              "own among them, are compiled on every run)")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f}")
    for name, f in figures.items():
        extra = "" if name == "python -c pass" else (
            f"   (+{f['median_ms'] - baseline} ms over python; imports: "
            f"{', '.join(imported[name]) or 'none of the heavy ones'})")
        print(f"  {name:60} {f['best_ms']:5} / {f['median_ms']:5} ms, CPU "
              f"{f['cpu_median_ms']:4} ms{extra}")
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    out = results / f"cli-startup-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps({"rounds": args.rounds, "figures": figures,
                               "bytecode_cached": not os.environ.get("PYTHONDONTWRITEBYTECODE"),
                               "heavy_imports": imported}, indent=2))


def heavy_imports(argv: list[str], env: dict[str, str]) -> list[str]:
    """The packages of HEAVY the command imported, read from python -X importtime (with
    the python of the install whose mailer it is)."""
    mailer_argv = ["mailer", *argv[1:]]
    code = f"import sys; sys.argv = {mailer_argv!r}; from mailer.cli import main; main()"
    python = str(Path(argv[0]).with_name("python"))
    done = subprocess.run([python, "-X", "importtime", "-c", code], env=env,
                          capture_output=True, text=True, check=False)
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0]
             for line in done.stderr.splitlines() if line.startswith("import time:")}
    return [h for h in HEAVY if h in names]


if __name__ == "__main__":
    main()
