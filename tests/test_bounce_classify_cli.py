"""``mailer bounces classify``: the real command in a child process, on the real databases.

Ops point it at a puzzling bounce; it says what failed, how, and whom it would be
attributed to — and changes nothing.
"""

from __future__ import annotations

import json
import mailbox
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from mailer.bounces.models import Bounce
from mailer.cli.classify import _read_only_session
from mailer.config import IdentitySettings
from mailer.db import transaction
from mailer.models import Base
from tests.support.bounce_mail import verp_of
from tests.test_bounce_classify_attribution import OLD_RCPT, _bounce, _sent
from tests.test_bounce_parse import DEV

IDENTITY = IdentitySettings()  # the stack's sending and bounce domains (the defaults)
CORPUS = Path(__file__).parent / "fixtures" / "bounces"
MAILER = Path(sys.executable).with_name("mailer")


def _run(env: dict[str, str], *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MAILER), "bounces", "classify", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _counts() -> dict[str, int]:
    with transaction() as s:
        return {t.name: s.scalar(select(func.count()).select_from(t)) or 0
                for t in Base.metadata.sorted_tables}


def test_json_over_the_whole_corpus(clean) -> None:
    _sent("anna.berg@example.net")
    before = _counts()
    done = _run(clean.env, "--attribute", "--json", *(CORPUS / name for name in sorted(DEV)))
    assert done.returncode == 0, done.stderr
    rows = _rows(done.stdout)
    assert len(rows) == len(DEV)
    for row in rows:
        name = Path(row["message"].split("#")[0]).name
        expected = DEV[name]
        assert row["kind"] == expected["kind"], name
        assert sorted((r["recipient"], r["class"]) for r in row["recipients"]) == sorted(
            (r["recipient"], r["class"]) for r in expected["recipients"]), name
        for failure in row["recipients"]:
            assert failure["attribution"]["method"] in ("verp", "message-id", "recipient", "none")
    # The corpus's tokens were signed with another key: forged, whoever they name.
    backscatter = next(r for r in rows if r["message"].endswith("backscatter-forged-verp.eml"))
    assert backscatter["recipients"][0]["attribution"]["method"] == "none"
    assert "forged" in backscatter["recipients"][0]["attribution"]["note"]
    assert _counts() == before  # changes nothing


def test_a_genuine_bounce_is_shown_with_its_delivery(clean, tmp_path: Path) -> None:
    subscriber_id, edition_id, delivery_id = _sent(OLD_RCPT)
    path = tmp_path / "puzzling.eml"
    path.write_bytes(_bounce(verp=verp_of(delivery_id)))

    [row] = _rows(_run(clean.env, "--attribute", "--json", path).stdout)
    [failure] = row["recipients"]
    assert (failure["recipient"], failure["class"], failure["status"]) == (
        OLD_RCPT, "hard", "5.1.1")
    assert "User unknown" in failure["diagnostic"]
    assert failure["attribution"]["method"] == "verp"
    assert (failure["attribution"]["delivery_id"], failure["attribution"]["edition_id"],
            failure["attribution"]["subscriber_id"]) == (delivery_id, edition_id, subscriber_id)

    table = _run({**clean.env, "COLUMNS": "250"}, "--attribute", path)
    assert table.returncode == 0, table.stderr
    assert OLD_RCPT in table.stdout and "hard" in table.stdout and "5.1.1" in table.stdout
    assert f"delivery {delivery_id}" in table.stdout
    with transaction() as s:  # a hard bounce, shown, and nobody suppressed by showing it
        assert s.scalar(select(func.count()).select_from(Bounce)) == 0


def test_without_attribute_no_database_is_read(clean, tmp_path: Path) -> None:
    """The default classifies only: a bounce of a delivery we sent is not looked up (the
    database is there and holds it), a VERP token is still checked against our key."""
    subscriber_id, edition_id, delivery_id = _sent(OLD_RCPT)
    path = tmp_path / "puzzling.eml"
    path.write_bytes(_bounce(verp=verp_of(delivery_id)))
    [row] = _rows(_run(clean.env, "--json", path, CORPUS / "backscatter-forged-verp.eml")
                  .stdout)[:1]
    [failure] = row["recipients"]
    assert failure["class"] == "hard"
    assert failure["attribution"]["method"] == "unknown"
    assert failure["attribution"]["delivery_id"] is None
    assert failure["attribution"]["note"].endswith("valid; database not read "
                                                   "(--attribute reads it)")
    table = _run({**clean.env, "COLUMNS": "250"}, path)
    assert "database not read" in table.stdout and f"delivery {delivery_id}" not in table.stdout


def test_mbox_and_maildir_inputs(clean, tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "inbox.mbox")
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    for name in ("qmail-no-mailbox.eml", "arf-yahoo.eml"):
        box.add((CORPUS / name).read_bytes())
        maildir.add((CORPUS / name).read_bytes())
    box.close()
    done = _run(clean.env, "--json", tmp_path / "inbox.mbox", tmp_path / "Maildir")
    assert done.returncode == 0, done.stderr
    assert [r["kind"] for r in _rows(done.stdout)][:2] == ["heuristic", "arf"]
    assert sorted(r["kind"] for r in _rows(done.stdout)[2:]) == ["arf", "heuristic"]


def test_without_a_database_the_classification_is_still_shown(clean, tmp_path: Path) -> None:
    genuine = tmp_path / "genuine.eml"
    genuine.write_bytes(_bounce(verp=verp_of(5)))
    for url in ("postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
                f"sqlite:///{tmp_path / 'missing.db'}"):
        env = {**clean.env, "MAILER_DATABASE_URL": url}
        done = _run(env, "--attribute", "--json", genuine,
                    CORPUS / "backscatter-forged-verp.eml")
        assert done.returncode == 0, done.stderr
        signed, backscatter = _rows(done.stdout)
        assert signed["recipients"][0]["class"] == "hard"
        attribution = signed["recipients"][0]["attribution"]
        assert attribution["method"] == "unknown"
        assert "database not reachable" in attribution["note"]
        assert "valid" in attribution["note"]
        # A forged token needs no database to be known as forged.
        assert backscatter["recipients"][0]["attribution"]["method"] == "none"
    assert not (tmp_path / "missing.db").exists()  # nothing was created either


def test_a_message_over_the_cap_is_refused_and_the_rest_shown(clean) -> None:
    env = {**clean.env, "MAILER_BOUNCE_MAX_BYTES": "3000"}
    done = _run(env, "--json", CORPUS / "yahoo-mailbox-disabled.eml",
                CORPUS / "gmail-address-not-found.eml")
    assert done.returncode == 1
    small, big = _rows(done.stdout)
    assert small["recipients"][0]["class"] == "soft"
    assert big["kind"] == "refused" and "over the cap of 3,000 bytes" in big["error"]


def _words(text: str) -> str:
    """The text of an error box as one line: Rich draws it with box characters and wraps it
    at the terminal's width, so the same message breaks at other places on other terminals."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", text).split())


@pytest.mark.parametrize("columns", ["52", "100", "200"])
def test_a_missing_file_is_a_usage_error(clean, columns: str) -> None:
    # A path of 83 characters (not under tmp_path, whose length varies): at 52 and 100
    # columns the box breaks "does not | exist" across two lines.
    missing = Path("/tmp", f"mailer-missing-{uuid.uuid4().hex}-{'n' * 26}.eml")
    assert len(str(missing)) == 83 and not missing.exists()
    done = _run({**clean.env, "COLUMNS": columns}, missing)
    assert done.returncode == 2
    assert "does not exist" in _words(done.stderr)
    assert missing.name in _words(done.stderr).replace(" ", "")


def test_the_commands_session_cannot_write(clean) -> None:
    """The claim "changes nothing" holds at the database, not only in our code."""
    session = _read_only_session()
    try:
        assert session.scalar(select(func.count()).select_from(Bounce)) == 0  # reads work
        with pytest.raises(DBAPIError, match="(?i)read-only|readonly"):
            session.execute(text("DELETE FROM bounce"))
    finally:
        session.rollback()
        session.close()
        session.get_bind().dispose()  # type: ignore[union-attr]


def test_json_shows_the_strength_and_what_each_bounce_will_do(clean) -> None:
    names = {"postfix-user-unknown.eml": ("hard", "strong", "suppress now"),
             "outlookcom-mailbox-unavailable.eml": ("hard", "weak", "after a repeat"),
             "postfix-mailbox-full.eml": ("soft", "", "counted"),
             "postfix-spamhaus-blocked.eml": ("policy", "", "nothing"),
             "arf-yahoo.eml": ("complaint", "", "suppress now"),
             "vacation-auto-submitted.eml": ("autoreply", "", "nothing")}
    done = _run(clean.env, "--json", *(CORPUS / n for n in names))
    assert done.returncode == 0, done.stderr
    for row in _rows(done.stdout):
        [failure] = row["recipients"]
        expected = names[Path(row["message"]).name]
        assert (failure["class"], failure["strength"], failure["effect"]) == expected, row

    table = _run({**clean.env, "COLUMNS": "250"}, CORPUS / "outlookcom-mailbox-unavailable.eml")
    assert "hard (weak)" in table.stdout and "after a repeat" in table.stdout


def _evaluate(env: dict[str, str], *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MAILER), "bounces", "evaluate", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_evaluate_counts_agreement_precision_recall_and_misses(clean, tmp_path: Path) -> None:
    """A small corpus whose manifest is wrong on purpose about one message: the figures
    and the list of misses say so."""
    picked = ["postfix-user-unknown.eml", "outlookcom-mailbox-unavailable.eml",
              "postfix-mailbox-full.eml", "arf-yahoo.eml", "vacation-auto-submitted.eml",
              "exchange-delivery-receipt.eml"]
    manifest = {name: DEV[name] for name in picked}
    # Claim the mailbox-full bounce is hard: one hard verdict missed (recall 2/3).
    full = manifest["postfix-mailbox-full.eml"]
    manifest["postfix-mailbox-full.eml"] = {
        **full, "recipients": [{**full["recipients"][0], "class": "hard", "strength": "weak"}]}
    for name in picked:
        (tmp_path / name).write_bytes((CORPUS / name).read_bytes())
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))

    done = _evaluate(clean.env, tmp_path, "--json", "--misses")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["messages"] == 6 and figures["crashes"] == 0
    assert (figures["hard_precision"], figures["hard_recall"]) == (1.0, 0.6667)
    assert figures["missed_hard"] == 1 and figures["wrong_hard"] == 0
    assert figures["suppress_now_verdicts"] == 1 and figures["suppress_now_precision"] == 1.0
    assert figures["recipients_found"] == 1.0
    assert (figures["non_bounces"], figures["non_bounces_given_a_class"]) == (2, 0)
    assert figures["complaints_recognised"] == 1.0
    assert [m["message"] for m in figures["misses"]] == ["postfix-mailbox-full.eml"]

    text = _evaluate(clean.env, tmp_path)
    assert text.returncode == 0, text.stderr
    assert "recall 66.7% (1 missed)" in text.stdout
    assert "suppress now (hard, strong evidence): 1 verdicts, precision 100.0%" in text.stdout


def test_evaluate_refuses_a_folder_without_a_manifest(clean, tmp_path: Path) -> None:
    done = _evaluate(clean.env, tmp_path)
    assert done.returncode == 2
    assert "manifest.json" in done.stderr


def test_without_a_database_the_attribution_has_the_same_fields(clean, tmp_path: Path) -> None:
    from dataclasses import fields

    from mailer.bounces.attribute import FORGED_TOKEN, Attribution

    env = {**clean.env, "MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'missing.db'}"}
    [row] = _rows(_run(env, "--attribute", "--json",
                        CORPUS / "backscatter-forged-verp.eml").stdout)
    attribution = row["recipients"][0]["attribution"]
    assert set(attribution) == {f.name for f in fields(Attribution)}
    assert attribution["unverified"] == FORGED_TOKEN
