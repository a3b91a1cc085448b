"""Validated layer: Great Expectations suites, a quarantine for bad rows, blocking table checks."""
