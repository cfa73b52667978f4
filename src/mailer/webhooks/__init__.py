"""Outgoing webhooks: telling the association's other systems what happened here.

- ``events``: the events there are, and :func:`events.emit`, which writes an event and one
  delivery per endpoint that wants it in the caller's transaction (the outbox);
- ``endpoints``: the endpoints staff register (URL, ``whsec_`` secret, events wanted);
- ``sending``: one attempt at one delivery, signed per the Standard Webhooks specification,
  its retries and the sweep that queues what is due again; the delivery log.
"""
