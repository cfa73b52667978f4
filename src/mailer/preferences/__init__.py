"""The reader's preference page (``/preferences/<token>``): what the holder of a reader's
link may change at once (the name, leaving the newsletter), and what only a click in the
address's own inbox may start (the data export, the erasure).

``service`` holds the rules and the page's changes, ``mails`` the two mails its workers
send. It sits above ``privacy``, whose export and erasure it reuses. Lists and topics
(issue 12) will add their own parts to the page and their own changes here.
"""
