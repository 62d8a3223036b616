"""Tamper-evident audit log, pure core: RFC 6962 Merkle maths (`merkle`), C2SP checkpoints and
signed notes (`note`), entries and their storage frames (`entries`), the log's key rule (`log`),
verification (`verify`), evidence bundles (`bundle`), commitments, the kept checkpoint's check
(`kept`) and the store's witness (`witness`).

Values in, values out: storing records, reading keys and publishing checkpoints belong to the
gateway around this package (gateway.store.audit_log, audit_reader, audit_files), so an auditor
can check DutyLink's log with these modules alone (tests/test_audit_pure.py keeps it so).
"""
