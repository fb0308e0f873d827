"""Skinmenu deployer: Capistrano-style atomic release directories (docs/design.md §1)."""

__version__ = "0.1.0"
