"""EDXL-RM 1.0 resource messages and EDXL-DE 1.0 distribution envelopes <-> DutyLink events."""
