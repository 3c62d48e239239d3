"""Browser tests run only through ``make test-browser`` (which sets ``SURVEY_BROWSER_TESTS=1`` and
installs Chromium and Playwright); ``make test`` also passes ``--ignore=tests/browser``."""
import os

collect_ignore_glob = [] if os.environ.get("SURVEY_BROWSER_TESTS") == "1" else ["test_*.py"]
