import sys
from pathlib import Path

# Test helper modules (twin_helpers.py) import by plain name.
sys.path.insert(0, str(Path(__file__).parent))

# Fixtures of the instrument tests (drivers and emulators), shared by every test folder.
from instrument_helpers import clock, qdac_emulator, serve  # noqa: F401
