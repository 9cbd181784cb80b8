import sys
from pathlib import Path

# Test helper modules (twin_helpers.py) import by plain name.
sys.path.insert(0, str(Path(__file__).parent))
