"""The adapters `dutylink adapter run NAME` knows, by name."""

from __future__ import annotations

from dutylink.adapters.framework import AdapterKind


def adapter_kinds() -> dict[str, AdapterKind]:
    # Imported here, not at module level: each adapter pulls in its own codecs and transports.
    from dutylink.adapters.cap.adapter import KIND as CAP
    from dutylink.adapters.dispatch.adapter import CAD110, DISPATCH119
    from dutylink.adapters.edxl.adapter import KIND as EDXL
    from dutylink.adapters.filedrop.adapter import KIND as FILEDROP
    from dutylink.adapters.webhook.adapter import KIND as WEBHOOK

    return {kind.name: kind for kind in (CAP, EDXL, WEBHOOK, FILEDROP, CAD110, DISPATCH119)}
