"""The reader's preference page (``/preferences/<token>``): what the holder of a reader's
link may change at once (the name, the topics followed on each list, leaving one list or
every list, joining a public list, which a confirmation link in the inbox completes), and
what only a click in the address's own inbox may start (the data export, the erasure).

``service`` holds the rules and the page's changes, ``mails`` the two mails its workers
send. It sits above ``privacy``, whose export and erasure it reuses, and above
``lists`` (the topics' catalogue and ``set_topics``).
"""
