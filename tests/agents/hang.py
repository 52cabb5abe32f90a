"""An agent that hangs: it starts a submit in the background (so a kill can land mid-submit) and sleeps."""
import subprocess
import sys
import time

if len(sys.argv) > 1 and sys.argv[1] == "--submit":
    subprocess.Popen([sys.executable, "-m", "cbdsl", "submit", "-m", "a submit the hang leaves running"])
print("thinking...", flush=True)
time.sleep(3600)
