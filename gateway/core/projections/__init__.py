"""Projections: read models folded from the streams (the duty board). Pure."""
