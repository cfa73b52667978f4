"""``mailer bounces``: inspect, measure, receive and import bounce mails.

``classify`` and ``evaluate`` live here; ``serve`` and ``import`` register on the same
group from :mod:`mailer.cli.bounce_intake`. Neither of these two imports the database
layer unless a database is there to read: they start in the time the parser takes.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Bounces and complaints.")


@app.command("classify")
def classify(
    files: list[Path] = typer.Argument(..., exists=True,
                                       help=".eml files, mbox files or Maildir folders"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per message"),
    attribute: bool = typer.Option(
        False, "--attribute", help="Also look each bounce up in the database (read-only): "
                                   "whom it would act on, and why"),
) -> None:
    """Show what each bounce mail says: every failed recipient, its class, the strength of
    the evidence, what it will do, status code and diagnostic; with --attribute, whom it
    would be attributed to and why. Changes nothing.

    "effect" is what the verdict does to the reader it is tied to: "suppress now" (a hard
    bounce on strong evidence, a complaint), "after a repeat" (a hard bounce on weak
    evidence: suppresses when a later edition bounces too), "counted" (soft), "nothing".

    Without --attribute no database is read (and none of its code loaded: the command
    starts in a fraction of the time); the attribution column then says only whether a
    VERP token in the message is ours or forged. --attribute reads the database
    (read-only); when it cannot be reached, the classification is still shown and the
    attribution says so. Exits with 1 when a message was refused (over
    MAILER_BOUNCE_MAX_BYTES).
    """
    from mailer.cli.classify import run_classify

    code = run_classify(files, as_json=as_json, attribute=attribute)
    if code:
        raise typer.Exit(code)


@app.command("evaluate")
def evaluate(
    folder: Path = typer.Argument(..., exists=True, file_okay=False,
                                  help="A corpus: .eml files and a manifest.json"),
    part: str = typer.Option("all", help="Only the manifest entries of this part: "
                                         "dev, held-out or all"),
    as_json: bool = typer.Option(False, "--json", help="The figures as one JSON object"),
    misses: bool = typer.Option(False, "--misses",
                                help="Also list every disagreement with the manifest"),
) -> None:
    """Measure the classifier on a labelled corpus (tests/fixtures/bounces/ is ours).

    Prints agreement, precision and recall of "hard", the precision of the verdicts that
    suppress at once, recipients found, non-bounces given a bounce class, complaints
    recognised and crashes. Reads no database, changes nothing.
    """
    from mailer.bounces import evaluate as measure
    from mailer.bounces.parse import OurAddresses
    from mailer.environment import read_bounce_reading

    if part not in ("all", "dev", "held-out"):
        raise typer.BadParameter("expected dev, held-out or all", param_hint="--part")
    try:
        result = measure.evaluate(folder, part=part,
                                  ours=OurAddresses.of(read_bounce_reading()))
    except (ValueError, OSError) as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    figures = result.figures()
    if as_json:
        if misses:
            figures["misses"] = [asdict(m) for m in result.misses]
        typer.echo(json.dumps({"corpus": str(folder), "part": part, **figures}))
        return
    typer.echo(f"{folder} ({part}):")
    for line in measure.render(figures):
        typer.echo(f"  {line}")
    if misses:
        for miss in result.misses:
            typer.echo(f"  - {miss.message}: expected {miss.expected}, got {miss.got}")
