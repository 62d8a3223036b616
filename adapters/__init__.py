"""DutyLink SDK and adapters for department systems."""
