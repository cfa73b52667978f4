"""The shape of the code: the import contracts of pyproject.toml (also `make lint`), and the
task names the code publishes against those the workers consume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_the_import_contracts_hold() -> None:
    # No arrow from mailer to workers, the layers, no cycle between or inside packages;
    # an exception listed there that no longer matches an import fails too.
    run = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", "pyproject.toml"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_no_module_of_mailer_imports_workers_even_inside_a_function() -> None:
    graph = grimp.build_graph("mailer", "workers")
    assert not graph.chain_exists("mailer", "workers", as_packages=True), \
        graph.find_shortest_chain("mailer", "workers", as_packages=True)


def test_every_task_published_by_name_has_a_worker_on_its_queue() -> None:
    from mailer import tasks
    from workers.app import app

    app.loader.import_default_modules()  # the task modules the worker loads at start
    names = {value for key, value in vars(tasks).items()
             if key.isupper() and isinstance(value, str) and value.startswith("workers.")}
    assert {tasks.SEND_BATCH, tasks.SEND_CONFIRMATION, tasks.PROCESS_INBOUND, tasks.SWEEP} <= names
    assert names <= set(app.tasks), names - set(app.tasks)
    for name in names:
        route = app.amqp.router.route({}, name)
        assert route["queue"].name == tasks.queue_of(name), name
    assert {q.name for q in app.conf.task_queues} == set(tasks.QUEUES)
    for entry in app.conf.beat_schedule.values():
        assert entry["task"] in names


#: Where get_settings() may be called: the composition root (the web app, the CLI, the
#: task publisher, the infrastructure that reads where things are) and config itself.
#: Every other module is handed its settings group by its caller. workers/ is outside
#: src/ and is a composition root too.
READS_SETTINGS = {
    "mailer/web/",
    "mailer/cli/",
    "mailer/tasks.py",
    "mailer/db.py",
    "mailer/redis.py",
    "mailer/config.py",
}


def test_only_the_composition_root_calls_get_settings() -> None:
    import ast

    src = ROOT / "src"
    callers = []
    for path in sorted((src / "mailer").rglob("*.py")):
        name = path.relative_to(src).as_posix()
        if any(name == root or (root.endswith("/") and name.startswith(root))
               for root in READS_SETTINGS):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=name)):
            called = node.func if isinstance(node, ast.Call) else None
            if (isinstance(called, ast.Name) and called.id == "get_settings") or \
                    (isinstance(called, ast.Attribute) and called.attr == "get_settings"):
                callers.append(f"{name}:{node.lineno}")
    assert not callers, "get_settings() outside the composition root (hand the group in):\n" \
        + "\n".join(callers)
