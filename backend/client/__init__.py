"""`longhaul`: the command-line client of the JSON API (start, follow, fetch, verify)."""
