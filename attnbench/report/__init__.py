"""Rendering: records to tables (Rich, CSV, Markdown, JSON) and plots."""
