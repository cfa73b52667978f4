"""Render an email type from its templates, with the CSS inlined by premailer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
from premailer import Premailer

from mailer.paths import templates_dir


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@lru_cache(maxsize=1)
def jinja_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


def inline_css(html: str) -> str:
    """Move every CSS rule that can be inlined onto its elements (no network, ever).

    What cannot be inlined (``@media``, ``:hover``…) stays in a ``<style>`` element with its
    ``!important`` kept, which the dark-mode and phone rules need.
    """
    return Premailer(
        html,
        allow_network=False,
        allow_loading_external_files=False,
        keep_style_tags=False,
        strip_important=False,
        remove_classes=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        exclude_pseudoclasses=True,
    ).transform(pretty_print=False)


def render_email(name: str, **context: Any) -> RenderedEmail:
    """Render ``templates/email/<name>/`` into a subject, a text part and an inlined HTML part."""
    env = jinja_env()
    subject = env.get_template(f"email/{name}/subject.txt").render(**context)
    text = env.get_template(f"email/{name}/body.txt").render(**context)
    html = env.get_template(f"email/{name}/body.html").render(**context)
    subject = " ".join(subject.split())  # one line, no CR/LF from a template or a name
    return RenderedEmail(subject=subject, text=text, html=inline_css(html))
