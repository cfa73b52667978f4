"""Bounces and complaints: understanding every signal of a failed delivery and acting on it."""
