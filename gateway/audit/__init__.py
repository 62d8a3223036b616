"""Tamper-evident audit log, pure core: RFC 6962 Merkle maths (`merkle`) and C2SP checkpoints and
signed notes (`note`).

Values in, values out: storing records, reading keys and publishing checkpoints belong to the
gateway around this package, so an auditor can check DutyLink's log with these modules alone.
"""
