"""Clicks per article, never per reader: an edition's links, counted (issue 15)."""
