"""The `dutylink` command line and the demo: the faces of the gateway for operators and auditors."""
