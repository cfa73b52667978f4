"""Email as a domain of its own: rendering templates, inlining CSS, building messages.

One folder per message type under ``templates/email/<name>/`` holds ``subject.txt``,
``body.txt`` and ``body.html``; all extend ``templates/email/_base/``. The text part is
always written by hand, never derived from the HTML.
"""

from mailer.emails.render import RenderedEmail, inline_css, jinja_env, render_email

__all__ = ["RenderedEmail", "inline_css", "jinja_env", "render_email"]
