"""The generic file-drop adapter: JSON Lines or CSV files in, JSON or CSV files out."""
