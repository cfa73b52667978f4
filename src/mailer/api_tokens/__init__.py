"""API tokens: what another system (the website's form plugin, the CRM) presents to /api/v1.

A token is ``mlr_`` and 43 random URL-safe characters (``secrets.token_urlsafe(32)``: 256
bits), shown once when it is made; only its SHA-256 is stored, so a copy of the database
holds no usable token. Each has a name (who holds it: the audit log and the consent record
name it), scopes, an optional expiry, the time it was last used, and can be revoked.
"""
