"""An agent that crashes: it prints an event, writes a half-edited policy, and exits with code 3."""
import json
import sys
from pathlib import Path

print(json.dumps({"type": "assistant", "message": {"usage": {"input_tokens": 10, "output_tokens": 2}}}), flush=True)
Path("policy.cur").write_text('policy "half"\npool "demo"\nfilter words(text) >')
print("something went wrong", file=sys.stderr)
sys.exit(3)
