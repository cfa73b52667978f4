"""The subscription manager: sign-up with double opt-in, confirmation, unsubscribe, consent."""
