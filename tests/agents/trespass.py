"""An agent that edits files it must not touch (its budget, the protocol, a skill), then submits a policy."""
import re
import subprocess
import sys
from pathlib import Path

config = Path("cbdsl.toml")
config.write_text(re.sub(r"iterations = \d+", "iterations = 99", config.read_text()))
Path("PROTOCOL.md").write_text("# Protocol\n\nAnything goes.\n")
Path("skills/extra/SKILL.md").parent.mkdir(parents=True, exist_ok=True)
Path("skills/extra/SKILL.md").write_text("---\nname: extra\ndescription: mine\n---\n")
Path("policy.cur").write_text('policy "p"\npool "demo"\nbudget 200\nselect random(seed=5)\n')
for args in (["compile", "policy.cur"], ["submit", "-m", "after editing the rules"]):
    subprocess.run([sys.executable, "-m", "cbdsl", *args], check=False)
