"""One module per command (like pipx); cli.py wires them to click."""
