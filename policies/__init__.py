"""DutyLink access policies (the policies issue fills this package)."""
