"""A stand-in for VLMEvalKit's run.py in the LLaVA-1.5 recipe's test (standard library only).

It takes the arguments the recipe gives run.py, checks the --config names the fine-tuned checkpoint as
class LLaVA and each dataset with VLMEvalKit's class for it, and writes each dataset's result file as
VLMEvalKit does (tests/data/vlmevalkit_files.py), scores depending on what the checkpoint was trained on.
FAKE_VLMEVALKIT_SKIP=A,B leaves those datasets' files out and still exits 0, as VLMEvalKit does.
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/data
from vlmevalkit_files import write_run  # noqa: E402

CLASSES = {"MME": "ImageYORNDataset", "POPE": "ImageYORNDataset", "MMBench_DEV_EN": "ImageMCQDataset",
           "SEEDBench_IMG": "ImageMCQDataset", "ScienceQA_TEST": "ImageMCQDataset", "TextVQA_VAL": "ImageVQADataset",
           "GQA_TestDev_Balanced": "ImageVQADataset", "VizWiz": "VizWiz"}


def fail(message: str) -> None:
    print(f"run.py (stand-in): {message}", file=sys.stderr)
    sys.exit(1)


ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--work-dir", required=True)
ap.add_argument("--judge", required=True)
ap.add_argument("--mode", default="all", choices=["all", "infer", "eval"])
args = ap.parse_args()
if args.judge != "exact_matching":
    fail(f"--judge {args.judge}: the recipe evaluates without an API judge")
if not Path("run.py").is_file():
    fail("not run in the VLMEvalKit checkout")
config = json.loads(Path(args.config).read_text())
if set(config) != {"model", "data"} or len(config["model"]) != 1:
    fail(f"--config must have one model and the data: {config}")
(model, spec), = config["model"].items()
checkpoint = Path(spec.get("model_path", ""))
if spec.get("class") != "LLaVA" or "llava" not in checkpoint.name or not (checkpoint / "config.json").is_file():
    fail(f"model {model}: {spec} is not a LLaVA checkpoint (class LLaVA, a folder named *llava* with config.json)")
for name, data in config["data"].items():
    if data != {"class": CLASSES.get(name), "dataset": name}:
        fail(f"dataset {name}: {data}; VLMEvalKit's class for it is {CLASSES.get(name)}")
trained = json.loads((checkpoint / "trained_on.json").read_text())
s = trained["with_image"] / trained["records"]
scale = {"MME": 60 + 80 * s, "MMBench_DEV_EN": 0.3 + 0.4 * s, "SEEDBench_IMG": 0.35 + 0.3 * s,
         "ScienceQA_TEST": 0.5 + 0.2 * s, "POPE": 70 + 15 * s, "GQA_TestDev_Balanced": 40 + 20 * s,
         "TextVQA_VAL": 30 + 25 * s, "VizWiz": 45 + 5 * s}
skip = set(filter(None, os.environ.get("FAKE_VLMEVALKIT_SKIP", "").split(",")))
for name in skip & set(config["data"]):
    print(f"Model {model} x Dataset {name} combination failed: (simulated), skipping this combination.", flush=True)
write_run(Path(args.work_dir), model, {d: scale[d] for d in config["data"] if d not in skip})
print(f"run.py (stand-in): evaluated {model} on {len(config['data']) - len(skip & set(config['data']))} datasets "
      f"(GPUs {os.environ.get('CUDA_VISIBLE_DEVICES')})", flush=True)
