"""The message assembler encodes the constant pieces of a snapshot once and only the reader's
values per message. Whatever the values and wherever the pieces split, the parts must
decode to exactly what the Personaliser fills in, with no quoted-printable line over 76."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.config import IdentitySettings, SMTPSettings
from mailer.delivery.assembly import MessageAssembler, Reader, _qp_piece
from mailer.editions.compose import new_placeholder_key, placeholders
from mailer.editions.snapshot import Personaliser

HTML = ("<html><body><p>%%greeting%%</p>\n<p>" + "Probation news across Europe. " * 9 +
        "</p><a href=\"%%unsubscribe_url%%\">Unsubscribe</a>%%email%%%%first_name%%"
        "<a href=\"%%view_url%%\">view</a>\n" + "x" * 74 + "%%email%%\n" + "é" * 40 +
        "  %%first_name%%   \n.starts with a dot\n</body></html>")
TEXT = ("%%greeting%%\n\n" + "A line of the text part, " * 5 + "\nUnsubscribe: %%unsubscribe_url%%"
        "\nView: %%view_url%%\n%%email%%")
#: A snapshot's placeholders carry the key it was composed with (feed text is never a slot).
BASE_URL = "https://news.example.org"  # the unsubscribe links' address
KEYS = [b"the-assembler-signs-with-this-key"]  # as Settings.all_secrets hands them in
KEY = new_placeholder_key()
for _name, _token in placeholders(KEY).items():
    HTML, TEXT = HTML.replace(f"%%{_name}%%", _token), TEXT.replace(f"%%{_name}%%", _token)


def _assembler() -> MessageAssembler:
    personaliser = Personaliser("Subject", HTML, TEXT, key=KEY,
                                defaults={"view_url": "https://news.example.org/archive/x"})
    return MessageAssembler(edition_id=7, subject="CEP – the news", personaliser=personaliser,
                            view_url="https://news.example.org/archive/x",
                            base_url=BASE_URL, identity=IdentitySettings(), keys=KEYS,
                            smtp=SMTPSettings())


names = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=100)


@settings(max_examples=200, deadline=None)
@given(first_name=names, local=st.text(alphabet="abcxyz.=-_+0123456789", min_size=1,
                                       max_size=64))
def test_the_parts_decode_to_what_the_personaliser_fills_in(first_name: str, local: str) -> None:
    assembler = _assembler()
    reader = Reader(42, f"{local}@d{len(local)}.example.net", first_name, "ab" * 16)
    raw = assembler.build(reader)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    text_part, html_part = message.iter_parts()  # type: ignore[attr-defined]
    from mailer.subscribers.unsubscribe import unsubscribe_url_for

    values = {"unsubscribe_url": unsubscribe_url_for(reader.public_id, assembler.edition_id,
                                                     base_url=BASE_URL, keys=KEYS),
              "view_url": assembler.view_url, "first_name": first_name, "email": reader.email}
    expected_text = assembler.personaliser.text(values)  # type: ignore[attr-defined]
    expected_html = assembler.personaliser.html(values)  # type: ignore[attr-defined]
    assert text_part.get_content().replace("\r\n", "\n") == expected_text.replace("\r\n", "\n")
    assert html_part.get_content().replace("\r\n", "\n") == expected_html.replace("\r\n", "\n")
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    assert b"\n" not in raw.replace(b"\r\n", b"")


@pytest.mark.parametrize("text", ["y" * 76, "y" * 75 + "=", "y" * 74 + "é", "tail  ", ""])
def test_a_piece_ending_mid_line_leaves_room_for_its_soft_break(text: str) -> None:
    encoded = _qp_piece(text)
    if text:
        assert encoded.endswith(b"=\r\n")
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    import quopri

    assert quopri.decodestring(encoded).decode() == text
