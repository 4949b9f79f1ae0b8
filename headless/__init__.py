"""Run an API-format workflow on a running ComfyUI from the command line: `python -m headless --help`."""
