"""Development tools that are not part of the service: the custom import-linter contract."""
