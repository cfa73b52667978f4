"""Measuring the classifier on a labelled corpus of bounce mails.

A corpus is a folder of ``.eml`` files and a ``manifest.json`` that says, for each file,
what it is: its kind, and for every failed recipient the address, the class and (for hard
ones) the strength of the evidence. tests/fixtures/bounces/ is the project's corpus; its
entries also name the MTA family and the documented behaviour each message follows, and
its ``part`` ("dev" or "held-out") says whether the rules were written looking at it.

The figures are the ones the bounce rules are held to:

- agreement on hard versus not hard, and the precision and recall of "hard", counted per
  expected recipient (a non-bounce counts once, as not hard);
- the precision of the verdicts that suppress at once (hard with strong evidence): these
  remove a reader after one bounce, so they must almost never be wrong;
- recipients found: expected addresses the parser named;
- non-bounces (auto-replies, delivery notices, auth-failure reports, requests) that were
  given a bounce or complaint class; complaints recognised; messages the parser crashed on.

Nothing here touches the database: it is the parser and the classifier alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailer.bounces.classes import BounceClass
from mailer.bounces.parse import BounceReport, OurAddresses, parse_bounce

#: Classes that say "something happened to this reader's mail": wrong on a non-bounce.
_ACTING = {BounceClass.hard, BounceClass.soft, BounceClass.policy, BounceClass.delayed,
           BounceClass.complaint}
_NOT_BOUNCES = {BounceClass.autoreply.value, BounceClass.not_a_bounce.value}


@dataclass
class Miss:
    """One disagreement, for the report: what the manifest says and what came out."""

    message: str
    expected: str
    got: str


@dataclass
class Evaluation:
    messages: int = 0
    items: int = 0  # expected recipients, plus one per message that names none
    agree: int = 0  # hard-vs-not-hard
    true_hard: int = 0
    false_hard: int = 0
    missed_hard: int = 0
    class_agree: int = 0
    suppress_now: int = 0
    suppress_now_right: int = 0
    strength_agree: int = 0
    strength_items: int = 0
    recipients_expected: int = 0
    recipients_found: int = 0
    non_bounces: int = 0
    non_bounces_acted: int = 0
    complaints: int = 0
    complaints_found: int = 0
    crashes: int = 0
    misses: list[Miss] = field(default_factory=list)

    @staticmethod
    def share(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    def figures(self) -> dict[str, Any]:
        share = self.share
        return {
            "messages": self.messages,
            "recipients": self.items,
            "hard_agreement": share(self.agree, self.items),
            "hard_precision": share(self.true_hard, self.true_hard + self.false_hard),
            "hard_recall": share(self.true_hard, self.true_hard + self.missed_hard),
            "hard_verdicts": self.true_hard + self.false_hard,
            "wrong_hard": self.false_hard,
            "missed_hard": self.missed_hard,
            "class_agreement": share(self.class_agree, self.items),
            "suppress_now_verdicts": self.suppress_now,
            "suppress_now_precision": share(self.suppress_now_right, self.suppress_now),
            "strength_agreement": share(self.strength_agree, self.strength_items),
            "recipients_found": share(self.recipients_found, self.recipients_expected),
            "non_bounces": self.non_bounces,
            "non_bounces_given_a_class": self.non_bounces_acted,
            "complaints": self.complaints,
            "complaints_recognised": share(self.complaints_found, self.complaints),
            "crashes": self.crashes,
        }


def load_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected an object of file name → expectations")
    return manifest


def evaluate(folder: Path, *, ours: OurAddresses, part: str = "all") -> Evaluation:
    """Parse every message of the corpus in ``folder`` (of one ``part``, or all) and count.
    ``ours``: the addresses of the sender the corpus's bounces answer."""
    folder = Path(folder)
    result = Evaluation()
    for name, expected in sorted(load_manifest(folder).items()):
        if part != "all" and expected.get("part", "dev") != part:
            continue
        raw = (folder / name).read_bytes()
        try:
            report = parse_bounce(raw, ours=ours, max_bytes=max(len(raw), 1))
        except Exception as exc:  # parse_bounce promises not to raise: count it
            result.crashes += 1
            result.messages += 1
            result.misses.append(Miss(name, "no crash", f"{type(exc).__name__}: {exc}"))
            continue
        score(result, name, expected, report)
    return result


def score(result: Evaluation, name: str, expected: dict[str, Any], report: BounceReport) -> None:
    result.messages += 1
    if report.kind == "unparsed" and report.error.startswith("parser error"):
        result.crashes += 1
        result.misses.append(Miss(name, "no crash", report.error))
    got = list(report.recipients)
    wanted = list(expected.get("recipients", []))
    classes = {str(r.bounce_class) for r in got}
    is_non_bounce = all(w["class"] in _NOT_BOUNCES for w in wanted)
    if is_non_bounce:
        result.non_bounces += 1
        acting = sorted(c for c in classes if c in _ACTING)
        if acting:
            result.non_bounces_acted += 1
            result.misses.append(Miss(name, "no bounce class", ", ".join(acting)))
    if any(w["class"] == BounceClass.complaint for w in wanted):
        result.complaints += 1
        if BounceClass.complaint in classes:
            result.complaints_found += 1
        else:
            result.misses.append(Miss(name, "complaint", ", ".join(sorted(classes)) or "nothing"))
    if not wanted:
        # A non-bounce names nobody: it is one item, and "hard" if anything came out hard.
        _count(result, name, "", "not-a-bounce", "", _class_of(got))
        return
    for index, want in enumerate(wanted):
        match = _match(want, index, wanted, got)
        if want["recipient"]:
            result.recipients_expected += 1
            if match is not None and match.recipient.lower() == want["recipient"].lower():
                result.recipients_found += 1
            else:
                result.misses.append(Miss(name, f"recipient {want['recipient']}",
                                          ", ".join(r.recipient or "-" for r in got) or "none"))
        got_class = str(match.bounce_class) if match is not None else "missing"
        got_strength = _strength(match)
        _count(result, name, want["recipient"], want["class"], want.get("strength", ""),
               (got_class, got_strength))


def _class_of(got: list[Any]) -> tuple[str, str]:
    hard = [r for r in got if r.bounce_class == BounceClass.hard]
    if hard:
        return "hard", _strength(hard[0])
    return (str(got[0].bounce_class) if got else "not-a-bounce"), ""


def _strength(recipient: Any) -> str:
    return getattr(recipient, "strength", "") if recipient is not None else ""


def _count(result: Evaluation, name: str, address: str, want_class: str, want_strength: str,
           got: tuple[str, str]) -> None:
    got_class, got_strength = got
    result.items += 1
    want_hard, got_hard = want_class == "hard", got_class == "hard"
    if want_hard == got_hard:
        result.agree += 1
    if got_class == want_class or (want_class == "not-a-bounce" and got_class in _NOT_BOUNCES):
        result.class_agree += 1
    else:
        result.misses.append(Miss(name, f"{address or '-'} {want_class} {want_strength}".strip(),
                                  f"{got_class} {got_strength}".strip()))
    if got_hard and want_hard:
        result.true_hard += 1
    elif got_hard:
        result.false_hard += 1
    elif want_hard:
        result.missed_hard += 1
    if got_hard and got_strength == "strong":
        result.suppress_now += 1
        result.suppress_now_right += want_hard
    if want_hard and got_hard:
        result.strength_items += 1
        result.strength_agree += got_strength == want_strength
        if got_strength != want_strength:
            result.misses.append(Miss(name, f"{address or '-'} hard {want_strength}",
                                      f"hard {got_strength}"))


def _match(want: dict[str, Any], index: int, wanted: list[dict[str, Any]],
           got: list[Any]) -> Any:
    """The reported recipient that answers an expected one: by address, else by position
    when the address is unknown (a redacted complaint) or the counts agree."""
    address = (want.get("recipient") or "").lower()
    for recipient in got:
        if address and recipient.recipient.lower() == address:
            return recipient
    if (not address or len(got) == len(wanted)) and index < len(got):
        return got[index]
    return None


def render(figures: dict[str, Any]) -> Iterable[str]:
    """The figures as lines of text."""
    def pct(key: str) -> str:
        value = figures[key]
        return "—" if value is None else f"{value:.1%}"

    yield (f"messages {figures['messages']}, recipients {figures['recipients']}, "
           f"crashes {figures['crashes']}")
    yield (f"hard vs not hard: agreement {pct('hard_agreement')}, precision "
           f"{pct('hard_precision')} ({figures['wrong_hard']} wrong of "
           f"{figures['hard_verdicts']}), recall {pct('hard_recall')} "
           f"({figures['missed_hard']} missed)")
    yield (f"suppress now (hard, strong evidence): {figures['suppress_now_verdicts']} verdicts, "
           f"precision {pct('suppress_now_precision')}; strength agreement "
           f"{pct('strength_agreement')}")
    yield f"class agreement {pct('class_agreement')}; recipients found {pct('recipients_found')}"
    yield (f"non-bounces given a bounce or complaint class: "
           f"{figures['non_bounces_given_a_class']} of {figures['non_bounces']}; complaints "
           f"recognised {pct('complaints_recognised')} of {figures['complaints']}")
