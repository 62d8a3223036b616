"""CAP 1.2 (OASIS Common Alerting Protocol) XML <-> DutyLink Warning events."""
