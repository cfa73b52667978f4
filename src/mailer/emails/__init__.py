"""Email as a domain of its own: rendering templates, inlining CSS, building messages.

One folder per message type under ``templates/email/<name>/`` holds ``subject.txt``,
``body.txt`` and ``body.html``; all extend ``templates/email/_base/``. The text part is
always written by hand, never derived from the HTML.

Import from the modules (``mailer.emails.render``, ``.message``, ``.verp``): this package
imports nothing itself, so reading a VERP token does not load premailer and Jinja2.
"""
