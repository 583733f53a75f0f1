#!/usr/bin/env python
"""The Django project the adapter's tests run against (pytest-django finds it here)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wove_testproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
