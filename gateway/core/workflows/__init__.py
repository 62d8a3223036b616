"""The linked-duty workflows as pure folds over events: lifecycles and the resource ledger."""
