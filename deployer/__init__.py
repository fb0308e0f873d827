"""Skinmenu deployer: Capistrano-style atomic release directories (DESIGN.md §1)."""

__version__ = "0.1.0"
