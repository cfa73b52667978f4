"""Making a feed's HTML safe to store and to mail, and turning it into plain text.

A feed is input from the outside: whatever it says, what we keep has no script, no style,
no iframe, no event handler and no ``javascript:`` link (nh3, an allow-list sanitiser).
WordPress adds its own residue to every feed ("The post … appeared first on …", "[…]"):
that is the blog talking to feed readers, not the article, so it goes too.
"""

from __future__ import annotations

import html
import re

import nh3

#: What an article summary may keep: text structure and links. Images are taken from the
#: feed's own image fields (with their size), never from inside the summary.
ALLOWED_TAGS = {
    "a", "p", "br", "strong", "b", "em", "i", "u", "ul", "ol", "li", "blockquote",
    "h2", "h3", "h4", "sub", "sup", "code",
}
#: Tags removed together with everything inside them.
DROPPED_WITH_CONTENT = {
    "script", "style", "iframe", "object", "embed", "template", "noscript", "svg", "math",
    "form", "select", "textarea",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}
URL_SCHEMES = {"http", "https", "mailto"}

_WP_POST_FOOTER = re.compile(
    r"(<p>)?\s*The post\s.*?\sappeared first on\s.*?(</p>|$)", re.IGNORECASE | re.DOTALL
)
_WP_ELLIPSIS = re.compile(r"\s*\[\s*(?:…|&hellip;|&#8230;|\.\.\.)\s*\]")
#: "… and more.>> Read here": the words of a link the excerpt no longer has.
_DANGLING_READ_MORE = re.compile(
    r"\s*(?:&gt;&gt;|»|→)\s*(?:Read|Continue reading)(?: here| more)?\.?\s*(?=</p>|$)",
    re.IGNORECASE)
_EMPTY_PARAGRAPH = re.compile(r"<p>(?:\s|&nbsp;|\xa0|<br>)*</p>")
_BLOCK_END = re.compile(r"</(?:p|li|h[2-4]|blockquote|ul|ol)>|<br\s*/?>", re.IGNORECASE)
_LIST_ITEM = re.compile(r"<li>", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\r\f\v\xa0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def clean_html(fragment: str, *, base_url: str) -> str:
    """The safe version of ``fragment``; relative links resolved against ``base_url``."""
    cleaned = nh3.clean(
        fragment,
        tags=ALLOWED_TAGS,
        clean_content_tags=DROPPED_WITH_CONTENT,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        url_relative=("rewrite_with_base", base_url),
        strip_comments=True,
    )
    cleaned = _WP_POST_FOOTER.sub("", cleaned)
    cleaned = _WP_ELLIPSIS.sub("…", cleaned)
    cleaned = _DANGLING_READ_MORE.sub("", cleaned)
    cleaned = _EMPTY_PARAGRAPH.sub("", cleaned)
    return _BLANK_LINES.sub("\n", cleaned).strip()


def plain_text(value: str) -> str:
    """One line of text from something that may hold tags or entities (a title, a name)."""
    text = html.unescape(nh3.clean(value, tags=set(), clean_content_tags=DROPPED_WITH_CONTENT))
    return " ".join(text.split())


def html_to_text(fragment: str) -> str:
    """Readable text from sanitised HTML: one paragraph per block, blank lines between."""
    marked = _LIST_ITEM.sub("• ", _BLOCK_END.sub("\n\n", fragment))
    text = html.unescape(nh3.clean(marked, tags=set(), clean_content_tags=DROPPED_WITH_CONTENT))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def excerpt(text: str, limit: int = 300) -> str:
    """The first paragraph of ``text``, cut at a word boundary near ``limit`` characters."""
    first = text.split("\n\n", 1)[0].strip()
    if len(first) <= limit:
        return first
    cut = first[:limit].rsplit(" ", 1)[0].rstrip(" ,;:–—-")
    return f"{cut}…"
