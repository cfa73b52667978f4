"""mailer: a self-hosted newsletter sender."""
