"""``python -m service.dev``: see service.dev.launcher."""

from service.dev.launcher import main

main()
