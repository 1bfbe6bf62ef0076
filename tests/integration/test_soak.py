"""test_soak: tests/soak/soak.py for 45 seconds in every make check: a real stack under a
mix of chat turns (whole, streamed, abandoned), OpenAI-compatible calls with server-side
memory, session reads and scrapes, with the upstream failing 10% of its calls and one
worker killed halfway; no turn lost or doubled, the pool whole again. The long run with
the memory and file checks is `make soak` (SOAK_SECONDS, default 600)."""
import os
import subprocess
import sys

soak = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "soak", "soak.py")
sys.exit(subprocess.call([sys.executable, soak, "--seconds", "45", "--clients", "6"]))
