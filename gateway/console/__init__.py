"""The duty officers' web console: a read-only face of the duty board (GetBoard, GetIncident,
WatchBoard) and of the resource ledger (GetLedger) in a browser, each officer seeing exactly
what the gateway answers their agency's token. It sits beside the CLI as another face over the
SDK; it holds no data of its own."""
