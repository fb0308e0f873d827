"""Settings layers (docs/design.md §10).

base.py        shared and safe: DEBUG off, a placeholder secret key production refuses
dev.py         local work: DEBUG on, works with no environment at all
production.py  hardening for the server behind nginx (TLS terminated there)
local.py       loaded last by dev and production: secrets, hosts and paths from the environment
"""
