"""The subscription manager: sign-up (``signup``), the double opt-in (``confirmation``, and
the mails ``confirmation_mail`` and ``welcome_mail``), ``unsubscribe``, the consent events
they all write (``records``), and the import. The suppression list is
``mailer.suppression``; a person's export and erasure are ``mailer.privacy``."""
