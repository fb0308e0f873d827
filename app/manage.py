#!/usr/bin/env python
"""Django's command-line utility for the Skinmenu site.

Defaults to the dev settings; the deployer and the systemd unit always pass
DJANGO_SETTINGS_MODULE=config.settings.production explicitly.
"""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
